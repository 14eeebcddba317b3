//! Seed 003: an Acumatica customer names their own instance on the connection page before
//! authorizing, in Dutch; the broker checks an Acumatica answers there, keeps it on the connection,
//! and authorizes and refreshes against it rather than against the app registration's example.

use super::*;
use broker_core::domain::{AcumaticaInstance, ProviderContext, ServiceUrl};
use broker_core::refresh::engine::{Demand, Outcome, Trigger};

const GUID: &str = "8d1f7c2e-5b3a-4e6f-9a0b-1c2d3e4f5a6b";

/// An Acumatica app whose customers each bring their own instance. Its registration names an
/// instance the sandbox does not run, with a client id for another tenant: a call that used the
/// registration instead of the connection's instance would fail.
async fn per_customer_app(world: &World) {
    let sandbox = world.running.sandbox.as_ref().unwrap();
    let app = OAuthApp {
        tenant: world.tenant.clone(),
        id: AppId::parse("acumatica-own").unwrap(),
        settings: ProviderSettings::Acumatica {
            instance_url: ServiceUrl::parse(&sandbox.acumatica_instance_url("example")).unwrap(),
            tenant: "Example".into(),
            refresh_tokens: None,
            instance_per_connection: true,
        },
        client_id: format!("{GUID}@Example"),
        redirect_uri: RedirectUri::parse(&format!("{}/oauth/callback", world.base)).unwrap(),
        scopes: vec![],
        created_at: world.running.ctx.clock.now(),
    };
    let ctx = &world.running.ctx;
    ctx.backend
        .vault
        .put_client_secret(
            &world.tenant,
            &app.id,
            &ClientSecret::new(SANDBOX_CLIENT_SECRET),
        )
        .await
        .unwrap();
    ctx.backend.store.put_app(&app).await.unwrap();
}

/// Types into the form's fields (each replaced) and saves.
async fn fill_in(browser: &Browser, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        browser
            .execute(
                "document.getElementById(arguments[0]).value = arguments[1];",
                json!([name, value]),
            )
            .await
            .unwrap();
    }
    browser.click("#save").await.unwrap();
}

