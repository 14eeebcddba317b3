//! The `/v1/apps` scenarios, each run on both backends (see `apps_api.rs` for the environment).

use super::*;

pub(crate) async fn each_customers_acumatica_app_is_registered_through_the_api_and_connects(
    backend: Backend,
) {
    let env = env(backend).await;
    let apps = ["acu-northwind", "acu-contoso"];
    for (customer, app) in apps.iter().enumerate() {
        let (instance, client_id, secret) = CUSTOMERS[customer];
        let reply = env.register(app, customer).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json["client_secret_set"], true);
        assert!(reply.json.get("client_secret").is_none(), "{}", reply.text);
        assert_eq!(reply.json["provider"], "acumatica");
        assert_eq!(reply.json["client_id"], client_id);
        // Left out, the redirect URI is the broker's callback, as the connect flow sends it.
        assert_eq!(
            reply.json["redirect_uri"],
            format!("{}/oauth/callback", env.public)
        );
        let instance_url = env.sim.acumatica_instance_url(instance);
        assert_eq!(
            reply.json["instance_url"],
            instance_url.trim_end_matches('/')
        );
        assert_eq!(
            env.stored_secret("acme", app).await.as_deref(),
            Some(secret)
        );
    }
    let listed = env.call("GET", "/v1/apps", None).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let ids: Vec<&str> = listed.json["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acu-contoso", "acu-northwind"]);
    let shown = env.call("GET", "/v1/apps/acu-contoso", None).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.json["client_secret_set"], true);

    // Each customer connects through its own app, in the browser, and the API hands out its tokens.
    for app in apps {
        let (connection, link) = env.new_connection(app).await;
        assert_eq!(env.authorize(&link).await, 200);
        assert_eq!(env.status_of(&connection).await, "connected");
        let path = format!("/v1/connections/{connection}/session");
        let session = env.call("POST", &path, None).await;
        assert_eq!(session.status, 200, "{}", session.text);
        let token = session.json["access_token"].as_str().unwrap();
        assert!(env.sim.is_access_token_valid(token));
    }
    env.check_no_secret_shown(&[CUSTOMERS[0].2, CUSTOMERS[1].2]);
}

/// A valid registration of the first customer's app, with `changes` over it (`null` removes a field).
fn acumatica_body(env: &Env, changes: Value) -> Value {
    let (instance, client_id, secret) = CUSTOMERS[0];
    let mut body = json!({
        "id": "acu",
        "provider": "acumatica",
        "instance_url": env.sim.acumatica_instance_url(instance),
        "acumatica_tenant": "Company",
        "client_id": client_id,
        "client_secret": secret,
    });
    for (field, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => body.as_object_mut().unwrap().remove(field),
            value => body
                .as_object_mut()
                .unwrap()
                .insert(field.clone(), value.clone()),
        };
    }
    body
}

