//! Twinfield: token endpoint, accesstokenvalidation, userinfo and the session service.

mod common;

use chrono::Duration;
use common::*;
use provider_simulators::{LegacyCredentials, LogonBehaviour, LogonResult, NextAction, Provider};
use reqwest::StatusCode;

const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";

fn envelope(ns: &str, header: &str, body: &str) -> String {
    let header = if header.is_empty() {
        String::new()
    } else {
        format!("<soap:Header><Header xmlns=\"http://www.twinfield.com/\">{header}</Header></soap:Header>")
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"{ns}\">{header}<soap:Body>{body}</soap:Body></soap:Envelope>"
    )
}

/// Posts a SOAP 1.1 call with the quoted SOAPAction ASMX expects.
async fn soap11(
    setup: &Setup,
    url: &str,
    op: &str,
    header: &str,
    params: &str,
) -> (StatusCode, String) {
    let body = envelope(
        SOAP11,
        header,
        &format!("<{op} xmlns=\"http://www.twinfield.com/\">{params}</{op}>"),
    );
    let action = format!("\"http://www.twinfield.com/{op}\"");
    let response = post_soap(setup, url, "text/xml; charset=utf-8", Some(&action), body).await;
    (response.status(), response.text().await.unwrap())
}

async fn post_soap(
    setup: &Setup,
    url: &str,
    content_type: &str,
    soap_action: Option<&str>,
    body: String,
) -> reqwest::Response {
    let mut request = setup.http.post(url).header("Content-Type", content_type);
    if let Some(action) = soap_action {
        request = request.header("SOAPAction", action);
    }
    request.body(body).send().await.unwrap()
}

/// The demo organisation's pre-OAuth credentials: client token `ct`, secret `cs`, access token `at`,
/// access secret `as`.
fn add_legacy_credentials(setup: &Setup) {
    let creds = LegacyCredentials {
        organisation: "TWF-DEMO".into(),
        user: "DEMO".into(),
        client_token: "ct".into(),
        client_secret: "cs".into(),
        access_token: "at".into(),
        access_secret: "as".into(),
    };
    setup.sim.add_twinfield_legacy_credentials(creds).unwrap();
}

/// `accesstokenvalidation` asked about `token`.
async fn validate(setup: &Setup, token: &str) -> reqwest::Response {
    let url = setup.twinfield_connect("accesstokenvalidation");
    setup
        .http
        .get(url)
        .query(&[("token", token)])
        .send()
        .await
        .unwrap()
}

fn login_session_url(setup: &Setup) -> String {
    format!(
        "{}/webservices/session.asmx",
        setup.sim.twinfield_login_base()
    )
}

fn cluster_session_url(setup: &Setup) -> String {
    format!(
        "{}/webservices/session.asmx",
        setup.sim.twinfield_cluster_url("accounting")
    )
}

fn between<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    &xml[start..start + xml[start..].find(&format!("</{tag}>")).unwrap()]
}

async fn access_token_logon(setup: &Setup, token: &str) -> String {
    let (status, xml) = soap11(
        setup,
        &login_session_url(setup),
        "AccessTokenLogon",
        "",
        &format!("<accessToken>{token}</accessToken>"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    xml
}

#[tokio::test]
async fn code_flow_answers_with_the_documented_token_shape() {
    let setup = start().await;
    let body = setup.twinfield_tokens().await;
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["refresh_token"].is_string());
    let id_token = s(&body["id_token"]);
    let claims = id_token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["nonce"], "nn");
    assert!(setup.sim.is_access_token_valid(s(&body["access_token"])));
}

#[tokio::test]
async fn client_credentials_in_the_body_are_accepted() {
    let setup = start().await;
    let code = setup.twinfield_code().await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", TW_ID),
        ("client_secret", TW_SECRET),
    ];
    let response = setup
        .post_form(&setup.twinfield_connect("token"), &form)
        .await;
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());
}

