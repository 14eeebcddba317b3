//! What a connection's customer tells the broker before authorizing: for an Acumatica app whose
//! customers each run their own instance, the instance URL and tenant; and, when the connection has
//! none yet, who hears about it and in which time zone.
//!
//! The form posts to its link (`POST /connect/{token}/settings`): the unguessable link token is what
//! allows the change, as it allows starting the authorization, so another site cannot forge the post
//! without the link. Once the instance is known it is fixed: a link holder cannot later send the
//! connection's tokens to another instance (a customer changing tenants asks the integration).

use super::{ConnectError, ConnectFailure, ConnectFlow};
use crate::domain::{AcumaticaInstance, Connection, OAuthApp, Recipients, TimeZone};
use crate::ports::Fence;
use serde::Deserialize;
use std::time::Duration;

/// How long the instance may take to answer on its identity endpoint while the customer waits.
const INSTANCE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the page asks before the Connect button is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asks {
    pub recipients: bool,
    pub time_zone: bool,
}

impl Asks {
    /// `None` when nothing needs asking: only a connection whose app needs the customer's own
    /// instance is asked, and then also for recipients and a time zone where it has none.
    pub fn of(app: &OAuthApp, connection: &Connection) -> Option<Self> {
        app.needs_instance_of(connection).then(|| Self {
            recipients: connection.recipients.addresses().is_empty(),
            time_zone: connection.time_zone.is_none(),
        })
    }
}

/// The form as posted. Every field is text as typed; the broker parses it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    pub instance_url: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub recipients: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// Why the form is shown again; each is one sentence for the customer in the page's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsRefused {
    /// Not an address the broker may call (not https, credentials in it, a private address).
    InstanceUrl,
    Tenant,
    /// The address is fine, but no Acumatica identity server answered there.
    InstanceSilent,
    Recipients,
    TimeZone,
}

impl SettingsRefused {
    /// The key of its sentence in `pages.ftl`.
    pub fn wording_key(self) -> &'static str {
        match self {
            Self::InstanceUrl => "settings-refused-instance-url",
            Self::Tenant => "settings-refused-tenant",
            Self::InstanceSilent => "settings-refused-instance-silent",
            Self::Recipients => "settings-refused-recipients",
            Self::TimeZone => "settings-refused-time-zone",
        }
    }
}

/// The outcome of a post: saved, or shown again with why.
pub type SettingsOutcome = Result<(), SettingsRefused>;

impl ConnectFlow {
    /// Stores what the customer typed on the connection, after checking that an Acumatica instance
    /// answers at the address. Fails like the Connect button when the link no longer works or the
    /// connection asks for nothing.
    pub async fn save_settings(
        &self,
        link_token: &str,
        form: &SettingsForm,
    ) -> Result<SettingsOutcome, ConnectFailure> {
        let link = self.live_link_named(link_token).await?;
        let target = self.target(&link.tenant, &link.connection).await?;
        let fail = |error: ConnectError| ConnectFailure {
            error,
            provider: Some(target.connection.provider),
            try_again: None,
            state_consumed: false,
            audience: Some(target.audience.clone()),
        };
        if let Some(error) = super::link_no_longer_current(&target.connection, &link) {
            return Err(fail(error));
        }
        let Some(asks) = Asks::of(&target.app, &target.connection) else {
            return Err(fail(ConnectError::MalformedRequest(
                "this connection asks for no settings".into(),
            )));
        };
        let parsed = match parse(asks, form) {
            Ok(parsed) => parsed,
            Err(refused) => return Ok(Err(refused)),
        };
        if let Err(refused) = self.instance_answers(&parsed.instance).await {
            return Ok(Err(refused));
        }
        let mut connection = target.connection.clone();
        connection.acumatica_instance = Some(parsed.instance);
        if let Some(recipients) = parsed.recipients {
            connection.recipients = recipients;
        }
        if let Some(zone) = parsed.time_zone {
            connection.time_zone = Some(zone);
        }
        self.ctx
            .backend
            .store
            .save_connection(&connection, Fence::Version, &[])
            .await
            .map_err(|e| fail(e.into()))?;
        tracing::info!(
            connection = %connection.id.as_str(),
            "the customer named their Acumatica instance"
        );
        Ok(Ok(()))
    }

