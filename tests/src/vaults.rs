//! Vaults around a real one: one that records what passes through it (how many times tokens were
//! read, and when each vault slot of each connection was written), and one whose credential writes
//! can be refused or never return, as in an outage or a crash.

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

/// Counts credential reads and times credential writes.
pub struct Recorder {
    clock: Arc<dyn Clock>,
    reads: AtomicU64,
    writes: Mutex<WritesBySlot>,
}

impl VaultHooks for Recorder {
    fn before_write(&self, connection: &ConnectionId, slot: VaultSlot) -> Result<(), VaultError> {
        self.writes
            .lock()
            .unwrap()
            .entry((connection.clone(), slot))
            .or_default()
            .push(self.clock.now());
        Ok(())
    }

    fn on_read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

/// A real vault that records what passes through it.
pub type RecordingVault = HookedVault<Recorder>;

impl HookedVault<Recorder> {
    /// Records calls to `inner`, timing writes by `clock`.
    pub fn around(inner: Arc<dyn TokenVault>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let hooks = Recorder {
            clock,
            reads: AtomicU64::new(0),
            writes: Mutex::default(),
        };
        Arc::new(Self { inner, hooks })
    }

    /// Credential reads so far.
    pub fn reads(&self) -> u64 {
        self.hooks.reads.load(Ordering::SeqCst)
    }

    /// When each slot of each connection was written (each write is a new Secrets Manager version).
    pub fn writes(&self) -> WritesBySlot {
        self.hooks.writes.lock().unwrap().clone()
    }

    /// Writes so far to slot A and to slot B, over every connection.
    pub fn writes_per_slot(&self) -> [u64; 2] {
        let mut per_slot = [0u64; 2];
        for ((_, slot), times) in self.hooks.writes.lock().unwrap().iter() {
            per_slot[usize::from(*slot == VaultSlot::B)] += times.len() as u64;
        }
        per_slot
    }
}

/// What a [`HookedVault`] does around credential reads and writes.
#[async_trait]
pub trait VaultHooks: Send + Sync {
    /// Before a write reaches the real vault: an error refuses it.
    fn before_write(&self, _connection: &ConnectionId, _slot: VaultSlot) -> Result<(), VaultError> {
        Ok(())
    }

    /// A credential read, before it reaches the real vault.
    fn on_read(&self) {}

    /// After the real vault took the write, before the caller hears of it (a worker that dies here
    /// never returns).
    async fn after_write(&self) {}
}

/// A real vault whose credential reads and writes pass through `hooks`; everything else, escrow
/// included, is the real vault's.
pub struct HookedVault<H> {
    pub inner: Arc<dyn TokenVault>,
    pub hooks: H,
}

#[async_trait]
impl<H: VaultHooks> TokenVault for HookedVault<H> {
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        slot: VaultSlot,
        write: &WriteId,
        credentials: &Credentials,
    ) -> Result<(), VaultError> {
        self.hooks.before_write(connection, slot)?;
        self.inner
            .put_credentials(tenant, connection, slot, write, credentials)
            .await?;
        self.hooks.after_write().await;
        Ok(())
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        pointer: &CredentialsPointer,
    ) -> Result<Option<Credentials>, VaultError> {
        self.hooks.on_read();
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

    async fn seal_escrow(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        credentials: &Credentials,
    ) -> Result<broker_core::escrow::SealedCredentials, VaultError> {
        self.inner
            .seal_escrow(tenant, connection, target, credentials)
            .await
    }

    async fn open_escrow(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        sealed: &broker_core::escrow::SealedCredentials,
    ) -> Result<Credentials, VaultError> {
        self.inner
            .open_escrow(tenant, connection, target, sealed)
            .await
    }
}