/// Basic is split at the first colon and not URL-decoded: a form-encoded secret is a wrong secret.
#[tokio::test]
async fn basic_credentials_are_not_url_decoded() {
    use base64::Engine;
    let setup = start().await;
    let secret = "a+b/c%d:e";
    setup
        .sim
        .register_twinfield_client(provider_simulators::ClientRegistration {
            client_id: "odd".into(),
            client_secret: secret.into(),
            redirect_uris: vec![REDIRECT.into()],
        });
    let basic = |pair: String| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    for (pair, accepted) in [
        (format!("odd:{secret}"), true),
        (format!("odd:{encoded}"), false),
    ] {
        let response = setup
            .http
            .post(setup.twinfield_connect("token"))
            .header("Authorization", basic(pair))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "unknown"),
            ])
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        // A known client with a bad refresh token is invalid_grant; a wrong secret invalid_client.
        let expected = if accepted {
            "invalid_grant"
        } else {
            "invalid_client"
        };
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(expected))
        );
    }
}

#[tokio::test]
async fn refresh_tokens_are_reusable_by_default_and_counted() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    let refresh = s(&tokens["refresh_token"]);
    for _ in 0..3 {
        let (status, body) = setup.twinfield_refresh(refresh).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["refresh_token"], refresh,
            "the same refresh token comes back"
        );
    }
    assert_eq!(setup.sim.presentations_of(refresh), 3);
    assert_eq!(setup.sim.max_presentations_of_any_refresh_token(), 3);
    assert_eq!(setup.sim.token_calls(Provider::Twinfield), 4);
}

#[tokio::test]
async fn rotation_knob_spends_the_old_refresh_token() {
    let setup = start().await;
    setup
        .sim
        .update_knobs(|k| k.twinfield_rotate_refresh_tokens = true);
    let tokens = setup.twinfield_tokens().await;
    let old = s(&tokens["refresh_token"]);
    let (status, body) = setup.twinfield_refresh(old).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(body["refresh_token"], old);
    let (status, body) = setup.twinfield_refresh(old).await;
    assert_oauth_error((status, &body), StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn a_revoked_grant_fails_refresh_with_400() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    assert_eq!(setup.sim.revoke_grant(Provider::Twinfield, "DEMO", None), 1);
    let (status, body) = setup.twinfield_refresh(s(&tokens["refresh_token"])).await;
    assert_oauth_error((status, &body), StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(!setup.sim.is_access_token_valid(s(&tokens["access_token"])));
}

#[tokio::test]
async fn accesstokenvalidation_reports_claims_with_string_times_and_fails_with_400() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    let response = validate(&setup, s(&tokens["access_token"])).await;
    let (status, claims) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    for key in ["nbf", "exp", "auth_time"] {
        assert!(
            claims[key].as_str().unwrap().parse::<i64>().is_ok(),
            "{key} is a numeric string: {claims}"
        );
    }
    let scopes: Vec<&str> = claims["scope"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(scopes.contains(&"twf.organisationUser"));
    assert_eq!(
        claims["twf.clusterUrl"],
        setup.sim.twinfield_cluster_url("accounting")
    );
    assert_eq!(claims["twf.organisationCode"], "TWF-DEMO");
    assert_eq!(claims["twf.organisationUserCode"], "DEMO");
    assert!(claims["twf.organisationId"].as_str().unwrap().len() == 36);
    assert!(claims["sub"].is_string());

    let response = validate(&setup, "garbage").await;
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["Message"].is_string());

    setup.sim.clock().advance(Duration::seconds(3601));
    let response = validate(&setup, s(&tokens["access_token"])).await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "expired after an hour"
    );
}

