//! The provider catalogue: what the broker knows about each provider, as data.
//!
//! The built-in definitions (`catalogue.json`, compiled in) cover Twinfield, Exact Online (one entry per
//! country host) and Acumatica. A JSON file given at runtime ([`CATALOGUE_FILE_ENV`]) adds generic
//! OAuth 2.0 / OpenID Connect providers, or replaces a built-in definition with the same id; its
//! `base_urls` map, and [`BASE_URLS_ENV`], point canonical hosts elsewhere (the local sandbox and the
//! tests point them at the simulators).
//!
//! A definition in the file:
//!
//! ```json
//! { "definitions": [{
//!     "id": "my-idp", "kind": "generic", "display_name": "My IdP",
//!     "issuer": "https://idp.example.com",
//!     "scopes": ["openid", "offline_access"],
//!     "authorize_params": { "prompt": "consent" },
//!     "lifetimes": { "access_token_secs": 3600 },
//!     "refresh": { "rotation": "single_use", "expiry": { "kind": "sliding", "days": 14, "absolute_cap_days": 90 } },
//!     "discovery": "userinfo"
//!   }],
//!   "base_urls": { "https://login.twinfield.com": "http://127.0.0.1:9000/twinfield" } }
//! ```
//!
//! Endpoints are absolute URLs or paths joined to `base_url`; `base_url` may be `{instance_url}`, taken
//! from the app's settings (Acumatica). With an `issuer`, endpoints and settings not given explicitly
//! come from its `/.well-known/openid-configuration` (the signing keys and the revocation endpoint
//! too), and must be on the issuer's origin unless `discovered_endpoint_hosts` lists their host;
//! id_tokens must name the issuer. `endpoints.revocation` names an RFC 7009 endpoint a provider
//! without a discovery document offers; `refresh.max_token_calls_per_day` caps the refresh engine's
//! token calls per connection per day, and `refresh.max_token_calls_per_app_user_per_day` /
//! `refresh.max_failed_token_calls_per_app_user_per_hour` those of all the connections of one provider
//! user under one app (Exact Online). In `authorize_params`, the value `{random}` is a
//! fresh random value per request (Twinfield's mandatory `nonce`). A definition may `extend` another
//! and change only some fields.

mod definition;
mod origins;
mod overrides;

pub use definition::{
    ClientAuth, DiscoveryStep, EndpointTemplates, Lifetimes, ProviderDefinition, RefreshExpiry,
    RefreshPolicy, RefreshRotation, RANDOM_PARAM,
};
pub use origins::OriginPattern;
pub use overrides::EndpointOverrides;

use super::address_policy::AddressPolicy;
use crate::domain::{ExactCountry, ProviderKind, ProviderSettings, ServiceUrl};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use url::Url;

/// Path of a JSON catalogue file merged over the built-in one.
pub const CATALOGUE_FILE_ENV: &str = "BROKER_PROVIDER_CATALOGUE";
/// Base-URL overrides, `from=to` pairs separated by commas:
/// `https://login.twinfield.com=http://127.0.0.1:9000/twinfield,https://start.exactonline.nl=...`.
pub const BASE_URLS_ENV: &str = "BROKER_PROVIDER_BASE_URLS";

const BUILT_IN: &str = include_str!("catalogue.json");
const INSTANCE_PLACEHOLDER: &str = "{instance_url}";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider catalogue: {0}")]
pub struct CatalogueError(pub String);

impl From<crate::domain::InvalidValue> for CatalogueError {
    fn from(invalid: crate::domain::InvalidValue) -> Self {
        Self(invalid.message)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, CatalogueError> {
    Err(CatalogueError(message.into()))
}

/// The definitions and base-URL overrides in force.
#[derive(Debug, Clone)]
pub struct Catalogue {
    definitions: BTreeMap<String, Arc<ProviderDefinition>>,
    overrides: EndpointOverrides,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(default)]
    definitions: Vec<Value>,
    #[serde(default)]
    base_urls: EndpointOverrides,
}

impl Catalogue {
    /// The compiled-in definitions, with no overrides.
    pub fn built_in() -> Self {
        let mut catalogue = Self {
            definitions: BTreeMap::new(),
            overrides: EndpointOverrides::default(),
        };
        catalogue
            .merge_json(BUILT_IN)
            .expect("the built-in provider catalogue is valid (checked by a unit test)");
        catalogue
    }

