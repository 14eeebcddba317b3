//! Twinfield's session service: every LogonResult, session faults and outages, and the legacy OAuth
//! logon and its retirement.

use super::*;

#[tokio::test]
async fn twinfield_every_logon_result_maps_to_a_verdict() {
    let env = env().await;
    let client = env.twinfield();
    let tokens = env.connect(&client).await.tokens;
    let sessions = env.providers.twinfield_sessions().unwrap();
    let expected = |r: LogonResult| match r {
        LogonResult::Ok => LogonVerdict::Ok,
        LogonResult::Blocked | LogonResult::Failed => LogonVerdict::RetryLater,
        LogonResult::TokenInvalid => LogonVerdict::RefreshAccessToken,
        LogonResult::Invalid => LogonVerdict::Reconnect(ReconnectKind::GrantRevoked),
        LogonResult::ClientInvalid => LogonVerdict::Reconnect(ReconnectKind::ClientMisconfigured),
        LogonResult::OAuth2AuthenticationRequired => {
            LogonVerdict::Reconnect(ReconnectKind::LegacyCredentialsRetired)
        }
        LogonResult::Untrusted | LogonResult::NoAvailableCompanies => LogonVerdict::Refused,
        _ => LogonVerdict::Disabled,
    };
    for wire in sim::LogonResult::ALL {
        let behaviour = sim::LogonBehaviour {
            result: wire,
            next_action: sim::NextAction::None,
        };
        env.sim
            .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(behaviour))
            .unwrap();
        let logon = sessions
            .access_token_logon(&tokens.access_token)
            .await
            .unwrap();
        assert_eq!(logon.result.as_str(), wire.as_str());
        assert_eq!(logon.verdict(), expected(logon.result), "{wire:?}");
        assert_eq!(logon.session().is_some(), logon.result == LogonResult::Ok);
    }
    // AccessTokenLogon's answer has no nextAction: a user's pending SMS log-on does not show there.
    let sms = sim::LogonBehaviour {
        result: sim::LogonResult::Ok,
        next_action: sim::NextAction::SmsLogon,
    };
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", Some("DEMO"), Some(sms))
        .unwrap();
    let logon = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap();
    assert_eq!(logon.verdict(), LogonVerdict::Ok);

    // An unknown token is refused either way the real service may do it: a TokenInvalid result or
    // the 354 fault (unpublished, so both), in English or Dutch.
    let bogus = broker_core::secret::AccessToken::new("not-a-real-token");
    let logon = sessions.access_token_logon(&bogus).await.unwrap();
    assert_eq!(logon.verdict(), LogonVerdict::RefreshAccessToken);
    env.sim.update_knobs(|k| {
        k.twinfield_invalid_token_logon = sim::InvalidTokenLogon::Fault;
        k.twinfield_fault_language = sim::FaultLanguage::Nl;
    });
    let e = sessions.access_token_logon(&bogus).await.unwrap_err();
    assert!(
        matches!(e, SessionError::AccessTokenInvalid { .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn twinfield_session_faults_and_outages_are_classified() {
    let env = env().await;
    let client = env.twinfield();
    let tokens = env.connect(&client).await.tokens;
    let sessions = env.providers.twinfield_sessions().unwrap();
    let access = tokens.access_token.expose();
    // Twinfield's answer to an invalid token on a SOAP call: soap:Client, code 354. Echoing the token in
    // the fault text must not put it into the error.
    let fault = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><soap:Fault>\
         <faultcode>soap:Client</faultcode><faultstring>Access denied. Token invalid. ({access})</faultstring><detail><code>354</code></detail>\
         </soap:Fault></soap:Body></soap:Envelope>"
    );
    let route = "twinfield.session";
    env.sim.inject_fault(FaultRule::next(
        route,
        1,
        FaultAction::Status {
            status: 500,
            body: fault,
            content_type: None,
        },
    ));
    let e = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SessionError::AccessTokenInvalid { .. }),
        "{e:?}"
    );
    assert_clean(&e, &[access]);

    env.sim.inject_fault(FaultRule::next(
        route,
        1,
        FaultAction::TooManyRequests {
            retry_after_secs: 7,
            body: None,
        },
    ));
    let e = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        SessionError::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(7))
        }
    );

    let down = FaultAction::Status {
        status: 503,
        body: "Service Unavailable".into(),
        content_type: None,
    };
    env.sim.inject_fault(FaultRule::next(route, 1, down));
    assert!(matches!(
        sessions.access_token_logon(&tokens.access_token).await,
        Err(SessionError::Unavailable { .. })
    ));

    env.sim
        .inject_fault(FaultRule::next(route, 1, FaultAction::Drop));
    let e = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");

    let junk = FaultAction::Status {
        status: 200,
        body: "<soap:Envelope".into(),
        content_type: Some("text/xml".into()),
    };
    env.sim.inject_fault(FaultRule::next(route, 1, junk));
    assert!(matches!(
        sessions.access_token_logon(&tokens.access_token).await,
        Err(SessionError::Malformed(_))
    ));

    // The real thing still works afterwards.
    let session = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap()
        .session()
        .unwrap();
    let cluster_down = FaultAction::Status {
        status: 500,
        body: "<html>oops</html>".into(),
        content_type: None,
    };
    env.sim.inject_fault(FaultRule::next(
        "twinfield.cluster_session",
        1,
        cluster_down,
    ));
    assert!(matches!(
        sessions.select_company(&session, "NL001").await,
        Err(SessionError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn twinfield_legacy_oauth_logon_and_its_retirement() {
    let env = env().await;
    env.sim
        .add_twinfield_legacy_credentials(sim::LegacyCredentials {
            organisation: "TWF-DEMO".into(),
            user: "DEMO".into(),
            client_token: "consumer-key".into(),
            client_secret: "consumer-secret-value".into(),
            access_token: "legacy-access-token".into(),
            access_secret: "legacy-access-secret".into(),
        })
        .unwrap();
    let sessions = env.providers.twinfield_sessions().unwrap();
    let consumer = LegacyConsumer {
        client_token: "consumer-key".into(),
        client_secret: ClientSecret::new("consumer-secret-value"),
    };
    let credentials = LegacyTwinfieldCredentials {
        access_token: LegacyAccessToken::new("legacy-access-token"),
        access_secret: LegacyAccessSecret::new("legacy-access-secret"),
    };
    let logon = sessions.oauth_logon(&consumer, &credentials).await.unwrap();
    assert_eq!(logon.verdict(), LogonVerdict::Ok);
    let sms = sim::LogonBehaviour {
        result: sim::LogonResult::Ok,
        next_action: sim::NextAction::SmsLogon,
    };
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", Some("DEMO"), Some(sms))
        .unwrap();
    let pending = sessions.oauth_logon(&consumer, &credentials).await.unwrap();
    assert_eq!(pending.verdict(), LogonVerdict::PersonMustAct);
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", Some("DEMO"), None)
        .unwrap();
    sessions
        .select_company(&logon.session().unwrap(), "NL002")
        .await
        .unwrap();

    let wrong = LegacyConsumer {
        client_token: "consumer-key".into(),
        client_secret: ClientSecret::new("wrong-secret"),
    };
    let logon = sessions.oauth_logon(&wrong, &credentials).await.unwrap();
    assert_eq!(
        logon.verdict(),
        LogonVerdict::Reconnect(ReconnectKind::ClientMisconfigured)
    );

    let retired = sim::LogonBehaviour {
        result: sim::LogonResult::OAuth2AuthenticationRequired,
        next_action: sim::NextAction::None,
    };
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(retired))
        .unwrap();
    let logon = sessions.oauth_logon(&consumer, &credentials).await.unwrap();
    assert_eq!(
        logon.verdict(),
        LogonVerdict::Reconnect(ReconnectKind::LegacyCredentialsRetired)
    );
}
