//! Secrets Manager token vault.
//!
//! # Names and tags
//!
//! - A connection's credentials: `<prefix>/tenants/<tenant>/connections/<connection>/<a|b>`, one secret
//!   per vault slot.
//! - An app's client secret: `<prefix>/tenants/<tenant>/apps/<app>/client_secret`. An underscore, not
//!   `client-secret`: AWS advises against names that end in a hyphen and six characters, which it can
//!   take for the random suffix of a secret's ARN.
//! - A webhook's signing secret: `<prefix>/tenants/<tenant>/webhooks/<webhook>/signing_secret`, read by
//!   the event dispatcher to sign every delivery (so it is kept, not hashed).
//!
//! Every secret is tagged `broker:tenant`, `broker:connection` or `broker:app`, and `broker:slot` (`a`,
//! `b` or `client_secret`), and encrypted with the configured KMS key (the account's default key when
//! none is set). An IAM policy grants the broker `arn:aws:secretsmanager:<region>:<account>:secret:<prefix>/*`.
//!
//! # Two slots per connection, and why
//!
//! Secrets Manager keeps every version of a secret younger than 24 hours and caps a secret at about 100
//! versions, so a secret takes about 100 writes in any 24 hours (AWS advises one every 10 minutes). Exact
//! Online hands out a new refresh token at most every 570 seconds, so a connection in continuous use
//! rotates at most 86,400 / 570 ≈ 152 times a day: too many for one secret. New credentials always go
//! to the slot that is *not* current ([`crate::credential_keeper`]), so the slots alternate and each takes
//! at most 76 writes in 24 hours (one per 1,140 s), under the ceiling and within the advice. Writing to
//! the other slot also means the current credentials are never overwritten in place.
//!
//! # Exact versions
//!
//! Each write sends its [`WriteId`] as the `ClientRequestToken`, which Secrets Manager uses as the new
//! version's `VersionId`; the connection records the slot and the write id. A read asks for exactly that
//! `VersionId`, so it never depends on (or races) the `AWSCURRENT` label, which every write moves: a
//! reader gets the credentials the metadata points at, never a newer write that has not been committed
//! to the metadata, nor an older one. Repeating a write (same token, same content) is a no-op for
//! Secrets Manager; the same token with other content is refused (`ResourceExistsException`), which is
//! [`VaultError::WriteIdReused`].
//!
//! Client secrets have no write id: a write adds a version and moves `AWSCURRENT`, a read takes
//! `AWSCURRENT`. They are stored as `{"client_secret": "..."}`; a bare string set by hand is read too.
//!
//! # Errors
//!
//! Messages name the operation, the secret and Secrets Manager's error code and message. They never hold
//! a secret value: the SDK's errors carry no request body, and a payload that does not decode is
//! reported by position only.

use super::json_failure;
use super::kms_escrow::KmsEscrowKey;
use crate::domain::{Credentials, CredentialsPointer, VaultSlot};
use crate::escrow::SealedCredentials;
use crate::ids::{AppId, ConnectionId, TenantId, WriteId};
use crate::ports::{TokenVault, VaultError};
use crate::secret::ClientSecret;
use async_trait::async_trait;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::Tag;
use aws_sdk_secretsmanager::Client;
use serde::Deserialize;
use std::fmt::Debug;

/// Secrets deleted on disconnect stay recoverable this long (the shortest window Secrets Manager allows).
const RECOVERY_WINDOW_DAYS: i64 = 7;
const CLIENT_SECRET_SLOT: &str = "client_secret";
const WEBHOOK_SECRET_SLOT: &str = "signing_secret";

/// Where the vault keeps its secrets.
#[derive(Debug, Clone)]
pub struct VaultNaming {
    /// The start of every secret name, e.g. `connection-broker/prod`.
    pub prefix: String,
    /// The KMS key new secrets are encrypted with; `None` for the account's `aws/secretsmanager` key.
    pub kms_key_id: Option<String>,
}