#[tokio::test]
async fn userinfo_needs_a_live_bearer_token() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    let url = setup.twinfield_connect("userinfo");
    let response = setup.get(&url, Some(s(&tokens["access_token"]))).await;
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["twf.organisationUserCode"], "DEMO");
    let response = setup.get(&url, Some("nope")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn access_token_logon_then_select_company_keep_alive_and_abandon() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    let xml = access_token_logon(&setup, s(&tokens["access_token"])).await;
    assert_eq!(between(&xml, "AccessTokenLogonResult"), "Ok");
    assert!(
        !xml.contains("nextAction"),
        "the published AccessTokenLogon answer has no nextAction: {xml}"
    );
    assert_eq!(
        between(&xml, "cluster"),
        setup.sim.twinfield_cluster_url("accounting")
    );
    assert_eq!(between(&xml, "AccessToken"), s(&tokens["access_token"]));
    assert!(xml.contains("<soap:Header><Header xmlns=\"http://www.twinfield.com/\"><SessionID>"));
    let session = between(&xml, "SessionID").to_string();
    assert_eq!(session.len(), 36);

    let header = format!("<SessionID>{session}</SessionID>");
    let url = cluster_session_url(&setup);
    let (status, xml) = soap11(
        &setup,
        &url,
        "SelectCompany",
        &header,
        "<company>NL001</company>",
    )
    .await;
    assert_eq!(
        (status, between(&xml, "SelectCompanyResult")),
        (StatusCode::OK, "Ok")
    );
    let (_, xml) = soap11(
        &setup,
        &url,
        "SelectCompany",
        &header,
        "<company>XX999</company>",
    )
    .await;
    assert_eq!(between(&xml, "SelectCompanyResult"), "Invalid");
    let (status, xml) = soap11(&setup, &url, "KeepAlive", &header, "").await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert!(xml.contains("KeepAliveResponse"));
    let (status, xml) = soap11(&setup, &url, "Abandon", &header, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(xml.contains("AbandonResponse"));
    let (status, xml) = soap11(&setup, &url, "KeepAlive", &header, "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(xml.contains("Your logon credentials are not valid anymore. Try to log on again."));
}

#[tokio::test]
async fn sessions_idle_out_and_need_a_session_header() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    let xml = access_token_logon(&setup, s(&tokens["access_token"])).await;
    let header = format!("<SessionID>{}</SessionID>", between(&xml, "SessionID"));
    let url = cluster_session_url(&setup);
    setup.sim.clock().advance(Duration::minutes(15));
    assert_eq!(
        soap11(&setup, &url, "KeepAlive", &header, "").await.0,
        StatusCode::OK
    );
    setup.sim.clock().advance(Duration::minutes(15));
    assert_eq!(
        soap11(&setup, &url, "KeepAlive", &header, "").await.0,
        StatusCode::OK,
        "KeepAlive keeps it alive"
    );
    setup.sim.clock().advance(Duration::minutes(21));
    let (status, xml) = soap11(&setup, &url, "KeepAlive", &header, "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(xml.contains("not valid anymore"));
    let (status, xml) = soap11(&setup, &url, "KeepAlive", "", "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{xml}");
}

#[tokio::test]
async fn every_logon_result_and_next_action_is_selectable() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    let token = s(&tokens["access_token"]);
    let actions = [
        NextAction::None,
        NextAction::SmsLogon,
        NextAction::ChangePassword,
    ];
    for (i, result) in LogonResult::ALL.into_iter().enumerate() {
        let behaviour = LogonBehaviour {
            result,
            next_action: actions[i % 3],
        };
        setup
            .sim
            .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(behaviour))
            .unwrap();
        let xml = access_token_logon(&setup, token).await;
        assert_eq!(between(&xml, "AccessTokenLogonResult"), result.as_str());
        // nextAction belongs to the password and OAuth 1.0 logons only.
        assert!(!xml.contains("nextAction"), "{xml}");
        let has_session = !between(&xml, "SessionID").is_empty();
        assert_eq!(has_session, result == LogonResult::Ok, "{result:?}");
    }
    // The user's own setting wins over the organisation's.
    let user = LogonBehaviour {
        result: LogonResult::Disabled,
        next_action: NextAction::None,
    };
    setup
        .sim
        .set_twinfield_logon_behaviour("TWF-DEMO", Some("DEMO"), Some(user))
        .unwrap();
    assert_eq!(
        between(
            &access_token_logon(&setup, token).await,
            "AccessTokenLogonResult"
        ),
        "Disabled"
    );
}