    /// Acumatica's OpenID Connect identity server lives under `/identity` on every instance; its
    /// discovery document names the endpoints the authorization will use. Called through the
    /// provider HTTP client, so the address policy (no private or link-local targets) and the size
    /// cap apply, with a timeout short enough for a person waiting on the form.
    async fn instance_answers(&self, instance: &AcumaticaInstance) -> Result<(), SettingsRefused> {
        let http = self.ctx.providers.http();
        let url = format!(
            "{}/identity/.well-known/openid-configuration",
            instance.instance_url.base()
        );
        let request = http.client().get(url).timeout(INSTANCE_CHECK_TIMEOUT);
        let reply = http.send(request).await.map_err(|failure| {
            tracing::info!(detail = %failure.detail, "the instance did not answer");
            SettingsRefused::InstanceSilent
        })?;
        let document: serde_json::Value = (reply.status == 200)
            .then(|| serde_json::from_slice(&reply.body).ok())
            .flatten()
            .ok_or(SettingsRefused::InstanceSilent)?;
        let names = |field: &str| document.get(field).and_then(|v| v.as_str()).is_some();
        if names("authorization_endpoint") && names("token_endpoint") {
            Ok(())
        } else {
            Err(SettingsRefused::InstanceSilent)
        }
    }
}

struct Parsed {
    instance: AcumaticaInstance,
    recipients: Option<Recipients>,
    time_zone: Option<TimeZone>,
}

/// The form's text as values, field by field, the first refusal first.
fn parse(asks: Asks, form: &SettingsForm) -> Result<Parsed, SettingsRefused> {
    if form.tenant.trim().is_empty() {
        return Err(SettingsRefused::Tenant);
    }
    let instance = AcumaticaInstance::parse(&form.instance_url, &form.tenant).map_err(|e| {
        if e.kind == "Acumatica tenant" {
            SettingsRefused::Tenant
        } else {
            SettingsRefused::InstanceUrl
        }
    })?;
    let recipients = if asks.recipients {
        let typed = form.recipients.as_deref().unwrap_or_default();
        let addresses: Vec<&str> = typed
            .split([',', ';', ' ', '\n', '\r', '\t'])
            .filter(|a| !a.is_empty())
            .collect();
        if addresses.is_empty() {
            return Err(SettingsRefused::Recipients);
        }
        Some(Recipients::parse(&addresses).map_err(|_| SettingsRefused::Recipients)?)
    } else {
        None
    };
    let time_zone = if asks.time_zone {
        let typed = form.time_zone.as_deref().unwrap_or_default().trim();
        Some(TimeZone::parse(typed).map_err(|_| SettingsRefused::TimeZone)?)
    } else {
        None
    };
    Ok(Parsed {
        instance,
        recipients,
        time_zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asks() -> Asks {
        Asks {
            recipients: true,
            time_zone: true,
        }
    }

    fn form(url: &str, tenant: &str, recipients: &str, zone: &str) -> SettingsForm {
        SettingsForm {
            instance_url: url.into(),
            tenant: tenant.into(),
            recipients: Some(recipients.into()),
            time_zone: Some(zone.into()),
        }
    }

    #[test]
    fn what_a_customer_types_is_read_as_an_https_instance_a_tenant_and_addresses() {
        let parsed = parse(
            asks(),
            &form(
                " acme.acumatica.com ",
                " Company ",
                "a@example.nl; b@example.nl",
                "Europe/Amsterdam",
            ),
        )
        .unwrap();
        assert_eq!(
            parsed.instance.instance_url.base(),
            "https://acme.acumatica.com"
        );
        assert_eq!(parsed.instance.tenant, "Company");
        assert_eq!(parsed.recipients.unwrap().addresses().len(), 2);
        assert_eq!(parsed.time_zone.unwrap().name(), "Europe/Amsterdam");
    }

    #[test]
    fn each_field_is_refused_with_its_own_reason() {
        let good = ("acme.acumatica.com", "Company", "a@example.nl", "UTC");
        for (typed, refused) in [
            (
                form("http://acme.acumatica.com", good.1, good.2, good.3),
                SettingsRefused::InstanceUrl,
            ),
            (
                form("https://user:pw@acme.acumatica.com", good.1, good.2, good.3),
                SettingsRefused::InstanceUrl,
            ),
            (form(good.0, "  ", good.2, good.3), SettingsRefused::Tenant),
            (
                form(good.0, good.1, "", good.3),
                SettingsRefused::Recipients,
            ),
            (
                form(good.0, good.1, "not an address", good.3),
                SettingsRefused::Recipients,
            ),
            (
                form(good.0, good.1, good.2, "Mars/Olympus"),
                SettingsRefused::TimeZone,
            ),
        ] {
            assert_eq!(parse(asks(), &typed).err(), Some(refused), "{typed:?}");
        }
        // What the connection already has is not asked, so not read.
        let none = Asks {
            recipients: false,
            time_zone: false,
        };
        assert!(parse(none, &form(good.0, good.1, "", "")).is_ok());
    }
}
