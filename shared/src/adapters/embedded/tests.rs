//! What the contract suite cannot see from outside: the file, its permissions, several stores on one
//! file (as several processes), pruning, cursors, and contention without leaking SQLITE_BUSY.

use super::codec::time_key;
use super::vault::VERSIONS_KEPT_PER_SLOT;
use super::EmbeddedStore;
use crate::domain::*;
use crate::ids::{ConnectionId, LeaseOwner, TenantId, WriteId};
use crate::ports::*;
use crate::secret::{AccessToken, RefreshToken};
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::path::{Path, PathBuf};

/// A fresh folder that is removed when the test ends.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("broker-embedded-{}", ConnectionId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(super) fn file(&self) -> PathBuf {
        self.0.join("nested").join("broker.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
}

pub(super) use crate::fixtures::{acme, connection};

fn tokens(n: usize) -> Credentials {
    Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new(format!("access-{n}")),
        access_expires_at: t0() + Duration::seconds(600),
        refresh_token: Some(RefreshToken::new(format!("refresh-{n}"))),
        refresh_expires_at: None,
        scope: None,
        received_at: t0(),
    })
}

#[cfg(unix)]
pub(super) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_file_is_owner_only_when_created_and_when_reopened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let path = dir.file();
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        mode(path.parent().unwrap()) & 0o077,
        0,
        "a folder the store creates is owner-only"
    );
    store
        .insert_connection(&connection(&acme(), t0()), &[])
        .await
        .unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(wal.exists(), "the store runs in WAL mode");
    assert_eq!(
        mode(&wal),
        0o600,
        "SQLite gives the WAL the file's permissions"
    );
    drop(store);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let reopened = EmbeddedStore::open(&path).unwrap();
    assert_eq!(
        mode(&path),
        0o600,
        "an existing file that is more open is restricted"
    );
    assert_eq!(
        reopened
            .list_connections(&acme(), PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn a_second_store_on_the_same_file_sees_the_first_ones_writes() {
    let dir = TempDir::new();
    let (first, second) = (
        EmbeddedStore::open(dir.file()).unwrap(),
        EmbeddedStore::open(dir.file()).unwrap(),
    );
    let c = connection(&acme(), t0());
    first.insert_connection(&c, &[]).await.unwrap();
    let seen = second
        .get_connection(&c.id)
        .await
        .unwrap()
        .expect("written by the other store");
    assert_eq!(seen, c);
    // A write through one fences the other's stale copy.
    let owner = LeaseOwner::generate();
    assert!(matches!(
        second
            .acquire_lease(&c.id, &owner, t0(), Duration::seconds(60))
            .await
            .unwrap(),
        LeaseAttempt::Acquired(_)
    ));
    assert_eq!(
        first
            .save_connection(&c, Fence::Version, &[])
            .await
            .unwrap_err(),
        StoreError::Conflict
    );
    let leased = first.get_connection(&c.id).await.unwrap().unwrap();
    assert_eq!(leased.version, 1);
    assert_eq!(
        leased.lease,
        Some(Lease {
            owner,
            expires_at: t0() + Duration::seconds(60)
        })
    );
    // The vault is in the same file.
    let write = WriteId::generate();
    first
        .put_credentials(&acme(), &c.id, VaultSlot::A, &write, &tokens(1))
        .await
        .unwrap();
    let pointer = CredentialsPointer {
        slot: VaultSlot::A,
        write,
    };
    assert!(second
        .get_credentials(&acme(), &c.id, &pointer)
        .await
        .unwrap()
        .is_some());
}

/// Two stores on one new file, as two processes would open it, holding one connection.
async fn two_stores_on_one_file() -> (TempDir, [EmbeddedStore; 2], Connection) {
    let dir = TempDir::new();
    let stores = [
        EmbeddedStore::open(dir.file()).unwrap(),
        EmbeddedStore::open(dir.file()).unwrap(),
    ];
    let c = connection(&acme(), t0());
    stores[0].insert_connection(&c, &[]).await.unwrap();
    (dir, stores, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_tasks_on_two_stores_race_for_a_lease_without_a_busy_error() {
    let (_dir, stores, c) = two_stores_on_one_file().await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = stores[i % 2].clone();
            let id = c.id.clone();
            tokio::spawn(async move {
                let owner = LeaseOwner::generate();
                // Readers and writers of both "processes" interleave.
                store
                    .get_connection(&id)
                    .await
                    .expect("read under contention");
                store
                    .acquire_lease(&id, &owner, t0(), Duration::seconds(60))
                    .await
                    .expect("acquire under contention")
            })
        })
        .collect();
    let mut acquired = 0;
    for task in tasks {
        match task.await.unwrap() {
            LeaseAttempt::Acquired(leased) => {
                acquired += 1;
                assert_eq!(leased.version, 1);
            }
            LeaseAttempt::Busy { until } => assert_eq!(until, t0() + Duration::seconds(60)),
            LeaseAttempt::Missing => panic!("the connection went missing"),
        }
    }
    assert_eq!(acquired, 1, "exactly one task takes the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_saves_of_one_version_let_exactly_one_through() {
    let (_dir, stores, c) = two_stores_on_one_file().await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (store, mut copy) = (stores[i % 2].clone(), c.clone());
            tokio::spawn(async move {
                copy.display_name = Some(format!("writer {i}"));
                let transition = StatusTransition {
                    from: StatusKind::NotConnected,
                    to: StatusKind::NotConnected,
                    at: t0(),
                    actor: Actor::System(format!("writer-{i}")),
                    reason: "renamed".into(),
                };
                store
                    .save_connection(&copy, Fence::Version, &[transition])
                    .await
            })
        })
        .collect();
    let mut saved = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(stored) => {
                saved += 1;
                assert_eq!(stored.version, 1);
            }
            Err(e) => assert_eq!(e, StoreError::Conflict),
        }
    }
    assert_eq!(saved, 1);
    let history = stores[1]
        .list_transitions(&c.id, PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(
        history.items.len(),
        1,
        "only the winner's transition is written"
    );
}

