//! The vault's contents sealed at rest: tokens, client secrets and the escrow key never reach the
//! store file, its WAL or its free pages in the clear.
//!
//! The file is owner-only, but a copy of it (a backup, a laptop's disk image, a file sent for
//! debugging) is not. So every vault value is sealed with AES-256-GCM under a key kept in a file of its
//! own beside the database (`<database>.key`, owner-only): a copied database without that file holds
//! nothing readable, and the two are backed up together or the tokens are lost (a reconnect restores
//! them).
//!
//! # Format
//!
//! A sealed value is a BLOB: a format byte ([`FORMAT_V1`]), a random 96-bit nonce, then the ciphertext
//! with its tag. Earlier versions stored the vault's values as TEXT (and the escrow key as its 32 raw
//! bytes), so SQLite's storage class tells the two apart whatever the text holds; those rows are sealed
//! when the store opens ([`unlock`]), in one transaction, after which the WAL is checkpointed and
//! truncated so the plaintext is gone from every file (`secure_delete` zeroes what the rewrite freed).
//!
//! The associated data names the row a value belongs to (table and key), so a sealed value copied into
//! another row — another connection's slot, another tenant's app — does not open there.
//!
//! # The key file
//!
//! Made once, when a store that holds no sealed values opens without one, under the database's write
//! lock (so two processes opening a new store agree on one key), written whole to a temporary file and
//! published by a hard link, which never replaces an existing file. It is never rewritten. A missing key
//! file while the database holds sealed values, a key file that is not owner-only or not a key, and a
//! key that does not open the database's values are each refused at open with what to do. A lost key
//! file loses only what it sealed: the message names the statement that drops those values, after
//! which the store opens with a new key (and a new escrow key), its connections ask to be reconnected
//! and its apps' client secrets are registered again.

use super::Failure;
use crate::ports::StoreError;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{Connection as Db, TransactionBehavior};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The first byte of a value sealed by this version: AES-256-GCM, 12-byte nonce, 16-byte tag.
const FORMAT_V1: u8 = 1;

/// What the key file holds before the key's base64; names the file's purpose to whoever opens it.
const KEY_FILE_HEADER: &str = "broker-vault-key v1 ";

/// An escrow key stored by an earlier version: its raw bytes, unsealed.
const PLAIN_LOCAL_KEY_LEN: usize = 32;

/// The key file of the store at `database`: the same name with `.key` appended.
pub(super) fn key_path(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(".key");
    PathBuf::from(path)
}

/// The row a vault value belongs to; bound into its seal as associated data.
#[derive(Clone, Copy)]
pub(super) enum Entry<'a> {
    Credentials {
        tenant: &'a str,
        connection: &'a str,
        slot: &'a str,
        write: &'a str,
    },
    ClientSecret {
        tenant: &'a str,
        app: &'a str,
    },
    LocalKey {
        name: &'a str,
    },
}

impl<'a> Entry<'a> {
    pub(super) fn credentials(
        tenant: &'a str,
        connection: &'a str,
        slot: &'a str,
        write: &'a str,
    ) -> Self {
        Entry::Credentials {
            tenant,
            connection,
            slot,
            write,
        }
    }

    pub(super) fn client_secret(tenant: &'a str, app: &'a str) -> Self {
        Entry::ClientSecret { tenant, app }
    }

    /// A JSON array (table, then key columns): unambiguous whatever the ids contain.
    fn associated_data(&self) -> Vec<u8> {
        let parts: Vec<&str> = match *self {
            Entry::Credentials {
                tenant,
                connection,
                slot,
                write,
            } => vec!["vault_versions", tenant, connection, slot, write],
            Entry::ClientSecret { tenant, app } => vec!["client_secrets", tenant, app],
            Entry::LocalKey { name } => vec!["local_keys", name],
        };
        serde_json::to_vec(&parts).unwrap_or_default()
    }
}

impl fmt::Display for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Entry::Credentials {
                tenant,
                connection,
                slot,
                write,
            } => write!(
                f,
                "vault entry {slot}/{write} of connection {connection} (tenant {tenant})"
            ),
            Entry::ClientSecret { tenant, app } => {
                write!(f, "the client secret of app {app} (tenant {tenant})")
            }
            Entry::LocalKey { name } => write!(f, "the store's {name} key"),
        }
    }
}

/// A vault value as the row holds it.
pub(super) enum Stored {
    /// Written by a version before sealing (TEXT): read as it is, sealed when the store next opens.
    Plain(String),
    Sealed(Vec<u8>),
}

