//! Expiry notifications: emails to the people named on a connection when it needs them.
//!
//! # The outbox, and why each notice is emailed at most once
//!
//! Input is at-least-once (a stream record may be delivered twice, a schedule retried, a function
//! crash anywhere), so sending is made at-most-once per notice:
//!
//! 1. **No notice is lost.** A status transition that needs an email is its own outbox entry: the store
//!    marks it in the same atomic write as the connection change (DynamoDB: attributes and the sparse
//!    `NOTIFY` index entry on the transition item; embedded: a trigger inserts the `notices` row in the
//!    same transaction). Warnings of the daily sweep are created under a deterministic key, so a
//!    repeated sweep finds the existing one instead of making another.
//! 2. **Claim before sending.** A notifier sends only after a conditional write moved the notice from
//!    `pending` to `sending` with its claim time. Of two invocations for the same event, one claim
//!    succeeds; the other sees `Busy` (or `Settled`) and sends nothing.
//! 3. **Settle after sending.** Sent → `settled` with the record (kind, recipient count, time). A
//!    failure that certainly sent nothing ([`MailError::NotSent`]) puts the notice back to `pending`
//!    with its attempt count; after [`NotifySettings::max_attempts`] it is settled `failed` and logged at
//!    error level — never dropped silently. A failure that may have sent ([`MailError::Uncertain`]) is
//!    settled `delivery unknown`.
//! 4. **A claim found stale is never resent.** A crash between sending and settling leaves the notice
//!    `sending`; the next notifier that meets it after [`NotifySettings::stale_after`] settles it as
//!    `delivery unknown` (logged at warn) instead of sending again. The SES client runs without SDK
//!    retries for the same reason.
//!
//! So every notice ends settled exactly once, and at most one email per notice leaves the broker.

pub mod compose;
pub mod email;
pub mod mailer;
mod notifier;
pub mod record;
mod settings;
mod sweep;

pub use email::Email;
pub use mailer::{MailError, Mailer};
pub use notifier::{Delivery, Notifier, NotifyError, RunSummary};
pub use record::{
    notice_kind_of, Claim, NoticeKey, NoticeKind, NoticeOutcome, NoticeRecord, NoticeState,
    NoticeSubject, Release, Warning, WarningKind,
};
pub use settings::{NotifySettings, SettingsError};
pub use sweep::warning_times;
