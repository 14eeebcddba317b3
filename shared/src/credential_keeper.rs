//! Storing a connection's credentials safely: vault first, then the metadata that points at them.
//!
//! New credentials always go to the slot that is not current (see [`VaultSlot`]), under a fresh
//! [`WriteId`]; only then is the connection saved, fenced, pointing at them. Consequences:
//! - a crash after the vault write leaves the current credentials untouched and the new ones
//!   readable by the write id recorded beforehand (the refresh engine's in-flight marker);
//! - a writer whose fence fails has written only to the non-current slot, so it never destroys
//!   the credentials another worker committed;
//! - each Secrets Manager secret takes half of a connection's writes;
//! - a write fenced off by a disconnect deletes what it wrote, so no token outlives the connection.

use crate::domain::{
    Connection, ConnectionStatus, Credentials, CredentialsPointer, StatusTransition, VaultSlot,
};
use crate::ids::WriteId;
use crate::ports::{Fence, MetadataStore, StoreError, TokenVault, VaultError};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeeperError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct CredentialKeeper {
    store: Arc<dyn MetadataStore>,
    vault: Arc<dyn TokenVault>,
}

impl CredentialKeeper {
    pub fn new(store: Arc<dyn MetadataStore>, vault: Arc<dyn TokenVault>) -> Self {
        Self { store, vault }
    }

    /// Where the connection's next credentials will be written. Record it (e.g. in a refresh
    /// in-flight marker) before asking the provider, so an interrupted write can be found again.
    pub fn next_target(connection: &Connection) -> CredentialsPointer {
        let slot = connection
            .credentials
            .as_ref()
            .map_or(VaultSlot::A, |current| current.slot.other());
        CredentialsPointer {
            slot,
            write: WriteId::generate(),
        }
    }

    /// Writes `credentials` to `target`, then saves `connection` (with whatever else the caller changed)
    /// pointing at them, fenced, together with `transitions`. On a fence failure the current
    /// credentials are untouched and [`StoreError::Conflict`] is returned.
    pub async fn commit(
        &self,
        mut connection: Connection,
        target: CredentialsPointer,
        credentials: &Credentials,
        fence: Fence<'_>,
        transitions: &[StatusTransition],
    ) -> Result<Connection, KeeperError> {
        debug_assert!(
            connection
                .credentials
                .as_ref()
                .is_none_or(|current| current.slot != target.slot),
            "the current slot must never be overwritten"
        );
        self.vault
            .put_credentials(
                &connection.tenant,
                &connection.id,
                target.slot,
                &target.write,
                credentials,
            )
            .await?;
        if let Some(tokens) = credentials.token_set() {
            connection.access_expires_at = Some(tokens.access_expires_at);
            connection.access_issued_at = Some(tokens.received_at);
            connection.refresh_expires_at = tokens.refresh_expires_at;
        }
        connection.credentials = Some(target);
        connection.legacy_credentials = matches!(credentials, Credentials::TwinfieldLegacy(_));
        match self
            .store
            .save_connection(&connection, fence, transitions)
            .await
        {
            Ok(saved) => Ok(saved),
            Err(e) => {
                self.forget_if_disconnected(&connection).await;
                Err(e.into())
            }
        }
    }

    /// A write that lost its fence to a disconnect (or a deletion) landed in the vault after the
    /// disconnect deleted the connection's credentials: delete them again, so no token outlives the
    /// connection. Best effort; the failure is logged, and a repeated disconnect deletes again.
    async fn forget_if_disconnected(&self, written: &Connection) {
        let gone = match self.store.get_connection(&written.id).await {
            Ok(Some(now)) => now.status() == ConnectionStatus::Disconnected,
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(connection = %written.id, error = %e, "could not check whether a fenced-off write outlived a disconnect");
                false
            }
        };
        if gone {
            tracing::warn!(connection = %written.id, "credentials written after a disconnect are deleted again");
            if let Err(e) = self
                .vault
                .delete_credentials(&written.tenant, &written.id)
                .await
            {
                tracing::error!(connection = %written.id, error = %e, "credentials written after a disconnect could not be deleted; disconnect it again to retry");
            }
        }
    }

    /// The connection's current credentials.
    pub async fn current(
        &self,
        connection: &Connection,
    ) -> Result<Option<Credentials>, VaultError> {
        match &connection.credentials {
            Some(pointer) => {
                self.vault
                    .get_credentials(&connection.tenant, &connection.id, pointer)
                    .await
            }
            None => Ok(None),
        }
    }

    /// Credentials written to `pointer`, whether or not the metadata ever pointed there (recovery).
    pub async fn read(
        &self,
        connection: &Connection,
        pointer: &CredentialsPointer,
    ) -> Result<Option<Credentials>, VaultError> {
        self.vault
            .get_credentials(&connection.tenant, &connection.id, pointer)
            .await
    }
}
