//! Which provider an app talks to, the settings that select its endpoints, and the context discovered
//! after authorization that integrations need to call the provider.

use super::InvalidValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use url::Url;

/// The providers the broker knows how to speak to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Twinfield,
    ExactOnline,
    Acumatica,
    /// Any RFC 6749 provider defined entirely by configuration.
    Generic,
}

impl ProviderKind {
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Twinfield => "Twinfield",
            Self::ExactOnline => "Exact Online",
            Self::Acumatica => "Acumatica",
            Self::Generic => "OAuth 2.0 provider",
        }
    }
}

/// Exact Online runs one host per country; a connection belongs to exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExactCountry {
    #[serde(rename = "nl")]
    Netherlands,
    #[serde(rename = "be")]
    Belgium,
    #[serde(rename = "de")]
    Germany,
    #[serde(rename = "co.uk")]
    UnitedKingdom,
    #[serde(rename = "com")]
    UnitedStates,
    #[serde(rename = "fr")]
    France,
    #[serde(rename = "es")]
    Spain,
}

impl ExactCountry {
    pub const ALL: [ExactCountry; 7] = [
        Self::Netherlands,
        Self::Belgium,
        Self::Germany,
        Self::UnitedKingdom,
        Self::UnitedStates,
        Self::France,
        Self::Spain,
    ];

    /// The top-level domain of the country's host: `start.exactonline.<tld>`.
    pub fn tld(self) -> &'static str {
        match self {
            Self::Netherlands => "nl",
            Self::Belgium => "be",
            Self::Germany => "de",
            Self::UnitedKingdom => "co.uk",
            Self::UnitedStates => "com",
            Self::France => "fr",
            Self::Spain => "es",
        }
    }

    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        Self::ALL.into_iter().find(|c| c.tld() == value).ok_or_else(|| {
            InvalidValue::new(
                "Exact Online country",
                format!("unknown Exact Online country {value:?}: use one of nl, be, de, co.uk, com, fr, es"),
            )
        })
    }
}

/// A URL the broker will send credentials to: https, or http on a loopback address (local sandbox and
/// tests only). No credentials, query or fragment in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceUrl(Url);

impl ServiceUrl {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let invalid = |why: String| Err(InvalidValue::new("service URL", why));
        let url = match Url::parse(value.trim()) {
            Ok(url) => url,
            Err(e) => return invalid(format!("{value:?} is not a URL ({e})")),
        };
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return invalid(format!("{value:?} must be an https:// URL")),
        }
        if url.host_str().is_none() {
            return invalid(format!("{value:?} has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // The URL is not quoted: its user part may be a password, and this message reaches logs.
            let host = url.host_str().unwrap_or_default();
            return invalid(format!(
                "the URL for {host} must not contain credentials: remove the user:password@ part"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return invalid(format!("{value:?} must not have a query or fragment"));
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URL without a trailing slash, for joining paths onto.
    pub fn base(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

super::invalid::text_through_parse!(ServiceUrl);

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base())
    }
}

/// What an app registration needs to reach its provider. Selecting the variant selects the provider,
/// so an app can never hold, say, an Acumatica instance URL for an Exact Online registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ProviderSettings {
    Twinfield,
    ExactOnline {
        country: ExactCountry,
    },
    Acumatica {
        instance_url: ServiceUrl,
        /// The Acumatica tenant (company login name) the client id belongs to.
        tenant: String,
        /// How this instance's connected application expires refresh tokens, when it is not the
        /// catalogue's default (absolute, 30 days): since 2024 R1 each instance chooses.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_tokens: Option<AcumaticaRefreshTokens>,
        /// Each customer runs their own instance and names it (instance URL and tenant) on the
        /// connection page before authorizing; `instance_url` and `tenant` above are then only the
        /// registration's example, never called for a connection. The integrator's customization
        /// package installs the same connected application (client id GUID and secret) in every
        /// instance, so only the `@<tenant>` part of the client id is the customer's.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        instance_per_connection: bool,
    },
    Generic {
        /// The name of a generic provider definition in the provider catalogue.
        definition: String,
    },
}

/// The Refresh Tokens mode of an Acumatica connected application (Connected Applications screen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum AcumaticaRefreshTokens {
    /// A fixed lifetime from authorization, after which a person must authorize again (the only
    /// mode before 2024 R1: 30 days).
    Absolute { days: u32 },
    /// Each refresh extends the refresh token by `days`, up to `absolute_days` after authorization,
    /// or for ever when that is not set ("Infinite").
    Sliding {
        days: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        absolute_days: Option<u32>,
    },
}

impl AcumaticaRefreshTokens {
    /// Reads the command-line form: `absolute:30`, `sliding:15` (infinite) or `sliding:15:90`.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let invalid = |why: String| InvalidValue::new("Acumatica refresh-token mode", why);
        let parts: Vec<&str> = value.trim().split(':').collect();
        let days = |s: &str| -> Result<u32, InvalidValue> {
            s.parse::<u32>()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or_else(|| {
                    invalid(format!(
                        "{s:?} is not a whole number of days from 1 to 3650"
                    ))
                })
        };
        let mode = match parts.as_slice() {
            ["absolute", d] => Self::Absolute { days: days(d)? },
            ["sliding", d] => Self::Sliding {
                days: days(d)?,
                absolute_days: None,
            },
            ["sliding", d, cap] => Self::Sliding {
                days: days(d)?,
                absolute_days: Some(days(cap)?),
            },
            _ => {
                return Err(invalid(format!(
                    "{value:?} is not a refresh-token mode: write absolute:30, sliding:15 (infinite) or sliding:15:90 (sliding, at most 90 days)"
                )))
            }
        };
        mode.validate()?;
        Ok(mode)
    }

    pub fn validate(&self) -> Result<(), InvalidValue> {
        let ok = |d: u32| (1..=3650).contains(&d);
        match *self {
            Self::Absolute { days } if ok(days) => Ok(()),
            Self::Sliding {
                days,
                absolute_days: None,
            } if ok(days) => Ok(()),
            Self::Sliding {
                days,
                absolute_days: Some(cap),
            } if ok(days) && ok(cap) && cap >= days => Ok(()),
            _ => Err(InvalidValue::new("Acumatica refresh-token mode", "Acumatica refresh-token lifetimes are 1 to 3650 days, and a sliding token's absolute lifetime is at least its sliding one")),
        }
    }
}