/// The token vault on Secrets Manager (see the module documentation).
#[derive(Debug, Clone)]
pub struct SecretsManagerVault {
    client: Client,
    naming: VaultNaming,
    /// Seals what Secrets Manager refused (see [`crate::escrow`]); without it there is no escrow.
    escrow_key: Option<KmsEscrowKey>,
}

/// A secret: its name, and what it is created with.
#[derive(Debug, PartialEq, Eq)]
struct SecretSpec {
    name: String,
    tags: Vec<(&'static str, String)>,
    description: String,
}

impl SecretsManagerVault {
    /// A vault over `client`. Build the client once per process, with operation timeouts set (the SDK
    /// sets none by default).
    pub fn new(client: Client, naming: VaultNaming) -> Self {
        Self {
            client,
            naming,
            escrow_key: None,
        }
    }

    /// Tokens this vault refuses are sealed with `key` for the escrow.
    pub fn with_escrow_key(mut self, key: KmsEscrowKey) -> Self {
        self.escrow_key = Some(key);
        self
    }

    fn tenant_prefix(&self, tenant: &TenantId) -> String {
        format!(
            "{}/tenants/{tenant}",
            self.naming.prefix.trim_end_matches('/')
        )
    }

    fn slot_secret(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        slot: VaultSlot,
    ) -> SecretSpec {
        SecretSpec {
            name: format!(
                "{}/connections/{connection}/{}",
                self.tenant_prefix(tenant),
                slot.as_str()
            ),
            tags: vec![
                ("broker:tenant", tenant.to_string()),
                ("broker:connection", connection.to_string()),
                ("broker:slot", slot.as_str().to_string()),
            ],
            description: format!(
                "OAuth credentials of connection {connection} of tenant {tenant}, vault slot {}",
                slot.as_str()
            ),
        }
    }

    fn client_secret_secret(&self, tenant: &TenantId, app: &AppId) -> SecretSpec {
        SecretSpec {
            name: format!(
                "{}/apps/{app}/{CLIENT_SECRET_SLOT}",
                self.tenant_prefix(tenant)
            ),
            tags: vec![
                ("broker:tenant", tenant.to_string()),
                ("broker:app", app.to_string()),
                ("broker:slot", CLIENT_SECRET_SLOT.to_string()),
            ],
            description: format!("OAuth client secret of app {app} of tenant {tenant}"),
        }
    }

    /// A webhook's signing secret. Webhook ids are random, so a name is never reused.
    fn webhook_secret(&self, tenant: &TenantId, webhook: &crate::ids::WebhookId) -> SecretSpec {
        SecretSpec {
            name: format!(
                "{}/webhooks/{webhook}/{WEBHOOK_SECRET_SLOT}",
                self.tenant_prefix(tenant)
            ),
            tags: vec![
                ("broker:tenant", tenant.to_string()),
                ("broker:webhook", webhook.to_string()),
                ("broker:slot", WEBHOOK_SECRET_SLOT.to_string()),
            ],
            description: format!("Signing secret of webhook {webhook} of tenant {tenant}"),
        }
    }

