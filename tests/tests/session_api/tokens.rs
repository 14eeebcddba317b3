//! Tokens handed out and refreshed: every provider, a code exchanged at once, registered pairs,
//! a warm instance, and no token anywhere but in the session answer.

use super::*;

broker_tests::on_both_backends!(
    every_provider_hands_out_a_valid_token_and_refreshes_it_once_after_expiry,
    an_authorization_code_is_exchanged_at_once_and_an_expired_one_is_refused,
    a_warm_instance_answers_repeated_sessions_without_reading_the_vault,
    no_token_leaves_except_in_the_session_answer,
    registered_pairs_are_refreshed_once_when_refused_and_must_reach_the_same_organisation,
);

async fn every_provider_hands_out_a_valid_token_and_refreshes_it_once_after_expiry(
    backend: Backend,
) {
    let env = env(backend).await;
    for (app, provider, lifetime) in [
        ("tw", sim::Provider::Twinfield, 3600),
        ("ex", sim::Provider::Exact, 600),
        ("acu", sim::Provider::Acumatica, 3600),
    ] {
        let (id, minted) = env.connected(app).await;
        let token_calls = env.sim.token_calls(provider);

        let first = env.session(&id).await;
        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(first.json["access_token"], minted.access_token.as_str());
        assert_eq!(first.json["token_type"], "Bearer");
        assert!(env
            .sim
            .is_access_token_valid(first.json["access_token"].as_str().unwrap()));
        let context = &first.json["context"];
        match app {
            "tw" => {
                assert_eq!(context["provider"], "twinfield");
                assert_eq!(context["organisation_code"], "TWF-DEMO");
                assert!(context["cluster_url"]
                    .as_str()
                    .unwrap()
                    .contains("/twinfield/clusters/accounting"));
            }
            "ex" => {
                assert_eq!(context["provider"], "exact_online");
                assert_eq!(context["division"], 123456);
                assert!(context["base_url"].as_str().unwrap().contains("/exact/nl"));
            }
            _ => {
                assert_eq!(context["provider"], "acumatica");
                assert_eq!(context["tenant"], "Company");
                assert!(context["instance_url"]
                    .as_str()
                    .unwrap()
                    .contains("/acumatica/demo"));
            }
        }
        assert_eq!(
            env.sim.token_calls(provider),
            token_calls,
            "{app}: a valid pre-authenticated pair is checked without spending its refresh token"
        );

        // Past expiry: the next session refreshes exactly once and hands out the new token.
        env.advance(lifetime + 5);
        assert!(!env.sim.is_access_token_valid(&minted.access_token));
        let second = env.session(&id).await;
        assert_eq!(second.status, 200, "{app}: {}", second.text);
        let new_token = second.json["access_token"].as_str().unwrap().to_string();
        assert_ne!(new_token, minted.access_token);
        assert!(env.sim.is_access_token_valid(&new_token), "{app}");
        assert_eq!(env.sim.token_calls(provider), token_calls + 1, "{app}");
        assert!(second.json["expires_in"].as_i64().unwrap() > 60);

        // And while that one is valid, nothing more is refreshed.
        let third = env.session(&id).await;
        assert_eq!(third.json["access_token"], new_token.as_str());
        assert_eq!(env.sim.token_calls(provider), token_calls + 1, "{app}");
    }

    // A pair registered without its expiry (or after it) is refreshed exactly once, and the new pair kept.
    let id = env.create("ex").await;
    let minted = env.mint("ex");
    env.advance(601);
    let calls = env.sim.token_calls(sim::Provider::Exact);
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(
                json!({"access_token": minted.access_token, "refresh_token": minted.refresh_token}),
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(env.sim.token_calls(sim::Provider::Exact), calls + 1);
    assert_eq!(env.sim.presentations_of(&minted.refresh_token), 1);
    let session = env.session(&id).await;
    assert_eq!(session.status, 200, "{}", session.text);
    assert!(env
        .sim
        .is_access_token_valid(session.json["access_token"].as_str().unwrap()));
    assert_eq!(env.sim.token_calls(sim::Provider::Exact), calls + 1);
}

async fn an_authorization_code_is_exchanged_at_once_and_an_expired_one_is_refused(
    backend: Backend,
) {
    let env = env(backend).await;
    for app in ["ex", "tw", "acu"] {
        let id = env.create(app).await;
        let (code, verifier) = env.code_and_verifier(app).await;
        assert_eq!(verifier.is_some(), app == "acu", "Acumatica uses PKCE");
        let mut body = json!({"authorization_code": code, "redirect_uri": REDIRECT});
        if let Some(verifier) = verifier {
            body["code_verifier"] = json!(verifier);
        }
        let reply = env
            .call(
                "POST",
                &format!("/v1/connections/{id}/credentials"),
                Some(body),
            )
            .await;
        assert_eq!(reply.status, 200, "{app}: {}", reply.text);
        assert_eq!(reply.json["status"], "connected");
        let session = env.session(&id).await;
        assert_eq!(session.status, 200, "{}", session.text);
        assert!(env
            .sim
            .is_access_token_valid(session.json["access_token"].as_str().unwrap()));
    }

    // Exact's codes live three minutes.
    let id = env.create("ex").await;
    let code = env.code_for("ex").await;
    env.advance(200);
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({"authorization_code": code})),
        )
        .await;
    reply.problem(ProblemKind::CredentialsRejected);
    assert!(
        reply.json["detail"].as_str().unwrap().contains("code"),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains(&code));
    assert_eq!(env.status_of(&id).await, "not_connected");
}