#[tokio::test]
async fn a_customer_names_their_acumatica_instance_then_connects_and_it_refreshes_there() {
    let world = world().await;
    per_customer_app(&world).await;
    let created = world
        .connection(
            "acumatica-own",
            "Bouwbedrijf Jansen",
            json!({"recipients": []}),
        )
        .await;
    let sandbox = world.running.sandbox.as_ref().unwrap();
    let instance = sandbox.acumatica_instance_url("demo");
    let mut browser = Browser::start("acumatica_onboarding", "nl-NL,nl")
        .await
        .unwrap();

    // The form, no button: instance, tenant, and (the connection has none) recipients and zone;
    // whom to sign in as, and how to end the monthly re-authorization.
    browser.open(&created.link).await.unwrap();
    browser.wait_for("#settings form").await.unwrap();
    assert!(!browser.has("#connect").await.unwrap(), "no button yet");
    assert_eq!(browser.language().await.unwrap(), "nl");
    for field in ["#instance_url", "#tenant", "#recipients", "#time_zone"] {
        assert!(browser.has(field).await.unwrap(), "{field}");
    }
    let text = browser.text().await.unwrap();
    for words in [
        "Geef eerst aan waar uw Acumatica staat",
        "Instance-URL",
        "Tenant-ID",
        "E-mailadressen voor meldingen",
        "Tijdzone",
        "Log in als de integratiegebruiker",
        "Acumatica 2024 R1 of nieuwer",
        "Sliding Expiration",
        "Infinite",
    ] {
        assert!(text.contains(words), "{words:?} not in {text}");
    }
    look_at(&mut browser, "settings-form-nl").await;

    // An address where no Acumatica answers: the form again, saying so, with what was typed.
    let nowhere = sandbox.acumatica_instance_url("nergens");
    fill_in(
        &browser,
        &[
            ("instance_url", &nowhere),
            ("tenant", "Company"),
            ("recipients", "planning@jansen.example.nl"),
            ("time_zone", "Europe/Amsterdam"),
        ],
    )
    .await;
    browser.wait_for("#settings-error").await.unwrap();
    let text = browser.text().await.unwrap();
    assert!(
        text.contains("Op deze instance-URL antwoordt geen Acumatica"),
        "{text}"
    );
    let kept = browser
        .execute(
            "return [document.getElementById('instance_url').value,\
                     document.getElementById('instance_url').getAttribute('aria-invalid'),\
                     document.getElementById('recipients').value];",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(kept, json!([nowhere, "true", "planning@jansen.example.nl"]));
    assert!(world.stored(&created.id).await.acumatica_instance.is_none());
    look_at(&mut browser, "settings-refused-nl").await;

    // The instance the customer signs in at: saved, and the page offers the button.
    fill_in(
        &browser,
        &[("instance_url", &instance), ("tenant", "Company")],
    )
    .await;
    browser.wait_for("#connect").await.unwrap();
    assert!(!browser.has("#settings").await.unwrap());
    let stored = world.stored(&created.id).await;
    assert_eq!(
        stored.acumatica_instance,
        Some(AcumaticaInstance::parse(&instance, "Company").unwrap())
    );
    assert_eq!(
        stored.recipients.addresses()[0].as_str(),
        "planning@jansen.example.nl"
    );
    assert_eq!(stored.time_zone.unwrap().name(), "Europe/Amsterdam");

    // Authorized at the customer's instance, and bound to it.
    connect_in(&mut browser, &created.link, None).await;
    let connected = world.stored(&created.id).await;
    assert!(connected.status().is_usable());
    match connected.context.as_ref().unwrap() {
        ProviderContext::Acumatica {
            instance_url,
            tenant,
        } => {
            assert_eq!(instance_url.base(), instance);
            assert_eq!(tenant, "Company");
        }
        other => panic!("{other:?}"),
    }

    // A refresh goes to the same instance: the registration's example would refuse it.
    let report = world
        .running
        .ctx
        .engine
        .refresh(
            &created.id,
            Trigger::OnDemand(Demand {
                rejected: true,
                seen: connected.credentials.clone(),
                ..Demand::valid_for(chrono::Duration::minutes(5))
            }),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed, "{report:?}");
    assert_ne!(report.connection.credentials, connected.credentials);
    assert!(report.connection.status().is_usable());
}

/// The form is tied to its link: a made-up token saves nothing, and a connection whose app names
/// the instance itself is not asked.
#[tokio::test]
async fn only_a_live_link_of_a_connection_that_asks_can_save_settings() {
    let world = world().await;
    per_customer_app(&world).await;
    let created = world.connection("acumatica-own", "Jansen", json!({})).await;
    let instance = world
        .running
        .sandbox
        .as_ref()
        .unwrap()
        .acumatica_instance_url("demo");
    // The connection has recipients, so only its zone is asked besides the instance.
    let form = [
        ("instance_url", instance.as_str()),
        ("tenant", "Company"),
        ("time_zone", "Europe/Amsterdam"),
    ];
    let forged = world
        .http
        .post(format!("{}/connect/not-a-real-link/settings", world.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert!(world.stored(&created.id).await.acumatica_instance.is_none());

    // The button cannot be pressed around the form.
    let started = world.http.post(&created.link).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::BAD_REQUEST);

    let twinfield = world.connection("twinfield", "Jansen", json!({})).await;
    let refused = world
        .http
        .post(format!("{}/settings", twinfield.link))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    let saved = world
        .http
        .post(format!("{}/settings", created.link))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    assert!(world.stored(&created.id).await.acumatica_instance.is_some());
    // Once known, the instance is fixed: the link cannot point the connection elsewhere.
    let again = world
        .http
        .post(format!("{}/settings", created.link))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}
