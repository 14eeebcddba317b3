//! The expiry-notifier function.