pub(crate) async fn registrations_that_could_never_work_are_refused_with_what_to_do(
    backend: Backend,
) {
    use ProblemKind::{InvalidRequest, ValidationFailed};
    let env = env(backend).await;
    let other = |provider: &str, fields: Value| {
        let mut body =
            json!({"id": "other", "provider": provider, "client_id": "c", "client_secret": "s"});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        body
    };
    let cases = [
        (
            acumatica_body(&env, json!({"redirect_uri": format!("{}/oauth/callbacks", env.public)})),
            ValidationFailed,
            "must be the broker's callback URL",
        ),
        (
            acumatica_body(&env, json!({"redirect_uri": "https://elsewhere.example/oauth/callback"})),
            ValidationFailed,
            &format!("{}/oauth/callback", env.public),
        ),
        (
            other("generic", json!({"definition": "no-such-provider"})),
            ValidationFailed,
            "has no definition \"no-such-provider\"",
        ),
        (
            other("twinfield", json!({"country": "nl"})),
            ValidationFailed,
            "country applies to Exact Online apps only, and this app is for Twinfield: leave it out",
        ),
        (
            other("exact_online", json!({"country": "nl", "instance_url": "https://a.example"})),
            ValidationFailed,
            "instance_url applies to Acumatica apps only",
        ),
        (
            acumatica_body(&env, json!({"instance_url": "https://10.1.2.3"})),
            ValidationFailed,
            "10.1.2.3 is a private network address",
        ),
        (
            acumatica_body(&env, json!({"acumatica_tenant": null})),
            ValidationFailed,
            "Acumatica apps need acumatica_tenant",
        ),
        (
            acumatica_body(&env, json!({"client_id": "5c1d2e3f@Elsewhere"})),
            ValidationFailed,
            "looks like <GUID>@Company",
        ),
        (
            acumatica_body(
                &env,
                json!({"acumatica_refresh_tokens": {"mode": "sliding", "days": 30, "absolute_days": 10}}),
            ),
            ValidationFailed,
            "at least its sliding one",
        ),
        (acumatica_body(&env, json!({"client_secret": "  "})), ValidationFailed, "client_secret is empty"),
        (acumatica_body(&env, json!({"id": "Not An Id"})), ValidationFailed, "id: "),
        (acumatica_body(&env, json!({"instance_uri": "x"})), InvalidRequest, "unknown field `instance_uri`"),
    ];
    for (body, kind, says) in &cases {
        env.call("POST", "/v1/apps", Some(body.clone()))
            .await
            .problem(*kind, says);
    }
    // Nothing refused was kept.
    let listed = env.call("GET", "/v1/apps", None).await;
    assert_eq!(listed.json["apps"], json!([]), "{}", listed.text);
    assert_eq!(env.stored_secret("acme", "acu").await, None);
    assert_eq!(env.stored_secret("acme", "other").await, None);

    // An id is registered once; changes are PATCHes, checked as a registration is.
    assert_eq!(env.register("acu", 0).await.status, 201);
    let again = env
        .call("POST", "/v1/apps", Some(acumatica_body(&env, json!({}))))
        .await;
    again.problem(ProblemKind::AppExists, "PATCH /v1/apps/acu");
    let changes = [
        (
            json!({"provider": "exact_online"}),
            "cannot change to Exact Online",
        ),
        (
            json!({"country": "nl"}),
            "country applies to Exact Online apps only",
        ),
        (
            json!({"redirect_uri": "https://elsewhere.example/oauth/callback"}),
            "callback URL",
        ),
        (
            json!({"instance_url": "https://169.254.169.254"}),
            "169.254.169.254",
        ),
        (json!({"client_secret": ""}), "client_secret is empty"),
    ];
    for (change, says) in changes {
        let reply = env.call("PATCH", "/v1/apps/acu", Some(change)).await;
        reply.problem(ValidationFailed, says);
    }
    let kept = env.call("GET", "/v1/apps/acu", None).await;
    assert_eq!(
        kept.json["redirect_uri"],
        format!("{}/oauth/callback", env.public)
    );
    assert!(kept.json.get("country").is_none(), "{}", kept.text);
    assert_eq!(
        env.stored_secret("acme", "acu").await.as_deref(),
        Some(CUSTOMERS[0].2)
    );
    env.check_no_secret_shown(&[CUSTOMERS[0].2]);
}