#[tokio::test]
async fn saving_a_missing_connection_is_not_found_and_release_needs_the_owner() {
    let dir = TempDir::new();
    let store = EmbeddedStore::open(dir.file()).unwrap();
    let c = connection(&acme(), t0());
    assert!(matches!(
        store.save_connection(&c, Fence::Version, &[]).await,
        Err(StoreError::NotFound(_))
    ));
    store.insert_connection(&c, &[]).await.unwrap();
    let owner = LeaseOwner::generate();
    let LeaseAttempt::Acquired(leased) = store
        .acquire_lease(&c.id, &owner, t0(), Duration::seconds(5))
        .await
        .unwrap()
    else {
        panic!("free lease refused")
    };
    // Another owner's fence fails even on the right version.
    let intruder = LeaseOwner::generate();
    let err = store
        .save_connection(&leased, Fence::Lease(&intruder), &[])
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Conflict);
    store.release_lease(&c.id, &intruder).await.unwrap();
    let still = store.get_connection(&c.id).await.unwrap().unwrap();
    assert_eq!(
        still.lease.as_ref().map(|l| &l.owner),
        Some(&owner),
        "only the owner releases"
    );
    assert_eq!(still.version, 1, "releasing bumps nothing");
    store.release_lease(&c.id, &owner).await.unwrap();
    let released = store.get_connection(&c.id).await.unwrap().unwrap();
    assert_eq!((released.lease, released.version), (None, 1));
    // A lease ends exactly at its expiry: at `until` it is free again.
    let LeaseAttempt::Acquired(_) = store
        .acquire_lease(&c.id, &owner, t0(), Duration::seconds(5))
        .await
        .unwrap()
    else {
        panic!()
    };
    let at_expiry = store
        .acquire_lease(
            &c.id,
            &intruder,
            t0() + Duration::seconds(5),
            Duration::seconds(5),
        )
        .await;
    assert!(matches!(at_expiry.unwrap(), LeaseAttempt::Acquired(c) if c.version == 3));
}

