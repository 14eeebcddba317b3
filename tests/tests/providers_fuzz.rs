//! Thousands of generated malformed SOAP envelopes and token answers fed to the parsers: none panics,
//! and none holds more than a bounded amount of memory, measured by a counting allocator.
//!
//! One test function on purpose: the allocator's counters are process-wide, so nothing else may
//! allocate while a case is measured.

use broker_core::domain::ServiceUrl;
use broker_core::providers::discovery::{
    exact_discovery, identity_from_userinfo, twinfield_discovery,
};
use broker_core::providers::id_token::{check_id_token, read_id_token, Expectations, Jwks};
use broker_core::providers::token_response::{read_token_reply, TokenReply};
use broker_core::providers::twinfield_session::{
    read_logon, read_select_company, read_soap_answer, SoapReply,
};
use broker_core::providers::xml::{self, XmlLimits};
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated above the level before `f` ran, at the worst moment.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

/// xorshift64*: small, seeded, repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const SOAP_SEEDS: [&str; 9] = [
    r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header><Header xmlns="http://www.twinfield.com/"><SessionID>3f2a</SessionID><AccessToken>tok</AccessToken></Header></soap:Header><soap:Body><AccessTokenLogonResponse xmlns="http://www.twinfield.com/"><AccessTokenLogonResult>Ok</AccessTokenLogonResult><nextAction>None</nextAction><cluster>https://c3.twinfield.com</cluster></AccessTokenLogonResponse></soap:Body></soap:Envelope>"#,
    r#"<soap12:Envelope xmlns:soap12="http://www.w3.org/2003/05/soap-envelope"><soap12:Header><Header xmlns="http://www.twinfield.com/"><SessionID>s</SessionID></Header></soap12:Header><soap12:Body><OAuthLogonResponse xmlns="http://www.twinfield.com/"><OAuthLogonResult>Blocked</OAuthLogonResult><nextAction>SMSLogon</nextAction><cluster>https://c1.twinfield.com</cluster></OAuthLogonResponse></soap12:Body></soap12:Envelope>"#,
    r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>Access denied. Token invalid.</faultstring><detail><code>354</code></detail></soap:Fault></soap:Body></soap:Envelope>"#,
    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><t:SelectCompanyResponse xmlns:t="http://www.twinfield.com/"><t:SelectCompanyResult>Ok</t:SelectCompanyResult></t:SelectCompanyResponse></s:Body></s:Envelope>"#,
    r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault><e:Code><e:Value>e:Sender</e:Value></e:Code><e:Reason><e:Text xml:lang="en">Your logon credentials are not valid anymore. Try to log on again.</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>"#,
    // Localised faults: the 354 in Dutch, as an attribute in SOAP 1.2 and a namespaced element in 1.1.
    r#"<soap12:Envelope xmlns:soap12="http://www.w3.org/2003/05/soap-envelope"><soap12:Body><soap12:Fault><soap12:Code><soap12:Value>soap12:Sender</soap12:Value></soap12:Code><soap12:Reason><soap12:Text xml:lang="nl">Toegang geweigerd. Token ongeldig.</soap12:Text></soap12:Reason><soap12:Detail><Error code="354" /></soap12:Detail></soap12:Fault></soap12:Body></soap12:Envelope>"#,
    r#"<?xml version="1.0" encoding="utf-16"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring xml:lang="nl">Toegang geweigerd. Token ongeldig.</faultstring><detail><t:Errors xmlns:t="http://www.twinfield.com/"><t:code>354</t:code></t:Errors></detail></soap:Fault></soap:Body></soap:Envelope>"#,
    r#"<soap12:Envelope xmlns:soap12="http://www.w3.org/2003/05/soap-envelope"><soap12:Header><Header xmlns="http://www.twinfield.com/"><SessionID>s</SessionID><AccessToken>t</AccessToken></Header></soap12:Header><soap12:Body><AccessTokenLogonResponse xmlns="http://www.twinfield.com/"><AccessTokenLogonResult>TokenInvalid</AccessTokenLogonResult><cluster /></AccessTokenLogonResponse></soap12:Body></soap12:Envelope>"#,
    r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>Toegang geweigerd. Company ontbreekt in request header.</faultstring><detail /></soap:Fault></soap:Body></soap:Envelope>"#,
];

