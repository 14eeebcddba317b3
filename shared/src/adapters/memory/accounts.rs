//! Tenants, app registrations, API keys, authorization states and connect links, in memory.

use super::*;

#[async_trait]
impl TenantStore for MemoryStore {
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.tenants.contains_key(&tenant.id) {
            return Err(StoreError::AlreadyExists(format!("tenant {}", tenant.id)));
        }
        state.tenants.insert(tenant.id.clone(), tenant.clone());
        Ok(())
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        Ok(self.state().tenants.get(id).cloned())
    }

    async fn put_app(&self, app: &OAuthApp) -> Result<(), StoreError> {
        self.state()
            .apps
            .insert((app.tenant.clone(), app.id.clone()), app.clone());
        Ok(())
    }

    async fn get_app(&self, tenant: &TenantId, id: &AppId) -> Result<Option<OAuthApp>, StoreError> {
        Ok(self
            .state()
            .apps
            .get(&(tenant.clone(), id.clone()))
            .cloned())
    }

    async fn list_apps(&self, tenant: &TenantId) -> Result<Vec<OAuthApp>, StoreError> {
        Ok(self
            .state()
            .apps
            .values()
            .filter(|a| &a.tenant == tenant)
            .cloned()
            .collect())
    }

    async fn delete_app(&self, tenant: &TenantId, id: &AppId) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .apps
            .remove(&(tenant.clone(), id.clone()))
            .is_some())
    }
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        let prefix = key.prefix.as_str().to_string();
        if state.api_keys.contains_key(&prefix) {
            return Err(StoreError::AlreadyExists(format!("API key {prefix}")));
        }
        state.api_keys.insert(prefix, key.clone());
        Ok(())
    }

    async fn get_api_key(&self, prefix: &ApiKeyPrefix) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self.state().api_keys.get(prefix.as_str()).cloned())
    }

    /// A key already revoked keeps its first revocation time, as on the real backends.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        prefix: &ApiKeyPrefix,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        match state
            .api_keys
            .get_mut(prefix.as_str())
            .filter(|k| &k.tenant == tenant)
        {
            Some(key) => {
                key.revoked_at.get_or_insert(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Ok(self
            .state()
            .api_keys
            .values()
            .filter(|k| &k.tenant == tenant)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl AuthorizationStateStore for MemoryStore {
    async fn put_pending(
        &self,
        key: &OneTimeKey,
        pending: &PendingAuthorization,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.pending.contains_key(key) {
            return Err(StoreError::AlreadyExists("the authorization state".into()));
        }
        state.pending.insert(key.clone(), pending.clone());
        Ok(())
    }

    async fn consume_pending(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<PendingAuthorization>, StoreError> {
        Ok(match self.state().pending.remove(key) {
            None => Consumed::Unknown,
            Some(pending) if pending.expires_at <= now => Consumed::Expired,
            Some(pending) => Consumed::Fresh(pending),
        })
    }
}

#[async_trait]
impl ConnectLinkStore for MemoryStore {
    async fn put_link(&self, key: &OneTimeKey, link: &ConnectLink) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.links.contains_key(key) {
            return Err(StoreError::AlreadyExists("the connect link".into()));
        }
        state.links.insert(key.clone(), link.clone());
        Ok(())
    }

    async fn get_link(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<ConnectLink>, StoreError> {
        Ok(match self.state().links.get(key) {
            None => Consumed::Unknown,
            Some(link) if link.expires_at <= now => Consumed::Expired,
            Some(link) => Consumed::Fresh(link.clone()),
        })
    }
}
