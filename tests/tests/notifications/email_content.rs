//! What the people on a connection read: the email as SES (moto) and the local outbox received it,
//! parsed by an independent MIME parser. Their language and time zone, one call to action, the
//! provider's raw words only for the IT contact, the tenant's look, and no secret.

use super::*;
use broker_core::domain::TimeZone as Zone;
use mail_parser::{MessageParser, MimeHeaders};

const LINK_PREFIX: &str = "https://broker.example.com/connect/";

/// A tenant of its own, with a logo and a light accent colour, English and in Brussels; the
/// connection's own choices (Dutch, Amsterdam) come first.
async fn branded_world(backend: Backend) -> World {
    let mut w = world(backend).await;
    let store = &w.ctx.backend.store;
    let mut tenant = Tenant::new(
        TenantId::parse(unique_name("bakker")).unwrap(),
        "Bakker & Zn <Boekhouding>",
        t0(),
    )
    .unwrap();
    tenant.locale = Some(Locale::English);
    tenant.time_zone = Some(Zone::parse("Europe/Brussels").unwrap());
    tenant.branding = Branding::new(
        Some(LogoUrl::parse("https://cdn.example.com/bakker.png").unwrap()),
        Some(AccentColour::parse("#ffd500").unwrap()),
    );
    store.insert_tenant(&tenant).await.unwrap();
    let mut app = store
        .get_app(&w.tenant, &AppId::parse("acumatica").unwrap())
        .await
        .unwrap()
        .unwrap();
    app.tenant = tenant.id.clone();
    store.put_app(&app).await.unwrap();
    w.tenant = tenant.id;
    w
}

/// The connection's people read Dutch in Amsterdam.
async fn dutch(w: &World, c: &Connection) -> Connection {
    let store = &w.ctx.backend.store;
    let mut c = store.get_connection(&c.id).await.unwrap().unwrap();
    c.locale = Some(Locale::Dutch);
    c.time_zone = Some(Zone::parse("Europe/Amsterdam").unwrap());
    store
        .save_connection(&c, Fence::Version, &[])
        .await
        .unwrap()
}