impl FromSql for Stored {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Text(text) => std::str::from_utf8(text)
                .map(|s| Stored::Plain(s.to_owned()))
                .map_err(|e| FromSqlError::Other(Box::new(e))),
            ValueRef::Blob(bytes) => Ok(Stored::Sealed(bytes.to_vec())),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// The store's vault key, from its key file. Never printed.
pub(super) struct VaultKey {
    key: LessSafeKey,
    random: SystemRandom,
    /// Where it came from, for errors that say which file to restore.
    path: PathBuf,
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultKey([redacted], from {})", self.path.display())
    }
}

impl VaultKey {
    fn from_bytes(bytes: &[u8; 32], path: &Path) -> Result<Self, Failure> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| Failure::Bug("a 32-byte key was refused by AES-256-GCM"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
            path: path.to_path_buf(),
        })
    }

    /// `plain` sealed for `entry`, as the row stores it.
    pub(super) fn seal(&self, entry: Entry<'_>, plain: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| Failure::Bug("the system's random source failed"))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + plain.len() + 16);
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(entry.associated_data()),
                &mut body,
            )
            .map_err(|_| Failure::Bug("AES-256-GCM refused to seal a value"))?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// The value `sealed` holds, if it was sealed with this key for `entry`.
    pub(super) fn open(&self, entry: Entry<'_>, sealed: &[u8]) -> Result<Vec<u8>, Failure> {
        let (format, rest) = sealed
            .split_first()
            .ok_or_else(|| Failure::Corrupt(format!("{entry}: the sealed value is empty")))?;
        if *format != FORMAT_V1 {
            return Err(Failure::Corrupt(format!(
                "{entry} is sealed in format {format}, which this broker does not know: run the \
                 broker version that wrote it, or a newer one"
            )));
        }
        if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(Failure::Corrupt(format!(
                "{entry}: the sealed value is truncated"
            )));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Failure::Bug("a 12-byte nonce was refused"))?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(entry.associated_data()), &mut body)
            .map_err(|_| {
                Failure::Corrupt(format!(
                    "{entry} does not open with the key in {}: it was altered, or copied from \
                     another entry; write it again (reconnect the connection, or set the app's \
                     client secret again)",
                    self.path.display()
                ))
            })?
            .to_vec();
        body.fill(0);
        Ok(plain)
    }

    /// What a row of `vault_versions` or `client_secrets` holds, as text.
    pub(super) fn reveal(&self, entry: Entry<'_>, stored: Stored) -> Result<String, Failure> {
        match stored {
            Stored::Plain(text) => Ok(text),
            Stored::Sealed(sealed) => String::from_utf8(self.open(entry, &sealed)?)
                .map_err(|_| Failure::Corrupt(format!("{entry}: the opened value is not text"))),
        }
    }

    /// What a row of `local_keys` holds: a key sealed by this store, or one an earlier version kept
    /// in the clear (exactly its 32 bytes).
    pub(super) fn reveal_local_key(&self, name: &str, stored: &[u8]) -> Result<Vec<u8>, Failure> {
        if stored.len() == PLAIN_LOCAL_KEY_LEN {
            Ok(stored.to_vec())
        } else {
            self.open(Entry::LocalKey { name }, stored)
        }
    }
}

/// Rows that hold sealed values: if any, the key file must exist, and be this database's.
const HOLDS_SEALED: &str = "
SELECT EXISTS (SELECT 1 FROM vault_versions WHERE typeof(content) = 'blob')
    OR EXISTS (SELECT 1 FROM client_secrets WHERE typeof(content) = 'blob')
    OR EXISTS (SELECT 1 FROM local_keys WHERE length(key) <> 32)";

/// What a person runs to drop the values a lost key file sealed, so the store opens with a new key.
const FORGET_SEALED: &str =
    "DELETE FROM vault_versions; DELETE FROM client_secrets; DELETE FROM local_keys";

/// Opens (or, for a store that holds nothing sealed, makes) the key file at `key_file`, checks that it
/// opens the database's sealed values, and seals the values earlier versions left in the clear. Runs
/// on the writer connection, after the schema is current.
pub(super) fn unlock(db: &mut Db, key_file: &Path) -> Result<VaultKey, Failure> {
    // Under the write lock: a second process opening a new store waits here and reads the key this
    // one made, instead of making another.
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = match read_key_file(key_file)? {
        Some(key) => key,
        None => {
            let holds_sealed: bool = tx.query_row(HOLDS_SEALED, [], |r| r.get(0))?;
            if holds_sealed {
                return Err(refused(format!(
                    "the key file {} is missing, but the store holds tokens sealed with it: put back \
                     the key file that was backed up with this database. If it is lost, so are the \
                     stored tokens and client secrets; to go on without them, delete them with \
                     `sqlite3 '{}' \"{FORGET_SEALED}\"` while the broker is stopped: the connections \
                     then ask to be reconnected, and each app's client secret must be set again",
                    key_file.display(),
                    tx.path().unwrap_or("<database>"),
                )));
            }
            create_key_file(key_file)?
        }
    };
    let sealed = take_into_use(tx, &key)?;
    // A new file's escrow key too: schema version 4 writes it before there is a vault key.
    if sealed.entries + sealed.local_keys > 0 {
        scrub(db);
    }
    Ok(key)
}

