//! The vault at rest: what the files in the data folder hold, byte for byte, after tokens and client
//! secrets went through the store's ports; the key file's rules; values moved between rows; and rows
//! an earlier version stored in the clear.

#[cfg(unix)]
use super::tests::mode;
use super::tests::{acme, connection, t0, TempDir};
use super::EmbeddedStore;
use crate::domain::*;
use crate::escrow::{self, DataKey, SealedCredentials};
use crate::ids::{AppId, ConnectionId, WriteId};
use crate::ports::*;
use crate::secret::{AccessToken, ClientSecret, RefreshToken};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::Duration;
use std::path::{Path, PathBuf};

const ACCESS: &str = "at-rest-ACCESS-8c1f2d";
const REFRESH: &str = "at-rest-REFRESH-5e9b07";
const SECRET: &str = "at-rest-CLIENT-SECRET-3a6d";

fn sentinel_tokens(suffix: &str) -> Credentials {
    Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new(format!("{ACCESS}{suffix}")),
        access_expires_at: t0() + Duration::seconds(600),
        refresh_token: Some(RefreshToken::new(format!("{REFRESH}{suffix}"))),
        refresh_expires_at: None,
        scope: None,
        received_at: t0(),
    })
}

/// Credentials compare as what they serialise to.
fn json(credentials: &Credentials) -> serde_json::Value {
    serde_json::to_value(credentials).unwrap()
}

/// A new connection of `acme` with [`sentinel_tokens`] stored for it in slot A.
async fn stored_sentinels(store: &EmbeddedStore) -> (Connection, WriteId) {
    let c = connection(&acme(), t0());
    store.insert_connection(&c, &[]).await.unwrap();
    let write = WriteId::generate();
    store
        .put_credentials(&acme(), &c.id, VaultSlot::A, &write, &sentinel_tokens(""))
        .await
        .unwrap();
    (c, write)
}

/// The credentials `c` holds in slot A as version `write`, as JSON.
async fn tokens_at(
    store: &EmbeddedStore,
    c: &Connection,
    write: &WriteId,
) -> Option<serde_json::Value> {
    let pointer = CredentialsPointer {
        slot: VaultSlot::A,
        write: write.clone(),
    };
    let credentials = store.get_credentials(&acme(), &c.id, &pointer).await;
    credentials.unwrap().as_ref().map(json)
}

/// What `sealed`, an escrow of `c`'s refresh to `write`, opens to, as JSON.
async fn opened_escrow(
    store: &EmbeddedStore,
    c: &Connection,
    write: &WriteId,
    sealed: &SealedCredentials,
) -> serde_json::Value {
    let opened = store.open_escrow(&acme(), &c.id, write, sealed).await;
    json(&opened.unwrap())
}

fn app(name: &str) -> AppId {
    AppId::parse(name).unwrap()
}

/// `secret` as it could sit in a file: as is, base64 (standard and URL-safe) and hex.
fn forms(secret: &str) -> Vec<(String, Vec<u8>)> {
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    vec![
        ("raw".into(), secret.as_bytes().to_vec()),
        ("base64".into(), STANDARD.encode(secret).into_bytes()),
        (
            "base64url".into(),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ),
        ("hex".into(), hex.clone().into_bytes()),
        ("HEX".into(), hex.to_uppercase().into_bytes()),
    ]
}

/// Every file in the store's folder with its bytes: the database, its `-wal` and `-shm`, the key file.
fn files_of(store_file: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let folder = store_file.parent().unwrap();
    std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Which of `needles` (named) occur in which file of the store's folder.
fn found_in_files(store_file: &Path, needles: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, bytes) in files_of(store_file) {
        for (name, needle) in needles {
            if contains(&bytes, needle) {
                found.push(format!("{name} in {}", path.display()));
            }
        }
    }
    found
}

fn secret_forms(secrets: &[&str]) -> Vec<(String, Vec<u8>)> {
    secrets
        .iter()
        .flat_map(|secret| {
            forms(secret)
                .into_iter()
                .map(move |(form, bytes)| (format!("{secret} ({form})"), bytes))
        })
        .collect()
}

