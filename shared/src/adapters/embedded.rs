//! Embedded local store.
