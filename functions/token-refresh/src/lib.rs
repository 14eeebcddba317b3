//! The token-refresh function.