pub(crate) async fn only_keys_granted_manage_apps_reach_apps_and_only_their_own_tenants(
    backend: Backend,
) {
    let env = env(backend).await;
    assert_eq!(env.register("acu", 0).await.status, 201);
    let new_app = acumatica_body(&env, json!({"id": "acu-2"}));
    let keys = [
        (&env.plain, "broker-admin key create --manage-apps"),
        (&env.session_only, "limited to session requests"),
        (&env.limited, "limited to some connections"),
    ];
    for (key, says) in keys {
        for (method, path, body) in [
            ("GET", "/v1/apps", None),
            ("POST", "/v1/apps", Some(new_app.clone())),
            ("GET", "/v1/apps/acu", None),
            (
                "PATCH",
                "/v1/apps/acu",
                Some(json!({"client_secret": "stolen"})),
            ),
            ("DELETE", "/v1/apps/acu", None),
        ] {
            let reply = env.call_with(key, method, path, body).await;
            reply.problem(ProblemKind::Forbidden, says);
        }
    }
    // Another tenant's app does not exist for globex's key, whatever it may do with its own.
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"client_secret": "stolen"}))),
        ("DELETE", None),
    ] {
        let reply = env
            .call_with(&env.other_manager, method, "/v1/apps/acu", body)
            .await;
        reply.problem(ProblemKind::NotFound, "no app registration by that id");
    }
    let theirs = env
        .call_with(&env.other_manager, "GET", "/v1/apps", None)
        .await;
    assert_eq!(theirs.json["apps"], json!([]), "{}", theirs.text);
    assert_eq!(
        env.stored_secret("acme", "acu").await.as_deref(),
        Some(CUSTOMERS[0].2)
    );
    assert_eq!(env.stored_secret("acme", "acu-2").await, None);
    assert_eq!(env.stored_secret("globex", "acu").await, None);
}

