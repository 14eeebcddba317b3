//! Everything a function needs, built once per cold start: the stores, the provider clients, the
//! refresh engine, the clock and the public URL people are sent to.

use crate::backend::{Backend, BackendConfig};
use crate::clock::{Clock, SystemClock};
use crate::ports::StoreError;
use crate::providers::{Catalogue, CatalogueError, HttpSettings, ProviderHttp, Providers};
use crate::refresh::{EngineSettings, RefreshEngine};
use std::sync::Arc;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("BROKER_PUBLIC_URL {0:?} is not an absolute http(s) URL: set it to the URL people's browsers reach the broker at")]
    PublicUrl(String),
    #[error("the provider catalogue could not be loaded: {0}")]
    Catalogue(#[from] CatalogueError),
    #[error("the store could not be opened: {0}")]
    Store(#[from] StoreError),
    #[error("the provider HTTP client could not be built: {0}")]
    Http(String),
}

#[derive(Clone)]
pub struct BrokerContext {
    pub backend: Backend,
    pub providers: Arc<Providers>,
    pub engine: Arc<RefreshEngine>,
    pub clock: Arc<dyn Clock>,
    /// Where browsers reach the broker: connect links and the OAuth callback hang off it.
    pub public_base_url: Url,
}

impl BrokerContext {
    pub const DEFAULT_PUBLIC_URL: &'static str = "http://127.0.0.1:8080";

    /// Assembles a context from parts (tests, the local runner).
    pub fn new(
        backend: Backend,
        providers: Providers,
        clock: Arc<dyn Clock>,
        public_base_url: Url,
        engine_settings: EngineSettings,
    ) -> Self {
        let providers = Arc::new(providers);
        let engine = Arc::new(RefreshEngine::new(
            backend.store.clone(),
            backend.vault.clone(),
            providers.clone(),
            clock.clone(),
            engine_settings,
        ));
        Self {
            backend,
            providers,
            engine,
            clock,
            public_base_url,
        }
    }

    /// From the environment: the backend (see [`BackendConfig`]), the provider catalogue (see
    /// [`Catalogue::from_env`]) and `BROKER_PUBLIC_URL`.
    pub async fn from_env() -> Result<Self, ContextError> {
        let raw =
            std::env::var("BROKER_PUBLIC_URL").unwrap_or_else(|_| Self::DEFAULT_PUBLIC_URL.into());
        let public_base_url = parse_public_url(&raw)?;
        let backend = Backend::connect(&BackendConfig::from_env()).await?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // Public addresses only, and deliberately no setting to change it: a typo in a function's
        // configuration must not open the VPC or the metadata service to provider URLs. Local runs
        // build their context with `BrokerContext::new` and allow loopback there.
        let settings = HttpSettings::default();
        let catalogue = Catalogue::from_env()?;
        catalogue.check_addresses(settings.addresses)?;
        let http = ProviderHttp::new(settings).map_err(|e| ContextError::Http(e.to_string()))?;
        let providers = Providers::new(catalogue, http, clock.clone());
        Ok(Self::new(
            backend,
            providers,
            clock,
            public_base_url,
            EngineSettings::default(),
        ))
    }

    /// A URL under the public base, e.g. `connect/<token>`.
    pub fn public_url(&self, path: &str) -> Url {
        public_url_under(&self.public_base_url, path)
    }
}

/// Where providers send the browser back after authorization, under the public base URL.
pub const CALLBACK_PATH: &str = "oauth/callback";

/// `path` under `base`, whether or not `base` ends in a slash (unlike `Url::join`, which would drop
/// the last segment of a base without one).
pub fn public_url_under(base: &Url, path: &str) -> Url {
    let base = base.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/{}", path.trim_start_matches('/')))
        .expect("a valid base joined with a path")
}

pub fn parse_public_url(raw: &str) -> Result<Url, ContextError> {
    let url = Url::parse(raw.trim()).map_err(|_| ContextError::PublicUrl(raw.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ContextError::PublicUrl(raw.to_string()));
    }
    Ok(url)
}