    /// Adds a version to `secret`, creating the secret on its first write.
    async fn put(
        &self,
        secret: &SecretSpec,
        value: String,
        token: Option<&WriteId>,
    ) -> Result<(), VaultError> {
        if self.put_version(secret, value.clone(), token).await? {
            return Ok(());
        }
        let created = self
            .client
            .create_secret()
            .name(&secret.name)
            .description(&secret.description)
            .secret_string(value.clone())
            .set_client_request_token(token.map(|t| t.to_string()))
            .set_kms_key_id(self.naming.kms_key_id.clone())
            .set_tags(Some(
                secret
                    .tags
                    .iter()
                    .map(|(key, value)| Tag::builder().key(*key).value(value).build())
                    .collect(),
            ))
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Created by a concurrent first write in the meantime: add our version to it.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                match self.put_version(secret, value, token).await? {
                    true => Ok(()),
                    false => Err(VaultError::Unavailable(format!(
                        "secret {} was created and deleted while being written; write again",
                        secret.name
                    ))),
                }
            }
            Err(e) => Err(unavailable("CreateSecret", &secret.name, &e)),
        }
    }

    /// `PutSecretValue`; `false` when the secret does not exist yet.
    async fn put_version(
        &self,
        secret: &SecretSpec,
        value: String,
        token: Option<&WriteId>,
    ) -> Result<bool, VaultError> {
        let put = self
            .client
            .put_secret_value()
            .secret_id(&secret.name)
            .secret_string(value)
            .set_client_request_token(token.map(|t| t.to_string()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) => match (e.as_service_error(), token) {
                (Some(error), _) if error.is_resource_not_found_exception() => Ok(false),
                (Some(error), Some(token)) if error.is_resource_exists_exception() => {
                    Err(VaultError::WriteIdReused(token.to_string()))
                }
                _ => Err(unavailable("PutSecretValue", &secret.name, &e)),
            },
        }
    }

    /// The text of one version (`AWSCURRENT` when `version` is `None`), `None` if the secret or the
    /// version does not exist or the secret is deleted.
    async fn get(
        &self,
        name: &str,
        version: Option<&WriteId>,
    ) -> Result<Option<String>, VaultError> {
        let got = self
            .client
            .get_secret_value()
            .secret_id(name)
            .set_version_id(version.map(|v| v.to_string()))
            .send()
            .await;
        match got {
            Ok(out) => match out.secret_string {
                Some(value) => Ok(Some(value)),
                None => Err(VaultError::Corrupt(format!(
                    "secret {name} holds binary data, not text"
                ))),
            },
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_invalid_request_exception() && deleted(e.message())) =>
            {
                Ok(None)
            }
            Err(e) => Err(unavailable("GetSecretValue", name, &e)),
        }
    }

    /// Cancels a secret's scheduled deletion, if it has one. Its outcome is not needed: a secret that
    /// does not exist or is not deleted has nothing to restore, and a restore that failed leaves the
    /// write that follows to report the error.
    async fn restore(&self, name: &str) {
        if let Err(e) = self.client.restore_secret().secret_id(name).send().await {
            tracing::debug!(secret = name, error = %super::aws_failure_detail(&e), "RestoreSecret: nothing restored");
        }
    }

    /// Schedules a secret's deletion; one that is gone or already scheduled is fine.
    async fn delete(&self, name: &str) -> Result<(), VaultError> {
        let deleted_now = self
            .client
            .delete_secret()
            .secret_id(name)
            .recovery_window_in_days(RECOVERY_WINDOW_DAYS)
            .send()
            .await;
        match deleted_now {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_invalid_request_exception() && deleted(e.message())) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable("DeleteSecret", name, &e)),
        }
    }
}