fn wal_of(store_file: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", store_file.display()))
}

#[cfg(unix)]
#[tokio::test]
async fn no_file_in_the_data_folder_shows_a_token_or_client_secret() {
    let dir = TempDir::new();
    let path = dir.file();
    let store = EmbeddedStore::open(&path).unwrap();
    store
        .put_client_secret(&acme(), &app("exact-nl"), &ClientSecret::new(SECRET))
        .await
        .unwrap();
    let (c, write) = stored_sentinels(&store).await;
    let secrets = secret_forms(&[ACCESS, REFRESH, SECRET]);

    assert!(
        std::fs::metadata(wal_of(&path)).unwrap().len() > 0,
        "the writes are in the WAL, which is searched too"
    );
    let found = found_in_files(&path, &secrets);
    assert!(found.is_empty(), "at rest while open: {found:?}");

    // Read back through the ports, unchanged.
    assert_eq!(
        tokens_at(&store, &c, &write).await,
        Some(json(&sentinel_tokens("")))
    );
    let secret = store
        .get_client_secret(&acme(), &app("exact-nl"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret.expose(), SECRET);

    // The key: a file of its own beside the database, owner-only, and in neither database file.
    let key_file = EmbeddedStore::key_path(&path);
    assert_eq!(key_file, PathBuf::from(format!("{}.key", path.display())));
    assert_eq!(mode(&key_file), 0o600);
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let key = STANDARD
        .decode(key_text.trim_end().rsplit(' ').next().unwrap())
        .unwrap();
    assert_eq!(key.len(), 32);
    let key_forms = vec![
        ("raw key".to_string(), key.clone()),
        ("base64 key".to_string(), STANDARD.encode(&key).into_bytes()),
    ];
    for (file, bytes) in files_of(&path) {
        if file != key_file {
            for (name, needle) in &key_forms {
                assert!(!contains(&bytes, needle), "{name} in {}", file.display());
            }
        }
    }

    drop(store);
    let found = found_in_files(&path, &secrets);
    assert!(found.is_empty(), "at rest after closing: {found:?}");
}

/// The bytes a row holds, read with a connection of the test's own (closed again at once).
fn raw_value(store_file: &Path, sql: &str, params: impl rusqlite::Params) -> Vec<u8> {
    let db = rusqlite::Connection::open(store_file).unwrap();
    db.query_row(sql, params, |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn a_disconnect_leaves_no_copy_of_the_deleted_tokens_in_the_database_or_its_wal() {
    let dir = TempDir::new();
    let path = dir.file();
    let store = EmbeddedStore::open(&path).unwrap();
    let (kept, gone) = (connection(&acme(), t0()), connection(&acme(), t0()));
    for (c, suffix) in [(&kept, "-kept"), (&gone, "-gone")] {
        store.insert_connection(c, &[]).await.unwrap();
        for slot in [VaultSlot::A, VaultSlot::B] {
            store
                .put_credentials(
                    &acme(),
                    &c.id,
                    slot,
                    &WriteId::generate(),
                    &sentinel_tokens(suffix),
                )
                .await
                .unwrap();
        }
    }
    store
        .put_client_secret(&acme(), &app("exact-nl"), &ClientSecret::new("first"))
        .await
        .unwrap();
    let sealed_of = |connection: &ConnectionId| -> Vec<(String, Vec<u8>)> {
        let db = rusqlite::Connection::open(&path).unwrap();
        let mut select = db
            .prepare("SELECT slot, content FROM vault_versions WHERE connection = ?1")
            .unwrap();
        select
            .query_map([connection.as_str()], |r| {
                Ok((format!("sealed slot {}", r.get::<_, String>(0)?), r.get(1)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let deleted = sealed_of(&gone.id);
    assert_eq!(deleted.len(), 2);
    let replaced_secret = vec![(
        "the replaced client secret".to_string(),
        raw_value(&path, "SELECT content FROM client_secrets", []),
    )];
    let found = found_in_files(&path, &deleted);
    assert!(
        !found.is_empty(),
        "the sealed values are in the files before"
    );

    store.delete_credentials(&acme(), &gone.id).await.unwrap();
    store
        .put_client_secret(&acme(), &app("exact-nl"), &ClientSecret::new("second"))
        .await
        .unwrap();

    assert_eq!(
        std::fs::metadata(wal_of(&path)).unwrap().len(),
        0,
        "the WAL was checkpointed and truncated"
    );
    let found = found_in_files(&path, &deleted);
    assert!(
        found.is_empty(),
        "deleted, yet still in the files: {found:?}"
    );
    let found = found_in_files(&path, &replaced_secret);
    assert!(
        found.is_empty(),
        "replaced, yet still in the files: {found:?}"
    );
    assert!(
        found_in_files(&path, &sealed_of(&kept.id)).len() >= 2,
        "what was kept is still there"
    );
    let secret = store.get_client_secret(&acme(), &app("exact-nl")).await;
    assert_eq!(secret.unwrap().unwrap().expose(), "second");
}

#[tokio::test]
async fn a_sealed_value_moved_to_another_row_does_not_open() {
    let dir = TempDir::new();
    let path = dir.file();
    let store = EmbeddedStore::open(&path).unwrap();
    let (from, to) = (connection(&acme(), t0()), connection(&acme(), t0()));
    let write = WriteId::generate();
    for (c, suffix) in [(&from, "-from"), (&to, "-to")] {
        store.insert_connection(c, &[]).await.unwrap();
        store
            .put_credentials(
                &acme(),
                &c.id,
                VaultSlot::A,
                &write,
                &sentinel_tokens(suffix),
            )
            .await
            .unwrap();
    }
    for name in ["app-from", "app-to"] {
        store
            .put_client_secret(
                &acme(),
                &app(name),
                &ClientSecret::new(format!("{SECRET}-{name}")),
            )
            .await
            .unwrap();
    }
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute(
            "UPDATE vault_versions SET content =
                 (SELECT content FROM vault_versions WHERE connection = ?1)
             WHERE connection = ?2",
            [from.id.as_str(), to.id.as_str()],
        )
        .unwrap();
        db.execute(
            "UPDATE client_secrets SET content =
                 (SELECT content FROM client_secrets WHERE app = 'app-from')
             WHERE app = 'app-to'",
            [],
        )
        .unwrap();
    }
    let pointer = CredentialsPointer {
        slot: VaultSlot::A,
        write,
    };
    let err = store
        .get_credentials(&acme(), &to.id, &pointer)
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        matches!(&err, VaultError::Corrupt(m) if m.contains(to.id.as_str()) && m.contains("copied from another entry")),
        "{text}"
    );
    assert!(!text.contains(ACCESS) && !text.contains(REFRESH), "{text}");
    let err = store
        .get_client_secret(&acme(), &app("app-to"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::Corrupt(m) if m.contains("app-to") && m.contains("does not open")),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains(SECRET));
    // The rows they came from still open.
    assert_eq!(
        store
            .get_credentials(&acme(), &from.id, &pointer)
            .await
            .unwrap()
            .as_ref()
            .map(json),
        Some(json(&sentinel_tokens("-from")))
    );
    assert!(store
        .get_client_secret(&acme(), &app("app-from"))
        .await
        .is_ok());
}

/// Opens the store file `store_file` with a copy of the key file of `key_owner` beside it.
fn open_with_key_of(store_file: &Path, key_owner: &Path) -> Result<EmbeddedStore, StoreError> {
    let key = EmbeddedStore::key_path(key_owner);
    std::fs::copy(key, EmbeddedStore::key_path(store_file)).unwrap();
    EmbeddedStore::open(store_file)
}

#[tokio::test]
async fn a_database_copied_without_its_key_file_cannot_be_opened() {
    let (dir, copy, other) = (TempDir::new(), TempDir::new(), TempDir::new());
    let store = EmbeddedStore::open(dir.file()).unwrap();
    let (c, write) = stored_sentinels(&store).await;
    drop(store);
    drop(EmbeddedStore::open(other.file()).unwrap());

    std::fs::create_dir_all(copy.file().parent().unwrap()).unwrap();
    std::fs::copy(dir.file(), copy.file()).unwrap();
    let err = EmbeddedStore::open(copy.file()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m)
            if m.contains("key file") && m.contains("is missing") && m.contains("backed up with this database")),
        "{err}"
    );
    assert!(
        !EmbeddedStore::key_path(copy.file()).exists(),
        "no new key is made for a database that holds sealed values"
    );

    // Another store's key file is refused as such.
    let err = open_with_key_of(&copy.file(), &other.file()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("belongs to another database")),
        "{err}"
    );

    // With its own key file beside it, the copy is a working backup.
    let restored = open_with_key_of(&copy.file(), &dir.file()).unwrap();
    assert_eq!(
        tokens_at(&restored, &c, &write).await,
        Some(json(&sentinel_tokens("")))
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_key_file_others_can_read_or_that_holds_no_key_is_refused_and_never_rewritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    drop(EmbeddedStore::open(dir.file()).unwrap());
    let key_file = EmbeddedStore::key_path(dir.file());
    let key = std::fs::read(&key_file).unwrap();
    drop(EmbeddedStore::open(dir.file()).unwrap());
    assert_eq!(
        std::fs::read(&key_file).unwrap(),
        key,
        "reopening keeps the key"
    );

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = EmbeddedStore::open(dir.file()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("mode 640") && m.contains("chmod 600")),
        "{err}"
    );
    assert_eq!(mode(&key_file), 0o640, "not silently changed");

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key_file, "broker-vault-key v1 not-base64!\n").unwrap();
    let err = EmbeddedStore::open(dir.file()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("does not hold a vault key")),
        "{err}"
    );
    assert!(
        !err.to_string().contains("not-base64"),
        "the file is not quoted: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        "broker-vault-key v1 not-base64!\n",
        "a bad key file is never replaced"
    );
}

#[tokio::test]
async fn rows_an_earlier_version_stored_in_the_clear_are_read_and_sealed_when_the_store_opens() {
    let dir = TempDir::new();
    let path = dir.file();
    let c = connection(&acme(), t0());
    let write = WriteId::generate();
    let legacy_escrow_key = [7u8; 32];
    let escrowed = escrow::seal(
        &DataKey::from_slice(&legacy_escrow_key).unwrap(),
        escrow::SealedCredentials::LOCAL_KEY.into(),
        &acme(),
        &c.id,
        &write,
        &sentinel_tokens("-escrow"),
    )
    .unwrap();
    // A file as the version before sealing left it: the vault's values and the escrow key in the clear,
    // and no key file.
    {
        let store = EmbeddedStore::open(&path).unwrap();
        store.insert_connection(&c, &[]).await.unwrap();
    }
    std::fs::remove_file(EmbeddedStore::key_path(&path)).unwrap();
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute(
            "UPDATE local_keys SET key = ?1 WHERE name = 'escrow'",
            [&legacy_escrow_key[..]],
        )
        .unwrap();
        db.execute(
            "INSERT INTO vault_versions (tenant, connection, slot, write_id, content, created_at)
             VALUES ('acme', ?1, 'a', ?2, ?3, '2026-11-01T09:00:00.000000000Z')",
            [
                c.id.as_str(),
                write.as_str(),
                &serde_json::to_string(&sentinel_tokens("")).unwrap(),
            ],
        )
        .unwrap();
        db.execute(
            "INSERT INTO client_secrets (tenant, app, content, updated_at)
             VALUES ('acme', 'exact-nl', ?1, '2026-11-01T09:00:00.000000000Z')",
            [SECRET],
        )
        .unwrap();
    }
    let secrets = secret_forms(&[ACCESS, REFRESH, SECRET]);
    assert!(
        !found_in_files(&path, &secrets).is_empty(),
        "the earlier version's file shows them"
    );

    let store = EmbeddedStore::open(&path).unwrap();
    let found = found_in_files(&path, &secrets);
    assert!(
        found.is_empty(),
        "sealed on open, nothing left behind: {found:?}"
    );
    let kinds: Vec<String> = {
        let db = rusqlite::Connection::open(&path).unwrap();
        let mut select = db
            .prepare(
                "SELECT typeof(content) FROM vault_versions UNION ALL
                 SELECT typeof(content) FROM client_secrets UNION ALL
                 SELECT typeof(key) || length(key) FROM local_keys",
            )
            .unwrap();
        let kinds = select.query_map([], |r| r.get(0)).unwrap();
        kinds.map(Result::unwrap).collect()
    };
    assert_eq!(kinds, ["blob", "blob", "blob61"]);

    assert_eq!(
        tokens_at(&store, &c, &write).await,
        Some(json(&sentinel_tokens("")))
    );
    let secret = store.get_client_secret(&acme(), &app("exact-nl")).await;
    assert_eq!(secret.unwrap().unwrap().expose(), SECRET);
    assert_eq!(
        opened_escrow(&store, &c, &write, &escrowed).await,
        json(&sentinel_tokens("-escrow")),
        "an escrow sealed before still opens: its key was sealed, not replaced"
    );
}

