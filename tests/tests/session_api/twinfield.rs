//! Twinfield sessions for both credential kinds and every logon result, on both backends.

use super::*;

broker_tests::on_both_backends!(
    twinfield_sessions_for_both_credential_kinds_and_every_logon_result,
);

async fn twinfield_sessions_for_both_credential_kinds_and_every_logon_result(backend: Backend) {
    let env = env(backend).await;
    // OAuth 2.0: AccessTokenLogon.
    let (id, _) = env.connected("tw").await;
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/twinfield-session"),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["logon"], "oauth2");
    assert!(!reply.json["session_id"].as_str().unwrap().is_empty());
    assert!(reply.json["cluster_url"]
        .as_str()
        .unwrap()
        .contains("/twinfield/clusters/accounting"));

    // OAuth 1.0-era credentials: OAuthLogon with the app's client id and secret as consumer.
    env.sim
        .add_twinfield_legacy_credentials(sim::LegacyCredentials {
            organisation: "TWF-DEMO".into(),
            user: "DEMO".into(),
            client_token: TW_ID.into(),
            client_secret: TW_SECRET.into(),
            access_token: "legacy-access-token".into(),
            access_secret: "legacy-access-secret".into(),
        })
        .unwrap();
    let legacy = env.create("tw").await;
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{legacy}/credentials"),
            Some(json!({"legacy_access_token": "legacy-access-token", "legacy_access_secret": "legacy-access-secret"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{legacy}/twinfield-session"),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["logon"], "legacy");
    // nextAction comes only with OAuthLogon (AccessTokenLogon's answer has none): a pending SMS
    // log-on or password change is named, and the connection stays as it is.
    for action in [sim::NextAction::SmsLogon, sim::NextAction::ChangePassword] {
        let pending = sim::LogonBehaviour {
            result: sim::LogonResult::Ok,
            next_action: action,
        };
        env.sim
            .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(pending))
            .unwrap();
        let reply = env
            .call(
                "POST",
                &format!("/v1/connections/{legacy}/twinfield-session?company=NL002"),
                None,
            )
            .await;
        reply.problem(ProblemKind::TwinfieldLogonRefused);
        assert!(reply.json["detail"]
            .as_str()
            .unwrap()
            .contains(action.as_str()));
        assert_eq!(env.status_of(&legacy).await, "connected");
    }
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, None)
        .unwrap();
    env.session(&legacy)
        .await
        .problem(ProblemKind::NotApplicable);
    // Legacy credentials cannot be refreshed: Twinfield refusing their token needs a person.
    let refused = sim::LogonBehaviour {
        result: sim::LogonResult::TokenInvalid,
        next_action: sim::NextAction::None,
    };
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(refused))
        .unwrap();
    env.call(
        "POST",
        &format!("/v1/connections/{legacy}/twinfield-session?company=NL001"),
        None,
    )
    .await
    .problem(ProblemKind::ReconnectRequired);
    assert_eq!(env.status_of(&legacy).await, "reconnect_required");
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, None)
        .unwrap();
    // An Exact connection has no SOAP session.
    let (exact, _) = env.connected("ex").await;
    env.call(
        "POST",
        &format!("/v1/connections/{exact}/twinfield-session"),
        None,
    )
    .await
    .problem(ProblemKind::NotApplicable);

    // Every result value, each on a fresh connection.
    use sim::LogonResult as R;
    let cases: Vec<(R, sim::NextAction, Option<ProblemKind>, &str)> = vec![
        (R::Ok, sim::NextAction::None, None, "connected"),
        // The token is refreshed once and the logon retried; Twinfield (here, for the whole
        // organisation) still refusing a fresh token does not make the connection need a person.
        (
            R::TokenInvalid,
            sim::NextAction::None,
            Some(ProblemKind::ProviderError),
            "connected",
        ),
        (
            R::Invalid,
            sim::NextAction::None,
            Some(ProblemKind::ReconnectRequired),
            "reconnect_required",
        ),
        (
            R::OAuth2AuthenticationRequired,
            sim::NextAction::None,
            Some(ProblemKind::ReconnectRequired),
            "reconnect_required",
        ),
        // "Log-on is blocked because of system maintenance": try again later, change nothing.
        (
            R::Blocked,
            sim::NextAction::None,
            Some(ProblemKind::TemporarilyUnavailable),
            "connected",
        ),
        (
            R::Disabled,
            sim::NextAction::None,
            Some(ProblemKind::ConnectionDisabled),
            "disabled",
        ),
        (
            R::Deleted,
            sim::NextAction::None,
            Some(ProblemKind::ConnectionDisabled),
            "disabled",
        ),
        (
            R::OrganisationInactive,
            sim::NextAction::None,
            Some(ProblemKind::ConnectionDisabled),
            "disabled",
        ),
        (
            R::NoAvailableCompanies,
            sim::NextAction::None,
            Some(ProblemKind::TwinfieldLogonRefused),
            "connected",
        ),
        (
            R::ClientInvalid,
            sim::NextAction::None,
            Some(ProblemKind::ReconnectRequired),
            "reconnect_required",
        ),
        (
            R::Untrusted,
            sim::NextAction::None,
            Some(ProblemKind::TwinfieldLogonRefused),
            "connected",
        ),
        (
            R::Failed,
            sim::NextAction::None,
            Some(ProblemKind::TemporarilyUnavailable),
            "connected",
        ),
    ];
    assert_eq!(
        cases
            .iter()
            .filter(|c| c.1 == sim::NextAction::None)
            .count(),
        R::ALL.len()
    );
    for (result, next_action, expected, status) in cases {
        let (id, _) = env.connected("tw").await;
        env.sim
            .set_twinfield_logon_behaviour(
                "TWF-DEMO",
                None,
                Some(sim::LogonBehaviour {
                    result,
                    next_action,
                }),
            )
            .unwrap();
        let reply = env
            .call(
                "POST",
                &format!("/v1/connections/{id}/twinfield-session"),
                None,
            )
            .await;
        match expected {
            None => assert_eq!(reply.status, 200, "{result:?}: {}", reply.text),
            Some(kind) => reply.problem(kind),
        }
        if matches!(
            result,
            R::NoAvailableCompanies | R::ClientInvalid | R::Untrusted
        ) {
            assert!(
                reply.json["detail"]
                    .as_str()
                    .unwrap()
                    .contains(result.as_str()),
                "the cause is named: {}",
                reply.text
            );
        }
        if matches!(result, R::Blocked | R::Failed) {
            assert!(
                reply.retry_after.is_some(),
                "{result:?}: try again later, with Retry-After"
            );
        }
        assert_eq!(
            env.status_of(&id).await,
            status,
            "{result:?}/{next_action:?}"
        );
        if status != "connected" {
            // The change is stored with its transition, which the notifier acts on.
            let connection_id = ConnectionId::parse(id.as_str()).unwrap();
            let transitions = env
                .ctx
                .backend
                .store
                .list_transitions(&connection_id, PageRequest::first(10))
                .await
                .unwrap()
                .items;
            let last = transitions.last().unwrap();
            assert!(last.needs_notification(), "{last:?}");
            assert!(matches!(
                last.to,
                StatusKind::ReconnectRequired | StatusKind::Disabled
            ));
            env.session(&id).await.problem(expected.unwrap());
        }
        env.sim
            .set_twinfield_logon_behaviour("TWF-DEMO", None, None)
            .unwrap();
    }
}
