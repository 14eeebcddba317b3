//! The token vault and its escrow, in memory.

use super::*;

/// Credentials as a JSON value: a repeated write is recognised by content, whatever the key order.
fn content_of(credentials: &Credentials) -> Result<serde_json::Value, VaultError> {
    serde_json::to_value(credentials)
        .map_err(|_| VaultError::Corrupt("credentials could not be serialised".into()))
}

#[async_trait]
impl TokenVault for MemoryStore {
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        slot: VaultSlot,
        write: &WriteId,
        credentials: &Credentials,
    ) -> Result<(), VaultError> {
        if self.take_fault(|f| &mut f.vault_writes) {
            return Err(VaultError::Unavailable(
                "writing credentials to the vault: the in-memory vault was told to fail this write"
                    .into(),
            ));
        }
        let entry = (tenant.clone(), connection.clone(), slot, write.clone());
        let mut state = self.state();
        if let Some(existing) = state.vault.get(&entry) {
            return if content_of(existing)? == content_of(credentials)? {
                Ok(())
            } else {
                Err(VaultError::WriteIdReused(write.to_string()))
            };
        }
        state.vault.insert(entry, credentials.clone());
        Ok(())
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        pointer: &CredentialsPointer,
    ) -> Result<Option<Credentials>, VaultError> {
        let entry = (
            tenant.clone(),
            connection.clone(),
            pointer.slot,
            pointer.write.clone(),
        );
        Ok(self.state().vault.get(&entry).cloned())
    }

    async fn delete_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
    ) -> Result<(), VaultError> {
        self.state()
            .vault
            .retain(|(t, c, _, _), _| !(t == tenant && c == connection));
        Ok(())
    }

    async fn put_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        secret: &ClientSecret,
    ) -> Result<(), VaultError> {
        self.state()
            .client_secrets
            .insert((tenant.clone(), app.clone()), secret.clone());
        Ok(())
    }

    async fn get_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
    ) -> Result<Option<ClientSecret>, VaultError> {
        Ok(self
            .state()
            .client_secrets
            .get(&(tenant.clone(), app.clone()))
            .cloned())
    }

    async fn put_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &crate::ids::WebhookId,
        secret: &crate::secret::WebhookSecret,
    ) -> Result<(), VaultError> {
        self.put_memory_webhook_secret(tenant, webhook, secret);
        Ok(())
    }

    async fn get_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &crate::ids::WebhookId,
    ) -> Result<Option<crate::secret::WebhookSecret>, VaultError> {
        Ok(self.get_memory_webhook_secret(tenant, webhook))
    }

    async fn delete_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &crate::ids::WebhookId,
    ) -> Result<(), VaultError> {
        self.delete_memory_webhook_secret(tenant, webhook);
        Ok(())
    }

    async fn delete_client_secret(&self, tenant: &TenantId, app: &AppId) -> Result<(), VaultError> {
        self.state()
            .client_secrets
            .remove(&(tenant.clone(), app.clone()));
        Ok(())
    }

    async fn seal_escrow(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        credentials: &Credentials,
    ) -> Result<SealedCredentials, VaultError> {
        escrow::seal(
            &self.inner.escrow_key,
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
        escrow::open(&self.inner.escrow_key, tenant, connection, target, sealed)
    }
}
