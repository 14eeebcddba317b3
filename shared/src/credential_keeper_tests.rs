//! The keeper's commit order (vault first, then the fenced metadata switch) and what a writer that
//! loses its fence leaves behind, on the embedded store in memory.

use crate::adapters::embedded::{EmbeddedStore, Faults};
use crate::credential_keeper::{CredentialKeeper, KeeperError};
use crate::domain::{Actor, Connection, Credentials, StatusEvent, TokenSet};
use crate::ports::{ConnectionStore, Fence, StoreError, TokenVault, VaultError};
use crate::secret::{AccessToken, RefreshToken};
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()
}

fn tokens(n: u32) -> Credentials {
    Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new(format!("access-{n}")),
        access_expires_at: t0() + Duration::seconds(600),
        refresh_token: Some(RefreshToken::new(format!("refresh-{n}"))),
        refresh_expires_at: Some(t0() + Duration::days(30)),
        scope: None,
        received_at: t0(),
    })
}

fn version_of(c: &Connection) -> u64 {
    c.version
}

fn access_token(credentials: Option<Credentials>) -> Option<String> {
    credentials.map(|c| c.token_set().unwrap().access_token.expose().to_string())
}

async fn setup() -> (EmbeddedStore, CredentialKeeper, Connection) {
    let store = EmbeddedStore::in_memory().unwrap();
    let keeper = CredentialKeeper::new(Arc::new(store.clone()), Arc::new(store.clone()));
    let mut c = crate::fixtures::acme_connection(t0());
    c.apply(StatusEvent::Authorized, Actor::System("test".into()), t0())
        .unwrap();
    store.insert_connection(&c, &[]).await.unwrap();
    (store, keeper, c)
}

#[tokio::test]
async fn a_commit_writes_the_vault_then_points_the_metadata_at_it() {
    let (store, keeper, c) = setup().await;
    let target = CredentialKeeper::next_target(&c);
    let saved = keeper
        .commit(c.clone(), target.clone(), &tokens(1), Fence::Version, &[])
        .await
        .unwrap();
    assert_eq!(saved.credentials, Some(target.clone()));
    assert_eq!(version_of(&saved), version_of(&c) + 1);
    assert_eq!(saved.access_expires_at, Some(t0() + Duration::seconds(600)));
    let stored = store.get_connection(&c.id).await.unwrap().unwrap();
    assert_eq!(stored, saved);
    assert_eq!(
        access_token(keeper.current(&stored).await.unwrap()).as_deref(),
        Some("access-1")
    );
    // The next write goes to the other slot.
    assert_ne!(CredentialKeeper::next_target(&stored).slot, target.slot);
}

#[tokio::test]
async fn a_refused_vault_write_leaves_the_metadata_alone() {
    let (store, keeper, c) = setup().await;
    store.fail_next(Faults {
        vault_writes: 1,
        ..Faults::default()
    });
    let target = CredentialKeeper::next_target(&c);
    let refused = keeper
        .commit(c.clone(), target, &tokens(1), Fence::Version, &[])
        .await;
    assert!(matches!(
        refused,
        Err(KeeperError::Vault(VaultError::Unavailable(_)))
    ));
    let stored = store.get_connection(&c.id).await.unwrap().unwrap();
    assert_eq!(
        stored, c,
        "no pointer to credentials that were never written"
    );
}

#[tokio::test]
async fn a_refused_metadata_switch_leaves_the_new_tokens_findable_by_their_write_id() {
    let (store, keeper, c) = setup().await;
    store.fail_next(Faults {
        connection_saves: 1,
        ..Faults::default()
    });
    let target = CredentialKeeper::next_target(&c);
    let refused = keeper
        .commit(c.clone(), target.clone(), &tokens(1), Fence::Version, &[])
        .await;
    assert!(matches!(
        refused,
        Err(KeeperError::Store(StoreError::Unavailable(_)))
    ));
    let stored = store.get_connection(&c.id).await.unwrap().unwrap();
    assert_eq!(stored.credentials, None);
    assert_eq!(
        access_token(keeper.read(&stored, &target).await.unwrap()).as_deref(),
        Some("access-1"),
        "the vault write came first"
    );
}

#[tokio::test]
async fn a_writer_that_lost_its_fence_leaves_the_current_credentials_untouched() {
    let (store, keeper, c) = setup().await;
    let first = CredentialKeeper::next_target(&c);
    let current = keeper
        .commit(c, first.clone(), &tokens(1), Fence::Version, &[])
        .await
        .unwrap();
    // Another worker writes in between: the copy below is stale.
    let mut other = current.clone();
    other.display_name = Some("renamed".into());
    store
        .save_connection(&other, Fence::Version, &[])
        .await
        .unwrap();

    let second = CredentialKeeper::next_target(&current);
    let lost = keeper
        .commit(
            current.clone(),
            second.clone(),
            &tokens(2),
            Fence::Version,
            &[],
        )
        .await;
    assert_eq!(lost.unwrap_err(), KeeperError::Store(StoreError::Conflict));
    let stored = store.get_connection(&current.id).await.unwrap().unwrap();
    assert_eq!(stored.credentials, Some(first.clone()));
    assert_eq!(
        access_token(keeper.current(&stored).await.unwrap()).as_deref(),
        Some("access-1")
    );
    // What the loser wrote sits in the other slot, harmless, until a later write there replaces it.
    assert_ne!(second.slot, first.slot);
    assert_eq!(
        access_token(keeper.read(&stored, &second).await.unwrap()).as_deref(),
        Some("access-2")
    );
}

#[tokio::test]
async fn a_writer_fenced_off_by_a_disconnect_leaves_no_tokens_behind() {
    let (store, keeper, c) = setup().await;
    let target = CredentialKeeper::next_target(&c);
    let current = keeper
        .commit(c, target, &tokens(1), Fence::Version, &[])
        .await
        .unwrap();
    // The disconnect: status, then the vault emptied.
    let mut disconnected = current.clone();
    let transition = disconnected
        .apply(StatusEvent::Disconnect, Actor::System("test".into()), t0())
        .unwrap();
    store
        .save_connection(&disconnected, Fence::Version, &[transition])
        .await
        .unwrap();
    store
        .delete_credentials(&current.tenant, &current.id)
        .await
        .unwrap();

    let late = keeper
        .commit(
            current.clone(),
            CredentialKeeper::next_target(&current),
            &tokens(2),
            Fence::Version,
            &[],
        )
        .await;
    assert_eq!(late.unwrap_err(), KeeperError::Store(StoreError::Conflict));
    assert_eq!(store.vault_versions(&current.tenant, &current.id).await, 0);
}
