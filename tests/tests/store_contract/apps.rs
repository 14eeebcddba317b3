//! App registrations: deleting one takes its record and its client secret, and frees its id.

use super::*;

contract!(a_deleted_app_and_its_client_secret_are_gone_and_its_id_can_be_registered_again);

async fn a_deleted_app_and_its_client_secret_are_gone_and_its_id_can_be_registered_again(
    backend: Backend,
) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let app = |t: &TenantId, id: &str| OAuthApp {
        tenant: t.clone(),
        id: AppId::parse(id).unwrap(),
        settings: ProviderSettings::ExactOnline {
            country: ExactCountry::Netherlands,
        },
        client_id: "exact-client".into(),
        redirect_uri: RedirectUri::parse("https://broker.example.com/oauth/callback").unwrap(),
        scopes: vec![],
        created_at: t0(),
    };
    let (gone, kept, theirs) = (
        app(&acme, "exact-nl"),
        app(&acme, "exact-be"),
        app(&globex, "exact-nl"),
    );
    for a in [&gone, &kept, &theirs] {
        backend.store.put_app(a).await.unwrap();
        backend
            .vault
            .put_client_secret(
                &a.tenant,
                &a.id,
                &ClientSecret::new(format!("{}-{}", a.tenant, a.id)),
            )
            .await
            .unwrap();
    }

    assert!(backend.store.delete_app(&acme, &gone.id).await.unwrap());
    backend
        .vault
        .delete_client_secret(&acme, &gone.id)
        .await
        .unwrap();
    assert!(backend
        .store
        .get_app(&acme, &gone.id)
        .await
        .unwrap()
        .is_none());
    assert!(backend
        .vault
        .get_client_secret(&acme, &gone.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        backend.store.list_apps(&acme).await.unwrap(),
        vec![kept.clone()]
    );
    // Another app of the tenant, and the other tenant's app of the same id, are untouched.
    assert_eq!(
        backend.store.get_app(&globex, &theirs.id).await.unwrap(),
        Some(theirs.clone())
    );
    let secret = |t: &TenantId, a: &OAuthApp| {
        let vault = backend.vault.clone();
        let (t, id) = (t.clone(), a.id.clone());
        async move {
            vault
                .get_client_secret(&t, &id)
                .await
                .unwrap()
                .map(|s| s.expose().to_string())
        }
    };
    assert_eq!(
        secret(&globex, &theirs).await.as_deref(),
        Some("globex-exact-nl")
    );
    assert_eq!(secret(&acme, &kept).await.as_deref(), Some("acme-exact-be"));

    // Deleting again is not an error, and says there was nothing.
    assert!(!backend.store.delete_app(&acme, &gone.id).await.unwrap());
    backend
        .vault
        .delete_client_secret(&acme, &gone.id)
        .await
        .unwrap();

    // The id is free again, with a new secret (Secrets Manager restores the secret it had scheduled
    // for deletion, and the new value becomes current).
    backend.store.put_app(&gone).await.unwrap();
    backend
        .vault
        .put_client_secret(&acme, &gone.id, &ClientSecret::new("registered-again"))
        .await
        .unwrap();
    assert_eq!(
        backend.store.get_app(&acme, &gone.id).await.unwrap(),
        Some(gone.clone())
    );
    assert_eq!(
        secret(&acme, &gone).await.as_deref(),
        Some("registered-again")
    );
}
