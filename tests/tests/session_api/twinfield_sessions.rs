//! Twinfield sessions: reuse, refresh on a rejected token, every fault shape. Backend-independent, so
//! on the embedded store only.

use super::*;

mod twinfield_embedded {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn twinfield_sessions_are_reused_while_alive() {
        super::twinfield_sessions_are_reused_while_alive(20 * 60).await;
    }

    /// The idle time is unpublished (20 minutes assumed): a shorter one must not make the broker
    /// hand out a dead session either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn twinfield_sessions_are_reused_while_alive_with_a_short_idle_time() {
        super::twinfield_sessions_are_reused_while_alive(5 * 60).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_rejected_twinfield_token_is_refreshed_once_in_every_fault_shape() {
        super::a_rejected_twinfield_token_is_refreshed_once_in_every_fault_shape().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_rejected_twinfield_session_is_replaced_at_once() {
        super::a_rejected_twinfield_session_is_replaced_at_once().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rejections_of_one_twinfield_token_refresh_it_once() {
        super::concurrent_rejections_of_one_twinfield_token_refresh_it_once().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn only_a_failing_refresh_makes_a_rejected_twinfield_token_need_a_person() {
        super::only_a_failing_refresh_makes_a_rejected_twinfield_token_need_a_person().await;
    }
}

impl Env {
    async fn twinfield_session(&self, id: &str, company: Option<&str>) -> Reply {
        let query = company.map(|c| format!("?company={c}")).unwrap_or_default();
        self.call(
            "POST",
            &format!("/v1/connections/{id}/twinfield-session{query}"),
            None,
        )
        .await
    }
}

async fn twinfield_sessions_are_reused_while_alive(sim_idle_secs: i64) {
    let env = env(broker_tests::backends::embedded()).await;
    // The short variant also answers in Dutch: a gone session is known without reading its words.
    env.sim.update_knobs(|k| {
        k.twinfield_session_idle_timeout_secs = sim_idle_secs;
        if sim_idle_secs < 10 * 60 {
            k.twinfield_fault_language = sim::FaultLanguage::Nl;
        }
    });
    let (id, _) = env.connected("tw").await;
    let logons = || env.sim.calls("twinfield.session");
    let cluster_calls = || env.sim.calls("twinfield.cluster_session");
    let before = logons();

    // A burst, concurrent and sequential: one logon.
    let burst = futures_join(&env, &id).await;
    let first = burst[0].clone();
    assert!(burst.iter().all(|s| *s == first), "{burst:?}");
    for _ in 0..5 {
        let reply = env.twinfield_session(&id, None).await;
        assert_eq!(reply.json["session_id"], first.as_str(), "{}", reply.text);
    }
    assert_eq!(logons() - before, 1, "one logon for the whole burst");
    let reply = env.twinfield_session(&id, None).await;
    assert_eq!(
        reply.json["idle_timeout_secs"], 1200,
        "the catalogue's stated idle time"
    );
    let idle_expires_at: chrono::DateTime<Utc> =
        serde_json::from_value(reply.json["idle_expires_at"].clone()).unwrap();
    assert!(idle_expires_at > env.sim.clock().now() + Duration::minutes(19));

    // A minute later: checked with KeepAlive (the session is alive either way), not a new logon.
    env.advance(60);
    let kept = cluster_calls();
    let reply = env.twinfield_session(&id, None).await;
    assert_eq!(reply.json["session_id"], first.as_str(), "{}", reply.text);
    assert_eq!(cluster_calls() - kept, 1, "one KeepAlive");
    assert_eq!(logons() - before, 1);

    // Six minutes idle: gone at Twinfield with a five-minute idle time, alive with twenty.
    env.advance(6 * 60);
    let reply = env.twinfield_session(&id, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let after_six = reply.json["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        after_six == first,
        sim_idle_secs > 6 * 60,
        "{sim_idle_secs}"
    );
    // Whatever the broker hands out is alive at Twinfield.
    assert!(env.sim.twinfield_session_count() >= 1);

    // Long idle: a new session, never an error.
    env.advance(sim_idle_secs + 60);
    let reply = env.twinfield_session(&id, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_ne!(reply.json["session_id"], after_six.as_str());

    // A company is its own session, selected once; an unknown one is a clear refusal.
    let with_company = env.twinfield_session(&id, Some("NL001")).await;
    assert_eq!(
        with_company.json["company"], "NL001",
        "{}",
        with_company.text
    );
    assert_ne!(with_company.json["session_id"], reply.json["session_id"]);
    let again = env.twinfield_session(&id, Some("NL001")).await;
    assert_eq!(again.json["session_id"], with_company.json["session_id"]);
    env.twinfield_session(&id, Some("NOPE"))
        .await
        .problem(ProblemKind::ValidationFailed);
    env.twinfield_session(&id, Some("a%20b"))
        .await
        .problem(ProblemKind::ValidationFailed);
    assert_eq!(env.status_of(&id).await, "connected");
}

/// An integration that finds its session dropped (here: abandoned behind the broker's back) says so,
/// and gets a new one at once instead of the pooled one until the next KeepAlive check.
async fn a_rejected_twinfield_session_is_replaced_at_once() {
    let env = env(broker_tests::backends::embedded()).await;
    let (id, _) = env.connected("tw").await;
    let first = env.twinfield_session(&id, None).await;
    let session = broker_core::providers::TwinfieldSession {
        session_id: broker_core::secret::SessionId::new(first.json["session_id"].as_str().unwrap()),
        cluster_url: ServiceUrl::parse(first.json["cluster_url"].as_str().unwrap()).unwrap(),
    };
    let client = env.ctx.providers.twinfield_sessions().unwrap();
    client.abandon(&session).await.unwrap();
    // Within the recheck interval the pool trusts what it touched a moment ago.
    let stale = env.twinfield_session(&id, None).await;
    assert_eq!(stale.json["session_id"], first.json["session_id"]);
    let path = format!("/v1/connections/{id}/twinfield-session");
    let body = json!({ "rejected_session_id": first.json["session_id"] });
    let replaced = env.call("POST", &path, Some(body.clone())).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_ne!(replaced.json["session_id"], first.json["session_id"]);
    client
        .keep_alive(&broker_core::providers::TwinfieldSession {
            session_id: broker_core::secret::SessionId::new(
                replaced.json["session_id"].as_str().unwrap(),
            ),
            cluster_url: session.cluster_url.clone(),
        })
        .await
        .expect("the new session is alive");
    // Saying it again about the old one changes nothing: it was replaced already.
    let again = env.call("POST", &path, Some(body)).await;
    assert_eq!(again.json["session_id"], replaced.json["session_id"]);
    env.call("POST", &path, Some(json!({"session_id": "x"})))
        .await
        .problem(ProblemKind::InvalidRequest);
}

/// Eight concurrent session requests; their session ids.
async fn futures_join(env: &Env, id: &str) -> Vec<String> {
    let one = || env.twinfield_session(id, None);
    let (a, b, c, d) = tokio::join!(one(), one(), one(), one());
    let (e, f, g, h) = tokio::join!(one(), one(), one(), one());
    [a, b, c, d, e, f, g, h]
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["session_id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn soap11_fault(text: &str, detail: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>{text}</faultstring><detail>{detail}</detail></soap:Fault></soap:Body></soap:Envelope>"
    )
}

fn soap12_fault(text: &str, detail: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap12:Envelope xmlns:soap12=\"http://www.w3.org/2003/05/soap-envelope\"><soap12:Body><soap12:Fault><soap12:Code><soap12:Value>soap12:Sender</soap12:Value></soap12:Code><soap12:Reason><soap12:Text xml:lang=\"nl\">{text}</soap12:Text></soap12:Reason><soap12:Detail>{detail}</soap12:Detail></soap12:Fault></soap12:Body></soap12:Envelope>"
    )
}

/// Fault 354 at AccessTokenLogon in every shape Twinfield may send it: the token is refreshed once,
/// the logon retried, a session handed out, and the connection stays connected. Other faults and
/// outages change nothing and refresh nothing.
async fn a_rejected_twinfield_token_is_refreshed_once_in_every_fault_shape() {
    let env = env(broker_tests::backends::embedded()).await;
    let dutch = "Toegang geweigerd. Token ongeldig.";
    let body = |xml: String, content_type: &str| sim::FaultAction::Status {
        status: 500,
        body: xml,
        content_type: Some(content_type.into()),
    };
    let xml = "text/xml; charset=utf-8";
    let shapes: Vec<(&str, sim::FaultAction)> = vec![
        (
            "soap 1.1, code element",
            body(
                soap11_fault("Access denied. Token invalid.", "<code>354</code>"),
                xml,
            ),
        ),
        (
            "soap 1.1, Dutch, code attribute",
            body(soap11_fault(dutch, r#"<Error code="354"/>"#), xml),
        ),
        (
            "soap 1.1, Dutch, namespaced",
            body(
                soap11_fault(
                    dutch,
                    r#"<t:Errors xmlns:t="http://www.twinfield.com/"><t:code>354</t:code></t:Errors>"#,
                ),
                xml,
            ),
        ),
        (
            "soap 1.2, Dutch",
            body(
                soap12_fault(dutch, "<code>354</code>"),
                "application/soap+xml; charset=utf-8",
            ),
        ),
        (
            "soap 1.2, Dutch, UTF-16",
            sim::FaultAction::StatusUtf16 {
                status: 500,
                body: soap12_fault(dutch, r#"<Error code="354"/>"#).replace("utf-8", "utf-16"),
                content_type: Some("application/soap+xml; charset=utf-16".into()),
            },
        ),
    ];
    for (shape, action) in shapes {
        let (id, _) = env.connected("tw").await;
        let refreshes = env.sim.calls("twinfield.token");
        env.sim
            .inject_fault(sim::FaultRule::next("twinfield.session", 1, action));
        let reply = env.twinfield_session(&id, None).await;
        assert_eq!(reply.status, 200, "{shape}: {}", reply.text);
        assert_eq!(
            env.sim.calls("twinfield.token") - refreshes,
            1,
            "{shape}: one refresh"
        );
        assert_eq!(env.status_of(&id).await, "connected", "{shape}");
    }
    let others: Vec<(&str, sim::FaultAction, ProblemKind)> = vec![
        (
            "another fault",
            body(
                soap11_fault(
                    "Toegang geweigerd. Company ontbreekt in request header.",
                    "<code>103</code>",
                ),
                xml,
            ),
            ProblemKind::ProviderError,
        ),
        (
            "an outage",
            body("<html>down</html>".into(), "text/html"),
            ProblemKind::TemporarilyUnavailable,
        ),
        (
            "a rate limit",
            sim::FaultAction::TooManyRequests {
                retry_after_secs: 9,
                body: None,
            },
            ProblemKind::RateLimited,
        ),
    ];
    for (what, action, problem) in others {
        let (id, _) = env.connected("tw").await;
        let refreshes = env.sim.calls("twinfield.token");
        env.sim
            .inject_fault(sim::FaultRule::next("twinfield.session", 1, action));
        let reply = env.twinfield_session(&id, None).await;
        reply.problem(problem);
        assert!(
            reply.retry_after.is_some() || problem == ProblemKind::ProviderError,
            "{what}"
        );
        assert_eq!(
            env.sim.calls("twinfield.token"),
            refreshes,
            "{what}: no refresh"
        );
        assert_eq!(env.status_of(&id).await, "connected", "{what}");
    }
}

/// Two requests whose logons both see the token rejected (two companies, so two logons): one
/// refresh between them, the other uses its result.
async fn concurrent_rejections_of_one_twinfield_token_refresh_it_once() {
    let env = env(broker_tests::backends::embedded()).await;
    let (id, _) = env.connected("tw").await;
    let fault = sim::FaultAction::Status {
        status: 500,
        body: soap11_fault("Access denied. Token invalid.", "<code>354</code>"),
        content_type: Some("text/xml; charset=utf-8".into()),
    };
    env.sim
        .inject_fault(sim::FaultRule::next("twinfield.session", 2, fault));
    // The refresh takes longer than a logon, so both first logons meet the fault.
    env.sim
        .set_route_latency("twinfield.token", std::time::Duration::from_millis(400));
    let refreshes = env.sim.calls("twinfield.token");
    let (a, b) = tokio::join!(
        env.twinfield_session(&id, Some("NL001")),
        env.twinfield_session(&id, Some("NL002"))
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(
        env.sim.calls("twinfield.token") - refreshes,
        1,
        "one refresh for both"
    );
    assert_eq!(env.status_of(&id).await, "connected");
}

/// A revoked grant: the logon refuses the token, the one refresh fails with invalid_grant, and only
/// then does the connection need a person.
async fn only_a_failing_refresh_makes_a_rejected_twinfield_token_need_a_person() {
    let env = env(broker_tests::backends::embedded()).await;
    for variant in [
        sim::InvalidTokenLogon::Result,
        sim::InvalidTokenLogon::Fault,
    ] {
        env.sim
            .update_knobs(|k| k.twinfield_invalid_token_logon = variant);
        let (id, _) = env.connected("tw").await;
        env.sim
            .revoke_grant(sim::Provider::Twinfield, "DEMO", Some(TW_ID));
        let refreshes = env.sim.calls("twinfield.token");
        let reply = env.twinfield_session(&id, None).await;
        reply.problem(ProblemKind::ReconnectRequired);
        assert_eq!(
            env.sim.calls("twinfield.token") - refreshes,
            1,
            "{variant:?}"
        );
        assert_eq!(
            env.status_of(&id).await,
            "reconnect_required",
            "{variant:?}"
        );
    }
}