/// The checks every reconnect email must pass, whatever its language: its parts, one call to action,
/// the raw error only under `details_heading`, no secret. Returns the text and HTML parts.
fn assert_reconnect_email(
    raw: &[u8],
    c: &Connection,
    details_heading: &str,
    button: &str,
) -> (String, String) {
    let message = MessageParser::default().parse(raw).expect("a MIME message");
    let text_part = &message.parts[message.text_body[0] as usize];
    let html_part = &message.parts[message.html_body[0] as usize];
    assert_eq!(text_part.content_type().unwrap().subtype(), Some("plain"));
    assert_eq!(
        text_part.content_transfer_encoding(),
        Some("quoted-printable")
    );
    assert_eq!(html_part.content_type().unwrap().subtype(), Some("html"));
    let text = message.body_text(0).unwrap().into_owned();
    let html = message.body_html(0).unwrap().into_owned();

    // One call to action: in HTML the link is the button and nothing else; in text it stands once.
    assert_eq!(html.matches(LINK_PREFIX).count(), 1, "{html}");
    let button_at = html.find(&format!("<a href=\"{LINK_PREFIX}")).unwrap();
    assert!(
        html[button_at..].contains(&format!(">{button}</a>")),
        "{html}"
    );
    assert_eq!(html.matches("<a ").count(), 1, "{html}");
    assert_eq!(text.matches(LINK_PREFIX).count(), 1, "{text}");
    assert!(html.contains("<meta name=\"viewport\""));

    // The provider's raw error only in the details for the IT contact.
    for part in [&text, &html] {
        let details = part.find(details_heading).expect("a details section");
        assert_eq!(part.matches("invalid_grant").count(), 1, "{part}");
        assert!(part.find("invalid_grant").unwrap() > details, "{part}");
    }
    assert!(!message.subject().unwrap().contains("invalid_grant"));

    let raw = String::from_utf8_lossy(raw);
    for secret in [
        ACCESS_VALUE,
        REFRESH_VALUE,
        c.id.as_str(),
        "00000000-0000-0000-0000-000000000000",
    ] {
        assert!(!raw.contains(secret), "{secret} in the message");
        assert!(!text.contains(secret) && !html.contains(secret), "{secret}");
    }
    (text, html)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dutch_connection_gets_its_reconnect_email_in_dutch_through_ses_in_its_zone() {
    let w = branded_world(backends::aws().await).await;
    let notifier = Notifier::new(w.ctx.clone(), ses_mailer().await, settings());
    let c = w.connected(t0() + Duration::days(30)).await;
    let c = dutch(&w, &c).await;
    w.reconnect_needed(&c).await;
    assert_eq!(notifier.drain_outbox().await.unwrap().sent, 1);

    let mail = moto_mail_to(&w.recipient).await;
    assert_eq!(mail.len(), 1);
    let raw = mail[0].as_bytes();
    let message = MessageParser::default().parse(raw).unwrap();
    assert_eq!(
        message.subject(),
        Some("Actie nodig: koppel Acumatica opnieuw voor Bakker & Zn <Boekhouding>")
    );
    let (text, html) = assert_reconnect_email(
        raw,
        &c,
        "Details voor uw IT-contactpersoon",
        "Acumatica opnieuw koppelen",
    );
    for part in [&text, &html] {
        // 06:00 UTC on 2 November is 07:00 in Amsterdam, in winter time.
        assert!(
            part.contains("Sinds 2 november 2026 om 07:00 CET"),
            "{part}"
        );
        assert!(
            part.contains("De link werkt tot 9 november 2026 om 07:00 CET"),
            "{part}"
        );
        assert!(
            part.contains("Acumatica, tenant AcmeCo (Acme production)"),
            "{part}"
        );
        assert!(
            !part.contains("Hello") && !part.contains("What to do"),
            "{part}"
        );
    }
    assert!(text.contains("Wat u moet doen"), "{text}");
    assert!(
        html.contains("Bakker &#38; Zn &#60;Boekhouding&#62;"),
        "{html}"
    );
    assert!(html.contains("<img src=\"https://cdn.example.com/bakker.png\""));
    assert!(html.contains("background-color:#ffd500"));
    assert!(
        html.contains("color:#1a1a1a;text-decoration:none"),
        "dark text on a light button"
    );

    match resolve_link(&w.ctx, &link_token(&text)).await.unwrap() {
        Consumed::Fresh(link) => assert_eq!(link.connection, c.id),
        other => panic!("the emailed link does not resolve: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_outbox_names_each_email_by_what_it_is_and_holds_the_message_sent() {
    let w = world(backends::embedded()).await;
    let outbox = backends::temp_dir("outbox-content");
    let notifier = Notifier::new(
        w.ctx.clone(),
        Arc::new(OutboxMailer::new(&outbox)),
        settings(),
    );
    let c = w.connected(t0() + Duration::days(30)).await;
    w.reconnect_needed(&c).await;
    assert_eq!(notifier.drain_outbox().await.unwrap().sent, 1);

    let files: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    // "20261201T140302.123456Z-reconnect-required-acumatica-0123456789ab.eml": when it was written,
    // what it is, and a random part.
    let (when, rest) = name.split_once("Z-").expect(&name);
    assert!(when.len() == 22 && when.as_bytes()[8] == b'T', "{name}");
    let random = rest
        .strip_prefix("reconnect-required-acumatica-")
        .and_then(|r| r.strip_suffix(".eml"))
        .expect(&name);
    assert!(
        random.len() == 12 && random.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    let raw = std::fs::read(&files[0]).unwrap();
    let message = MessageParser::default().parse(&raw).unwrap();
    // Neither the connection nor the tenant chose a language or zone: English, in UTC, shown as UTC.
    assert_eq!(
        message.subject(),
        Some("Action needed: reconnect Acumatica for Acme Integrations")
    );
    let (text, html) = assert_reconnect_email(
        &raw,
        &c,
        "Details for your IT contact",
        "Reconnect Acumatica",
    );
    for part in [&text, &html] {
        assert!(part.contains("Since 2 November 2026, 06:00 UTC"), "{part}");
        assert!(part.contains("no longer accepts"), "{part}");
    }
    assert!(!html.contains("<img"), "no logo without branding");
}
