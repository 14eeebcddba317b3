//! [`TokenVault`] on the `vault_versions` and `client_secrets` tables of the same file, every value
//! sealed with the store's vault key (`sealing.rs`).

use super::codec::{decode, encode, time_key};
use super::sealing::{Entry, Stored};
use super::{EmbeddedStore, Failure};
use crate::domain::{Credentials, CredentialsPointer, VaultSlot};
use crate::escrow::{self, DataKey, SealedCredentials};
use crate::ids::{AppId, ConnectionId, TenantId, WriteId};
use crate::ports::{TokenVault, VaultError};
use crate::secret::ClientSecret;
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

/// The newest versions of a slot that are never pruned. A pointer can lag the newest write of its slot
/// (a writer whose save was fenced off wrote after it), so more than one is kept; versions the
/// connection's metadata points at are kept whatever their age.
pub(super) const VERSIONS_KEPT_PER_SLOT: i64 = 3;

/// Deletes a slot's versions beyond the newest [`VERSIONS_KEPT_PER_SLOT`], except any the connection's
/// record points at: its current credentials, and both ends of a refresh in flight (the marker names
/// the target before the vault write, so an interrupted refresh can still be recovered).
const PRUNE: &str = "
DELETE FROM vault_versions
WHERE tenant = ?1 AND connection = ?2 AND slot = ?3
  AND seq NOT IN (
      SELECT seq FROM vault_versions WHERE tenant = ?1 AND connection = ?2 AND slot = ?3
      ORDER BY seq DESC LIMIT ?4)
  AND write_id NOT IN (
      SELECT write FROM (
          SELECT json_extract(data, '$.credentials.write') AS write FROM connections WHERE id = ?2 AND tenant = ?1
          UNION ALL
          SELECT json_extract(data, '$.refresh_in_flight.spending.write') FROM connections WHERE id = ?2 AND tenant = ?1
          UNION ALL
          SELECT json_extract(data, '$.refresh_in_flight.target.write') FROM connections WHERE id = ?2 AND tenant = ?1)
      WHERE write IS NOT NULL)";

fn describe(connection: &str, slot: &str, write: &str) -> String {
    format!("vault entry {slot}/{write} of connection {connection}")
}

