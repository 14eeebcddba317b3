//! The store's one writer connection, with group commit.
//!
//! Every commit on the store file ends in a WAL fsync (`synchronous=FULL`, see `schema::connect`: a
//! committed token rotation must survive a power cut), and that fsync is most of a write's cost. One
//! refresh makes five writes; with many refreshes in flight, a transaction of its own for each write
//! makes the writer the bottleneck, and the queue in front of it stretches every refresh.
//!
//! So writes are committed in groups. The connection lives on its own thread; callers queue their
//! jobs to it and wait. The thread takes every job waiting — at least one, at most [`MAX_BATCH`] —
//! and runs them one after another in one `BEGIN IMMEDIATE` transaction, each inside its own
//! `SAVEPOINT`, then commits once. Only after that commit returns does any caller hear its answer:
//!
//! - Durability is unchanged: "done" is only ever said of a write whose commit (and fsync) finished.
//! - A job that fails (a refused condition, an SQL error) or panics rolls back to its savepoint: its
//!   own writes are undone, the jobs before and after it keep theirs, and its caller gets its own
//!   error (or panic).
//! - The jobs of a batch run in the order they were queued, on one connection, so a job sees the
//!   writes of those before it exactly as if each had committed alone. A caller queues its next write
//!   only after hearing about the previous one, so its own writes keep their order.
//! - If the commit fails, no job in the batch was written, and every caller gets that failure —
//!   including one whose job was refused, since the refusal may have rested on an earlier job's
//!   writes that never became durable.
//! - Nothing waits for a batch to fill: a lone write is taken at once and committed alone, as before.
//!   The batch forms by itself from what queues while the previous commit is in progress.
//!
//! Why a thread and a queue rather than the mutex every caller took before: a mutex has each caller
//! run its own transaction; to commit for others, one has to see what the others want written.
//! Why bounded: a batch holds the file's write lock (other processes wait for it), every job in it
//! waits for the last one, and a failed commit fails all of them.

use super::{sealing, with_busy_retry, Failure};
use rusqlite::{Connection as Db, TransactionBehavior};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// At most this many jobs share one commit. Above the refresh engine's default concurrency (64, at
/// most one write in flight per refresh), so a batch at that load is whatever is queued.
pub(super) const MAX_BATCH: usize = 128;

/// What the writer does after a batch holding the job has committed, before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterCommit {
    Nothing,
    /// Checkpoint and truncate the WAL ([`sealing::scrub`]): the job deleted or replaced vault values.
    Scrub,
}

/// The writer thread's handle: the queue to it, and the thread, joined on drop.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    #[cfg(test)]
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What a caller hears: the job's result, or the payload of its panic (raised again in the caller,
/// as when the job ran on the caller's own blocking task).
type Answer<T> = Result<Result<T, Failure>, Box<dyn Any + Send>>;

