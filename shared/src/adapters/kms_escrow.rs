//! The escrow key on AWS: a KMS key whose data keys seal the tokens a refresh could not write to
//! Secrets Manager (see [`crate::escrow`]). One `GenerateDataKey` per escrow and one `Decrypt` per
//! adoption; both are rare (only when Secrets Manager refuses a write), so KMS's request quotas are
//! never a concern. The encryption context names the tenant and the connection: the key policy can
//! require it, CloudTrail shows it, and a record moved to another connection does not open.

use crate::domain::Credentials;
use crate::escrow::{self, DataKey, SealedCredentials};
use crate::ids::{ConnectionId, TenantId, WriteId};
use crate::ports::VaultError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_kms::Client;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use std::fmt::Debug;

/// A KMS key for the escrow. Build the client once per process, with operation timeouts set.
#[derive(Debug, Clone)]
pub struct KmsEscrowKey {
    client: Client,
    key_id: String,
}

impl KmsEscrowKey {
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }

    pub async fn seal(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        credentials: &Credentials,
    ) -> Result<SealedCredentials, VaultError> {
        let generated = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("broker:tenant", tenant.as_str())
            .encryption_context("broker:connection", connection.as_str())
            .send()
            .await
            .map_err(|e| unavailable("GenerateDataKey", &e))?;
        let (Some(plain), Some(wrapped)) = (generated.plaintext, generated.ciphertext_blob) else {
            return Err(VaultError::Unavailable(
                "KMS GenerateDataKey answered without a key".into(),
            ));
        };
        let key = DataKey::from_slice(plain.as_ref())?;
        escrow::seal(
            &key,
            BASE64.encode(wrapped.as_ref()),
            tenant,
            connection,
            target,
            credentials,
        )
    }

    pub async fn open(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
        target: &WriteId,
        sealed: &SealedCredentials,
    ) -> Result<Credentials, VaultError> {
        let wrapped = BASE64.decode(&sealed.key).map_err(|_| {
            VaultError::Corrupt(format!(
                "the escrow of connection {connection} has no KMS data key (sealed locally?)"
            ))
        })?;
        let decrypted = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context("broker:tenant", tenant.as_str())
            .encryption_context("broker:connection", connection.as_str())
            .send()
            .await
            .map_err(|e| unavailable("Decrypt", &e))?;
        let plain = decrypted
            .plaintext
            .ok_or_else(|| VaultError::Unavailable("KMS Decrypt answered without a key".into()))?;
        let key = DataKey::from_slice(plain.as_ref())?;
        escrow::open(&key, tenant, connection, target, sealed)
    }
}

/// KMS errors carry codes and messages, never key material or the sealed data.
fn unavailable<E, R>(operation: &str, error: &SdkError<E, R>) -> VaultError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: Debug,
{
    let detail = super::aws_failure_detail(error);
    VaultError::Unavailable(format!("KMS {operation} for the escrow failed: {detail}"))
}