/// The Acumatica instance and tenant a connection's customer named on the connection page, for an
/// app whose customers each bring their own instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcumaticaInstance {
    pub instance_url: ServiceUrl,
    pub tenant: String,
}

impl AcumaticaInstance {
    /// Reads what a customer typed: the address they sign in at (`acme.acumatica.com` is read as
    /// `https://acme.acumatica.com`; a path such as `/MyInstance` is kept, since one host may serve
    /// several instances) and the tenant (company) they log in to.
    pub fn parse(instance_url: &str, tenant: &str) -> Result<Self, InvalidValue> {
        let typed = instance_url.trim();
        let with_scheme = if typed.contains("://") {
            typed.to_string()
        } else {
            format!("https://{typed}")
        };
        let url = ServiceUrl::parse(&with_scheme)?;
        let tenant = tenant.trim();
        if tenant.is_empty() || tenant.chars().count() > 100 || tenant.chars().any(char::is_control)
        {
            return Err(InvalidValue::new(
                "Acumatica tenant",
                "the tenant is the company name you choose when you sign in to Acumatica, 1 to 100 characters",
            ));
        }
        Ok(Self {
            instance_url: url,
            tenant: tenant.to_string(),
        })
    }
}

impl ProviderSettings {
    /// Whether each customer names their own Acumatica instance (see `instance_per_connection`).
    pub fn instance_per_connection(&self) -> bool {
        matches!(
            self,
            Self::Acumatica {
                instance_per_connection: true,
                ..
            }
        )
    }

    /// These settings with each customer naming their own instance, or not. Only Acumatica
    /// instances are per customer; for another provider asking for it is refused.
    pub fn with_instance_per_connection(mut self, wanted: bool) -> Result<Self, InvalidValue> {
        match &mut self {
            Self::Acumatica {
                instance_per_connection,
                ..
            } => *instance_per_connection = wanted,
            _ if wanted => {
                return Err(InvalidValue::new(
                    "instance per connection",
                    format!(
                        "acumatica_instance_per_connection applies to Acumatica apps only, and this app is for {}: leave it out",
                        self.kind().display_name()
                    ),
                ))
            }
            _ => {}
        }
        Ok(self)
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::Twinfield => ProviderKind::Twinfield,
            Self::ExactOnline { .. } => ProviderKind::ExactOnline,
            Self::Acumatica { .. } => ProviderKind::Acumatica,
            Self::Generic { .. } => ProviderKind::Generic,
        }
    }

    pub fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            Self::Acumatica { tenant, .. } if tenant.trim().is_empty() => {
                Err(InvalidValue::new("Acumatica tenant", "the Acumatica tenant is empty: give the tenant (company) name the client id was created in"))
            }
            Self::Acumatica {
                refresh_tokens: Some(mode),
                ..
            } => mode.validate(),
            Self::Generic { definition } if definition.trim().is_empty() => Err(InvalidValue::new(
                "provider definition",
                "the generic provider definition name is empty",
            )),
            _ => Ok(()),
        }
    }
}