    /// The built-in catalogue, then the file named by [`CATALOGUE_FILE_ENV`], then the overrides in
    /// [`BASE_URLS_ENV`].
    pub fn from_env() -> Result<Self, CatalogueError> {
        let mut catalogue = Self::built_in();
        if let Some(path) = std::env::var_os(CATALOGUE_FILE_ENV).filter(|p| !p.is_empty()) {
            catalogue.merge_file(Path::new(&path))?;
        }
        if let Ok(list) = std::env::var(BASE_URLS_ENV) {
            let overrides = EndpointOverrides::parse_list(&list)?;
            catalogue.overrides.merge(&overrides);
        }
        Ok(catalogue)
    }

    /// Merges a catalogue file over this one (see the module docs for its format).
    pub fn merge_file(&mut self, path: &Path) -> Result<(), CatalogueError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CatalogueError(format!("cannot read {}: {e}", path.display())))?;
        self.merge_json(&text)
            .map_err(|e| CatalogueError(format!("{}: {}", path.display(), e.0)))
    }

    /// Merges catalogue JSON over this one: definitions replace those with the same id, base URLs add up.
    pub fn merge_json(&mut self, text: &str) -> Result<(), CatalogueError> {
        let file: CatalogueFile = serde_json::from_str(text)
            .map_err(|e| CatalogueError(format!("not a valid catalogue: {e}")))?;
        let mut raw: BTreeMap<String, Value> = self
            .definitions
            .iter()
            .map(|(id, d)| {
                (
                    id.clone(),
                    serde_json::to_value(d.as_ref()).expect("definitions serialize"),
                )
            })
            .collect();
        let mut added = Vec::new();
        for entry in file.definitions {
            let Value::Object(mut fields) = entry else {
                return err("each definition must be a JSON object");
            };
            let Some(id) = fields.get("id").and_then(Value::as_str).map(str::to_string) else {
                return err("a definition has no id");
            };
            if let Some(parent) = fields.remove("extends") {
                let parent = parent.as_str().unwrap_or_default().to_string();
                let Some(Value::Object(base)) = raw.get(&parent) else {
                    return err(format!(
                        "{id} extends {parent:?}, which is not defined before it"
                    ));
                };
                let mut merged = base.clone();
                merged.remove("notes");
                merged.extend(fields);
                fields = merged;
            }
            raw.insert(id.clone(), Value::Object(fields));
            added.push(id);
        }
        for id in added {
            let definition: ProviderDefinition = serde_json::from_value(raw[&id].clone())
                .map_err(|e| CatalogueError(format!("definition {id}: {e}")))?;
            self.insert(definition)?;
        }
        self.overrides.merge(&file.base_urls);
        Ok(())
    }

    /// Adds or replaces one definition.
    pub fn insert(&mut self, definition: ProviderDefinition) -> Result<(), CatalogueError> {
        definition.validate()?;
        self.definitions
            .insert(definition.id.clone(), Arc::new(definition));
        Ok(())
    }

    /// Points a canonical base URL elsewhere.
    pub fn override_base_url(&mut self, from: &str, to: &str) -> Result<(), CatalogueError> {
        self.overrides.insert(from, to)
    }

    /// Aims the built-in Twinfield and Exact Online definitions at a sandbox: Twinfield's login service
    /// at `twinfield_login`, each Exact Online country at `exact(country)`. The definitions themselves
    /// stay as they are, so a sandbox exercises the same endpoints, paths and rules as production.
    pub fn aim_at_sandbox(
        &mut self,
        twinfield_login: &str,
        exact: impl Fn(ExactCountry) -> String,
    ) -> Result<(), CatalogueError> {
        self.override_base_url("https://login.twinfield.com", twinfield_login)?;
        for country in ExactCountry::ALL {
            let canonical = format!("https://start.exactonline.{}", country.tld());
            self.override_base_url(&canonical, &exact(country))?;
        }
        Ok(())
    }

    pub fn with_base_url(mut self, from: &str, to: &str) -> Result<Self, CatalogueError> {
        self.override_base_url(from, to)?;
        Ok(self)
    }

    /// Refuses a catalogue whose URLs (after the overrides) name an IP address the policy refuses.
    /// Host names are left to the provider HTTP client, which checks what they resolve to on every
    /// call: resolving them here would only hold up a cold start.
    pub fn check_addresses(&self, policy: AddressPolicy) -> Result<(), CatalogueError> {
        let mut named: Vec<(String, &str)> = Vec::new();
        for d in self.definitions.values() {
            let e = &d.endpoints;
            let fields = [
                ("base_url", &d.base_url),
                ("issuer", &d.issuer),
                ("endpoints.authorize", &e.authorize),
                ("endpoints.token", &e.token),
                ("endpoints.userinfo", &e.userinfo),
                ("endpoints.token_validation", &e.token_validation),
                ("endpoints.session_service", &e.session_service),
                ("endpoints.current_user", &e.current_user),
                ("endpoints.revocation", &e.revocation),
            ];
            for (field, value) in fields {
                if let Some(value) = value {
                    named.push((format!("definition {} {field}", d.id), value));
                }
            }
        }
        for (from, to) in self.overrides.iter() {
            named.push((format!("the base URL override for {from}"), to));
        }
        for (what, value) in named {
            // Paths and `{instance_url}` are not URLs yet: they are checked once joined, at the call.
            let Ok(url) = Url::parse(&self.overrides.apply(value)) else {
                continue;
            };
            policy
                .check_url_literal(&url)
                .map_err(|refused| CatalogueError(format!("{what}: {refused}")))?;
        }
        Ok(())
    }

    pub fn overrides(&self) -> &EndpointOverrides {
        &self.overrides
    }

    pub fn get(&self, id: &str) -> Option<&ProviderDefinition> {
        self.definitions.get(id).map(Arc::as_ref)
    }

    pub fn definitions(&self) -> impl Iterator<Item = &ProviderDefinition> {
        self.definitions.values().map(Arc::as_ref)
    }

    /// The definition id an app's settings select.
    pub fn definition_id(settings: &ProviderSettings) -> String {
        match settings {
            ProviderSettings::Twinfield => "twinfield".into(),
            ProviderSettings::ExactOnline { country } => format!("exact_online.{}", country.tld()),
            ProviderSettings::Acumatica { .. } => "acumatica".into(),
            ProviderSettings::Generic { definition } => definition.clone(),
        }
    }

    /// The concrete endpoints for an app's settings, with overrides applied.
    pub fn resolve(&self, settings: &ProviderSettings) -> Result<ResolvedProvider, CatalogueError> {
        settings.validate().map_err(CatalogueError::from)?;
        let id = Self::definition_id(settings);
        let Some(definition) = self.definitions.get(&id).cloned() else {
            return err(format!(
                "no provider definition {id:?}: add it to the catalogue file"
            ));
        };
        if definition.kind != settings.kind() {
            return err(format!(
                "definition {id} is for {:?}, not {:?}",
                definition.kind,
                settings.kind()
            ));
        }
        let base = match definition.base_url.as_deref() {
            None => None,
            Some(INSTANCE_PLACEHOLDER) => match settings {
                ProviderSettings::Acumatica { instance_url, .. } => {
                    Some(instance_url.base().to_string())
                }
                _ => {
                    return err(format!(
                        "{id}: {INSTANCE_PLACEHOLDER} needs an instance URL in the app settings"
                    ))
                }
            },
            Some(base) if base.contains('{') => {
                return err(format!("{id}: unknown placeholder in base_url {base:?}"))
            }
            Some(base) => Some(base.trim_end_matches('/').to_string()),
        };
        let url = |template: &Option<String>| -> Result<Option<Url>, CatalogueError> {
            let Some(template) = template else {
                return Ok(None);
            };
            let joined = match (template.starts_with('/'), &base) {
                (true, Some(base)) => format!("{base}{template}"),
                (true, None) => {
                    return err(format!("{id}: endpoint {template:?} needs a base_url"))
                }
                (false, _) => template.clone(),
            };
            self.endpoint_url(&joined)
                .map(Some)
                .map_err(|e| CatalogueError(format!("{id}: {e}")))
        };
        let e = &definition.endpoints;
        let endpoints = PartialEndpoints {
            authorize: url(&e.authorize)?,
            token: url(&e.token)?,
            userinfo: url(&e.userinfo)?,
            token_validation: url(&e.token_validation)?,
            session_service: url(&e.session_service)?,
            current_user: url(&e.current_user)?,
            revocation: url(&e.revocation)?,
        };
        let issuer = match &definition.issuer {
            Some(issuer) => Some(url(&Some(issuer.clone()))?.expect("given")),
            None => None,
        };
        let base_url = match &base {
            Some(base) => Some(
                self.service_url(base)
                    .map_err(|e| CatalogueError(format!("{id}: {e}")))?,
            ),
            None => None,
        };
        Ok(ResolvedProvider {
            definition,
            settings: settings.clone(),
            base_url,
            endpoints,
            issuer,
            overrides: self.overrides.clone(),
        })
    }

    fn endpoint_url(&self, url: &str) -> Result<Url, String> {
        checked_url(&self.overrides.apply(url))
    }

    fn service_url(&self, url: &str) -> Result<ServiceUrl, String> {
        ServiceUrl::parse(&self.overrides.apply(url)).map_err(String::from)
    }
}

