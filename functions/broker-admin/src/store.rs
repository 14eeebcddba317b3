//! Which store a run works on, and opening it. Every store error names that store: an operator with
//! a local store and an AWS stage, or two data folders, must see which one answered.

use crate::output::Failure;
use broker_core::backend::{Backend, BackendConfig};
use broker_core::ports::{StoreError, VaultError};
use std::fmt;
use std::path::{Path, PathBuf};

/// The store a run works on, as a person would find it again.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// The embedded store's file, made absolute: a relative `.broker` depends on the folder the
    /// command was run from.
    File(PathBuf),
    Aws {
        table: String,
        region: String,
    },
}

impl StoreLocation {
    pub fn of(config: &BackendConfig) -> Self {
        match config {
            BackendConfig::Embedded { path } => StoreLocation::File(absolute(path)),
            BackendConfig::Aws { table, .. } => StoreLocation::Aws {
                table: table.clone(),
                // The SDK reads the region from these, then from the AWS profile.
                region: ["AWS_REGION", "AWS_DEFAULT_REGION"]
                    .iter()
                    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
                    .unwrap_or_else(|| "of the AWS profile".into()),
            },
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::File(path) => write!(f, "the embedded store {}", path.display()),
            StoreLocation::Aws { table, region } => {
                write!(f, "DynamoDB table {table} in region {region}")
            }
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether a command may start a store where there is none yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Only `tenant create`: every other command needs a tenant, so on a new store it could only fail
    /// — or, for a listing, answer "nothing" about a store that is not the one meant.
    MayCreate,
    Existing,
}

/// The backend the environment selects, with where it is.
pub struct Admin {
    pub backend: Backend,
    pub location: StoreLocation,
}

impl Admin {
    pub async fn open(config: &BackendConfig, opening: Opening) -> Result<Self, Failure> {
        let location = StoreLocation::of(config);
        if let StoreLocation::File(path) = &location {
            if !path.exists() {
                if opening == Opening::Existing {
                    return Err(Failure::refused(format!(
                        "there is no broker store at {}: set BROKER_DATA_DIR to the folder that \
                         holds the broker's broker.db (the local runner's data folder), or run from \
                         the folder that holds .broker; `broker-admin tenant create` starts a new \
                         store",
                        path.display()
                    )));
                }
                eprintln!("starting a new store at {}", path.display());
            }
        }
        let backend = Backend::connect(config).await.at(&location)?;
        Ok(Admin { backend, location })
    }
}

/// A store error, with the store it came from and what to do.
pub trait AtStore<T> {
    fn at(self, location: &StoreLocation) -> Result<T, Failure>;
}

impl<T> AtStore<T> for Result<T, StoreError> {
    fn at(self, location: &StoreLocation) -> Result<T, Failure> {
        self.map_err(|e| Failure::refused(format!("{e} (in {location})")))
    }
}

/// The vault is the same store as the metadata (embedded), or Secrets Manager beside the table.
impl<T> AtStore<T> for Result<T, VaultError> {
    fn at(self, location: &StoreLocation) -> Result<T, Failure> {
        self.map_err(|e| Failure::refused(format!("{e} (the vault of {location})")))
    }
}
