//! The session-exchange function.