impl Default for Catalogue {
    fn default() -> Self {
        Self::built_in()
    }
}

/// A URL the broker may send credentials to: https, or http on loopback; no user info or fragment.
pub(crate) fn checked_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("{value:?} is not a URL ({e})"))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
        return Err(format!("{value:?} must be an https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        // Not quoted: a user part may be a password, and this message reaches logs and pages.
        let host = url.host_str().unwrap_or_default();
        return Err(format!(
            "the URL for {host} must not contain credentials (user:password@) or a fragment"
        ));
    }
    Ok(url)
}

/// Endpoints as far as the catalogue knows them; an issuer's discovery document may fill the gaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialEndpoints {
    pub authorize: Option<Url>,
    pub token: Option<Url>,
    pub userinfo: Option<Url>,
    pub token_validation: Option<Url>,
    pub session_service: Option<Url>,
    pub current_user: Option<Url>,
    pub revocation: Option<Url>,
}

/// One app's provider: its definition, its settings and concrete endpoints.
#[derive(Debug, Clone)]
pub struct ResolvedProvider {
    pub definition: Arc<ProviderDefinition>,
    pub settings: ProviderSettings,
    /// The base the endpoints hang off (after overrides): Exact's country host, Acumatica's instance.
    pub base_url: Option<ServiceUrl>,
    pub endpoints: PartialEndpoints,
    pub issuer: Option<Url>,
    pub overrides: EndpointOverrides,
}

