//! Escrow: credentials a refresh could not write to the vault, sealed and kept in the connection's
//! metadata until a worker moves them there (see the refresh engine's crash-safety notes).
//!
//! The provider has just issued a new single-use refresh token and the vault refuses the write
//! (throttled, failing, timing out). Holding the tokens in memory would lose them with the process;
//! presenting the old token again would be refused. So the tokens are sealed with AES-256-GCM and saved
//! in the refresh's in-flight marker, in the metadata store, which is a different service:
//! - on AWS, under a fresh KMS data key (`GenerateDataKey` with the escrow key); the sealed record holds
//!   the data key as KMS wrapped it, and opening it is a `Decrypt`. The encryption context names the
//!   tenant and connection, so a record copied to another connection does not open, and only functions
//!   granted the key (not the notifier, which reads the table's stream) can read it.
//! - on the embedded store, under a local key kept in the store file, sealed with the vault's key file
//!   like the vault's own entries.
//!
//! The associated data binds the ciphertext to the connection and the vault version it is meant for
//! (the marker's target write id). A sealed record is a few kilobytes (tokens are rarely more than
//! 4 KB), far below DynamoDB's 400 KB item limit, and it is gone as soon as the tokens are adopted:
//! adopting clears the marker that holds it.

use crate::domain::Credentials;
use crate::ids::{ConnectionId, TenantId, WriteId};
use crate::ports::VaultError;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};

/// Credentials sealed for keeping outside the vault. Holds no readable secret; its `Debug` prints none
/// of it all the same.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCredentials {
    /// The data key as KMS wrapped it (base64), or [`SealedCredentials::LOCAL_KEY`].
    pub key: String,
    /// The AES-GCM nonce (base64).
    pub nonce: String,
    /// The sealed credentials with their tag (base64).
    pub ciphertext: String,
}

impl SealedCredentials {
    /// The key name of records sealed with the embedded store's local key.
    pub const LOCAL_KEY: &'static str = "local";
}

impl std::fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedCredentials([sealed, {} bytes])",
            self.ciphertext.len()
        )
    }
}

/// A 256-bit data key in the clear; never printed, dropped as soon as the sealing is done.
pub struct DataKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

impl DataKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, VaultError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            VaultError::Corrupt(format!(
                "an escrow data key has {} bytes, not 32",
                bytes.len()
            ))
        })?;
        Ok(Self(key))
    }

    pub fn generate() -> Result<Self, VaultError> {
        let mut key = [0u8; 32];
        crate::random::try_fill(&mut key).map_err(|e| {
            VaultError::Unavailable(format!("no randomness for an escrow key: {e}"))
        })?;
        Ok(Self(key))
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        // Best effort: the key bytes do not linger in this allocation.
        self.0 = [0; 32];
    }
}

/// What a sealed record is bound to: it opens only for the same tenant, connection and target version.
fn associated_data(tenant: &TenantId, connection: &ConnectionId, target: &WriteId) -> String {
    format!("broker-escrow/v1/{tenant}/{connection}/{target}")
}

/// Seals `credentials` with `key`; `wrapped_key` is what the record keeps to find the key again.
pub fn seal(
    key: &DataKey,
    wrapped_key: String,
    tenant: &TenantId,
    connection: &ConnectionId,
    target: &WriteId,
    credentials: &Credentials,
) -> Result<SealedCredentials, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::random::try_fill(&mut nonce)
        .map_err(|e| VaultError::Unavailable(format!("no randomness for an escrow nonce: {e}")))?;
    // Serialising a domain value cannot fail; the message names no value if it ever did.
    let mut sealed = serde_json::to_vec(credentials)
        .map_err(|_| VaultError::Corrupt("credentials could not be serialised".into()))?;
    let aad = associated_data(tenant, connection, target);
    cipher(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| VaultError::Corrupt("the escrow could not be sealed".into()))?;
    Ok(SealedCredentials {
        key: wrapped_key,
        nonce: BASE64.encode(nonce),
        ciphertext: BASE64.encode(&sealed),
    })
}

/// Opens a record [`seal`] made with the same key for the same connection and target.
pub fn open(
    key: &DataKey,
    tenant: &TenantId,
    connection: &ConnectionId,
    target: &WriteId,
    sealed: &SealedCredentials,
) -> Result<Credentials, VaultError> {
    let corrupt = |what: &str| {
        VaultError::Corrupt(format!(
            "the escrow of connection {connection} (for version {target}): {what}"
        ))
    };
    let nonce: [u8; NONCE_LEN] = BASE64
        .decode(&sealed.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| corrupt("its nonce is not 12 bytes of base64"))?;
    let mut data = BASE64
        .decode(&sealed.ciphertext)
        .map_err(|_| corrupt("its ciphertext is not base64"))?;
    let aad = associated_data(tenant, connection, target);
    let plain = cipher(key)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut data,
        )
        .map_err(|_| {
            corrupt("it does not open with its key (altered, or not this connection's)")
        })?;
    // serde_json's errors can quote the input: report the position only.
    let opened = serde_json::from_slice(plain).map_err(|e| {
        corrupt(&format!(
            "its content is not credentials (line {}, column {})",
            e.line(),
            e.column()
        ))
    });
    data.fill(0);
    opened
}

fn cipher(key: &DataKey) -> Result<LessSafeKey, VaultError> {
    UnboundKey::new(&AES_256_GCM, &key.0)
        .map(LessSafeKey::new)
        .map_err(|_| VaultError::Corrupt("an escrow key is not an AES-256 key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TokenSet;
    use crate::secret::{AccessToken, RefreshToken};
    use chrono::Utc;

    fn credentials() -> Credentials {
        Credentials::OAuth2(TokenSet {
            access_token: AccessToken::new("access-VALUE"),
            access_expires_at: Utc::now(),
            refresh_token: Some(RefreshToken::new("refresh-VALUE")),
            refresh_expires_at: None,
            scope: None,
            received_at: Utc::now(),
        })
    }

    #[test]
    fn a_sealed_record_opens_only_for_its_connection_and_target_and_shows_nothing() {
        let tenant = TenantId::parse("acme").unwrap();
        let (a, b) = (ConnectionId::generate(), ConnectionId::generate());
        let target = WriteId::generate();
        let key = DataKey::generate().unwrap();
        let sealed = seal(&key, "local".into(), &tenant, &a, &target, &credentials()).unwrap();
        let stored = serde_json::to_string(&sealed).unwrap();
        assert!(!stored.contains("VALUE"), "{stored}");
        assert!(!format!("{sealed:?}").contains(&sealed.ciphertext));
        let opened = open(&key, &tenant, &a, &target, &sealed).unwrap();
        assert_eq!(
            opened
                .token_set()
                .unwrap()
                .refresh_token
                .as_ref()
                .unwrap()
                .expose(),
            "refresh-VALUE"
        );
        assert!(open(&key, &tenant, &b, &target, &sealed).is_err());
        assert!(open(&key, &tenant, &a, &WriteId::generate(), &sealed).is_err());
        let other = DataKey::generate().unwrap();
        assert!(open(&other, &tenant, &a, &target, &sealed).is_err());
        let mut altered = sealed.clone();
        altered.ciphertext.replace_range(0..4, "AAAA");
        let err = open(&key, &tenant, &a, &target, &altered)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("VALUE"), "{err}");
    }
}
