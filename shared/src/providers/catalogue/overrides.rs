//! Base-URL overrides: where the local sandbox and the tests send what would go to a provider's host.

use super::{err, CatalogueError};
use crate::domain::ServiceUrl;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use url::Url;

/// Base-URL overrides: a canonical base (`https://login.twinfield.com`) and what to use instead
/// (`http://127.0.0.1:PORT/twinfield`). Every URL the catalogue produces, and every URL a provider
/// reports (a Twinfield cluster, discovery endpoints), is rewritten by the longest matching base.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct EndpointOverrides(BTreeMap<String, String>);

impl EndpointOverrides {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one override. Both are URLs; the replacement must be https, or http on loopback.
    pub fn insert(&mut self, from: &str, to: &str) -> Result<(), CatalogueError> {
        let from_url = Url::parse(from.trim())
            .map_err(|e| CatalogueError(format!("base URL {from:?} is not a URL ({e})")))?;
        if from_url.host_str().is_none() {
            return err(format!("base URL {from:?} has no host"));
        }
        let to = ServiceUrl::parse(to).map_err(CatalogueError::from)?;
        self.0.insert(
            from.trim().trim_end_matches('/').to_string(),
            to.base().to_string(),
        );
        Ok(())
    }

    /// Parses `from=to,from=to` (the [`BASE_URLS_ENV`] format).
    pub fn parse_list(list: &str) -> Result<Self, CatalogueError> {
        let mut out = Self::default();
        for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((from, to)) = pair.split_once('=') else {
                return err(format!("base URL override {pair:?} must look like from=to"));
            };
            out.insert(from, to)?;
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(a, b)| (a.as_str(), b.as_str()))
    }

    /// Rewrites a URL by the longest base that prefixes it on a path boundary.
    pub fn apply(&self, url: &str) -> String {
        let best = self
            .0
            .iter()
            .filter(|(from, _)| {
                url.strip_prefix(from.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#']))
            })
            .max_by_key(|(from, _)| from.len());
        match best {
            Some((from, to)) => format!("{to}{}", &url[from.len()..]),
            None => url.to_string(),
        }
    }

    pub(super) fn merge(&mut self, other: &EndpointOverrides) {
        self.0
            .extend(other.0.iter().map(|(a, b)| (a.clone(), b.clone())));
    }
}

impl TryFrom<BTreeMap<String, String>> for EndpointOverrides {
    type Error = CatalogueError;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, CatalogueError> {
        let mut out = Self::default();
        for (from, to) in map {
            out.insert(&from, &to)?;
        }
        Ok(out)
    }
}

impl From<EndpointOverrides> for BTreeMap<String, String> {
    fn from(o: EndpointOverrides) -> Self {
        o.0
    }
}