#[tokio::test]
async fn processes_opening_a_new_store_at_once_agree_on_one_key() {
    let dir = TempDir::new();
    let path = dir.file();
    let stores: Vec<EmbeddedStore> = std::thread::scope(|scope| {
        let opening: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| EmbeddedStore::open(&path).unwrap()))
            .collect();
        opening.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let c = connection(&acme(), t0());
    stores[0].insert_connection(&c, &[]).await.unwrap();
    let write = WriteId::generate();
    stores[1]
        .put_credentials(&acme(), &c.id, VaultSlot::A, &write, &sentinel_tokens(""))
        .await
        .unwrap();
    for store in &stores {
        assert_eq!(
            tokens_at(store, &c, &write).await,
            Some(json(&sentinel_tokens("")))
        );
    }
    let leftovers: Vec<_> = files_of(&path)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test]
async fn a_lost_key_file_costs_the_sealed_values_but_not_the_rest_of_the_store() {
    let dir = TempDir::new();
    let path = dir.file();
    let store = EmbeddedStore::open(&path).unwrap();
    let (c, write) = stored_sentinels(&store).await;
    store
        .put_client_secret(&acme(), &app("exact-nl"), &ClientSecret::new(SECRET))
        .await
        .unwrap();
    drop(store);
    std::fs::remove_file(EmbeddedStore::key_path(&path)).unwrap();

    let err = EmbeddedStore::open(&path).unwrap_err().to_string();
    // The way out the message gives, run as given.
    let command = err
        .split_once(&format!("`sqlite3 '{}' \"", path.display()))
        .and_then(|(_, rest)| rest.split_once("\"`"))
        .map(|(statements, _)| statements.to_string())
        .unwrap_or_else(|| panic!("no command in: {err}"));
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&command)
        .unwrap();

    let store = EmbeddedStore::open(&path).unwrap();
    assert!(EmbeddedStore::key_path(&path).exists(), "a new key file");
    assert!(
        store.get_connection(&c.id).await.unwrap().is_some(),
        "the metadata is kept"
    );
    assert!(tokens_at(&store, &c, &write).await.is_none());
    assert!(store
        .get_client_secret(&acme(), &app("exact-nl"))
        .await
        .unwrap()
        .is_none());
    let escrowed = store
        .seal_escrow(&acme(), &c.id, &write, &sentinel_tokens("-escrow"))
        .await
        .unwrap();
    assert_eq!(
        opened_escrow(&store, &c, &write, &escrowed).await,
        json(&sentinel_tokens("-escrow")),
        "a new escrow key was made"
    );
}