async fn a_warm_instance_answers_repeated_sessions_without_reading_the_vault(backend: Backend) {
    let env = env(backend).await;
    let (id, minted) = env.connected("acu").await;
    let first = env.session(&id).await;
    assert_eq!(first.status, 200);
    let reads = env.vault.reads();
    for _ in 0..10 {
        let again = env.session(&id).await;
        assert_eq!(again.json["access_token"], minted.access_token.as_str());
    }
    assert_eq!(
        env.vault.reads(),
        reads,
        "a still-valid token is served from memory"
    );
    // After a refresh the pointer moves: the next request reads the new version once.
    env.advance(3605);
    let refreshed = env.session(&id).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    let after = env.vault.reads();
    for _ in 0..5 {
        env.session(&id).await;
    }
    assert_eq!(env.vault.reads(), after);

    // Concurrent requests for an expired Exact token: one refresh (single flight), one new token.
    let (id, minted) = env.connected("ex").await;
    env.advance(605);
    let calls = env.sim.token_calls(sim::Provider::Exact);
    let replies = futures_join_all((0..8).map(|_| env.session(&id)).collect::<Vec<_>>()).await;
    let tokens: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["access_token"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "every caller gets the one new token");
    assert!(!tokens.contains(&minted.access_token));
    assert_eq!(env.sim.token_calls(sim::Provider::Exact), calls + 1);
    assert_eq!(env.sim.presentations_of(&minted.refresh_token), 1);
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.unwrap()).collect()
}