#[async_trait]
impl TokenVault for EmbeddedStore {
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        slot: VaultSlot,
        write: &WriteId,
        credentials: &Credentials,
    ) -> Result<(), VaultError> {
        const OPERATION: &str = "writing credentials to the vault";
        #[cfg(any(test, feature = "testing"))]
        if self.told_to_fail(|f| &mut f.vault_writes) {
            let told = super::testing::TOLD_TO_FAIL;
            return Err(VaultError::Unavailable(format!("{OPERATION}: {told}")));
        }
        let (tenant, connection, slot, write) = (
            tenant.to_string(),
            connection.to_string(),
            slot.as_str(),
            write.to_string(),
        );
        let what = describe(&connection, slot, &write);
        let content = encode(credentials, &what, &[]).map_err(|f| f.into_vault(OPERATION))?;
        let key = self.vault_key();
        let entry = Entry::credentials(&tenant, &connection, slot, &write);
        let sealed = key
            .seal(entry, content.as_bytes())
            .map_err(|f| f.into_vault(OPERATION))?;
        self.write(move |db| {
            let entry = Entry::credentials(&tenant, &connection, slot, &write);
            let existing: Option<Stored> = db
                .prepare_cached(
                    "SELECT content FROM vault_versions
                     WHERE tenant = ?1 AND connection = ?2 AND slot = ?3 AND write_id = ?4",
                )?
                .query_row(params![tenant, connection, slot, write], |r| r.get(0))
                .optional()?;
            if let Some(existing) = existing {
                let existing = key.reveal(entry, existing)?;
                // Compared as JSON values, so a repeat is recognised whatever the key order.
                let same = decode::<Value>(&existing, &what)? == decode::<Value>(&content, &what)?;
                return if same { Ok(()) } else { Err(Failure::WriteIdReused(write.clone())) };
            }
            db.prepare_cached(
                "INSERT INTO vault_versions (tenant, connection, slot, write_id, content, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![tenant, connection, slot, write, sealed, time_key(Utc::now())])?;
            db.prepare_cached(PRUNE)?.execute(params![tenant, connection, slot, VERSIONS_KEPT_PER_SLOT])?;
            Ok(())
        })
        .await
        .map_err(|f| f.into_vault(OPERATION))
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        pointer: &CredentialsPointer,
    ) -> Result<Option<Credentials>, VaultError> {
        let (tenant, connection, slot, write) = (
            tenant.to_string(),
            connection.to_string(),
            pointer.slot.as_str(),
            pointer.write.to_string(),
        );
        let key = self.vault_key();
        self.read(move |db| {
            let stored: Option<Stored> = db
                .prepare_cached(
                    "SELECT content FROM vault_versions
                     WHERE tenant = ?1 AND connection = ?2 AND slot = ?3 AND write_id = ?4",
                )?
                .query_row(params![tenant, connection, slot, write], |r| r.get(0))
                .optional()?;
            let Some(stored) = stored else {
                return Ok(None);
            };
            let entry = Entry::credentials(&tenant, &connection, slot, &write);
            let content = key.reveal(entry, stored)?;
            decode(&content, &describe(&connection, slot, &write)).map(Some)
        })
        .await
        .map_err(|f| f.into_vault("reading credentials from the vault"))
    }

    async fn delete_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
    ) -> Result<(), VaultError> {
        let (tenant, connection) = (tenant.to_string(), connection.to_string());
        self.write_and_scrub(move |db| {
            db.prepare_cached("DELETE FROM vault_versions WHERE tenant = ?1 AND connection = ?2")?
                .execute(params![tenant, connection])?;
            Ok(())
        })
        .await
        .map_err(|f| f.into_vault("deleting a connection's credentials"))
    }

    async fn put_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        secret: &ClientSecret,
    ) -> Result<(), VaultError> {
        const OPERATION: &str = "storing an app's client secret";
        let (tenant, app) = (tenant.to_string(), app.to_string());
        let entry = Entry::client_secret(&tenant, &app);
        let content = self
            .vault_key()
            .seal(entry, secret.expose().as_bytes())
            .map_err(|f| f.into_vault(OPERATION))?;
        // Scrubbed: the secret it replaces is gone from the files too.
        self.write_and_scrub(move |db| {
            db.prepare_cached(
                "INSERT INTO client_secrets (tenant, app, content, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, app) DO UPDATE SET content = excluded.content, updated_at = excluded.updated_at",
            )?
            .execute(params![tenant, app, content, time_key(Utc::now())])?;
            Ok(())
        })
        .await
        .map_err(|f| f.into_vault(OPERATION))
    }

    async fn get_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
    ) -> Result<Option<ClientSecret>, VaultError> {
        let (tenant, app) = (tenant.to_string(), app.to_string());
        let key = self.vault_key();
        self.read(move |db| {
            let stored: Option<Stored> = db
                .prepare_cached(
                    "SELECT content FROM client_secrets WHERE tenant = ?1 AND app = ?2",
                )?
                .query_row(params![tenant, app], |r| r.get(0))
                .optional()?;
            let entry = Entry::client_secret(&tenant, &app);
            stored
                .map(|stored| key.reveal(entry, stored).map(ClientSecret::new))
                .transpose()
        })
        .await
        .map_err(|f| f.into_vault("reading an app's client secret"))
    }

    async fn put_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &crate::ids::WebhookId,
        secret: &crate::secret::WebhookSecret,
    ) -> Result<(), VaultError> {
        self.put_sealed_webhook_secret(tenant, webhook, secret)
            .await
    }

    async fn get_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &crate::ids::WebhookId,
    ) -> Result<Option<crate::secret::WebhookSecret>, VaultError> {
        self.get_sealed_webhook_secret(tenant, webhook).await
    }

    async fn delete_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &crate::ids::WebhookId,
    ) -> Result<(), VaultError> {
        self.delete_sealed_webhook_secret(tenant, webhook).await
    }

    async fn delete_client_secret(&self, tenant: &TenantId, app: &AppId) -> Result<(), VaultError> {
        let (tenant, app) = (tenant.to_string(), app.to_string());
        // Scrubbed, as on replacing it: a deleted secret must not linger in free pages.
        self.write_and_scrub(move |db| {
            db.prepare_cached("DELETE FROM client_secrets WHERE tenant = ?1 AND app = ?2")?
                .execute(params![tenant, app])?;
            Ok(())
        })
        .await
        .map_err(|f| f.into_vault("deleting an app's client secret"))
    }

    async fn seal_escrow(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        credentials: &Credentials,
    ) -> Result<SealedCredentials, VaultError> {
        let key = self.escrow_key().await?;
        escrow::seal(
            &key,
            SealedCredentials::LOCAL_KEY.into(),
            tenant,
            connection,
            target,
            credentials,
        )
    }

    async fn open_escrow(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        sealed: &SealedCredentials,
    ) -> Result<Credentials, VaultError> {
        if sealed.key != SealedCredentials::LOCAL_KEY {
            return Err(VaultError::Corrupt(format!(
                "the escrow of connection {connection} was sealed by KMS, not by this store's local key"
            )));
        }
        let key = self.escrow_key().await?;
        escrow::open(&key, tenant, connection, target, sealed)
    }
}

impl EmbeddedStore {
    /// The local escrow key, made with the file (schema version 4), sealed with the vault key: a copy
    /// of the file alone opens no escrow either.
    async fn escrow_key(&self) -> Result<DataKey, VaultError> {
        let vault_key = self.vault_key();
        let mut key: Vec<u8> = self
            .read(move |db| {
                let stored: Vec<u8> = db
                    .prepare_cached("SELECT key FROM local_keys WHERE name = 'escrow'")?
                    .query_row([], |r| r.get(0))?;
                vault_key.reveal_local_key("escrow", &stored)
            })
            .await
            .map_err(|f| f.into_vault("reading the local escrow key"))?;
        let escrow_key = DataKey::from_slice(&key);
        key.fill(0);
        escrow_key
    }
}
