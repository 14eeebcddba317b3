//! One scheduled refresh run: find what is due, refresh it with bounded concurrency, stop taking work
//! before the invocation's deadline, and account for every connection it looked at.

use super::engine::{Outcome, RefreshEngine, Trigger};
use crate::clock::Clock;
use crate::ids::ConnectionId;
use crate::ports::{ConnectionStore, PageRequest};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Refreshes in flight at once.
    pub concurrency: usize,
    /// Connections read from the due index per page.
    pub page_size: u32,
    /// Stop starting refreshes this long before the deadline: a started refresh may take the engine's
    /// whole call budget, and the rest is left to the next run.
    pub stop_margin: std::time::Duration,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            page_size: 500,
            stop_margin: std::time::Duration::from_secs(70),
        }
    }
}

/// What a run did, by outcome class. Every connection the run took from the index is counted once,
/// in `outcomes` or in `errors`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub taken: usize,
    pub outcomes: BTreeMap<String, usize>,
    /// Connections whose refresh ended in an error of the broker's own (store or vault unavailable).
    pub errors: usize,
    /// True when the run stopped before the index was exhausted, leaving work for the next run.
    pub stopped_early: bool,
}

impl RunSummary {
    pub fn count(&self, label: &str) -> usize {
        self.outcomes.get(label).copied().unwrap_or(0)
    }

    fn record(&mut self, result: Result<Outcome, String>) {
        match result {
            Ok(outcome) => *self.outcomes.entry(outcome.label()).or_default() += 1,
            Err(_) => self.errors += 1,
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
    let stop_at = deadline
        .checked_sub(settings.stop_margin)
        .unwrap_or_else(Instant::now);
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut tasks: JoinSet<(ConnectionId, Result<Outcome, String>)> = JoinSet::new();
    let mut summary = RunSummary::default();
    let due_by = clock.now();
    let mut cursor = None;
    'pages: loop {
        let page = match store
            .due_for_refresh(
                due_by,
                PageRequest::after(settings.page_size, cursor.take()),
            )
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "could not read the due index; the next run continues");
                summary.stopped_early = true;
                break;
            }
        };
        for due in page.items {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("semaphore never closes"),
                _ = tokio::time::sleep_until(stop_at) => {
                    summary.stopped_early = true;
                    break 'pages;
                }
            };
            if Instant::now() >= stop_at {
                summary.stopped_early = true;
                break 'pages;
            }
            // Reap finished work as we go so the set stays small.
            while let Some(done) = tasks.try_join_next() {
                summary.record(done.map(|(_, r)| r).unwrap_or_else(|e| Err(e.to_string())));
            }
            summary.taken += 1;
            let engine = engine.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let result = engine.refresh(&due.id, Trigger::Scheduled).await;
                let result = result.map(|r| r.outcome).map_err(|e| {
                    tracing::error!(connection = %due.id, error = %e, "refresh failed inside the broker");
                    e.to_string()
                });
                (due.id, result)
            });
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    while let Some(done) = tasks.join_next().await {
        summary.record(done.map(|(_, r)| r).unwrap_or_else(|e| Err(e.to_string())));
    }
    summary
}