impl Writer {
    /// Starts the writer thread, which owns `db` from now on and closes it when the writer is dropped.
    pub(super) fn start(db: Db) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel();
        #[cfg(test)]
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let serving = Serving {
            db,
            jobs,
            #[cfg(test)]
            commits: commits.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || serving.serve())?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            #[cfg(test)]
            commits,
        })
    }

    /// Runs `job` on the writer connection in the next batch; answers once that batch has committed
    /// (or failed). `job` may run more than once: again when the whole batch is retried because
    /// another process held the file locked, as a transaction of its own would be.
    pub(super) async fn run<T, F>(&self, job: F, after: AfterCommit) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnMut(&Db) -> Result<T, Failure> + Send + 'static,
    {
        let answer = self.submit_with(job, after);
        match answer.await {
            Ok(Ok(out)) => out,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // The thread is gone with the job: it stopped on a panic of its own (not a job's).
            Err(_) => Err(Failure::WriterStopped),
        }
    }

    #[cfg(test)]
    fn submit<T, F>(&self, job: F) -> oneshot::Receiver<Answer<T>>
    where
        T: Send + 'static,
        F: FnMut(&Db) -> Result<T, Failure> + Send + 'static,
    {
        self.submit_with(job, AfterCommit::Nothing)
    }

    /// Queues `job`, synchronously, so a job queued after it runs after it.
    fn submit_with<T, F>(&self, job: F, after: AfterCommit) -> oneshot::Receiver<Answer<T>>
    where
        T: Send + 'static,
        F: FnMut(&Db) -> Result<T, Failure> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let queued = Box::new(Queued {
            job,
            outcome: None,
            after,
            reply,
        });
        if let Some(queue) = &self.queue {
            // On failure the job (and its `reply`) is dropped, so the caller hears `WriterStopped`.
            let _ = queue.send(queued);
        }
        answer
    }

    /// How many batches have committed.
    #[cfg(test)]
    fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Writer {
    /// Closes the queue, lets the thread finish what was queued (a caller that stopped waiting still
    /// had its write made) and waits for it, so the file is closed when the store is dropped.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            // A job holding a clone of the store could drop the last one on the thread itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// One queued write, with its type erased so different jobs share the queue.
trait Job: Send {
    /// Runs the job inside the batch's transaction (inside a savepoint) and keeps what it returned.
    fn run(&mut self, db: &Db) -> Ran;
    /// The error the job returned in the last attempt, if it returned one.
    fn failure(&self) -> Option<Failure>;
    /// Answers the caller: with what the job returned if the batch committed, else with `failed`.
    fn report(self: Box<Self>, failed: Option<&Failure>);
    fn after(&self) -> AfterCommit;
}

/// How a job went, as the batch needs to know.
enum Ran {
    /// Keep its writes.
    Done,
    /// Roll back to its savepoint; the job keeps its own error (or panic) for its caller.
    Undone,
    /// The file was locked (only possible if another process holds it): roll back the whole batch and
    /// retry it, as a transaction of its own would have been retried.
    Busy(Failure),
}

struct Queued<T, F> {
    job: F,
    outcome: Option<Answer<T>>,
    after: AfterCommit,
    reply: oneshot::Sender<Answer<T>>,
}

impl<T, F> Job for Queued<T, F>
where
    T: Send + 'static,
    F: FnMut(&Db) -> Result<T, Failure> + Send + 'static,
{
    fn run(&mut self, db: &Db) -> Ran {
        if matches!(self.outcome, Some(Err(_))) {
            // It panicked in an earlier attempt of this batch; its state is not to be trusted again.
            return Ran::Undone;
        }
        // AssertUnwindSafe: after a panic the job is never run again (above) and everything it wrote
        // is rolled back, so no half-updated state of it is observed.
        match catch_unwind(AssertUnwindSafe(|| (self.job)(db))) {
            Ok(Ok(out)) => {
                self.outcome = Some(Ok(Ok(out)));
                Ran::Done
            }
            Ok(Err(failure)) if failure.is_busy() => {
                self.outcome = None;
                Ran::Busy(failure)
            }
            Ok(Err(failure)) => {
                self.outcome = Some(Ok(Err(failure)));
                Ran::Undone
            }
            Err(panic) => {
                self.outcome = Some(Err(panic));
                Ran::Undone
            }
        }
    }

    fn after(&self) -> AfterCommit {
        self.after
    }

    fn failure(&self) -> Option<Failure> {
        match &self.outcome {
            Some(Ok(Err(failure))) => Some(failure.duplicate()),
            _ => None,
        }
    }

    fn report(self: Box<Self>, failed: Option<&Failure>) {
        let answer = match (self.outcome, failed) {
            // A panic is a bug in the job, whatever happened to the batch: raise it in the caller.
            (Some(Err(panic)), _) => Err(panic),
            (_, Some(failure)) => Ok(Err(failure.duplicate())),
            (Some(outcome), None) => outcome,
            (None, None) => Ok(Err(Failure::Bug(
                "a committed batch held a job that did not run",
            ))),
        };
        // The caller may have stopped waiting; what was written stays written.
        let _ = self.reply.send(answer);
    }
}

/// The writer thread's side.
struct Serving {
    db: Db,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    #[cfg(test)]
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Serving {
    /// Until the queue closes: take what is waiting, commit it as one batch, answer every job.
    fn serve(mut self) {
        // Blocks only while nothing is queued; a queued job is taken at once.
        while let Ok(first) = self.jobs.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let committed = with_busy_retry(|| self.commit(&mut batch));
            #[cfg(test)]
            if committed.is_ok() {
                self.commits
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            tracing::trace!(
                jobs = batch.len(),
                ok = committed.is_ok(),
                "store write batch"
            );
            if committed.is_ok() && batch.iter().any(|job| job.after() == AfterCommit::Scrub) {
                // Before answering: a caller told "deleted" can rely on the files holding no copy.
                sealing::scrub(&self.db);
            }
            let failed = committed.err();
            for job in batch {
                job.report(failed.as_ref());
            }
        }
    }

    /// One attempt at the batch: every job in its savepoint, then one commit. On `Err`, nothing of the
    /// batch is written (the transaction is rolled back when `tx` drops, or SQLite already did).
    fn commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), Failure> {
        if !self.db.is_autocommit() {
            // Not expected (a failed commit's transaction is rolled back when it drops), but a batch
            // must never join a transaction left over from an earlier one.
            self.db.execute_batch("ROLLBACK")?;
        }
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for job in batch.iter_mut() {
            tx.prepare_cached("SAVEPOINT job")?.execute([])?;
            let ran = job.run(&tx);
            if tx.is_autocommit() {
                // SQLite ended the transaction itself (it does on a full disk or an I/O error): the
                // jobs before this one were rolled back too, so none of the batch may be reported.
                return Err(match ran {
                    Ran::Busy(failure) => failure,
                    _ => job.failure().unwrap_or(Failure::Bug(
                        "the batch's transaction ended while a job ran",
                    )),
                });
            }
            match ran {
                Ran::Done => {
                    tx.prepare_cached("RELEASE job")?.execute([])?;
                }
                Ran::Undone => {
                    tx.prepare_cached("ROLLBACK TO job")?.execute([])?;
                    tx.prepare_cached("RELEASE job")?.execute([])?;
                }
                Ran::Busy(failure) => return Err(failure),
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The batching itself, on a small table of its own. Batches are made deterministic by holding the
    //! writer in a job that waits for the test: whatever is queued meanwhile is the next batch.

    use super::*;
    use crate::ids::ConnectionId;
    use crate::ports::StoreError;
    use rusqlite::OptionalExtension;
    use std::path::PathBuf;
    use std::sync::mpsc as std_mpsc;

    /// A fresh file in a fresh folder, removed when the test ends.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new() -> Self {
            let dir =
                std::env::temp_dir().join(format!("broker-writer-{}", ConnectionId::generate()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self) -> PathBuf {
            self.0.join("w.db")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A writer on a new file with `parents` and `children (parent REFERENCES parents)`, and a second
    /// connection to look at what was committed.
    fn setup(file: &TempFile) -> (Writer, Db) {
        let db = Db::open(file.path()).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        db.pragma_update(None, "synchronous", "FULL").unwrap();
        db.pragma_update(None, "foreign_keys", true).unwrap();
        db.execute_batch(
            "CREATE TABLE parents (id TEXT PRIMARY KEY NOT NULL);
             CREATE TABLE children (id TEXT PRIMARY KEY NOT NULL,
                                    parent TEXT NOT NULL REFERENCES parents (id));",
        )
        .unwrap();
        let writer = Writer::start(db).unwrap();
        let observer = Db::open(file.path()).unwrap();
        (writer, observer)
    }

    fn committed(observer: &Db, id: &str) -> bool {
        observer
            .query_row("SELECT 1 FROM parents WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .unwrap()
            .is_some()
    }

    /// Queues a job that holds the writer until the returned sender is used (or dropped), and waits
    /// until the writer has it: jobs queued after this return form the next batch. The held job's own
    /// batch commits before that one, so a test expects `commits` to grow by one more.
    fn hold(writer: &Writer) -> (std_mpsc::Sender<()>, oneshot::Receiver<Answer<()>>) {
        let (started_tx, started) = std_mpsc::channel();
        let (release, released) = std_mpsc::channel::<()>();
        let held = writer.submit(move |_: &Db| {
            let _ = started_tx.send(());
            let _ = released.recv();
            Ok(())
        });
        started.recv().unwrap();
        (release, held)
    }

    fn insert(id: &'static str) -> impl FnMut(&Db) -> Result<(), Failure> + Send + 'static {
        move |db: &Db| {
            db.execute("INSERT INTO parents (id) VALUES (?1)", [id])?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failing_job_is_undone_alone_and_gets_its_own_error() {
        let file = TempFile::new();
        let (writer, observer) = setup(&file);
        let (release, held) = hold(&writer);
        let before = writer.commits();
        let a = writer.submit(insert("a"));
        let refused = writer.submit(|db: &Db| -> Result<(), Failure> {
            db.execute("INSERT INTO parents (id) VALUES ('refused')", [])?;
            Err(Failure::Refused(StoreError::Conflict))
        });
        let sql_error = writer.submit(|db: &Db| -> Result<(), Failure> {
            db.execute("INSERT INTO parents (id) VALUES ('sql-error')", [])?;
            db.execute("INSERT INTO parents (id) VALUES ('a')", [])?; // a duplicate key
            Ok(())
        });
        let c = writer.submit(insert("c"));
        release.send(()).unwrap();
        held.await.unwrap().unwrap().unwrap();

        a.await.unwrap().unwrap().unwrap();
        assert!(matches!(
            refused.await.unwrap().unwrap(),
            Err(Failure::Refused(StoreError::Conflict))
        ));
        assert!(matches!(
            sql_error.await.unwrap().unwrap(),
            Err(Failure::Sql(_))
        ));
        c.await.unwrap().unwrap().unwrap();
        assert_eq!(
            writer.commits(),
            before + 2,
            "the four jobs shared one commit"
        );
        assert!(committed(&observer, "a") && committed(&observer, "c"));
        assert!(!committed(&observer, "refused") && !committed(&observer, "sql-error"));
    }

    #[tokio::test]
    async fn jobs_run_in_queue_order_and_see_the_writes_before_them() {
        let file = TempFile::new();
        let (writer, _observer) = setup(&file);
        let (release, held) = hold(&writer);
        let before = writer.commits();
        let first = writer.submit(insert("p"));
        let count = |db: &Db| -> Result<i64, Failure> {
            Ok(db.query_row("SELECT count(*) FROM parents", [], |r| r.get(0))?)
        };
        let sees_one = writer.submit(count);
        let child = writer.submit(|db: &Db| -> Result<(), Failure> {
            // Satisfies the foreign key only because the first job's parent is already there.
            db.execute("INSERT INTO children (id, parent) VALUES ('k', 'p')", [])?;
            Ok(())
        });
        let second = writer.submit(insert("q"));
        let sees_two = writer.submit(count);
        release.send(()).unwrap();
        held.await.unwrap().unwrap().unwrap();
        first.await.unwrap().unwrap().unwrap();
        assert_eq!(sees_one.await.unwrap().unwrap().unwrap(), 1);
        child.await.unwrap().unwrap().unwrap();
        second.await.unwrap().unwrap().unwrap();
        assert_eq!(sees_two.await.unwrap().unwrap().unwrap(), 2);
        assert_eq!(writer.commits(), before + 2);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_job_and_writes_none() {
        let file = TempFile::new();
        let (writer, observer) = setup(&file);
        let (release, held) = hold(&writer);
        let before = writer.commits();
        let a = writer.submit(insert("a"));
        let refused = writer.submit(|_: &Db| -> Result<(), Failure> {
            Err(Failure::Refused(StoreError::Conflict))
        });
        // Deferred, the foreign key is checked only at COMMIT, which then fails for the whole batch
        // although every job returned.
        let dangling = writer.submit(|db: &Db| -> Result<(), Failure> {
            db.pragma_update(None, "defer_foreign_keys", true)?;
            db.execute(
                "INSERT INTO children (id, parent) VALUES ('k', 'missing')",
                [],
            )?;
            Ok(())
        });
        let c = writer.submit(insert("c"));
        release.send(()).unwrap();
        held.await.unwrap().unwrap().unwrap();
        for answer in [a, refused, dangling, c] {
            let failure = answer.await.unwrap().unwrap().unwrap_err();
            let told = failure.unavailable("x");
            assert!(
                told.contains("FOREIGN KEY"),
                "the commit's failure, not a job's own answer: {told}"
            );
        }
        assert_eq!(writer.commits(), before + 1, "only the held job's batch");
        assert!(!committed(&observer, "a") && !committed(&observer, "c"));
        // The writer goes on: the next batch commits.
        writer
            .run(insert("after"), AfterCommit::Nothing)
            .await
            .unwrap();
        assert!(committed(&observer, "after"));
    }

    #[tokio::test]
    async fn a_panicking_job_panics_in_its_caller_and_the_rest_commit() {
        let file = TempFile::new();
        let (writer, observer) = setup(&file);
        let writer = std::sync::Arc::new(writer);
        let (release, held) = hold(&writer);
        let a = writer.submit(insert("a"));
        let panics = writer.submit(|db: &Db| -> Result<(), Failure> {
            db.execute("INSERT INTO parents (id) VALUES ('half-done')", [])?;
            panic!("a bug in a job");
        });
        let c = writer.submit(insert("c"));
        release.send(()).unwrap();
        held.await.unwrap().unwrap().unwrap();
        a.await.unwrap().unwrap().unwrap();
        c.await.unwrap().unwrap().unwrap();
        let payload = panics.await.unwrap().unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a bug in a job"));
        assert!(committed(&observer, "a") && committed(&observer, "c"));
        assert!(!committed(&observer, "half-done"));

        // Through `run`, the panic is raised again in the caller's task.
        let in_task = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .run(
                        |_: &Db| -> Result<(), Failure> { panic!("again") },
                        AfterCommit::Nothing,
                    )
                    .await
            })
        };
        assert!(in_task.await.unwrap_err().is_panic());
        writer
            .run(insert("after"), AfterCommit::Nothing)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_batch_is_bounded_and_the_rest_follows_in_the_next() {
        let file = TempFile::new();
        let (writer, observer) = setup(&file);
        let (release, held) = hold(&writer);
        let before = writer.commits();
        let commits = writer.commits.clone();
        let n = MAX_BATCH + 10;
        let answers: Vec<_> = (0..n)
            .map(|i| {
                let commits = commits.clone();
                writer.submit(move |db: &Db| -> Result<u64, Failure> {
                    db.execute("INSERT INTO parents (id) VALUES (?1)", [format!("n{i}")])?;
                    // Batches committed before this job's: the same for every job of one batch.
                    Ok(commits.load(std::sync::atomic::Ordering::SeqCst))
                })
            })
            .collect();
        release.send(()).unwrap();
        held.await.unwrap().unwrap().unwrap();
        let mut seen = Vec::new();
        for answer in answers {
            seen.push(answer.await.unwrap().unwrap().unwrap());
        }
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "in queue order");
        let first_batch = seen.iter().filter(|&&c| c == seen[0]).count();
        assert_eq!(
            first_batch, MAX_BATCH,
            "the first batch takes all it may, no more"
        );
        assert_eq!(writer.commits(), before + 3);
        let stored: i64 = observer
            .query_row("SELECT count(*) FROM parents", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, n as i64);
    }

    #[tokio::test]
    async fn a_lone_job_is_committed_without_waiting_for_company() {
        let file = TempFile::new();
        let (writer, observer) = setup(&file);
        for id in ["one", "two", "three"] {
            let before = writer.commits();
            writer.run(insert(id), AfterCommit::Nothing).await.unwrap();
            assert_eq!(writer.commits(), before + 1);
            assert!(committed(&observer, id), "visible once answered");
        }
    }

    #[tokio::test]
    async fn a_write_whose_caller_stopped_waiting_is_still_made() {
        let file = TempFile::new();
        let (writer, observer) = setup(&file);
        let (release, held) = hold(&writer);
        drop(writer.submit(insert("orphan")));
        release.send(()).unwrap();
        held.await.unwrap().unwrap().unwrap();
        drop(writer); // finishes the queue and closes the connection
        assert!(committed(&observer, "orphan"));
    }
}
