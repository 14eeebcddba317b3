//! One place to make provider clients from: the catalogue, the HTTP client and the clock, built once per
//! process.

use super::catalogue::{Catalogue, CatalogueError};
use super::http::ProviderHttp;
use super::metadata::MetadataCache;
use super::oauth::{AppRegistration, OAuthClient};
use super::twinfield_session::{PoolSettings, SessionPool, TwinfieldSessionClient};
use crate::clock::Clock;
use crate::domain::{OAuthApp, ProviderSettings};
use crate::secret::ClientSecret;
use std::sync::Arc;

/// Builds clients for apps from one catalogue, HTTP client and clock.
#[derive(Clone)]
pub struct Providers {
    catalogue: Arc<Catalogue>,
    http: ProviderHttp,
    clock: Arc<dyn Clock>,
    metadata_cache: MetadataCache,
    /// Open Twinfield sessions, shared by every request this process serves.
    twinfield_pool: Arc<SessionPool>,
}

impl Providers {
    pub fn new(catalogue: Catalogue, http: ProviderHttp, clock: Arc<dyn Clock>) -> Self {
        Self {
            catalogue: Arc::new(catalogue),
            http,
            clock,
            metadata_cache: MetadataCache::default(),
            twinfield_pool: Arc::new(SessionPool::new(PoolSettings::default())),
        }
    }

    /// The process's pool of open Twinfield sessions.
    pub fn twinfield_pool(&self) -> &SessionPool {
        &self.twinfield_pool
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn http(&self) -> &ProviderHttp {
        &self.http
    }

    /// The OAuth client for an app registration.
    pub fn oauth_client(
        &self,
        app: &OAuthApp,
        client_secret: ClientSecret,
    ) -> Result<OAuthClient, CatalogueError> {
        app.validate().map_err(CatalogueError::from)?;
        let resolved = self.catalogue.resolve(&app.settings)?;
        let mut client = OAuthClient::new(
            resolved,
            AppRegistration::from_app(app, client_secret),
            self.http.clone(),
            self.clock.clone(),
        );
        client.metadata_cache = Some(self.metadata_cache.clone());
        Ok(client)
    }

    /// Twinfield's session service client (`session.asmx` on the login host and the clusters).
    pub fn twinfield_sessions(&self) -> Result<TwinfieldSessionClient, CatalogueError> {
        let resolved = self.catalogue.resolve(&ProviderSettings::Twinfield)?;
        TwinfieldSessionClient::new(&resolved, self.http.clone())
    }
}
