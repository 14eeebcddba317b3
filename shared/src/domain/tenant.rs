//! Tenants and their OAuth app registrations.

use super::provider::{ProviderKind, ProviderSettings};
use super::InvalidValue;
use crate::ids::{AppId, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

/// One customer of the broker: an integration vendor with its own apps, keys and connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    /// Shown to people in pages and emails.
    pub display_name: String,
    /// The language of its connections' pages and emails, where a connection names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<super::Locale>,
    /// The time zone of its connections' people, where a connection names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<super::TimeZone>,
    /// Its logo and colour in the emails sent on its behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<super::Branding>,
    /// The origins its connections' return URLs may point at: after connecting, the pages offer a
    /// way back only to these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub return_origins: Vec<super::ReturnOrigin>,
    pub created_at: DateTime<Utc>,
}

impl Tenant {
    pub fn new(id: TenantId, display_name: &str, now: DateTime<Utc>) -> Result<Self, InvalidValue> {
        let display_name = super::people::plain_label(display_name);
        if display_name.is_empty() || display_name.chars().count() > 120 {
            return Err(InvalidValue::new(
                "tenant display name",
                "a tenant's display name must be 1 to 120 characters",
            ));
        }
        Ok(Self {
            id,
            display_name: display_name.to_string(),
            locale: None,
            time_zone: None,
            branding: None,
            return_origins: Vec::new(),
            created_at: now,
        })
    }
}

/// The redirect URI registered with the provider. Providers compare it exactly, so the broker stores it
/// exactly as registered: https (http only on loopback), no fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RedirectUri(String);

impl RedirectUri {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let invalid = |why: String| InvalidValue::new("redirect URI", why);
        let url = Url::parse(value)
            .map_err(|e| invalid(format!("redirect URI {value:?} is not a URL ({e})")))?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
            return Err(invalid(format!("redirect URI {value:?} must use https")));
        }
        if url.fragment().is_some() {
            return Err(invalid(format!(
                "redirect URI {value:?} must not have a fragment"
            )));
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

super::invalid::text_through_parse!(RedirectUri);

/// An OAuth app registered at a provider, on behalf of a tenant. Its client secret lives in the vault,
/// never in this record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthApp {
    pub tenant: TenantId,
    pub id: AppId,
    pub settings: ProviderSettings,
    pub client_id: String,
    pub redirect_uri: RedirectUri,
    /// Scopes to request; empty means the provider definition's defaults.
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl OAuthApp {
    pub fn provider(&self) -> ProviderKind {
        self.settings.kind()
    }

    /// Whether a connection of this app must first be told its customer's own Acumatica instance.
    pub fn needs_instance_of(&self, connection: &super::Connection) -> bool {
        matches!(
            self.settings,
            ProviderSettings::Acumatica {
                instance_per_connection: true,
                ..
            }
        ) && connection.acumatica_instance.is_none()
    }

    /// The registration as one connection uses it: for an app whose customers each bring their own
    /// Acumatica instance, the connection's instance and tenant, and the client id addressed to that
    /// tenant (`<GUID>@<Tenant>`). Every path that calls the provider for a connection (connect,
    /// refresh, sessions, revocation) goes through here, so none can reach the registration's example
    /// instance instead.
    pub fn for_connection(&self, connection: &super::Connection) -> OAuthApp {
        let mut app = self.clone();
        if let (
            ProviderSettings::Acumatica {
                instance_url,
                tenant,
                instance_per_connection: true,
                ..
            },
            Some(own),
        ) = (&mut app.settings, &connection.acumatica_instance)
        {
            *instance_url = own.instance_url.clone();
            *tenant = own.tenant.clone();
            let guid = self
                .client_id
                .rsplit_once('@')
                .map_or(self.client_id.as_str(), |(guid, _)| guid);
            app.client_id = format!("{guid}@{}", own.tenant);
        }
        app
    }

    pub fn validate(&self) -> Result<(), InvalidValue> {
        let invalid = |why: String| Err(InvalidValue::new("app registration", why));
        self.settings.validate()?;
        if self.client_id.trim().is_empty() {
            return invalid(
                "the client id is empty: copy it from the provider's app registration".into(),
            );
        }
        if let ProviderSettings::Acumatica { tenant, .. } = &self.settings {
            // Acumatica client ids are `<GUID>@<Tenant>`; a token only reaches that tenant.
            let suffix = self.client_id.rsplit_once('@').map(|(_, t)| t);
            if !suffix.is_some_and(|t| t.eq_ignore_ascii_case(tenant)) {
                return invalid(format!(
                    "an Acumatica client id looks like <GUID>@{tenant}: check the Connected Applications screen"
                ));
            }
        }
        if self
            .scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return invalid("each scope must be one word without spaces".into());
        }
        Ok(())
    }
}