impl ResolvedProvider {
    pub fn kind(&self) -> ProviderKind {
        self.definition.kind
    }

    /// Rewrites a URL a provider reported (a Twinfield cluster, a discovery endpoint) by the overrides.
    pub fn rewrite(&self, url: &str) -> String {
        self.overrides.apply(url)
    }

    /// A service URL the provider reported (Twinfield's cluster), if its origin is in the definition's
    /// `cluster_origins` or is the origin the provider's own base URL points at (a sandbox the overrides
    /// aimed the login host at is trusted for its clusters too); then rewritten by the overrides.
    pub fn reported_service_url(&self, reported: &str) -> Result<ServiceUrl, String> {
        let url = Url::parse(reported.trim())
            .map_err(|e| format!("{:?} is not a URL ({e})", tidy(reported)))?;
        let listed = self
            .definition
            .cluster_origins
            .iter()
            .any(|pattern| OriginPattern::parse(pattern).is_ok_and(|p| p.matches(&url)));
        let own = self
            .base_url
            .as_ref()
            .is_some_and(|base| base.as_url().origin() == url.origin());
        if !(listed || own) {
            return Err(format!(
                "{} named {:?}, which is not an allowed address for it ({}); the broker sends no token or session there. A sandbox's origin can be added to the definition's cluster_origins",
                self.definition.display_name,
                tidy(reported),
                self.definition.cluster_origins.join(", ")
            ));
        }
        ServiceUrl::parse(&self.rewrite(url.as_str())).map_err(String::from)
    }
}

