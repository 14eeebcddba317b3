//! Connecting against every provider, and disconnecting.

use super::*;

broker_tests::on_both_backends!(
    current_thread:
    twinfield_connects,
    exact_connects_in_the_netherlands,
    exact_connects_in_belgium,
    acumatica_connects,
    an_oidc_provider_connects,
    a_twinfield_app_without_openid_connects,
    a_disconnect_revokes_the_refresh_token_at_the_provider,
    a_disconnect_where_revocation_is_not_offered_says_so,
);

async fn connect_and_check(backend: Backend, which: Which, organisation: &str) {
    let world = world(backend, which).await;
    let kind = match which {
        Which::Twinfield => broker_core::domain::ProviderKind::Twinfield,
        Which::Exact(_) => broker_core::domain::ProviderKind::ExactOnline,
        Which::Acumatica => broker_core::domain::ProviderKind::Acumatica,
    };
    let connection = world.new_connection(kind).await;
    let page = world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    assert_page(
        &page,
        StatusCode::OK,
        &[
            kind.display_name(),
            "is connected",
            organisation,
            "What happens next",
            // The connection's label is shown, escaped.
            "Bookkeeping &#60;main&#62;",
        ],
    );
    let stored = world.connection(&connection).await;
    // Two writes: the link (retiring older ones), then the completed authorization.
    assert_eq!(stored.version(), connection.version() + 2);
    if let Which::Exact(country) = which {
        let Some(ProviderContext::ExactOnline { base_url, .. }) = &stored.context else {
            panic!("{:?}", stored.context)
        };
        assert!(base_url
            .base()
            .ends_with(&format!("/exact/{}", country.tld())));
    }
    world.check_logs();
}

async fn twinfield_connects(backend: Backend) {
    connect_and_check(backend, Which::Twinfield, "organisation TWF-DEMO").await;
}

async fn exact_connects_in_the_netherlands(backend: Backend) {
    exact_connects_in(backend, ExactCountry::Netherlands).await;
}

async fn exact_connects_in_belgium(backend: Backend) {
    exact_connects_in(backend, ExactCountry::Belgium).await;
}

/// The demo user's current division is the same in every country.
async fn exact_connects_in(backend: Backend, country: ExactCountry) {
    connect_and_check(backend, Which::Exact(country), "division 123456").await;
}

async fn acumatica_connects(backend: Backend) {
    connect_and_check(backend, Which::Acumatica, "tenant Company").await;
}

async fn an_oidc_provider_connects(backend: Backend) {
    let (world, connection) = oidc_world_with_connection(backend).await;
    let page = world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    assert_page(&page, StatusCode::OK, &["is connected"]);
    let stored = world.connection(&connection).await;
    assert_eq!(
        stored.authorized_by.map(|i| i.subject),
        Some(broker_tests::oidc::ACCOUNT.to_string())
    );
    world.check_logs();
}

/// An app whose scopes leave out `openid` asks for no id_token: it connects, though Twinfield still
/// gets the nonce it wants on every request.
async fn a_twinfield_app_without_openid_connects(backend: Backend) {
    let world = world(backend, Which::Twinfield).await;
    let store = &world.ctx.backend.store;
    let mut app = store
        .get_app(&world.tenant, &world.app)
        .await
        .unwrap()
        .unwrap();
    app.scopes = [
        "twf.user",
        "twf.organisation",
        "twf.organisationUser",
        "offline_access",
    ]
    .map(String::from)
    .to_vec();
    store.put_app(&app).await.unwrap();
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Twinfield)
        .await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let attempt = world.authorize(&link).await;
    let page = world.finish(&attempt).await;
    assert_page(&page, StatusCode::OK, &["is connected", "TWF-DEMO"]);
    world.check_logs();
}

/// RFC 7009 on disconnect: the provider (oidc-provider, revocation enabled) is asked to revoke the
/// refresh token first, and the connection's history says so.
async fn a_disconnect_revokes_the_refresh_token_at_the_provider(backend: Backend) {
    let (world, connection) = oidc_world_with_connection(backend).await;
    let page = world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    assert_page(&page, StatusCode::OK, &["is connected"]);
    let stored = world.connection(&connection).await;
    let tokens = world.tokens(&stored).await;
    let reason = disconnect(&world, &stored).await;
    assert!(reason.contains("revoked at the provider"), "{reason}");
    // The grant is gone at the provider, not only in the broker.
    let store = &world.ctx.backend.store;
    let app = store
        .get_app(&world.tenant, &world.app)
        .await
        .unwrap()
        .unwrap();
    let secret = world
        .ctx
        .backend
        .vault
        .get_client_secret(&world.tenant, &world.app)
        .await
        .unwrap()
        .unwrap();
    let client = world.ctx.providers.oauth_client(&app, secret).unwrap();
    let e = client.refresh(&tokens, None).await.unwrap_err();
    assert_eq!(
        e.class,
        broker_core::providers::ErrorClass::GrantRevoked,
        "{e}"
    );
    world.check_logs();
}

async fn a_disconnect_where_revocation_is_not_offered_says_so(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let page = world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let stored = world.connection(&connection).await;
    let reason = disconnect(&world, &stored).await;
    assert!(reason.contains("offers no token revocation"), "{reason}");
}

/// Disconnects through the integration API; the disconnect transition's reason.
async fn disconnect(world: &World, connection: &Connection) -> String {
    use broker_core::api::IntegrationApi;
    let api = IntegrationApi::new(world.ctx.clone());
    let caller = broker_tests::world::ops_caller(&world.tenant, world.clock.now());
    let view = api
        .disconnect(&caller, connection.id.as_str())
        .await
        .unwrap();
    assert_eq!(view.status, "disconnected");
    let transitions = world.transitions(&connection.id).await;
    let last = transitions.last().unwrap();
    assert_eq!(last.to, StatusKind::Disconnected);
    world.assert_clean(&last.reason);
    last.reason.clone()
}
