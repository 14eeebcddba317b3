//! The oauth-callback function.
