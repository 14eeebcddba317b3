//! Secrets Manager token vault.
