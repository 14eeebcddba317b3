//! Endpoints in force for a client: the catalogue's, completed from an OpenID Connect issuer's discovery
//! document (`/.well-known/openid-configuration`) when the definition names one.

use super::catalogue::ClientAuth;
use super::error::{tidy, ErrorClass, Operation, ProviderError, Redactor};
use super::oauth::{EffectiveEndpoints, OAuthClient};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use url::Url;

/// Discovery results shared by the clients one [`super::Providers`] makes: one read per issuer per process.
pub(super) type MetadataCache = Arc<Mutex<HashMap<String, Arc<EffectiveEndpoints>>>>;

struct Metadata {
    authorize: Option<Url>,
    token: Option<Url>,
    userinfo: Option<Url>,
    client_auth: ClientAuth,
    pkce_s256: bool,
}

impl OAuthClient {
    pub(super) async fn cached_endpoints(&self) -> Result<Arc<EffectiveEndpoints>, ProviderError> {
        let key = self
            .provider
            .issuer
            .as_ref()
            .map(|issuer| format!("{}|{issuer}", self.provider.definition.id));
        if let (Some(key), Some(cache)) = (&key, &self.metadata_cache) {
            let hit = cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(key)
                .cloned();
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
        let resolved = Arc::new(self.resolve_endpoints().await?);
        if let (Some(key), Some(cache)) = (key, &self.metadata_cache) {
            cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(key, resolved.clone());
        }
        Ok(resolved)
    }

    async fn resolve_endpoints(&self) -> Result<EffectiveEndpoints, ProviderError> {
        let p = &self.provider;
        let d = &p.definition;
        let known = &p.endpoints;
        let complete = known.authorize.is_some()
            && known.token.is_some()
            && d.client_auth.is_some()
            && d.pkce.is_some();
        let metadata = match (&p.issuer, complete) {
            (Some(issuer), false) => Some(self.read_metadata(issuer).await?),
            _ => None,
        };
        let meta = metadata.as_ref();
        let missing = |what: &str| {
            self.error(
                ErrorClass::Unexpected,
                Operation::Metadata,
                format!("no {what} endpoint is known"),
            )
        };
        let authorize = known
            .authorize
            .clone()
            .or_else(|| meta.and_then(|m| m.authorize.clone()))
            .ok_or_else(|| missing("authorization"))?;
        let token = known
            .token
            .clone()
            .or_else(|| meta.and_then(|m| m.token.clone()))
            .ok_or_else(|| missing("token"))?;
        let userinfo = known
            .userinfo
            .clone()
            .or_else(|| meta.and_then(|m| m.userinfo.clone()));
        let client_auth = d
            .client_auth
            .or_else(|| meta.map(|m| m.client_auth))
            .unwrap_or(ClientAuth::Basic);
        let pkce = d
            .pkce
            .or_else(|| meta.map(|m| m.pkce_s256))
            .unwrap_or(false);
        Ok(EffectiveEndpoints {
            authorize,
            token,
            userinfo,
            client_auth,
            pkce,
        })
    }

    async fn read_metadata(&self, issuer: &Url) -> Result<Metadata, ProviderError> {
        let op = Operation::Metadata;
        let base = issuer.as_str().trim_end_matches('/');
        let url = Url::parse(&format!("{base}/.well-known/openid-configuration")).map_err(|e| {
            self.error(
                ErrorClass::ClientMisconfigured,
                op,
                format!("bad issuer URL: {e}"),
            )
        })?;
        let doc = self.get_json(op, url, None, &Redactor::default()).await?;
        let configured = self
            .provider
            .definition
            .issuer
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/');
        let stated = doc
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end_matches('/');
        if stated != configured && stated != base {
            return Err(self.error(
                ErrorClass::ClientMisconfigured,
                op,
                format!(
                    "the discovery document names issuer {:?}, not {configured:?}",
                    tidy(stated, 200)
                ),
            ));
        }
        let endpoint = |key: &str| -> Result<Option<Url>, ProviderError> {
            match doc.get(key).and_then(Value::as_str) {
                None => Ok(None),
                Some(url) => super::catalogue::checked_url(&self.provider.rewrite(url))
                    .map(Some)
                    .map_err(|e| {
                        self.error(
                            ErrorClass::Unexpected,
                            op,
                            format!("{key}: {}", tidy(&e, 200)),
                        )
                    }),
            }
        };
        let list = |key: &str| -> Vec<String> {
            doc.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let auth_methods = list("token_endpoint_auth_methods_supported");
        // RFC 8414: client_secret_basic is the default when the list is absent.
        let client_auth =
            if auth_methods.is_empty() || auth_methods.iter().any(|m| m == "client_secret_basic") {
                ClientAuth::Basic
            } else if auth_methods.iter().any(|m| m == "client_secret_post") {
                ClientAuth::Body
            } else {
                return Err(self.error(
                    ErrorClass::ClientMisconfigured,
                    op,
                    "the provider supports neither client_secret_basic nor client_secret_post",
                ));
            };
        Ok(Metadata {
            authorize: endpoint("authorization_endpoint")?,
            token: endpoint("token_endpoint")?,
            userinfo: endpoint("userinfo_endpoint")?,
            client_auth,
            pkce_s256: list("code_challenge_methods_supported")
                .iter()
                .any(|m| m == "S256"),
        })
    }
}
