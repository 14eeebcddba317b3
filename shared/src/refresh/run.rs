//! One scheduled refresh run: find what is due, refresh it with bounded concurrency, stop taking work
//! before the invocation's deadline, and account for every connection it looked at.
//!
//! ## When AWS pushes back
//! A refresh the broker's own storage refused (DynamoDB or Secrets Manager throttling, failing or timing
//! out: `Unavailable`) slows the run rather than failing the refresh: the run halves the refreshes it
//! keeps in flight (at most once a second, never below one) and tries that connection again later in
//! the run, after a backoff with jitter, at most `retries_when_storage_refuses` times. Every refresh
//! that succeeds gives one slot back, up to `concurrency` (additive increase, multiplicative
//! decrease). Nothing is lost meanwhile: the engine escrows an answer the vault refused, and a retry
//! adopts it. The run counts the throttled AWS calls it met, the SDK's own retries included.

use super::engine::{EngineError, Outcome, OutcomeKind, RefreshEngine, Trigger};
use super::rules::jitter_unit;
use crate::adapters::aws_throttles::aws_throttles;
use crate::clock::Clock;
use crate::ports::{ConnectionStore, DueConnection, Page, PageRequest, StoreError, VaultError};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Refreshes in flight at once (the most; the run slows down below it when AWS pushes back).
    pub concurrency: usize,
    /// Connections read from the due index per page.
    pub page_size: u32,
    /// Stop starting refreshes this long before the deadline: a started refresh may take the engine's
    /// whole call budget, and the rest is left to the next run.
    pub stop_margin: Duration,
    /// Times one connection's refresh is tried again within the run when the broker's storage
    /// refused it (throttled, failing, timing out).
    pub retries_when_storage_refuses: u32,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            page_size: 500,
            stop_margin: Duration::from_secs(70),
            retries_when_storage_refuses: 3,
        }
    }
}

/// What a run did, by outcome class. Every connection the run took from the index is counted once,
/// in `outcomes` or in `errors`, after its last attempt.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub taken: usize,
    pub outcomes: BTreeMap<OutcomeKind, usize>,
    /// Connections whose refresh ended in an error of the broker's own (store or vault unavailable).
    pub errors: usize,
    /// True when the run stopped before the index was exhausted, leaving work for the next run.
    pub stopped_early: bool,
    /// Refreshes tried again within the run because the broker's storage refused them.
    pub retried: usize,
    /// The fewest refreshes the run kept in flight after slowing down (`concurrency` if it never did).
    pub lowest_concurrency: usize,
    /// Throttled AWS calls during the run (every client of the process, the SDK's retries included).
    pub aws_throttles: u64,
}

impl RunSummary {
    pub fn count(&self, kind: OutcomeKind) -> usize {
        self.outcomes.get(&kind).copied().unwrap_or(0)
    }

    /// Refreshes that did not work out (see [`OutcomeKind::is_failure`]).
    pub fn failed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(kind, _)| kind.is_failure())
            .map(|(_, n)| n)
            .sum()
    }

    fn record(&mut self, result: Result<Outcome, String>) {
        match result {
            Ok(outcome) => *self.outcomes.entry(outcome.kind()).or_default() += 1,
            Err(_) => self.errors += 1,
        }
    }
}

/// Whether the broker's own storage refused the refresh for a reason that may pass.
fn storage_refused(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::Store(StoreError::Unavailable(_))
            | EngineError::Vault(VaultError::Unavailable(_))
    )
}

/// Adaptive concurrency over a semaphore: the permits in circulation are the refreshes allowed in
/// flight. Invariant: available + held - `debt` = `limit`.
struct Pace {
    permits: Arc<Semaphore>,
    max: usize,
    limit: usize,
    /// Permits to take out of circulation as they come back (a cut larger than what was available).
    debt: usize,
    lowest: usize,
    last_cut: Option<Instant>,
}

impl Pace {
    /// One cut per this interval: the refreshes in flight when AWS pushed back all fail together, and
    /// that is one signal, not sixty-four.
    const CUT_INTERVAL: Duration = Duration::from_secs(1);

    fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            limit: max,
            debt: 0,
            lowest: max,
            last_cut: None,
        }
    }

    fn slow_down(&mut self) {
        let now = Instant::now();
        if self
            .last_cut
            .is_some_and(|at| now < at + Self::CUT_INTERVAL)
            || self.limit == 1
        {
            return;
        }
        self.last_cut = Some(now);
        let target = (self.limit / 2).max(1);
        let cut = self.limit - target;
        self.limit = target;
        let taken = self.permits.forget_permits(cut);
        self.debt += cut - taken;
        self.lowest = self.lowest.min(self.limit);
        tracing::warn!(
            concurrency = self.limit,
            "AWS pushed back: the run slows down"
        );
    }

    fn speed_up(&mut self) {
        if self.limit < self.max {
            self.limit += 1;
            if self.debt > 0 {
                self.debt -= 1;
            } else {
                self.permits.add_permits(1);
            }
        }
    }

    fn give_back(&mut self, permit: OwnedSemaphorePermit) {
        if self.debt > 0 {
            permit.forget();
            self.debt -= 1;
        }
    }
}

/// A finished refresh task.
struct Done {
    due: DueConnection,
    attempt: u32,
    result: Result<Outcome, EngineError>,
    permit: OwnedSemaphorePermit,
}

/// A refresh to try again once `not_before` has passed.
struct Retry {
    due: DueConnection,
    attempt: u32,
    not_before: Instant,
}

struct Run<'a> {
    engine: Arc<RefreshEngine>,
    settings: &'a RunSettings,
    stop_at: Instant,
    pace: Pace,
    tasks: JoinSet<Done>,
    retries: VecDeque<Retry>,
    summary: RunSummary,
}

impl Run<'_> {
    fn finished(&mut self, done: Result<Done, tokio::task::JoinError>) {
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                // The task panicked (a bug): its permit was released as it unwound.
                tracing::error!(error = %e, "a refresh task failed");
                self.summary.errors += 1;
                return;
            }
        };
        self.pace.give_back(done.permit);
        match done.result {
            Err(e) if storage_refused(&e) => {
                self.pace.slow_down();
                let now = Instant::now();
                let attempt = done.attempt + 1;
                let pause = Duration::from_millis(
                    (500.0 * 2f64.powi(attempt.min(6) as i32) * (0.5 + jitter_unit())) as u64,
                );
                if attempt <= self.settings.retries_when_storage_refuses
                    && now + pause < self.stop_at
                {
                    tracing::warn!(connection = %done.due.id, attempt, error = %e, "the broker's storage refused a refresh; trying it again later in the run");
                    self.summary.retried += 1;
                    self.retries.push_back(Retry {
                        due: done.due,
                        attempt,
                        not_before: now + pause,
                    });
                } else {
                    tracing::error!(connection = %done.due.id, error = %e, "refresh failed inside the broker; the next run tries again");
                    self.summary.record(Err(e.to_string()));
                }
            }
            Err(e) => {
                tracing::error!(connection = %done.due.id, error = %e, "refresh failed inside the broker");
                self.summary.record(Err(e.to_string()));
            }
            Ok(outcome) => {
                self.pace.speed_up();
                self.summary.record(Ok(outcome));
            }
        }
    }

    /// A permit for one more refresh, handling finished ones while waiting; `None` at the stop time.
    async fn permit(&mut self) -> Option<OwnedSemaphorePermit> {
        loop {
            while let Some(done) = self.tasks.try_join_next() {
                self.finished(done);
            }
            if Instant::now() >= self.stop_at {
                return None;
            }
            let permits = self.pace.permits.clone();
            tokio::select! {
                permit = permits.acquire_owned() => {
                    return Some(permit.expect("semaphore never closes"));
                }
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finished(done),
                _ = tokio::time::sleep_until(self.stop_at) => return None,
            }
        }
    }

    fn spawn(&mut self, due: DueConnection, attempt: u32, permit: OwnedSemaphorePermit) {
        let engine = self.engine.clone();
        self.tasks.spawn(async move {
            let result = engine
                .refresh(&due.id, Trigger::Scheduled)
                .await
                .map(|r| r.outcome);
            Done {
                due,
                attempt,
                result,
                permit,
            }
        });
    }

    fn ready_retry(&mut self) -> Option<Retry> {
        let now = Instant::now();
        let position = self.retries.iter().position(|r| r.not_before <= now)?;
        self.retries.remove(position)
    }

    /// Starts the retries whose time has come; `false` at the stop time.
    async fn start_ready_retries(&mut self) -> bool {
        while let Some(retry) = self.ready_retry() {
            match self.permit().await {
                Some(permit) => self.spawn(retry.due, retry.attempt, permit),
                None => {
                    self.retries.push_front(retry);
                    return false;
                }
            }
        }
        true
    }

    /// Waits for the refreshes in flight and the retries still owed, until the stop time.
    async fn finish(&mut self) {
        while !self.tasks.is_empty() || !self.retries.is_empty() {
            if !self.start_ready_retries().await {
                break;
            }
            let next_retry = self
                .retries
                .iter()
                .map(|r| r.not_before)
                .min()
                .unwrap_or(self.stop_at)
                .min(self.stop_at);
            tokio::select! {
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finished(done),
                _ = tokio::time::sleep_until(next_retry) => {
                    if Instant::now() >= self.stop_at {
                        break;
                    }
                }
            }
        }
        // Refreshes already started run to their end (the engine bounds them); retries that could not
        // start in time are left to the next run.
        while let Some(done) = self.tasks.join_next().await {
            self.finished(done);
        }
        for retry in self.retries.drain(..) {
            self.summary.stopped_early = true;
            tracing::warn!(connection = %retry.due.id, "no time left to try again in this run; the next run does");
            self.summary.errors += 1;
        }
    }
}