/// One process-wide capture of every log line at `debug` (tracing allows one global subscriber).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let make = move || SharedWriter(writer.clone());
        let subscriber = broker_core::telemetry::subscriber_for(make, "debug");
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn no_token_leaves_except_in_the_session_answer(backend: Backend) {
    let logs = captured_logs();
    let env = env(backend).await;
    let mut secrets: Vec<String> = vec![
        env.key.clone(),
        env.session_only_key.clone(),
        env.other_key.clone(),
        TW_SECRET.into(),
        EX_SECRET.into(),
        ACU_SECRET.into(),
        "legacy-access-token".into(),
        "legacy-access-secret".into(),
    ];
    let mut bodies: Vec<String> = Vec::new();
    let mut handed_out: Vec<String> = Vec::new();

    for app in ["tw", "ex", "acu"] {
        let (id, minted) = env.connected(app).await;
        secrets.push(minted.access_token.clone());
        secrets.push(minted.refresh_token.clone());
        let session = env.session(&id).await;
        assert_eq!(session.status, 200);
        handed_out.push(session.json["access_token"].as_str().unwrap().into());
        env.advance(3605);
        let session = env.session(&id).await;
        assert_eq!(session.status, 200, "{}", session.text);
        handed_out.push(session.json["access_token"].as_str().unwrap().into());
        bodies.push(
            env.call("GET", &format!("/v1/connections/{id}"), None)
                .await
                .text,
        );
        bodies.push(env.call("GET", "/v1/connections", None).await.text);
        if app == "tw" {
            let soap = env
                .call(
                    "POST",
                    &format!("/v1/connections/{id}/twinfield-session"),
                    None,
                )
                .await;
            assert_eq!(soap.status, 200, "{}", soap.text);
            secrets.push(soap.json["session_id"].as_str().unwrap().into());
            env.sim
                .set_twinfield_logon_behaviour(
                    "TWF-DEMO",
                    None,
                    Some(sim::LogonBehaviour {
                        result: sim::LogonResult::TokenInvalid,
                        next_action: sim::NextAction::None,
                    }),
                )
                .unwrap();
            // Another company needs its own logon (the first session is pooled), which is refused.
            bodies.push(
                env.call(
                    "POST",
                    &format!("/v1/connections/{id}/twinfield-session?company=NL001"),
                    None,
                )
                .await
                .text,
            );
            bodies.push(env.session(&id).await.text);
            env.sim
                .set_twinfield_logon_behaviour("TWF-DEMO", None, None)
                .unwrap();
        }
    }
    // Failures that involve tokens: a rejected pair, an expired code, a wrong key.
    let id = env.create("ex").await;
    bodies.push(
        env.call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({"access_token": "rejected-access-value", "refresh_token": "rejected-refresh-value"})),
        )
        .await
        .text,
    );
    secrets.push("rejected-access-value".into());
    secrets.push("rejected-refresh-value".into());
    let code = env.code_for("ex").await;
    env.advance(200);
    bodies.push(
        env.call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({"authorization_code": code})),
        )
        .await
        .text,
    );
    secrets.push(code);
    bodies.push(
        env.call_raw(
            "POST",
            &format!("/v1/connections/{id}/session"),
            Some(&format!("{}0", env.key)),
            None,
        )
        .await
        .text,
    );
    secrets.extend(handed_out.iter().cloned());

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("credential handed out") && logs.contains(&env.key_prefix),
        "hand-outs are recorded with the key prefix"
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a log line shows a secret");
        for body in &bodies {
            assert!(
                !body.contains(secret.as_str()),
                "a response shows a secret: {body}"
            );
        }
    }
}

async fn registered_pairs_are_refreshed_once_when_refused_and_must_reach_the_same_organisation(
    backend: Backend,
) {
    let env = env(backend).await;
    // The access token is refused (revoked elsewhere, say) though its expiry looks fine: the
    // refresh token is spent exactly once and the new pair kept.
    let id = env.create("acu").await;
    let minted = env.mint("acu");
    env.advance(10);
    let calls = env.sim.token_calls(sim::Provider::Acumatica);
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({
                "access_token": "not-the-access-token",
                "refresh_token": minted.refresh_token,
                "access_token_expires_at": minted.access_expires_at,
            })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(env.sim.token_calls(sim::Provider::Acumatica), calls + 1);
    assert_eq!(env.sim.presentations_of(&minted.refresh_token), 1);
    let session = env.session(&id).await;
    assert_eq!(session.status, 200, "{}", session.text);
    assert_ne!(session.json["access_token"], minted.access_token.as_str());
    assert!(env
        .sim
        .is_access_token_valid(session.json["access_token"].as_str().unwrap()));

    // Credentials of another Exact user are refused on a connection that has one.
    env.sim.add_exact_user(sim::ExactUser {
        user_name: "other.user".into(),
        full_name: "Other User".into(),
        current_division: 777777,
        divisions: vec![777777],
    });
    let (id, _) = env.connected("ex").await;
    let other = env
        .sim
        .mint_tokens(MintRequest {
            provider: sim::Provider::Exact,
            location: "nl".into(),
            client_id: EX_ID.into(),
            user: "other.user".into(),
            scope: String::new(),
        })
        .unwrap();
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({
                "access_token": other.access_token,
                "refresh_token": other.refresh_token,
                "access_token_expires_at": other.access_expires_at,
            })),
        )
        .await;
    reply.problem(ProblemKind::ValidationFailed);
    assert!(reply.text.contains("Other User"), "{}", reply.text);
    let session = env.session(&id).await;
    assert_eq!(session.json["context"]["division"], 123456);
}