const XML_SNIPPETS: [&str; 29] = [
    "<a>",
    "</a>",
    "<a/>",
    "&amp;",
    "&lt;",
    "&undefined;",
    "&#0;",
    "&#x110000;",
    "&#xD800;",
    "&#65;",
    "&",
    "<![CDATA[x]]>",
    "<![CDATA[",
    "<!-- c -->",
    "<?pi x?>",
    "<!DOCTYPE r [<!ENTITY x \"xx\">]>",
    "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>",
    "<p:q xmlns:p=\"urn:p\">",
    "<undeclared:e>",
    " xmlns=\"\"",
    "\u{feff}",
    "\0",
    "<Fault>",
    "<soap:Fault><faultstring>",
    "<code>354</code>",
    " code=\"354\"",
    " xml:lang=\"nl\"",
    "Toegang geweigerd. Token ongeldig.",
    "<Detail><e code=\"354\"/></Detail>",
];

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some("text/xml; charset=utf-8"),
    Some("application/soap+xml; charset=utf-16"),
    Some("text/xml; charset=UTF-16LE"),
    Some("text/xml; charset=iso-8859-1"),
    Some("text/html"),
];

fn mutate(rng: &mut Rng, mut bytes: Vec<u8>, snippets: &[&str]) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(8) {
            0 => bytes.truncate(at),
            1 => {
                if !bytes.is_empty() {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next() as u8;
                }
            }
            2 => bytes
                .splice(at..at, rng.pick(snippets).bytes())
                .for_each(drop),
            3 => {
                let end = (at + rng.below(64)).min(bytes.len());
                let slice = bytes[at..end].to_vec();
                for _ in 0..rng.below(8) {
                    bytes.splice(at..at, slice.iter().copied()).for_each(drop);
                }
            }
            4 => {
                let end = (at + rng.below(32)).min(bytes.len());
                bytes.drain(at..end);
            }
            5 => {
                let junk: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, junk).for_each(drop);
            }
            6 => {
                // Deep or wide structure in one go.
                let snippet = *rng.pick(snippets);
                let n = 1 + rng.below(2000);
                let block = snippet.repeat(n);
                bytes.splice(at..at, block.bytes()).for_each(drop);
            }
            _ => {
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    // Re-encode as UTF-16, sometimes with a BOM, sometimes cut to an odd length.
                    let mut out = if rng.chance(2) {
                        vec![0xFF, 0xFE]
                    } else {
                        Vec::new()
                    };
                    out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
                    if rng.chance(4) {
                        out.pop();
                    }
                    bytes = out;
                }
            }
        }
    }
    bytes
}

fn hostile_soap() -> Vec<Vec<u8>> {
    let laughs = {
        let mut dtd = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
        for i in 1..10 {
            let prev = if i == 1 {
                "lol".to_string()
            } else {
                format!("lol{}", i - 1)
            };
            dtd.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">",
                format!("&{prev};").repeat(10)
            ));
        }
        dtd + "]><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>&lol9;</soap:Body></soap:Envelope>"
    };
    let mut namespaces =
        String::from("<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"");
    for i in 0..10_000 {
        namespaces.push_str(&format!(" xmlns:p{i}=\"urn:{i}\""));
    }
    namespaces.push_str("><soap:Body/></soap:Envelope>");
    vec![
        laughs.into_bytes(),
        "<a>".repeat(150_000).into_bytes(),
        format!("<r>{}</r>", "<a/>".repeat(100_000)).into_bytes(),
        format!("<r a=\"{}\"/>", "x".repeat(400_000)).into_bytes(),
        format!("<{}/>", "n".repeat(400_000)).into_bytes(),
        namespaces.into_bytes(),
        vec![b'<'; 3 * 1024 * 1024],
        vec![0xFF, 0xFE, 0x3C],
        vec![0xFE, 0xFF],
        Vec::new(),
    ]
}

fn soap_case(bytes: &[u8], content_type: Option<&str>, status: u16) {
    let reply = SoapReply {
        status,
        content_type,
        retry_after: None,
        body: bytes,
    };
    let same = |u: &str| ServiceUrl::parse(u).map_err(String::from);
    let _ = read_logon(reply, "AccessTokenLogon", &same);
    let _ = read_logon(reply, "OAuthLogon", &same);
    let _ = read_select_company(reply);
    let _ = read_soap_answer(reply, "KeepAlive");
    let _ = xml::parse(bytes, content_type, XmlLimits::default());
}