#[tokio::test]
async fn the_vault_prunes_old_versions_but_keeps_the_newest_and_the_pointed_at() {
    let dir = TempDir::new();
    let store = EmbeddedStore::open(dir.file()).unwrap();
    let mut c = connection(&acme(), t0());
    store.insert_connection(&c, &[]).await.unwrap();
    let writes: Vec<WriteId> = (0..8).map(|_| WriteId::generate()).collect();
    let pointer = |n: usize| CredentialsPointer {
        slot: VaultSlot::A,
        write: writes[n].clone(),
    };
    // The metadata points at write 0, and a refresh in flight spends write 1 towards write 2.
    store
        .put_credentials(&acme(), &c.id, VaultSlot::A, &writes[0], &tokens(0))
        .await
        .unwrap();
    c.credentials = Some(pointer(0));
    c.refresh_in_flight = Some(RefreshInFlight {
        started_at: t0(),
        spending: pointer(1),
        target: pointer(2),
        escrow: None,
    });
    c = store
        .save_connection(&c, Fence::Version, &[])
        .await
        .unwrap();
    for (n, write) in writes.iter().enumerate().skip(1) {
        store
            .put_credentials(&acme(), &c.id, VaultSlot::A, write, &tokens(n))
            .await
            .unwrap();
    }
    let kept = VERSIONS_KEPT_PER_SLOT as usize;
    for n in 0..writes.len() {
        let read = store
            .get_credentials(&acme(), &c.id, &pointer(n))
            .await
            .unwrap();
        let expected = n <= 2 || n >= writes.len() - kept;
        assert_eq!(read.is_some(), expected, "write {n}");
        if let Some(read) = read {
            assert_eq!(
                read.token_set().unwrap().access_token.expose(),
                format!("access-{n}")
            );
        }
    }
    // Once nothing points at them, only the newest stay.
    c.credentials = Some(pointer(7));
    c.refresh_in_flight = None;
    store
        .save_connection(&c, Fence::Version, &[])
        .await
        .unwrap();
    store
        .put_credentials(&acme(), &c.id, VaultSlot::A, &writes[7], &tokens(7))
        .await
        .unwrap();
    let next = WriteId::generate();
    store
        .put_credentials(&acme(), &c.id, VaultSlot::A, &next, &tokens(8))
        .await
        .unwrap();
    let remaining: i64 = {
        let db = rusqlite::Connection::open(dir.file()).unwrap();
        db.query_row(
            "SELECT count(*) FROM vault_versions WHERE slot = 'a'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(remaining, VERSIONS_KEPT_PER_SLOT);
    // The other slot is untouched by all this, and a reused write id with new content is refused.
    let b = WriteId::generate();
    store
        .put_credentials(&acme(), &c.id, VaultSlot::B, &b, &tokens(1))
        .await
        .unwrap();
    let reused = store
        .put_credentials(&acme(), &c.id, VaultSlot::B, &b, &tokens(2))
        .await
        .unwrap_err();
    assert_eq!(reused, VaultError::WriteIdReused(b.to_string()));
    assert!(
        !format!("{reused:?} {reused}").contains("access-"),
        "no token in the error"
    );
}

#[tokio::test]
async fn a_cursor_from_one_listing_is_refused_by_another() {
    let dir = TempDir::new();
    let store = EmbeddedStore::open(dir.file()).unwrap();
    let globex = TenantId::parse("globex").unwrap();
    let mut first = None;
    for i in 0..3 {
        let mut c = connection(&acme(), t0() + Duration::seconds(i));
        c.next_refresh_at = Some(t0());
        store.insert_connection(&c, &[]).await.unwrap();
        first.get_or_insert(c);
    }
    let first = first.unwrap();
    let page = store
        .list_connections(&acme(), PageRequest::first(1))
        .await
        .unwrap();
    let cursor = page.next_cursor.expect("more rows follow");
    let next = store
        .list_connections(&acme(), PageRequest::after(5, Some(cursor.clone())))
        .await
        .unwrap();
    assert_eq!(next.items.len(), 2);
    assert!(next.next_cursor.is_none(), "no cursor when nothing follows");
    let refused = [
        store
            .list_connections(&globex, PageRequest::after(5, Some(cursor.clone())))
            .await
            .map(|_| ()),
        store
            .due_for_refresh(t0(), PageRequest::after(5, Some(cursor.clone())))
            .await
            .map(|_| ()),
        store
            .list_transitions(&first.id, PageRequest::after(5, Some(cursor.clone())))
            .await
            .map(|_| ()),
    ];
    for outcome in refused {
        assert_eq!(outcome.unwrap_err(), StoreError::InvalidCursor);
    }
    let due = store
        .due_for_refresh(t0(), PageRequest::first(1))
        .await
        .unwrap();
    let due_cursor = due.next_cursor.unwrap();
    let err = store
        .list_connections(&acme(), PageRequest::after(5, Some(due_cursor)))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::InvalidCursor);
}

#[tokio::test]
async fn times_read_back_exactly_and_ordering_follows_them() {
    let dir = TempDir::new();
    let store = EmbeddedStore::open(dir.file()).unwrap();
    // Sub-millisecond differences are kept, in the due index and in the lease alike.
    let base = t0() + Duration::nanoseconds(123_456_789);
    let (mut later, mut earlier) = (connection(&acme(), t0()), connection(&acme(), t0()));
    later.next_refresh_at = Some(base + Duration::nanoseconds(1));
    earlier.next_refresh_at = Some(base);
    store.insert_connection(&later, &[]).await.unwrap();
    store.insert_connection(&earlier, &[]).await.unwrap();
    let due = store
        .due_for_refresh(base, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        due.items,
        vec![DueConnection {
            id: earlier.id.clone(),
            tenant: acme(),
            next_refresh_at: base
        }]
    );
    let owner = LeaseOwner::generate();
    store
        .acquire_lease(&later.id, &owner, base, Duration::nanoseconds(10))
        .await
        .unwrap();
    let busy = store
        .acquire_lease(
            &later.id,
            &LeaseOwner::generate(),
            base,
            Duration::seconds(1),
        )
        .await
        .unwrap();
    assert!(
        matches!(busy, LeaseAttempt::Busy { until } if until == base + Duration::nanoseconds(10))
    );
    assert_eq!(time_key(base), "2026-11-01T09:00:00.123456789Z");
}

#[tokio::test]
async fn state_expires_by_the_callers_clock_and_old_entries_are_swept() {
    let dir = TempDir::new();
    let store = EmbeddedStore::open(dir.file()).unwrap();
    let c = connection(&acme(), t0());
    let entry = |created: DateTime<Utc>| {
        let (_, binding) = new_one_time_secret();
        let (_, key) = new_one_time_secret();
        let pending = PendingAuthorization {
            tenant: acme(),
            connection: c.id.clone(),
            purpose: AuthorizationPurpose::Connect,
            pkce_verifier: None,
            nonce: None,
            browser_binding: binding,
            created_at: created,
            expires_at: created + Duration::minutes(10),
        };
        (key, pending)
    };
    let (old_key, old) = entry(t0());
    store.put_pending(&old_key, &old).await.unwrap();
    let (new_key, new) = entry(t0() + Duration::days(2));
    store.put_pending(&new_key, &new).await.unwrap();
    let again = store.put_pending(&new_key, &new).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(_))),
        "a state is stored once: {again:?}"
    );
    assert!(
        matches!(
            store.consume_pending(&old_key, t0()).await.unwrap(),
            Consumed::Unknown
        ),
        "swept"
    );
    let consumed = store
        .consume_pending(&new_key, t0() + Duration::days(2))
        .await
        .unwrap();
    assert!(matches!(consumed, Consumed::Fresh(p) if p.browser_binding == new.browser_binding));
}

