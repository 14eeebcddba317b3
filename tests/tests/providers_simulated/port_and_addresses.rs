//! The refresh engine's port, as the provider clients implement it; and the addresses the broker may
//! call.

use super::*;

#[tokio::test]
async fn the_refresh_engine_port_refreshes_and_classifies() {
    use broker_core::domain::ErrorClass;
    use broker_core::refresh::TokenGrant;
    let env = env().await;
    let exact_app = app(
        ProviderSettings::ExactOnline {
            country: ExactCountry::Netherlands,
        },
        EX_ID,
    );
    let rules = env.providers.rules(&exact_app);
    assert!(rules.rotating);
    assert_eq!(rules.min_interval, Some(Duration::seconds(570)));

    let tokens = env.connect(&env.exact()).await.tokens;
    let old = tokens.refresh_token.clone().unwrap();
    env.advance(571);
    let secret = ClientSecret::new(EX_SECRET);
    let granted = env
        .providers
        .refresh(&exact_app, &secret, &old)
        .await
        .unwrap();
    assert_eq!(granted.expires_in, Duration::seconds(600));
    assert!(granted.refresh_token.is_some());
    env.advance(571);
    let failure = env
        .providers
        .refresh(&exact_app, &secret, &old)
        .await
        .unwrap_err();
    assert_eq!(failure.class, ErrorClass::RefreshTokenReused);
    assert!(
        failure.message.contains("Old refresh token used."),
        "{failure:?}"
    );
    assert!(!format!("{failure:?}").contains(old.expose()));
}

// ---------------------------------------------------------------------------------------------------
// Addresses: the simulators listen on loopback, which the broker on AWS must never call.

/// An Exact Online client whose catalogue names the simulator by a host name (`localhost`), so its
/// calls go through DNS rather than to an IP literal.
fn exact_by_name(env: &Env, http: HttpSettings) -> OAuthClient {
    let base = env.sim.exact_base("nl").replace("127.0.0.1", "localhost");
    assert!(base.contains("//localhost:"), "{base}");
    let catalogue = Catalogue::built_in()
        .with_base_url("https://start.exactonline.nl", &base)
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(env.sim.clock()));
    let settings = ProviderSettings::ExactOnline {
        country: ExactCountry::Netherlands,
    };
    Providers::new(catalogue, ProviderHttp::new(http).unwrap(), clock)
        .oauth_client(&app(settings, EX_ID), ClientSecret::new(EX_SECRET))
        .unwrap()
}

#[tokio::test]
async fn a_provider_on_loopback_is_refused_in_production_and_reached_in_local_runs() {
    let production = env_with(|_| {}, HttpSettings::default()).await;
    let any_code = AuthorizationCode::new("any-code".to_string());

    // By address (Exact's base is http://127.0.0.1:PORT): refused before anything is sent.
    let refused = production
        .exact()
        .exchange_code(&any_code, None, None)
        .await
        .expect_err("a loopback token endpoint is refused");
    assert_eq!(refused.class, ErrorClass::ClientMisconfigured, "{refused}");
    assert!(!refused.class.is_transient());
    assert!(!refused.outcome_unknown, "nothing was sent: {refused}");
    let said = refused.to_string();
    assert!(said.contains("127.0.0.1 is a loopback address"), "{said}");
    assert!(said.contains("public https URL"), "{said}");

    // By name: `localhost` resolves to loopback, and the resolver drops what it resolves to.
    let refused = exact_by_name(&production, HttpSettings::default())
        .exchange_code(&any_code, None, None)
        .await
        .expect_err("a name resolving to loopback is refused");
    assert_eq!(refused.class, ErrorClass::ClientMisconfigured, "{refused}");
    assert!(!refused.outcome_unknown, "{refused}");
    let said = refused.to_string();
    assert!(said.contains("localhost resolves to"), "{said}");
    assert!(said.contains("a loopback address"), "{said}");

    // Twinfield's session service goes through the same client.
    let refused = production
        .providers
        .twinfield_sessions()
        .unwrap()
        .access_token_logon(&broker_core::secret::AccessToken::new("any-token"))
        .await
        .expect_err("a loopback session service is refused");
    assert!(
        matches!(refused, SessionError::AddressRefused(_)),
        "{refused}"
    );
    assert!(!refused.is_transient());

    // The same simulators, with loopback allowed as local runs and the tests allow it.
    let local = env().await;
    let authorized = local.connect(&local.exact()).await;
    assert!(authorized.tokens.refresh_token.is_some());
    let by_name = exact_by_name(&local, broker_tests::provider_http_settings());
    let authorized = local.connect(&by_name).await;
    assert!(authorized.tokens.refresh_token.is_some());
}
