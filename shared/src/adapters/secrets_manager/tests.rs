use super::*;
use crate::domain::TokenSet;
use crate::secret::{AccessToken, RefreshToken};
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials as AwsCredentials, Region};
use chrono::Utc;

const SECRET_MARK: &str = "SECRET-VALUE-7f3a";

/// A vault whose endpoint refuses connections, without retries.
fn unreachable_vault() -> SecretsManagerVault {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .endpoint_url("http://127.0.0.1:1")
        .credentials_provider(AwsCredentials::new("test", "test", None, None, "static"))
        .retry_config(RetryConfig::disabled())
        .build();
    let naming = VaultNaming {
        prefix: "connection-broker/test/".into(),
        kms_key_id: None,
    };
    SecretsManagerVault::new(Client::from_conf(config), naming)
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn credentials() -> Credentials {
    Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new(format!("access-{SECRET_MARK}")),
        access_expires_at: Utc::now(),
        refresh_token: Some(RefreshToken::new(format!("refresh-{SECRET_MARK}"))),
        refresh_expires_at: None,
        scope: None,
        received_at: Utc::now(),
    })
}

#[test]
fn secrets_are_named_and_tagged_by_tenant_connection_and_slot() {
    let vault = unreachable_vault();
    let connection = ConnectionId::generate();
    let secret = vault.slot_secret(&tenant(), &connection, VaultSlot::B);
    assert_eq!(
        secret.name,
        format!("connection-broker/test/tenants/acme/connections/{connection}/b")
    );
    assert_eq!(
        secret.tags,
        vec![
            ("broker:tenant", "acme".to_string()),
            ("broker:connection", connection.to_string()),
            ("broker:slot", "b".to_string()),
        ]
    );
    let app = AppId::parse("exact-nl").unwrap();
    let secret = vault.client_secret_secret(&tenant(), &app);
    assert_eq!(
        secret.name,
        "connection-broker/test/tenants/acme/apps/exact-nl/client_secret"
    );
    assert!(secret
        .tags
        .contains(&("broker:app", "exact-nl".to_string())));
    // AWS advises against a final hyphen followed by six characters (it looks like an ARN suffix).
    let last = secret.name.rsplit('/').next().unwrap();
    assert!(
        !(last.len() > 7 && last.as_bytes()[last.len() - 7] == b'-'),
        "{last}"
    );
}

#[test]
fn a_client_secret_reads_as_written_or_as_set_by_hand() {
    assert_eq!(
        client_secret_of(r#"{"client_secret":"s3cr3t"}"#.into()).expose(),
        "s3cr3t"
    );
    assert_eq!(client_secret_of("s3cr3t".into()).expose(), "s3cr3t");
    assert_eq!(
        client_secret_of(r#"{"other":"x"}"#.into()).expose(),
        r#"{"other":"x"}"#
    );
}

#[test]
fn deletion_refusals_are_recognised() {
    assert!(deleted(Some(
        "You can't perform this operation on the secret because it was marked for deletion."
    )));
    assert!(deleted(Some(
        "You tried to perform the operation on a secret that's currently marked deleted."
    )));
    assert!(!deleted(Some(
        "You can't create this secret because a secret with this name is already scheduled"
    )));
    assert!(!deleted(None));
}

#[test]
fn a_payload_that_does_not_decode_is_reported_without_its_content() {
    for payload in [
        format!(r#"{{"kind":"{SECRET_MARK}"}}"#),
        format!(r#"{{"kind":"o_auth2","access_token":["{SECRET_MARK}"]}}"#),
        format!("{SECRET_MARK} not json"),
    ] {
        let error = serde_json::from_str::<Credentials>(&payload).unwrap_err();
        let message = json_failure("secret x", &error);
        assert!(message.starts_with("secret x: "), "{message}");
        assert!(!message.contains(SECRET_MARK), "{message}");
    }
}

#[tokio::test]
async fn errors_of_failing_calls_name_the_call_but_never_the_secret() {
    let vault = unreachable_vault();
    let connection = ConnectionId::generate();
    let write = WriteId::generate();
    let error = vault
        .put_credentials(&tenant(), &connection, VaultSlot::A, &write, &credentials())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, VaultError::Unavailable(_)), "{error:?}");
    assert!(
        message.contains("PutSecretValue") && message.contains(&connection.to_string()),
        "{message}"
    );

    let app = AppId::parse("exact-nl").unwrap();
    let secret = ClientSecret::new(format!("client-{SECRET_MARK}"));
    let errors = [
        error,
        vault
            .put_client_secret(&tenant(), &app, &secret)
            .await
            .unwrap_err(),
        vault.get_client_secret(&tenant(), &app).await.unwrap_err(),
        vault
            .get_credentials(
                &tenant(),
                &connection,
                &CredentialsPointer {
                    slot: VaultSlot::A,
                    write,
                },
            )
            .await
            .unwrap_err(),
        vault
            .delete_credentials(&tenant(), &connection)
            .await
            .unwrap_err(),
    ];
    for error in errors {
        let printed = format!("{error} {error:?}");
        assert!(matches!(error, VaultError::Unavailable(_)), "{printed}");
        assert!(
            !printed.contains(SECRET_MARK),
            "a secret leaked into an error: {printed}"
        );
    }
}