/// A vault key for a database in memory: random, held only in memory, so its sealed values end with
/// the process as the database does.
#[cfg(any(test, feature = "testing"))]
pub(super) fn unlock_in_memory(db: &mut Db) -> Result<VaultKey, Failure> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut bytes = random_key()?;
    let key = VaultKey::from_bytes(&bytes, Path::new(":memory:"));
    bytes.fill(0);
    let key = key?;
    take_into_use(tx, &key)?;
    Ok(key)
}

/// Checks that `key` is the database's and seals with it what is stored in the clear, in `tx`.
fn take_into_use(tx: rusqlite::Transaction<'_>, key: &VaultKey) -> Result<Sealed, Failure> {
    check_key(&tx, key)?;
    let sealed = seal_plain_rows(&tx, key)?;
    make_escrow_key(&tx, key)?;
    tx.commit()?;
    if sealed.entries > 0 {
        tracing::info!(
            entries = sealed.entries,
            "sealed the vault entries an earlier version stored in the clear"
        );
    }
    Ok(sealed)
}

fn random_key() -> Result<[u8; 32], Failure> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Failure::Bug("the system's random source failed"))?;
    Ok(key)
}

/// Copies the WAL into the database and truncates it, so values deleted or rewritten (whose pages
/// `secure_delete` zeroed) leave no old copy in either file. Best effort: the deletion itself is
/// committed; a checkpoint another process's read holds up is done by a later one.
pub(super) fn scrub(db: &Db) {
    match db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => tracing::warn!(
            "another connection was reading the store: deleted vault entries stay in its WAL until \
             the next checkpoint"
        ),
        Err(e) => tracing::warn!(error = %e, "the store's WAL could not be checkpointed"),
    }
}

fn refused(message: String) -> Failure {
    Failure::Refused(StoreError::Unavailable(message))
}

/// The key in `path`, `None` if there is no such file. A file others may read, or that holds no key, is
/// refused: the first may have leaked, the second would seal nothing the next start could open.
fn read_key_file(path: &Path) -> Result<Option<VaultKey>, Failure> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(refused(format!(
                "the key file {} cannot be read: {e}",
                path.display()
            )))
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| refused(format!("the key file {}: {e}", path.display())))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(refused(format!(
                "the key file {} has mode {mode:o}, so others may have read it: make it owner-only \
                 (chmod 600 {}); if others did read it, treat the stored tokens as leaked and \
                 reconnect the connections",
                path.display(),
                path.display()
            )));
        }
    }
    let mut text = Vec::new();
    // The key is 44 characters of base64: anything much longer is not a key file.
    let readable = (&mut file).take(256).read_to_end(&mut text).is_ok();
    let key = readable.then(|| parse_key(&text)).flatten().ok_or_else(|| {
        refused(format!(
            "the key file {} does not hold a vault key (it must be one line, \
                 \"{KEY_FILE_HEADER}<base64 of 32 bytes>\"): put back the key file that was backed \
                 up with this database",
            path.display()
        ))
    });
    text.fill(0);
    let mut key = key?;
    let loaded = VaultKey::from_bytes(&key, path).map(Some);
    key.fill(0);
    loaded
}

fn parse_key(text: &[u8]) -> Option<[u8; 32]> {
    let encoded = std::str::from_utf8(text)
        .ok()?
        .strip_prefix(KEY_FILE_HEADER)?
        .trim_end_matches('\n');
    let mut bytes = BASE64.decode(encoded).ok()?;
    let key = <[u8; 32]>::try_from(bytes.as_slice()).ok();
    bytes.fill(0);
    key
}

