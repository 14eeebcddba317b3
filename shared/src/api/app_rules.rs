//! What an app registration must satisfy, wherever it comes from: the integration API (`/v1/apps`)
//! and `broker-admin app register` both check a registration with [`AppRules::check`], so an app
//! the one accepts the other would too.

use crate::context::{public_url_under, BrokerContext, CALLBACK_PATH};
use crate::domain::{
    AcumaticaRefreshTokens, ExactCountry, OAuthApp, ProviderKind, ProviderSettings, ServiceUrl,
};
use crate::providers::{AddressPolicy, Catalogue, HostCheck};
use serde::{Deserialize, Serialize};
use url::Url;

/// A registration the broker will not keep, and what to change. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AppRefused(pub String);

impl From<crate::domain::InvalidValue> for AppRefused {
    fn from(invalid: crate::domain::InvalidValue) -> Self {
        Self(invalid.message)
    }
}

/// The provider-specific fields of a registration, as given: each applies to one provider only, and
/// one given for another provider is refused rather than ignored (an Exact Online country on a
/// Twinfield app is a mistake worth hearing about).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderFields {
    /// Exact Online: the country host (`nl`, `be`, `de`, `co.uk`, `com`, `fr`, `es`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Acumatica: the instance URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<String>,
    /// Acumatica: the tenant (company login name) the client id was created in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acumatica_tenant: Option<String>,
    /// Acumatica: the connected application's Refresh Tokens mode, when not absolute 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acumatica_refresh_tokens: Option<AcumaticaRefreshTokens>,
    /// Generic providers: the definition's name in the provider catalogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
}

impl ProviderFields {
    /// The fields an app's settings hold (the inverse of [`ProviderFields::settings`]).
    pub fn of(settings: &ProviderSettings) -> Self {
        match settings {
            ProviderSettings::Twinfield => Self::default(),
            ProviderSettings::ExactOnline { country } => Self {
                country: Some(country.tld().to_string()),
                ..Self::default()
            },
            ProviderSettings::Acumatica {
                instance_url,
                tenant,
                refresh_tokens,
                ..
            } => Self {
                instance_url: Some(instance_url.base().to_string()),
                acumatica_tenant: Some(tenant.clone()),
                acumatica_refresh_tokens: *refresh_tokens,
                ..Self::default()
            },
            ProviderSettings::Generic { definition } => Self {
                definition: Some(definition.clone()),
                ..Self::default()
            },
        }
    }

    /// These fields over `self`: what a change of some of them leaves.
    pub fn overlaid(mut self, changes: ProviderFields) -> Self {
        self.country = changes.country.or(self.country);
        self.instance_url = changes.instance_url.or(self.instance_url);
        self.acumatica_tenant = changes.acumatica_tenant.or(self.acumatica_tenant);
        self.acumatica_refresh_tokens = changes
            .acumatica_refresh_tokens
            .or(self.acumatica_refresh_tokens);
        self.definition = changes.definition.or(self.definition);
        self
    }

    /// The settings of a `provider` app: its own fields present and well-formed, no other's given.
    pub fn settings(&self, provider: ProviderKind) -> Result<ProviderSettings, AppRefused> {
        let own: &[&str] = match provider {
            ProviderKind::Twinfield => &[],
            ProviderKind::ExactOnline => &["country"],
            ProviderKind::Acumatica => &[
                "instance_url",
                "acumatica_tenant",
                "acumatica_refresh_tokens",
            ],
            ProviderKind::Generic => &["definition"],
        };
        let given = [
            ("country", self.country.is_some(), "Exact Online"),
            ("instance_url", self.instance_url.is_some(), "Acumatica"),
            (
                "acumatica_tenant",
                self.acumatica_tenant.is_some(),
                "Acumatica",
            ),
            (
                "acumatica_refresh_tokens",
                self.acumatica_refresh_tokens.is_some(),
                "Acumatica",
            ),
            ("definition", self.definition.is_some(), "generic provider"),
        ];
        if let Some((field, _, owner)) = given
            .iter()
            .find(|(field, present, _)| *present && !own.contains(field))
        {
            return Err(AppRefused(format!(
                "{field} applies to {owner} apps only, and this app is for {}: leave it out",
                provider.display_name()
            )));
        }
        let need = |value: &Option<String>, field: &str| {
            value
                .clone()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    AppRefused(format!(
                        "{} apps need {field}: add it",
                        provider.display_name()
                    ))
                })
        };
        let settings = match provider {
            ProviderKind::Twinfield => ProviderSettings::Twinfield,
            ProviderKind::ExactOnline => ProviderSettings::ExactOnline {
                country: ExactCountry::parse(need(&self.country, "country")?.trim())?,
            },
            ProviderKind::Acumatica => ProviderSettings::Acumatica {
                instance_url: ServiceUrl::parse(&need(&self.instance_url, "instance_url")?)
                    .map_err(|e| AppRefused(format!("instance_url: {}", e.message)))?,
                tenant: need(&self.acumatica_tenant, "acumatica_tenant")?
                    .trim()
                    .to_string(),
                refresh_tokens: self.acumatica_refresh_tokens,
                instance_per_connection: false,
            },
            ProviderKind::Generic => ProviderSettings::Generic {
                definition: need(&self.definition, "definition")?.trim().to_string(),
            },
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// What a registration is checked against: the provider catalogue in force, the broker's callback
/// URL (providers compare redirect URIs exactly, so any other would fail every authorization), and
/// the addresses provider calls may reach.
pub struct AppRules<'a> {
    pub catalogue: &'a Catalogue,
    pub callback_url: Url,
    pub addresses: AddressPolicy,
}

