//! Endpoints in force for a client: the catalogue's, completed from an OpenID Connect issuer's discovery
//! document (`/.well-known/openid-configuration`) when the definition names one.
//!
//! A discovered endpoint must be on the issuer's origin (scheme, host and port) unless the catalogue
//! entry names its host in `discovered_endpoint_hosts`: the document is only data the client fetched,
//! and the client secret, codes and tokens go to the endpoints it names. OpenID Connect Discovery 1.0
//! §4.3 only ties the `issuer` value to the document's URL; keeping the endpoints beside it is the
//! broker's own, stricter rule.
//!
//! When the catalogue already gives the authorization and token endpoints and the client
//! authentication, the document only adds PKCE, the signing keys and revocation. A provider that
//! answers the document's URL with a refusal (404, not JSON) then simply has none of them: PKCE is not
//! sent and id_tokens are checked without a signature (Acumatica does not document its document).
//! An outage stays an error, so a passing failure never quietly turns PKCE off.

use super::catalogue::ClientAuth;
use super::error::{tidy, ErrorClass, Operation, ProviderError, Redactor};
use super::oauth::{EffectiveEndpoints, OAuthClient};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use url::Url;

/// Discovery results shared by the clients one [`super::Providers`] makes: one read per issuer per process.
pub(super) type MetadataCache = Arc<Mutex<HashMap<String, Arc<EffectiveEndpoints>>>>;

#[derive(Default)]
struct Metadata {
    issuer: Option<String>,
    authorize: Option<Url>,
    token: Option<Url>,
    userinfo: Option<Url>,
    jwks: Option<Url>,
    revocation: Option<Url>,
    client_auth: Option<ClientAuth>,
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
        let essentials =
            known.authorize.is_some() && known.token.is_some() && d.client_auth.is_some();
        let complete = essentials && d.pkce.is_some();
        let metadata = match (&p.issuer, complete) {
            (Some(issuer), false) => match self.read_metadata(issuer).await {
                Ok(found) => Some(found),
                // No document (404, not JSON); a document that fails its checks is still an error.
                Err(e) if essentials && e.class == ErrorClass::Unexpected => {
                    tracing::warn!(provider = ?self.kind(), error = %e, "no usable discovery document: no PKCE, id_token signatures unchecked");
                    Some(Metadata::default())
                }
                Err(e) => return Err(e),
            },
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
            .or_else(|| meta.and_then(|m| m.client_auth))
            .unwrap_or(ClientAuth::Basic);
        let pkce = d
            .pkce
            .or_else(|| meta.map(|m| m.pkce_s256))
            .unwrap_or(false);
        // The id_token's `iss` must be the issuer as the provider states it (Twinfield has no
        // document; its catalogue issuer stands in).
        let issuer = meta.and_then(|m| m.issuer.clone()).or_else(|| {
            p.issuer
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_string())
        });
        Ok(EffectiveEndpoints {
            authorize,
            token,
            userinfo,
            client_auth,
            pkce,
            issuer,
            jwks: meta.and_then(|m| m.jwks.clone()),
            revocation: known
                .revocation
                .clone()
                .or_else(|| meta.and_then(|m| m.revocation.clone())),
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
        let endpoint = |key: &str| self.discovered_endpoint(&doc, key, issuer);
        // RFC 8414: client_secret_basic is the default when the list is absent.
        let auth_methods = string_list(&doc, "token_endpoint_auth_methods_supported");
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
            issuer: Some(stated.to_string()),
            authorize: endpoint("authorization_endpoint")?,
            token: endpoint("token_endpoint")?,
            userinfo: endpoint("userinfo_endpoint")?,
            jwks: endpoint("jwks_uri")?,
            revocation: endpoint("revocation_endpoint")?,
            client_auth: Some(client_auth),
            pkce_s256: string_list(&doc, "code_challenge_methods_supported")
                .iter()
                .any(|m| m == "S256"),
        })
    }

    /// The endpoint the discovery document names under `key`, if any, once it is a URL the broker may
    /// call: well formed, not on a refused address (refused here, before a person is sent to
    /// authorize, rather than at the token call), and on the issuer's origin or an allowed host.
    fn discovered_endpoint(
        &self,
        doc: &Map<String, Value>,
        key: &str,
        issuer: &Url,
    ) -> Result<Option<Url>, ProviderError> {
        let Some(named) = doc.get(key).and_then(Value::as_str) else {
            return Ok(None);
        };
        let refuse = |why: String| {
            self.error(
                ErrorClass::ClientMisconfigured,
                Operation::Metadata,
                format!("{key}: {}", tidy(&why, 600)),
            )
        };
        let url = super::catalogue::checked_url(&self.provider.rewrite(named))
            .map_err(|why| refuse(tidy(&why, 300)))?;
        self.http
            .settings()
            .addresses
            .check_url_literal(&url)
            .map_err(|refused| refuse(refused.to_string()))?;
        if !self.endpoint_host_allowed(issuer, &url, named) {
            return Err(refuse(format!(
                "the discovery document names {:?}, which is not on the issuer's origin; list its host in the catalogue entry's discovered_endpoint_hosts if it is genuine",
                tidy(named, 200)
            )));
        }
        Ok(Some(url))
    }

    /// Whether a discovered endpoint may be used: on the issuer's origin, or on a host the catalogue
    /// entry allows (matched as the document names it, before any base-URL override).
    fn endpoint_host_allowed(&self, issuer: &Url, url: &Url, named: &str) -> bool {
        if url.origin() == issuer.origin() {
            return true;
        }
        let named_host = Url::parse(named)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let allowed = &self.provider.definition.discovered_endpoint_hosts;
        named_host.is_some_and(|host| allowed.iter().any(|a| a.eq_ignore_ascii_case(&host)))
    }
}

/// The strings of the array the document holds under `key` (empty when there is none).
fn string_list(doc: &Map<String, Value>, key: &str) -> Vec<String> {
    doc.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