/// Makes a new key file at `path`, owner-only from its first byte, never replacing one.
fn create_key_file(path: &Path) -> Result<VaultKey, Failure> {
    let failed = |e: io::Error| {
        refused(format!(
            "creating the key file {}: {e}; check that its folder is writable",
            path.display()
        ))
    };
    let mut key = random_key()?;
    let mut text = format!("{KEY_FILE_HEADER}{}\n", BASE64.encode(key)).into_bytes();
    // Written whole under another name, then linked into place: a process that dies half-way leaves
    // no half-written key file. Only this process holds the write lock, so the temporary name is free
    // but for one a crash left behind.
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    match std::fs::remove_file(&partial) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(failed(e)),
        _ => {}
    }
    let written = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&partial)?;
        file.write_all(&text)?;
        file.sync_all()?;
        // Fails if `path` exists: a key file is never overwritten.
        std::fs::hard_link(&partial, path)?;
        std::fs::remove_file(&partial)?;
        sync_folder(path)
    })();
    text.fill(0);
    written.map_err(failed)?;
    let made = VaultKey::from_bytes(&key, path);
    key.fill(0);
    made
}

/// Makes the new key file's name durable before anything is sealed with it.
fn sync_folder(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Refuses a key that does not open the database's sealed escrow key: it belongs to another database.
fn check_key(db: &Db, key: &VaultKey) -> Result<(), Failure> {
    let stored: Option<Vec<u8>> = db
        .query_row(
            "SELECT key FROM local_keys WHERE name = 'escrow'",
            [],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    match stored {
        Some(stored) if stored.len() != PLAIN_LOCAL_KEY_LEN => {
            key.open(Entry::LocalKey { name: "escrow" }, &stored)
                .map_err(|_| {
                    refused(format!(
                        "the key file {} does not open this database's sealed entries: it belongs \
                         to another database; put back the key file that was backed up with this one",
                        key.path.display()
                    ))
                })?
                .fill(0);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A new escrow key, sealed, if the store has none: its sealed values were dropped ([`FORGET_SEALED`])
/// with the key file that opened them. Schema version 4 makes the first one.
fn make_escrow_key(db: &Db, key: &VaultKey) -> Result<(), Failure> {
    let missing: bool = db.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM local_keys WHERE name = 'escrow')",
        [],
        |r| r.get(0),
    )?;
    if missing {
        let escrow_key = crate::escrow::DataKey::generate()
            .map_err(|e| refused(format!("making a new escrow key: {e}")))?;
        let sealed = key.seal(Entry::LocalKey { name: "escrow" }, &escrow_key.0)?;
        db.execute(
            "INSERT INTO local_keys (name, key) VALUES ('escrow', ?1)",
            [sealed],
        )?;
    }
    Ok(())
}

/// How many values [`seal_plain_rows`] sealed.
struct Sealed {
    /// Tokens and client secrets.
    entries: usize,
    local_keys: usize,
}

/// Seals every value an earlier version stored in the clear.
fn seal_plain_rows(db: &Db, key: &VaultKey) -> Result<Sealed, Failure> {
    let mut sealed = Sealed {
        entries: 0,
        local_keys: 0,
    };
    let credentials: Vec<(i64, String, String, String, String, String)> = db
        .prepare(
            "SELECT seq, tenant, connection, slot, write_id, content FROM vault_versions
             WHERE typeof(content) = 'text'",
        )?
        .query_map([], |r| r.try_into())?
        .collect::<Result<_, _>>()?;
    for (seq, tenant, connection, slot, write, content) in credentials {
        let entry = Entry::Credentials {
            tenant: &tenant,
            connection: &connection,
            slot: &slot,
            write: &write,
        };
        let value = key.seal(entry, content.as_bytes())?;
        db.execute(
            "UPDATE vault_versions SET content = ?2 WHERE seq = ?1",
            rusqlite::params![seq, value],
        )?;
        sealed.entries += 1;
    }
    let secrets: Vec<(String, String, String)> = db
        .prepare("SELECT tenant, app, content FROM client_secrets WHERE typeof(content) = 'text'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (tenant, app, content) in secrets {
        let value = key.seal(
            Entry::ClientSecret {
                tenant: &tenant,
                app: &app,
            },
            content.as_bytes(),
        )?;
        db.execute(
            "UPDATE client_secrets SET content = ?3 WHERE tenant = ?1 AND app = ?2",
            rusqlite::params![tenant, app, value],
        )?;
        sealed.entries += 1;
    }
    let local_keys: Vec<(String, Vec<u8>)> = db
        .prepare("SELECT name, key FROM local_keys WHERE length(key) = 32")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (name, mut plain) in local_keys {
        let value = key.seal(Entry::LocalKey { name: &name }, &plain)?;
        plain.fill(0);
        db.execute(
            "UPDATE local_keys SET key = ?2 WHERE name = ?1",
            rusqlite::params![name, value],
        )?;
        sealed.local_keys += 1;
    }
    Ok(sealed)
}