/// Where a connection's data lives, discovered after authorization. Integrations get it with every
/// session, and a reconnect must land on the same organisation, division or tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ProviderContext {
    Twinfield {
        cluster_url: ServiceUrl,
        organisation_code: String,
        organisation_id: Option<String>,
    },
    ExactOnline {
        base_url: ServiceUrl,
        /// The division (administration) the connection is bound to: the one the integration named,
        /// the customer's only granted one, or (see `domain::binding`) the best guess among several.
        division: i64,
        /// The Exact user (`UserID`) who authorized: a reconnect must be by the same user. Records
        /// stored before it was kept have none (the connection's `authorized_by` stands in).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        /// Every division the authorization grants (`system/Divisions`), so integrations can work
        /// across administrations in parallel. Records stored before it was kept have none.
        #[serde(default)]
        divisions: Vec<ExactDivision>,
    },
    Acumatica {
        instance_url: ServiceUrl,
        tenant: String,
    },
    Generic {
        /// The provider's name for the organisation or account, when it tells.
        account: Option<String>,
    },
}

/// One Exact Online division (administration) an authorization grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactDivision {
    pub code: i64,
    /// Its name (`Description`), when Exact gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ProviderContext {
    /// What must not change across a reconnect: organisation, division or tenant. `None` when the
    /// provider gives nothing to compare. Exact Online is compared differently (the authorizing user,
    /// and the bound division among the granted ones): see `domain::binding`.
    pub fn organisation_key(&self) -> Option<String> {
        match self {
            Self::Twinfield {
                organisation_code, ..
            } => Some(organisation_code.to_ascii_uppercase()),
            Self::ExactOnline { division, .. } => Some(division.to_string()),
            Self::Acumatica {
                instance_url,
                tenant,
            } => Some(format!(
                "{}|{}",
                instance_url.base(),
                tenant.to_ascii_lowercase()
            )),
            Self::Generic { account } => account.clone(),
        }
    }

    /// A name a person recognises: the organisation, division or company.
    pub fn describe(&self) -> String {
        match self {
            Self::Twinfield {
                organisation_code, ..
            } => format!("organisation {organisation_code}"),
            Self::ExactOnline {
                division,
                divisions,
                ..
            } => match divisions
                .iter()
                .find(|d| d.code == *division)
                .and_then(|d| d.name.as_deref())
            {
                Some(name) => format!("division {division} ({name})"),
                None => format!("division {division}"),
            },
            Self::Acumatica { tenant, .. } => format!("tenant {tenant}"),
            Self::Generic {
                account: Some(account),
            } => format!("account {account}"),
            Self::Generic { account: None } => "the authorized account".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_credentials_is_refused_without_quoting_them() {
        let err = ServiceUrl::parse("https://admin:hunter2@erp.example.com/").unwrap_err();
        assert!(err.message.contains("erp.example.com"), "{err}");
        assert!(!err.message.contains("hunter2"), "{err}");
        assert!(!err.message.contains("admin"), "{err}");
    }

    #[test]
    fn service_urls_must_be_https_except_on_loopback() {
        assert!(ServiceUrl::parse("https://acme.acumatica.com").is_ok());
        assert!(ServiceUrl::parse("http://127.0.0.1:8080/acumatica/x").is_ok());
        assert!(ServiceUrl::parse("http://acme.example.com").is_err());
        assert!(ServiceUrl::parse("https://user:pw@acme.example.com").is_err());
        assert!(ServiceUrl::parse("https://acme.example.com/?a=1").is_err());
        assert!(ServiceUrl::parse("ftp://acme.example.com").is_err());
    }

    #[test]
    fn exact_countries_round_trip() {
        for country in ExactCountry::ALL {
            assert_eq!(ExactCountry::parse(country.tld()).unwrap(), country);
        }
        assert!(ExactCountry::parse("uk")
            .unwrap_err()
            .message
            .contains("co.uk"));
    }
}