#[tokio::test]
async fn damaged_records_are_corrupt_without_quoting_them() {
    let dir = TempDir::new();
    let store = EmbeddedStore::open(dir.file()).unwrap();
    let c = connection(&acme(), t0());
    store.insert_connection(&c, &[]).await.unwrap();
    let write = WriteId::generate();
    store
        .put_credentials(&acme(), &c.id, VaultSlot::A, &write, &tokens(1))
        .await
        .unwrap();
    {
        let db = rusqlite::Connection::open(dir.file()).unwrap();
        db.execute(
            "UPDATE connections SET data = '{\"id\": \"leaked-value-1\"'",
            [],
        )
        .unwrap();
        db.execute(
            "UPDATE vault_versions SET content = '{\"kind\": \"leaked-value-2\"}'",
            [],
        )
        .unwrap();
    }
    let err = store.get_connection(&c.id).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains(c.id.as_str())),
        "{err:?}"
    );
    assert!(!err.to_string().contains("leaked-value-1"), "{err}");
    let pointer = CredentialsPointer {
        slot: VaultSlot::A,
        write,
    };
    let err = store
        .get_credentials(&acme(), &c.id, &pointer)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::Corrupt(_)) && !err.to_string().contains("leaked-value-2"),
        "{err}"
    );
}