const TOKEN_SEEDS: [&str; 8] = [
    r#"{"access_token":"a","token_type":"bearer","expires_in":"600","refresh_token":"r"}"#,
    r#"{"access_token":"a","expires_in":3600,"token_type":"Bearer","refresh_token":"r","scope":"api offline_access","id_token":"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.x"}"#,
    r#"{"error":"unauthorized_client","error_description":"Old refresh token used."}"#,
    r#"{"error":"invalid_request","error_description":"The refresh token expired at 6/3/2024 10:00:00 AM and it is now 7/3/2024 10:00:00 AM."}"#,
    r#"{"fault":{"faultstring":"Failed to execute the ExtractVariables: ExtractAccessToken","detail":{"errorcode":"steps.extractvariables.ExecutionFailed"}}}"#,
    r#"{"error":{"code":"","message":{"lang":"","value":"Forbidden"}}}"#,
    r#"{"d":{"results":[{"CurrentDivision":123,"UserID":"u","FullName":"F"}]},"twf.clusterUrl":"https://c.twinfield.com","twf.organisationCode":"O","sub":"s"}"#,
    r#"<html><body>502 Bad Gateway</body></html>"#,
];

const JSON_SNIPPETS: [&str; 20] = [
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "null",
    "1e999",
    "-0",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "18446744073709551616",
    "\"expires_in\":\"NaN\"",
    "\"expires_in\":1e308",
    "\"scope\":[1,{},null]",
    "\"access_token\":\"\"",
    "\"refresh_token\":{}",
    "\u{feff}",
    "\u{fffd}",
];

fn hostile_json() -> Vec<Vec<u8>> {
    vec![
        "[".repeat(100_000).into_bytes(),
        format!("{{\"a\":{}}}", "{\"a\":".repeat(5000)).into_bytes(),
        format!("[{}1]", "1,".repeat(120_000)).into_bytes(),
        format!("{{\"access_token\":\"{}\"}}", "x".repeat(200_000)).into_bytes(),
        vec![b'1'; 2 * 1024 * 1024],
        vec![0xC3, 0x28],
    ]
}

