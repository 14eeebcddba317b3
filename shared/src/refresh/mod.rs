//! Refreshing tokens: the provider's rules, the grant port the provider clients implement, and the
//! engine that does it safely.

pub mod app_user;
pub mod engine;
// On the embedded store in memory.
#[cfg(all(test, feature = "embedded"))]
mod engine_tests;
pub mod grant;
pub mod rules;
pub mod run;

pub use engine::{
    Demand, EngineError, EngineSettings, Outcome, OutcomeKind, RefreshEngine, RefreshReport,
    Trigger,
};
pub use grant::{AppUserLimits, GrantFailure, GrantedTokens, TokenGrant};
pub use rules::{RefreshRules, RefreshTokenExpiry};
pub use run::{run_scheduled, RunSettings, RunSummary};
