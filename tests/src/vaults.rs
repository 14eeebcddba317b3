//! A vault that records what passes through it, around a real one: how many times tokens were read,
//! and when each vault slot of each connection was written.

use async_trait::async_trait;
use broker_core::domain::{Credentials, CredentialsPointer, VaultSlot};
use broker_core::ids::{AppId, ConnectionId, TenantId, WriteId};
use broker_core::ports::{TokenVault, VaultError};
use broker_core::secret::ClientSecret;
use broker_core::Clock;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// When each vault slot of each connection was written.
pub type WritesBySlot = HashMap<(ConnectionId, VaultSlot), Vec<DateTime<Utc>>>;

pub struct RecordingVault {
    inner: Arc<dyn TokenVault>,
    clock: Arc<dyn Clock>,
    reads: AtomicU64,
    writes: Mutex<WritesBySlot>,
}

impl RecordingVault {
    /// Records calls to `inner`, timing writes by `clock`.
    pub fn around(inner: Arc<dyn TokenVault>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            clock,
            reads: AtomicU64::new(0),
            writes: Mutex::default(),
        })
    }

    /// Credential reads so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// When each slot of each connection was written (each write is a new Secrets Manager version).
    pub fn writes(&self) -> WritesBySlot {
        self.writes.lock().unwrap().clone()
    }

    /// Writes so far to slot A and to slot B, over every connection.
    pub fn writes_per_slot(&self) -> [u64; 2] {
        let mut per_slot = [0u64; 2];
        for ((_, slot), times) in self.writes.lock().unwrap().iter() {
            per_slot[usize::from(*slot == VaultSlot::B)] += times.len() as u64;
        }
        per_slot
    }
}

#[async_trait]
impl TokenVault for RecordingVault {
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        slot: VaultSlot,
        write: &WriteId,
        credentials: &Credentials,
    ) -> Result<(), VaultError> {
        self.writes
            .lock()
            .unwrap()
            .entry((connection.clone(), slot))
            .or_default()
            .push(self.clock.now());
        self.inner
            .put_credentials(tenant, connection, slot, write, credentials)
            .await
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        pointer: &CredentialsPointer,
    ) -> Result<Option<Credentials>, VaultError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner
            .get_credentials(tenant, connection, pointer)
            .await
    }

    async fn delete_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
    ) -> Result<(), VaultError> {
        self.inner.delete_credentials(tenant, connection).await
    }

    async fn put_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
        secret: &ClientSecret,
    ) -> Result<(), VaultError> {
        self.inner.put_client_secret(tenant, app, secret).await
    }

    async fn get_client_secret(
        &self,
        tenant: &TenantId,
        app: &AppId,
    ) -> Result<Option<ClientSecret>, VaultError> {
        self.inner.get_client_secret(tenant, app).await
    }

    async fn delete_client_secret(&self, tenant: &TenantId, app: &AppId) -> Result<(), VaultError> {
        self.inner.delete_client_secret(tenant, app).await
    }
}
