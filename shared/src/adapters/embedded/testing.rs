//! What tests of the core need from the store beyond its ports: writes that fail as an unavailable AWS
//! service would (throttled, unreachable), and a look at what the vault holds.

use super::{EmbeddedStore, Failure};
use crate::ids::{ConnectionId, TenantId};
use rusqlite::params;
use std::sync::PoisonError;

/// Writes to fail next, each as [`crate::ports::VaultError::Unavailable`] or
/// [`crate::ports::StoreError::Unavailable`]: what a throttled or unreachable AWS service answers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// `put_credentials` calls to refuse.
    pub vault_writes: u32,
    /// `save_connection` calls to refuse.
    pub connection_saves: u32,
}

/// Why a write told to fail failed, after the operation's name.
pub(super) const TOLD_TO_FAIL: &str = "the store was told to fail this write";

impl EmbeddedStore {
    /// Adds to the writes that fail next (see [`Faults`]).
    pub fn fail_next(&self, faults: Faults) {
        let mut f = self
            .inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.vault_writes += faults.vault_writes;
        f.connection_saves += faults.connection_saves;
    }

    /// Takes one fault of the kind `pick` names, if any is left; checked before a write changes
    /// anything, so a refused write leaves the store as it was.
    pub(super) fn told_to_fail(&self, pick: impl FnOnce(&mut Faults) -> &mut u32) -> bool {
        let mut f = self
            .inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let left = pick(&mut f);
        let hit = *left > 0;
        *left = left.saturating_sub(1);
        hit
    }

    /// How many versions the vault holds for a connection (both slots), for tests of what a write
    /// left behind.
    pub async fn vault_versions(&self, tenant: &TenantId, connection: &ConnectionId) -> usize {
        let (tenant, connection) = (tenant.to_string(), connection.to_string());
        let counted = self
            .read(move |db| {
                let n: i64 = db
                    .prepare_cached(
                        "SELECT count(*) FROM vault_versions WHERE tenant = ?1 AND connection = ?2",
                    )?
                    .query_row(params![tenant, connection], |r| r.get(0))?;
                usize::try_from(n).map_err(|_| Failure::Bug("a count is never negative"))
            })
            .await;
        counted.unwrap_or_else(|f| panic!("{}", f.unavailable("counting vault versions")))
    }
}