#[tokio::test]
async fn logon_result_is_selectable_over_the_admin_api() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    let body = serde_json::json!({
        "organisation": "TWF-DEMO",
        "behaviour": { "result": "OAuth2AuthenticationRequired", "next_action": "SMSLogon" }
    });
    let url = format!("{}/_sim/twinfield/logon-behaviour", setup.sim.base_url());
    assert_eq!(
        setup
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let xml = access_token_logon(&setup, s(&tokens["access_token"])).await;
    assert_eq!(
        between(&xml, "AccessTokenLogonResult"),
        "OAuth2AuthenticationRequired"
    );
    assert!(!xml.contains("nextAction"), "{xml}");
}

#[tokio::test]
async fn an_invalid_or_expired_token_logs_on_as_token_invalid() {
    let setup = start().await;
    let xml = access_token_logon(&setup, "not-a-token").await;
    assert_eq!(between(&xml, "AccessTokenLogonResult"), "TokenInvalid");
    let tokens = setup.twinfield_tokens().await;
    setup.sim.clock().advance(Duration::hours(2));
    let xml = access_token_logon(&setup, s(&tokens["access_token"])).await;
    assert_eq!(between(&xml, "AccessTokenLogonResult"), "TokenInvalid");
}

#[tokio::test]
async fn oauth_logon_checks_the_legacy_credentials() {
    let setup = start().await;
    add_legacy_credentials(&setup);
    let call = |ct: &'static str, at: &'static str| {
        let params = format!(
            "<clientToken>{ct}</clientToken><clientSecret>cs</clientSecret><accessToken>{at}</accessToken><accessSecret>as</accessSecret>"
        );
        let setup = &setup;
        async move {
            soap11(setup, &login_session_url(setup), "OAuthLogon", "", &params)
                .await
                .1
        }
    };
    let xml = call("ct", "at").await;
    assert_eq!(between(&xml, "OAuthLogonResult"), "Ok");
    assert_eq!(between(&xml, "SessionID").len(), 36);
    assert_eq!(setup.sim.twinfield_session_count(), 1);
    assert_eq!(
        between(&call("xx", "at").await, "OAuthLogonResult"),
        "ClientInvalid"
    );
    assert_eq!(
        between(&call("ct", "xx").await, "OAuthLogonResult"),
        "Invalid"
    );
    let moved = LogonBehaviour {
        result: LogonResult::OAuth2AuthenticationRequired,
        next_action: NextAction::None,
    };
    setup
        .sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(moved))
        .unwrap();
    assert_eq!(
        between(&call("ct", "at").await, "OAuthLogonResult"),
        "OAuth2AuthenticationRequired"
    );
}