#[tokio::test]
async fn a_file_from_a_newer_schema_is_refused_with_a_way_out() {
    let dir = TempDir::new();
    drop(EmbeddedStore::open(dir.file()).unwrap());
    {
        let db = rusqlite::Connection::open(dir.file()).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = EmbeddedStore::open(dir.file()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("schema version 99")),
        "{err}"
    );
}

#[tokio::test]
async fn due_for_refresh_pages_in_order_and_follows_rescheduling() {
    let dir = TempDir::new();
    let store = EmbeddedStore::open(dir.file()).unwrap();
    let now = t0() + Duration::hours(1);
    let mut due = Vec::new();
    for i in 0..90i64 {
        let mut c = connection(&acme(), t0());
        store.insert_connection(&c, &[]).await.unwrap();
        // Several share a time, so the id decides among them; every third one is not scheduled.
        c.next_refresh_at = (i % 3 != 0).then(|| now + Duration::seconds((i * 37 % 600) - 300));
        store
            .save_connection(&c, Fence::Version, &[])
            .await
            .unwrap();
        if let Some(at) = c.next_refresh_at.filter(|at| *at <= now) {
            due.push((at, c.id.clone()));
        }
    }
    due.sort();
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = store
            .due_for_refresh(now, PageRequest::after(7, cursor))
            .await
            .unwrap();
        assert!(page.items.len() <= 7);
        assert!(page.items.iter().all(|d| d.tenant == acme()));
        seen.extend(page.items.into_iter().map(|d| (d.next_refresh_at, d.id)));
        pages += 1;
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, due);
    assert_eq!(pages, due.len().div_ceil(7), "no empty last page");
    let mut first = store.get_connection(&due[0].1).await.unwrap().unwrap();
    first.next_refresh_at = None;
    store
        .save_connection(&first, Fence::Version, &[])
        .await
        .unwrap();
    let all = store
        .due_for_refresh(now, PageRequest::first(1000))
        .await
        .unwrap();
    assert_eq!(all.items.len(), due.len() - 1);
    assert!(all.items.iter().all(|d| d.id != first.id) && all.next_cursor.is_none());
}

/// Set for the child process of [`a_write_lock_held_by_another_process_is_waited_for`].
const CHILD_FILE: &str = "BROKER_EMBEDDED_TEST_CHILD_FILE";

/// Run only as a child process: holds the file's write lock for a moment, like the admin CLI writing.
#[test]
#[ignore = "run by a_write_lock_held_by_another_process_is_waited_for as its child process"]
fn child_holds_the_write_lock() {
    let Some(path) = std::env::var_os(CHILD_FILE) else {
        return;
    };
    let mut db = rusqlite::Connection::open(path).unwrap();
    let tx = db
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    tx.execute(
        "UPDATE connections SET data = json_set(data, '$.display_name', 'by the CLI')",
        [],
    )
    .unwrap();
    println!("locked");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    tx.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_by_another_process_is_waited_for() {
    use std::io::BufRead;
    let dir = TempDir::new();
    let store = EmbeddedStore::open(dir.file()).unwrap();
    let c = connection(&acme(), t0());
    store.insert_connection(&c, &[]).await.unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "adapters::embedded::tests::child_holds_the_write_lock",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_FILE, dir.file())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = stdout.lines();
    assert!(
        lines.any(|line| line.unwrap() == "locked"),
        "the child never took the lock"
    );
    let started = std::time::Instant::now();
    let attempt = store
        .acquire_lease(&c.id, &LeaseOwner::generate(), t0(), Duration::seconds(60))
        .await;
    let LeaseAttempt::Acquired(leased) =
        attempt.expect("waited for the other process, not SQLITE_BUSY")
    else {
        panic!("the lease was free")
    };
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "it did wait for the lock"
    );
    assert_eq!(
        leased.display_name.as_deref(),
        Some("by the CLI"),
        "and read what the other process committed"
    );
    assert!(child.wait().unwrap().success());
}