#[async_trait]
impl TokenVault for SecretsManagerVault {
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        slot: VaultSlot,
        write: &WriteId,
        credentials: &Credentials,
    ) -> Result<(), VaultError> {
        let secret = self.slot_secret(tenant, connection, slot);
        let value = serde_json::to_string(credentials).map_err(|e| {
            VaultError::Corrupt(json_failure(
                &format!("credentials for {}", secret.name),
                &e,
            ))
        })?;
        self.put(&secret, value, Some(write)).await
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        pointer: &CredentialsPointer,
    ) -> Result<Option<Credentials>, VaultError> {
        let name = self.slot_secret(tenant, connection, pointer.slot).name;
        let Some(value) = self.get(&name, Some(&pointer.write)).await? else {
            return Ok(None);
        };
        serde_json::from_str(&value).map(Some).map_err(|e| {
            VaultError::Corrupt(json_failure(
                &format!("secret {name} version {}", pointer.write),
                &e,
            ))
        })
    }

    async fn delete_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
    ) -> Result<(), VaultError> {
        for slot in [VaultSlot::A, VaultSlot::B] {
            self.delete(&self.slot_secret(tenant, connection, slot).name)
                .await?;
        }
        Ok(())
    }

    async fn put_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        secret: &ClientSecret,
    ) -> Result<(), VaultError> {
        let value = serde_json::json!({ "client_secret": secret.expose() }).to_string();
        let spec = self.client_secret_secret(tenant, app);
        // An app deleted within the recovery window keeps its secret's name until then, and a deleted
        // secret takes no new value: registering the id again takes the secret back first (its old
        // versions stay behind the new current one). Client secrets are written rarely, so the extra
        // call is cheaper than telling that case apart by error message.
        self.restore(&spec.name).await;
        self.put(&spec, value, None).await
    }

    async fn get_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
    ) -> Result<Option<ClientSecret>, VaultError> {
        let name = self.client_secret_secret(tenant, app).name;
        Ok(self.get(&name, None).await?.map(client_secret_of))
    }

    async fn put_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &crate::ids::WebhookId,
        secret: &crate::secret::WebhookSecret,
    ) -> Result<(), VaultError> {
        let value = serde_json::json!({ "signing_secret": secret.expose() }).to_string();
        self.put(&self.webhook_secret(tenant, webhook), value, None)
            .await
    }

    async fn get_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &crate::ids::WebhookId,
    ) -> Result<Option<crate::secret::WebhookSecret>, VaultError> {
        #[derive(serde::Deserialize)]
        struct Stored {
            signing_secret: String,
        }
        let name = self.webhook_secret(tenant, webhook).name;
        self.get(&name, None)
            .await?
            .map(|value| {
                serde_json::from_str::<Stored>(&value)
                    .map(|stored| crate::secret::WebhookSecret::new(stored.signing_secret))
                    .map_err(|_| {
                        VaultError::Corrupt(format!("secret {name} is not a signing secret"))
                    })
            })
            .transpose()
    }

    async fn delete_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &crate::ids::WebhookId,
    ) -> Result<(), VaultError> {
        self.delete(&self.webhook_secret(tenant, webhook).name)
            .await
    }

    async fn delete_client_secret(&self, tenant: &TenantId, app: &AppId) -> Result<(), VaultError> {
        self.delete(&self.client_secret_secret(tenant, app).name)
            .await
    }

    async fn seal_escrow(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        credentials: &Credentials,
    ) -> Result<SealedCredentials, VaultError> {
        self.escrow_key()?
            .seal(tenant, connection, target, credentials)
            .await
    }

    async fn open_escrow(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        sealed: &SealedCredentials,
    ) -> Result<Credentials, VaultError> {
        self.escrow_key()?
            .open(tenant, connection, target, sealed)
            .await
    }
}

impl SecretsManagerVault {
    fn escrow_key(&self) -> Result<&KmsEscrowKey, VaultError> {
        self.escrow_key.as_ref().ok_or_else(|| {
            VaultError::Unavailable(
                "no escrow key is configured (BROKER_ESCROW_KEY_ID): tokens Secrets Manager refuses \
                 cannot be kept elsewhere"
                    .into(),
            )
        })
    }
}

/// `{"client_secret": "..."}` as written by the vault, or the bare secret as set by hand.
fn client_secret_of(value: String) -> ClientSecret {
    #[derive(Deserialize)]
    struct Stored {
        client_secret: String,
    }
    match serde_json::from_str::<Stored>(&value) {
        Ok(stored) => ClientSecret::new(stored.client_secret),
        Err(_) => ClientSecret::new(value),
    }
}

/// Whether Secrets Manager refused because the secret is scheduled for deletion (its messages:
/// "... because it was marked for deletion", "... a secret that's currently marked deleted").
fn deleted(message: Option<&str>) -> bool {
    message.is_some_and(|m| {
        let m = m.to_ascii_lowercase();
        m.contains("marked for deletion")
            || m.contains("marked deleted")
            || m.contains("scheduled for deletion")
    })
}

fn unavailable<E, R>(operation: &str, name: &str, error: &SdkError<E, R>) -> VaultError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: Debug,
{
    let detail = super::aws_failure_detail(error);
    VaultError::Unavailable(format!(
        "Secrets Manager {operation} on {name} failed: {detail}"
    ))
}

#[cfg(test)]
mod tests;
