//! The store on a database in memory, as the core's unit tests use it: the same store as on a file,
//! private to its clones, with its vault sealed, and with writes that can be told to fail.

use super::tests::{acme, connection, t0};
use super::{EmbeddedStore, Faults};
use crate::domain::{Credentials, CredentialsPointer, TokenSet, VaultSlot};
use crate::ids::WriteId;
use crate::ports::{ConnectionStore, Fence, StoreError, TokenVault, VaultError};
use crate::secret::AccessToken;
use chrono::Duration;

fn tokens(access: &str) -> Credentials {
    Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new(access),
        access_expires_at: t0() + Duration::seconds(600),
        refresh_token: None,
        refresh_expires_at: None,
        scope: None,
        received_at: t0(),
    })
}

#[tokio::test]
async fn a_store_in_memory_reads_its_own_writes_and_no_other_stores() {
    let store = EmbeddedStore::in_memory().unwrap();
    let other = EmbeddedStore::in_memory().unwrap();
    assert_eq!(store.path().to_str(), Some(":memory:"));
    let c = connection(&acme(), t0());
    store.insert_connection(&c, &[]).await.unwrap();
    let pointer = CredentialsPointer {
        slot: VaultSlot::A,
        write: WriteId::generate(),
    };
    store
        .put_credentials(
            &acme(),
            &c.id,
            pointer.slot,
            &pointer.write,
            &tokens("kept"),
        )
        .await
        .unwrap();

    let read = store.clone().get_connection(&c.id).await.unwrap();
    assert_eq!(read.map(|r| r.id), Some(c.id.clone()), "clones share it");
    let credentials = store
        .get_credentials(&acme(), &c.id, &pointer)
        .await
        .unwrap()
        .expect("the vault holds what was written");
    assert_eq!(
        credentials.token_set().unwrap().access_token.expose(),
        "kept"
    );
    assert_eq!(other.get_connection(&c.id).await.unwrap(), None);
    assert_eq!(other.vault_versions(&acme(), &c.id).await, 0);
}

#[tokio::test]
async fn a_store_in_memory_seals_its_vault_values() {
    let store = EmbeddedStore::in_memory().unwrap();
    let c = connection(&acme(), t0());
    store
        .put_credentials(
            &acme(),
            &c.id,
            VaultSlot::B,
            &WriteId::generate(),
            &tokens("sealed"),
        )
        .await
        .unwrap();
    let stored: Vec<String> = store
        .read(|db| {
            let mut rows = db.prepare("SELECT typeof(content) FROM vault_versions")?;
            let kinds = rows.query_map([], |r| r.get(0))?;
            Ok(kinds.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    assert_eq!(stored, ["blob"], "sealed, not JSON in the clear");
}

#[tokio::test]
async fn writes_told_to_fail_fail_in_turn_and_change_nothing() {
    let store = EmbeddedStore::in_memory().unwrap();
    let c = connection(&acme(), t0());
    store.insert_connection(&c, &[]).await.unwrap();
    store.fail_next(Faults {
        vault_writes: 2,
        connection_saves: 1,
    });

    let write = WriteId::generate();
    for _ in 0..2 {
        let refused = store
            .put_credentials(&acme(), &c.id, VaultSlot::A, &write, &tokens("late"))
            .await;
        assert!(matches!(refused, Err(VaultError::Unavailable(_))));
    }
    assert_eq!(store.vault_versions(&acme(), &c.id).await, 0);
    store
        .put_credentials(&acme(), &c.id, VaultSlot::A, &write, &tokens("late"))
        .await
        .expect("the faults are used up");
    assert_eq!(store.vault_versions(&acme(), &c.id).await, 1);

    let mut renamed = c.clone();
    renamed.display_name = Some("Renamed".into());
    let refused = store.save_connection(&renamed, Fence::Version, &[]).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))));
    assert_eq!(store.get_connection(&c.id).await.unwrap(), Some(c));
    let saved = store.save_connection(&renamed, Fence::Version, &[]).await;
    assert_eq!(saved.unwrap().display_name.as_deref(), Some("Renamed"));
}