impl<'a> AppRules<'a> {
    /// The rules of a broker reached at `public_base_url`: its callback URL is the one the connect
    /// flow sends as `redirect_uri` (`ConnectFlow::callback_url`).
    pub fn new(catalogue: &'a Catalogue, public_base_url: &Url, addresses: AddressPolicy) -> Self {
        Self {
            catalogue,
            callback_url: public_url_under(public_base_url, CALLBACK_PATH),
            addresses,
        }
    }

    /// The rules of a running broker: its catalogue, its public URL and its HTTP client's policy.
    pub fn of(ctx: &'a BrokerContext) -> Self {
        Self::new(
            ctx.providers.catalogue(),
            &ctx.public_base_url,
            ctx.providers.http().settings().addresses,
        )
    }

    /// Checks a whole registration. `Ok(HostCheck::Unresolved)` accepts an instance URL whose name
    /// does not resolve now (every call checks its addresses again); the caller says so to a person.
    pub async fn check(&self, app: &OAuthApp) -> Result<HostCheck, AppRefused> {
        self.check_definition(&app.settings)?;
        if app.redirect_uri.as_str() != self.callback_url.as_str() {
            return Err(AppRefused(format!(
                "the redirect URI must be the broker's callback URL {}, exactly as registered at the \
                 provider (providers compare it character by character): register that URL at the \
                 provider and give it here, or leave redirect_uri out",
                self.callback_url
            )));
        }
        app.validate()?;
        self.addresses
            .check_registration(&app.settings)
            .await
            .map_err(|refused| AppRefused(format!("instance_url: {refused}")))
    }

    fn check_definition(&self, settings: &ProviderSettings) -> Result<(), AppRefused> {
        let id = Catalogue::definition_id(settings);
        if self.catalogue.get(&id).is_none() {
            let known: Vec<String> = self
                .catalogue
                .definitions()
                .filter(|d| d.kind == settings.kind())
                .map(|d| d.id.clone())
                .collect();
            return Err(AppRefused(format!(
                "the broker's provider catalogue has no definition {id:?}; the {} definitions it has \
                 are: {}. Use one of them, or ask the broker's operator to add yours",
                settings.kind().display_name(),
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        }
        self.catalogue
            .resolve(settings)
            .map(|_| ())
            .map_err(|e| AppRefused(format!("provider definition {id:?}: {}", e.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: serde_json::Value) -> ProviderFields {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_field_of_another_provider_is_refused_by_name() {
        let exact_on_twinfield = fields(serde_json::json!({"country": "nl"}))
            .settings(ProviderKind::Twinfield)
            .unwrap_err();
        assert!(
            exact_on_twinfield
                .0
                .contains("country applies to Exact Online apps only"),
            "{exact_on_twinfield}"
        );
        let instance_on_exact = fields(serde_json::json!({
            "country": "nl", "instance_url": "https://acme.acumatica.com"
        }))
        .settings(ProviderKind::ExactOnline)
        .unwrap_err();
        assert!(instance_on_exact
            .0
            .contains("instance_url applies to Acumatica"));
    }

    #[test]
    fn a_providers_own_fields_are_needed_and_read_back_as_given() {
        let missing = fields(serde_json::json!({"instance_url": "https://acme.acumatica.com"}))
            .settings(ProviderKind::Acumatica)
            .unwrap_err();
        assert!(missing.0.contains("need acumatica_tenant"), "{missing}");
        let given = fields(serde_json::json!({
            "instance_url": "https://acme.acumatica.com",
            "acumatica_tenant": "Company",
            "acumatica_refresh_tokens": {"mode": "sliding", "days": 15}
        }));
        let settings = given.settings(ProviderKind::Acumatica).unwrap();
        assert_eq!(ProviderFields::of(&settings), given);
        let bad_mode = fields(serde_json::json!({
            "instance_url": "https://acme.acumatica.com",
            "acumatica_tenant": "Company",
            "acumatica_refresh_tokens": {"mode": "sliding", "days": 30, "absolute_days": 10}
        }))
        .settings(ProviderKind::Acumatica)
        .unwrap_err();
        assert!(
            bad_mode.0.contains("at least its sliding one"),
            "{bad_mode}"
        );
    }
}