/// Runs until the due index is exhausted or `deadline - stop_margin` is reached.
pub async fn run_scheduled(
    engine: Arc<RefreshEngine>,
    store: Arc<dyn ConnectionStore>,
    clock: Arc<dyn Clock>,
    deadline: Instant,
    settings: &RunSettings,
) -> RunSummary {
    let throttles_before = aws_throttles();
    let concurrency = settings.concurrency.max(1);
    let mut run = Run {
        engine,
        settings,
        stop_at: deadline
            .checked_sub(settings.stop_margin)
            .unwrap_or_else(Instant::now),
        pace: Pace::new(concurrency),
        tasks: JoinSet::new(),
        retries: VecDeque::new(),
        summary: RunSummary::default(),
    };
    let due_by = clock.now();
    let mut cursor = None;
    'pages: loop {
        let Some(page) = due_page(&*store, due_by, settings.page_size, cursor.take()).await else {
            run.summary.stopped_early = true;
            break;
        };
        for due in page.items {
            if !run.start_ready_retries().await {
                run.summary.stopped_early = true;
                break 'pages;
            }
            let Some(permit) = run.permit().await else {
                run.summary.stopped_early = true;
                break 'pages;
            };
            run.summary.taken += 1;
            run.spawn(due, 0, permit);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    run.finish().await;
    run.summary.lowest_concurrency = run.pace.lowest;
    run.summary.aws_throttles = aws_throttles().saturating_sub(throttles_before);
    run.summary
}

/// One page of the due index, read again (bounded, with backoff) when the store is unavailable;
/// `None` when it stays so, and the next run continues.
async fn due_page(
    store: &dyn ConnectionStore,
    due_by: chrono::DateTime<chrono::Utc>,
    page_size: u32,
    cursor: Option<String>,
) -> Option<Page<DueConnection>> {
    let mut attempt = 0u32;
    loop {
        match store
            .due_for_refresh(due_by, PageRequest::after(page_size, cursor.clone()))
            .await
        {
            Ok(page) => return Some(page),
            Err(StoreError::Unavailable(e)) if attempt < 3 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "could not read the due index; reading it again");
                let pause = 500.0 * 2f64.powi(attempt as i32) * (0.5 + jitter_unit());
                tokio::time::sleep(Duration::from_millis(pause as u64)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the due index; the next run continues");
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_halves_on_pushback_and_grows_back_one_by_one() {
        let mut pace = Pace::new(8);
        let held: Vec<_> = (0..8)
            .map(|_| pace.permits.clone().try_acquire_owned().unwrap())
            .collect();
        pace.slow_down();
        assert_eq!((pace.limit, pace.debt), (4, 4), "all 8 in flight: 4 owed");
        pace.slow_down();
        assert_eq!(pace.limit, 4, "one cut per interval");
        for permit in held {
            pace.give_back(permit);
        }
        assert_eq!(pace.permits.available_permits(), 4);
        for _ in 0..10 {
            pace.speed_up();
        }
        assert_eq!((pace.limit, pace.permits.available_permits()), (8, 8));
        assert_eq!(pace.lowest, 4);
    }
}