fn token_case(bytes: &[u8], status: u16) {
    match read_token_reply(status, bytes) {
        TokenReply::Tokens(t) => {
            let _ = t.is_bearer();
        }
        TokenReply::Refused(r) => {
            assert!(
                r.description.chars().count() <= 400,
                "descriptions are bounded"
            );
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let _ = read_id_token(&text);
    let expect = Expectations {
        issuer: "https://idp.example.com",
        client_id: "app",
        nonce: Some("n"),
        now: chrono::Utc::now(),
        keys: None,
    };
    let _ = check_id_token(&text, &expect);
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if let Ok(keys) = Jwks::parse(&map) {
            let _ = check_id_token(
                &text,
                &Expectations {
                    keys: Some(&keys),
                    ..expect
                },
            );
        }
        let _ = twinfield_discovery(&map, &|u| ServiceUrl::parse(u).map_err(String::from));
        let _ = exact_discovery(
            &map,
            ServiceUrl::parse("https://start.exactonline.nl").unwrap(),
        );
        let _ = identity_from_userinfo(&map);
    }
}

static WORST: AtomicUsize = AtomicUsize::new(0);

/// Runs a case, failing with the input when it panics or holds too much memory.
fn check(what: &str, case: usize, input: &[u8], limit: usize, run: impl FnOnce()) {
    let mut outcome = Ok(());
    let peak = peak_during(|| outcome = catch_unwind(AssertUnwindSafe(run)));
    WORST.fetch_max(peak, Ordering::Relaxed);
    let shown = String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
    assert!(
        outcome.is_ok(),
        "{what} case {case} panicked on input starting {shown:?}"
    );
    assert!(
        peak <= limit,
        "{what} case {case} held {peak} bytes (limit {limit}) on input starting {shown:?}"
    );
}

#[test]
fn malformed_answers_never_panic_and_stay_bounded() {
    const CASES: usize = 4000;
    // Generous against the caps (512 KiB of XML, 256 KiB of JSON), far below unbounded growth.
    const LIMIT: usize = 16 * 1024 * 1024;
    let mut rng = Rng(0x0005_EED0_FB40_C3E5);
    let statuses = [200, 200, 200, 400, 401, 429, 500, 503];
    generators_produce_broken_and_intact_input();

    for (i, input) in hostile_soap().iter().enumerate() {
        check("hostile SOAP", i, input, LIMIT, || {
            soap_case(input, None, 500)
        });
        check("hostile SOAP (utf-16 declared)", i, input, LIMIT, || {
            soap_case(input, Some("text/xml; charset=utf-16"), 200)
        });
    }
    for case in 0..CASES {
        let seed = rng.pick(&SOAP_SEEDS).as_bytes().to_vec();
        let input = mutate(&mut rng, seed, &XML_SNIPPETS);
        let content_type = *rng.pick(&CONTENT_TYPES);
        let status = *rng.pick(&statuses);
        check("SOAP", case, &input, LIMIT, || {
            soap_case(&input, content_type, status)
        });
    }

    localised_354_faults_are_recognised();
    let compared = encodings_do_not_change_the_verdict(&mut rng, CASES / 4);
    assert!(
        compared > CASES / 8,
        "only {compared} mutants were valid UTF-8"
    );

    for (i, input) in hostile_json().iter().enumerate() {
        check("hostile token answer", i, input, LIMIT, || {
            token_case(input, 400)
        });
    }
    for case in 0..CASES {
        let seed = rng.pick(&TOKEN_SEEDS).as_bytes().to_vec();
        let input = mutate(&mut rng, seed, &JSON_SNIPPETS);
        let status = *rng.pick(&statuses);
        check("token answer", case, &input, LIMIT, || {
            token_case(&input, status)
        });
    }
    eprintln!(
        "{} cases, worst peak {} KiB",
        2 * CASES + 26,
        WORST.load(Ordering::Relaxed) / 1024
    );
}

/// What the session-service readers make of an answer, by variant only (texts may differ in length).
fn verdicts(bytes: &[u8], content_type: Option<&str>) -> [String; 2] {
    let reply = SoapReply {
        status: 500,
        content_type,
        retry_after: None,
        body: bytes,
    };
    let same = |u: &str| ServiceUrl::parse(u).map_err(String::from);
    // "Ok(Invalid)", "Err(AccessTokenInvalid", "Err(Malformed": the variants, not their texts.
    let variant = |debug: String| {
        let end = debug
            .match_indices(['(', ' ', '{', ')'])
            .nth(1)
            .map_or(debug.len(), |(i, _)| i);
        debug[..end].to_string()
    };
    [
        variant(format!("{:?}", read_select_company(reply))),
        variant(format!(
            "{:?}",
            read_logon(reply, "AccessTokenLogon", &same).map(|l| l.result)
        )),
    ]
}

/// The same answer in UTF-8, UTF-16LE with a byte-order mark and UTF-16BE named only by the charset
/// is read the same, mutants included: the encoding never changes a fault's meaning.
fn encodings_do_not_change_the_verdict(rng: &mut Rng, cases: usize) -> usize {
    let mut compared = 0;
    for case in 0..cases {
        let seed = rng.pick(&SOAP_SEEDS).as_bytes().to_vec();
        let input = mutate(rng, seed, &XML_SNIPPETS);
        let Ok(text) = std::str::from_utf8(&input) else {
            continue;
        };
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let utf8 = verdicts(&input, Some("text/xml; charset=utf-8"));
        assert_eq!(utf8, verdicts(&le, None), "case {case}: {text}");
        assert_eq!(
            utf8,
            verdicts(&be, Some("application/soap+xml; charset=utf-16")),
            "case {case}: {text}"
        );
        compared += 1;
    }
    compared
}

/// Every intact fault seed that carries code 354 is a token-invalid answer, whatever its language.
fn localised_354_faults_are_recognised() {
    for seed in SOAP_SEEDS.iter().filter(|s| s.contains("354")) {
        let [select, logon] = verdicts(seed.as_bytes(), None);
        let expected = "Err(AccessTokenInvalid";
        assert_eq!(
            (select.as_str(), logon.as_str()),
            (expected, expected),
            "{seed}"
        );
        let reply = SoapReply {
            status: 500,
            content_type: None,
            retry_after: None,
            body: seed.as_bytes(),
        };
        assert!(
            matches!(
                read_select_company(reply),
                Err(broker_core::providers::SessionError::AccessTokenInvalid { .. })
            ),
            "{seed}"
        );
    }
}

/// A check of the harness itself: most mutants must fail to parse, and some must still parse.
fn generators_produce_broken_and_intact_input() {
    let mut rng = Rng(7);
    let (mut ok, mut broken) = (0, 0);
    for _ in 0..500 {
        let seed = rng.pick(&SOAP_SEEDS).as_bytes().to_vec();
        let input = mutate(&mut rng, seed, &XML_SNIPPETS);
        match xml::parse(&input, None, XmlLimits::default()) {
            Ok(_) => ok += 1,
            Err(_) => broken += 1,
        }
    }
    assert!(broken > 250 && ok > 0, "ok {ok}, broken {broken}");
}