pub(crate) async fn a_rotated_client_secret_is_the_one_the_next_token_call_sends(backend: Backend) {
    const ROTATED: &str = "northwind-rotated-SENTINEL";
    let env = env(backend).await;
    let (instance, client_id, _) = CUSTOMERS[0];
    assert_eq!(env.register("acu", 0).await.status, 201);
    let (first, link) = env.new_connection("acu").await;
    assert_eq!(env.authorize(&link).await, 200);

    // The customer rotates the secret at Acumatica: the one the broker holds is refused now.
    register_at_simulator(&env.sim, &env.public, instance, client_id, ROTATED);
    let (refused, link) = env.new_connection("acu").await;
    assert_ne!(env.authorize(&link).await, 200, "the old secret is refused");
    assert_eq!(env.status_of(&refused).await, "not_connected");

    let reply = env
        .call(
            "PATCH",
            "/v1/apps/acu",
            Some(json!({"client_secret": ROTATED})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["client_secret_set"], true);
    assert_eq!(
        env.stored_secret("acme", "acu").await.as_deref(),
        Some(ROTATED)
    );

    // The next code exchange and the next refresh send the new secret (the simulator takes no other).
    let (second, link) = env.new_connection("acu").await;
    assert_eq!(env.authorize(&link).await, 200);
    assert_eq!(env.status_of(&second).await, "connected");
    env.sim.clock().advance(Duration::hours(2));
    let refreshes = env.sim.token_calls(Provider::Acumatica);
    let session = env
        .call("POST", &format!("/v1/connections/{first}/session"), None)
        .await;
    assert_eq!(session.status, 200, "{}", session.text);
    assert!(env
        .sim
        .is_access_token_valid(session.json["access_token"].as_str().unwrap()));
    assert_eq!(env.sim.token_calls(Provider::Acumatica), refreshes + 1);

    // Other changes keep the secret.
    let scopes = json!({"scopes": ["api", "offline_access", "openid"]});
    let reply = env.call("PATCH", "/v1/apps/acu", Some(scopes)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json["scopes"],
        json!(["api", "offline_access", "openid"])
    );
    assert_eq!(reply.json["client_secret_set"], true);
    assert_eq!(
        env.stored_secret("acme", "acu").await.as_deref(),
        Some(ROTATED)
    );
    env.check_no_secret_shown(&[CUSTOMERS[0].2, ROTATED]);
}

pub(crate) async fn an_app_is_deleted_only_once_no_connection_needs_it(backend: Backend) {
    let env = env(backend).await;
    assert_eq!(env.register("acu", 0).await.status, 201);
    let (waiting, _) = env.new_connection("acu").await;
    let (connected, link) = env.new_connection("acu").await;
    assert_eq!(env.authorize(&link).await, 200);

    let refused = env.call("DELETE", "/v1/apps/acu", None).await;
    refused.problem(ProblemKind::AppInUse, "used by 2 connection(s)");
    for id in [&waiting, &connected] {
        assert!(refused.text.contains(id.as_str()), "{}", refused.text);
    }
    assert_eq!(
        env.stored_secret("acme", "acu").await.as_deref(),
        Some(CUSTOMERS[0].2)
    );

    let path = format!("/v1/connections/{waiting}");
    assert_eq!(env.call("DELETE", &path, None).await.status, 200);
    let still = env.call("DELETE", "/v1/apps/acu", None).await;
    still.problem(ProblemKind::AppInUse, &connected);
    assert!(!still.text.contains(waiting.as_str()), "{}", still.text);

    let path = format!("/v1/connections/{connected}");
    assert_eq!(env.call("DELETE", &path, None).await.status, 200);
    let deleted = env.call("DELETE", "/v1/apps/acu", None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    env.call("GET", "/v1/apps/acu", None)
        .await
        .problem(ProblemKind::NotFound, "GET /v1/apps");
    env.call("DELETE", "/v1/apps/acu", None)
        .await
        .problem(ProblemKind::NotFound, "no app registration");
    assert_eq!(env.stored_secret("acme", "acu").await, None);
    let app = AppId::parse("acu").unwrap();
    assert!(env
        .ctx
        .backend
        .store
        .get_app(&tenant("acme"), &app)
        .await
        .unwrap()
        .is_none());
    let id = ConnectionId::parse(&connected).unwrap();
    let stored = env
        .ctx
        .backend
        .store
        .get_connection(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*stored.status(), ConnectionStatus::Disconnected);
    let body = json!({"app_id": "acu", "recipients": ["it@example.com"]});
    env.call("POST", "/v1/connections", Some(body))
        .await
        .problem(
            ProblemKind::ValidationFailed,
            "your tenant has no app registration \"acu\"",
        );

    // The id is free again, for another customer's app.
    assert_eq!(env.register("acu", 1).await.status, 201);
    assert_eq!(
        env.stored_secret("acme", "acu").await.as_deref(),
        Some(CUSTOMERS[1].2)
    );
    let (connection, link) = env.new_connection("acu").await;
    assert_eq!(env.authorize(&link).await, 200);
    assert_eq!(env.status_of(&connection).await, "connected");
    env.check_no_secret_shown(&[CUSTOMERS[0].2, CUSTOMERS[1].2]);
}

/// An Acumatica app may leave the instance to each customer; the choice is shown, survives a change
/// of other fields (which would otherwise send its connections to the registration's example), and
/// belongs to Acumatica apps only.
pub(crate) async fn an_acumatica_app_may_leave_the_instance_to_each_customer(backend: Backend) {
    let env = env(backend).await;
    let body = acumatica_body(&env, json!({"acumatica_instance_per_connection": true}));
    let reply = env.call("POST", "/v1/apps", Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json["acumatica_instance_per_connection"], true);

    let changed = env
        .call(
            "PATCH",
            "/v1/apps/acu",
            Some(json!({"acumatica_refresh_tokens": {"mode": "sliding", "days": 15}})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.json["acumatica_instance_per_connection"], true);
    let stored = env
        .ctx
        .backend
        .store
        .get_app(&tenant("acme"), &AppId::parse("acu").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.settings.instance_per_connection());

    let off = env
        .call(
            "PATCH",
            "/v1/apps/acu",
            Some(json!({"acumatica_instance_per_connection": false})),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.text);
    assert!(off.json.get("acumatica_instance_per_connection").is_none());

    let twinfield = json!({"id": "tw", "provider": "twinfield", "client_id": "c",
                           "client_secret": "s", "acumatica_instance_per_connection": true});
    env.call("POST", "/v1/apps", Some(twinfield)).await.problem(
        ProblemKind::ValidationFailed,
        "acumatica_instance_per_connection applies to Acumatica apps only",
    );
}