#[tokio::test]
async fn an_invalid_oauth2_access_token_header_gets_fault_354() {
    let setup = start().await;
    let header = "<AccessToken>expired-or-garbage</AccessToken><CompanyCode>NL001</CompanyCode>";
    let (status, xml) = soap11(
        &setup,
        &cluster_session_url(&setup),
        "SelectCompany",
        header,
        "<company>NL001</company>",
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(between(&xml, "faultcode"), "soap:Client");
    assert_eq!(
        between(&xml, "faultstring"),
        "Access denied. Token invalid."
    );
    assert_eq!(between(&xml, "code"), "354");

    let tokens = setup.twinfield_tokens().await;
    let header = format!("<AccessToken>{}</AccessToken>", s(&tokens["access_token"]));
    let (status, xml) = soap11(
        &setup,
        &cluster_session_url(&setup),
        "SelectCompany",
        &header,
        "<company>NL002</company>",
    )
    .await;
    assert_eq!(
        (status, between(&xml, "SelectCompanyResult")),
        (StatusCode::OK, "Ok")
    );
}

#[tokio::test]
async fn soap12_is_answered_in_soap12() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    let body = envelope(
        SOAP12,
        "",
        &format!("<AccessTokenLogon xmlns=\"http://www.twinfield.com/\"><accessToken>{}</accessToken></AccessTokenLogon>", s(&tokens["access_token"])),
    );
    let url = login_session_url(&setup);
    let response = post_soap(
        &setup,
        &url,
        "application/soap+xml; charset=utf-8",
        None,
        body,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/soap+xml"));
    let xml = response.text().await.unwrap();
    assert!(xml.contains(SOAP12));
    assert_eq!(between(&xml, "AccessTokenLogonResult"), "Ok");
}

#[tokio::test]
async fn a_wrong_soap_action_is_a_client_fault() {
    let setup = start().await;
    let body = envelope(
        SOAP11,
        "",
        "<KeepAlive xmlns=\"http://www.twinfield.com/\"/>",
    );
    let url = login_session_url(&setup);
    let abandon = Some("\"http://www.twinfield.com/Abandon\"");
    let response = post_soap(&setup, &url, "text/xml; charset=utf-8", abandon, body).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("did not recognize the value of HTTP Header SOAPAction"));
}

/// The two unpublished ways AccessTokenLogon may refuse a token, with the fault's language and detail
/// layout as knobs.
#[tokio::test]
async fn an_invalid_token_logon_can_be_a_result_or_a_localised_fault() {
    use provider_simulators::{FaultLanguage, InvalidTokenLogon};
    let setup = start().await;
    setup.sim.update_knobs(|k| {
        k.twinfield_invalid_token_logon = InvalidTokenLogon::Fault;
        k.twinfield_fault_language = FaultLanguage::Nl;
        k.twinfield_token_fault_detail = r#"<Error code="354"/>"#.into();
    });
    let (status, xml) = soap11(
        &setup,
        &login_session_url(&setup),
        "AccessTokenLogon",
        "",
        "<accessToken>not-a-token</accessToken>",
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{xml}");
    assert!(
        xml.contains("Toegang geweigerd") && xml.contains(r#"code="354""#),
        "{xml}"
    );
    setup
        .sim
        .update_knobs(|k| k.twinfield_invalid_token_logon = InvalidTokenLogon::Result);
    let xml = access_token_logon(&setup, "not-a-token").await;
    assert_eq!(between(&xml, "AccessTokenLogonResult"), "TokenInvalid");
}

#[tokio::test]
async fn the_reported_cluster_can_be_overridden_and_amr_is_a_string() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    setup.sim.update_knobs(|k| {
        k.twinfield_cluster_url_override = Some("https://evil.example.com".into())
    });
    let response = validate(&setup, s(&tokens["access_token"])).await;
    let (status, claims) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claims["twf.clusterUrl"], "https://evil.example.com");
    assert_eq!(claims["amr"], "external", "as Twinfield's example shows it");
    let xml = access_token_logon(&setup, s(&tokens["access_token"])).await;
    assert_eq!(between(&xml, "cluster"), "https://evil.example.com");
}

#[tokio::test]
async fn oauth_logon_answers_carry_next_action() {
    let setup = start().await;
    add_legacy_credentials(&setup);
    let sms = LogonBehaviour {
        result: LogonResult::Ok,
        next_action: NextAction::SmsLogon,
    };
    setup
        .sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(sms))
        .unwrap();
    let params = "<clientToken>ct</clientToken><clientSecret>cs</clientSecret><accessToken>at</accessToken><accessSecret>as</accessSecret>";
    let (_, xml) = soap11(&setup, &login_session_url(&setup), "OAuthLogon", "", params).await;
    assert_eq!(between(&xml, "nextAction"), "SMSLogon");
}