fn tidy(text: &str) -> String {
    crate::providers::error::tidy(text, 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ExactCountry;

    #[test]
    fn the_built_in_catalogue_loads_and_covers_every_exact_country() {
        let c = Catalogue::built_in();
        for country in ExactCountry::ALL {
            let r = c
                .resolve(&ProviderSettings::ExactOnline { country })
                .unwrap();
            assert_eq!(
                r.endpoints.token.unwrap().as_str(),
                format!(
                    "https://start.exactonline.{}/api/oauth2/token",
                    country.tld()
                )
            );
            assert_eq!(r.definition.refresh.min_interval_secs, Some(570));
            assert_eq!(r.definition.client_auth, Some(ClientAuth::Body));
        }
        let t = c.resolve(&ProviderSettings::Twinfield).unwrap();
        assert_eq!(t.definition.client_auth, Some(ClientAuth::BasicUnencoded));
        assert_eq!(
            t.definition
                .authorize_params
                .get("nonce")
                .map(String::as_str),
            Some(RANDOM_PARAM)
        );
        assert!(t
            .definition
            .scopes
            .iter()
            .any(|s| s == "twf.organisationUser"));
    }

    #[test]
    fn catalogue_urls_on_refused_addresses_are_refused_at_load() {
        let production = AddressPolicy::PublicOnly;
        let local = AddressPolicy::AllowLoopback;
        assert!(Catalogue::built_in().check_addresses(production).is_ok());

        let sandbox = Catalogue::built_in()
            .with_base_url(
                "https://login.twinfield.com",
                "http://127.0.0.1:9000/twinfield",
            )
            .unwrap();
        assert!(sandbox.check_addresses(local).is_ok());
        let err = sandbox.check_addresses(production).unwrap_err().to_string();
        assert!(err.contains("definition twinfield base_url"), "{err}");
        assert!(err.contains("127.0.0.1 is a loopback address"), "{err}");

        let mut metadata = Catalogue::built_in();
        metadata
            .merge_json(
                r#"{"definitions": [{"id": "internal", "kind": "generic", "display_name": "Internal",
                    "issuer": "https://idp.example.com",
                    "endpoints": {"token": "https://169.254.169.254/latest/meta-data"},
                    "lifetimes": {"access_token_secs": 3600},
                    "refresh": {"rotation": "single_use", "expiry": {"kind": "unknown"}},
                    "discovery": "userinfo"}]}"#,
            )
            .unwrap();
        let err = metadata.check_addresses(local).unwrap_err().to_string();
        assert!(err.contains("definition internal endpoints.token"), "{err}");
        assert!(err.contains("link-local"), "{err}");
    }

    #[test]
    fn acumatica_endpoints_hang_off_the_instance() {
        let c = Catalogue::built_in();
        let settings = ProviderSettings::Acumatica {
            instance_url: ServiceUrl::parse("https://acme.acumatica.com/erp/").unwrap(),
            tenant: "Main".into(),
            refresh_tokens: None,
            instance_per_connection: false,
        };
        let r = c.resolve(&settings).unwrap();
        assert_eq!(
            r.endpoints.authorize.unwrap().as_str(),
            "https://acme.acumatica.com/erp/identity/connect/authorize"
        );
    }

    #[test]
    fn base_urls_are_overridden_by_the_longest_match_on_a_path_boundary() {
        let c = Catalogue::built_in()
            .with_base_url(
                "https://login.twinfield.com",
                "http://127.0.0.1:9/twinfield",
            )
            .unwrap()
            .with_base_url(
                "https://start.exactonline.nl/",
                "http://127.0.0.1:9/exact/nl",
            )
            .unwrap();
        let t = c.resolve(&ProviderSettings::Twinfield).unwrap();
        assert_eq!(
            t.endpoints.token.unwrap().as_str(),
            "http://127.0.0.1:9/twinfield/auth/authentication/connect/token"
        );
        let e = c
            .resolve(&ProviderSettings::ExactOnline {
                country: ExactCountry::Netherlands,
            })
            .unwrap();
        assert_eq!(e.base_url.unwrap().base(), "http://127.0.0.1:9/exact/nl");
        assert_eq!(
            c.overrides().apply("https://login.twinfield.community/x"),
            "https://login.twinfield.community/x"
        );
        assert!(EndpointOverrides::parse_list("https://a.example=http://example.com").is_err());
    }

    #[test]
    fn a_runtime_file_adds_generic_providers_and_replaces_built_ins() {
        let mut c = Catalogue::built_in();
        c.merge_json(
            r#"{"definitions":[
                {"id":"idp","kind":"generic","display_name":"IdP","issuer":"https://idp.example.com",
                 "scopes":["openid"],"lifetimes":{"access_token_secs":300},
                 "refresh":{"rotation":"single_use","expiry":{"kind":"sliding","days":1,"absolute_cap_days":30}},
                 "discovery":"userinfo"},
                {"id":"acumatica","extends":"acumatica",
                 "refresh":{"rotation":"reusable","expiry":{"kind":"sliding","days":30}}}],
               "base_urls":{"https://idp.example.com":"http://127.0.0.1:7/idp"}}"#,
        )
        .unwrap();
        let r = c
            .resolve(&ProviderSettings::Generic {
                definition: "idp".into(),
            })
            .unwrap();
        assert_eq!(r.issuer.unwrap().as_str(), "http://127.0.0.1:7/idp");
        let a = c.get("acumatica").unwrap();
        assert_eq!(
            a.refresh.expiry,
            RefreshExpiry::Sliding {
                days: 30,
                absolute_cap_days: None
            }
        );
        assert_eq!(
            a.endpoints.token.as_deref(),
            Some("/identity/connect/token")
        );
        assert!(c
            .resolve(&ProviderSettings::Generic {
                definition: "nope".into()
            })
            .is_err());
    }

    #[test]
    fn bad_definitions_are_refused_with_a_reason() {
        let mut c = Catalogue::built_in();
        let e = c
            .merge_json(r#"{"definitions":[{"id":"x","kind":"generic","display_name":"X","lifetimes":{"access_token_secs":1},"refresh":{"rotation":"reusable","expiry":{"kind":"unknown"}},"discovery":"none"}]}"#)
            .unwrap_err();
        assert!(e.0.contains("authorize and token"), "{e}");
        let e = c
            .merge_json(r#"{"definitions":[{"id":"y","extends":"missing"}]}"#)
            .unwrap_err();
        assert!(e.0.contains("extends"), "{e}");
        let e = c
            .merge_json(r#"{"definitions":[{"id":"twinfield","extends":"twinfield","authorize_params":{"state":"x"}}]}"#)
            .unwrap_err();
        assert!(e.0.contains("state"), "{e}");
    }
}
