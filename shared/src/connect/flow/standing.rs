//! What opening a connect link shows before anything starts: the connection as its customer should see
//! it (connected, to reconnect and why, or not connected), with the provider, what it is bound to and
//! who authorized it. Reading it changes nothing: mail scanners fetch links, so only the page's button
//! (a POST, [`ConnectFlow::start`]) creates a state and sends the browser to the provider.

use super::{ConnectError, ConnectFailure, ConnectFlow};
use crate::domain::{
    Connection, ConnectionStatus, Identity, Locale, ProviderContext, ProviderKind, ReconnectKind,
    ReturnUrl, Tenant, TimeZone,
};
use crate::ids::ConnectionId;
use chrono::{DateTime, Utc};

/// Who reads a connection's pages, and where they may go back to: the connection's language and time
/// zone, else its tenant's; the return URL the integration set, while its origin is still on the
/// tenant's allow-list (an origin taken off the list stops being offered at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    pub connection: ConnectionId,
    /// `None`: neither names one; the page follows the browser's languages.
    pub locale: Option<Locale>,
    pub time_zone: TimeZone,
    pub return_url: Option<ReturnUrl>,
    /// The integration's name (its tenant's), shown to people.
    pub integration: Option<String>,
}

impl Audience {
    pub fn of(connection: &Connection, tenant: Option<&Tenant>) -> Self {
        Self {
            integration: tenant.map(|t| t.display_name.clone()),
            connection: connection.id.clone(),
            locale: connection.locale.or(tenant.and_then(|t| t.locale)),
            time_zone: connection
                .time_zone
                .or(tenant.and_then(|t| t.time_zone))
                .unwrap_or_else(default_zone),
            return_url: connection
                .return_url
                .clone()
                .filter(|url| tenant.is_some_and(|t| url.allowed_by(&t.return_origins))),
        }
    }
}

/// Where no one named a zone: the people behind the connections are in the Netherlands and Belgium,
/// which keep the same time. The zone is always shown beside a time, so no one is misled.
fn default_zone() -> TimeZone {
    TimeZone::parse("Europe/Amsterdam").unwrap_or(TimeZone::UTC)
}

/// How a connection stands, in the three states its customer knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// It works; nothing to do.
    Connected,
    /// A person must authorize again, for this reason, since then.
    Reconnect {
        why: ReconnectWhy,
        since: DateTime<Utc>,
    },
    /// Nobody authorized it yet.
    NotConnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectWhy {
    Required(ReconnectKind),
    /// Refreshing fails for now; the broker keeps trying, and authorizing again may fix it sooner.
    RefreshFailing,
    /// The provider blocked or disabled the organisation or user.
    Disabled,
    /// It works on old-style credentials the provider is retiring (Twinfield before OAuth 2.0).
    LegacyCredentials,
}

impl Standing {
    pub fn of(connection: &Connection) -> Self {
        let since = connection.status_since();
        let reconnect = |why| Self::Reconnect { why, since };
        match connection.status() {
            ConnectionStatus::NotConnected => Self::NotConnected,
            ConnectionStatus::Connected if connection.legacy_credentials => {
                reconnect(ReconnectWhy::LegacyCredentials)
            }
            ConnectionStatus::Connected => Self::Connected,
            ConnectionStatus::RefreshFailing { .. } => reconnect(ReconnectWhy::RefreshFailing),
            ConnectionStatus::ReconnectRequired { reason } => {
                reconnect(ReconnectWhy::Required(reason.kind))
            }
            ConnectionStatus::Disabled { .. } => reconnect(ReconnectWhy::Disabled),
            // Never shown: a disconnected connection's links answer `ConnectionGone`.
            ConnectionStatus::Disconnected => Self::NotConnected,
        }
    }
}

/// What the link may still do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkUse {
    /// Its button starts an authorization at the provider, whose authorization endpoint has this
    /// origin (the page's form may lead there).
    Usable { authorize_origin: String },
    /// A person authorized the connection after the link was issued: the page is read-only.
    Spent,
    /// A newer link was issued: the page is read-only.
    Replaced,
    /// The customer must first tell what the connection needs (their Acumatica instance): the page
    /// shows a form that posts to the link, and no button yet.
    AsksFirst(super::onboarding::Asks),
}

/// The connection page of a link.
#[derive(Debug, Clone)]
pub struct LinkPage {
    pub audience: Audience,
    pub provider: ProviderKind,
    /// The connection's label, if the integration gave one.
    pub display_name: Option<String>,
    pub context: Option<ProviderContext>,
    pub authorized_by: Option<Identity>,
    pub authorized_at: Option<DateTime<Utc>>,
    pub standing: Standing,
    pub link: LinkUse,
}

impl ConnectFlow {
    /// The page a connect link shows. Reads only: no state is created and nothing is written.
    pub async fn link_page(&self, link_token: &str) -> Result<LinkPage, ConnectFailure> {
        let link = self.live_link_named(link_token).await?;
        let target = self.target(&link.tenant, &link.connection).await?;
        let connection = &target.connection;
        let link_use = match super::link_no_longer_current(connection, &link) {
            Some(ConnectError::LinkSpent { .. }) => LinkUse::Spent,
            Some(_) => LinkUse::Replaced,
            None => match super::onboarding::Asks::of(&target.app, connection) {
                Some(asks) => LinkUse::AsksFirst(asks),
                None => {
                    let endpoints =
                        target
                            .client
                            .endpoints()
                            .await
                            .map_err(|e| ConnectFailure {
                                error: e.into(),
                                provider: Some(connection.provider),
                                try_again: Some(self.link_url(link_token)),
                                state_consumed: false,
                                audience: Some(target.audience.clone()),
                            })?;
                    LinkUse::Usable {
                        authorize_origin: endpoints.authorize.origin().ascii_serialization(),
                    }
                }
            },
        };
        Ok(LinkPage {
            audience: target.audience.clone(),
            provider: connection.provider,
            display_name: connection.display_name.clone(),
            context: connection.context.clone(),
            authorized_by: connection.authorized_by.clone(),
            authorized_at: connection.authorized_at,
            standing: Standing::of(connection),
            link: link_use,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, Recipients, ReconnectReason, StatusEvent};
    use crate::ids::{AppId, TenantId};

    fn connection() -> Connection {
        Connection::new(
            TenantId::parse("acme").unwrap(),
            AppId::parse("twinfield").unwrap(),
            ProviderKind::Twinfield,
            Recipients::parse(&["finance@example.com"]).unwrap(),
            Utc::now(),
        )
    }

    #[test]
    fn the_three_states_follow_the_status() {
        let mut c = connection();
        assert_eq!(Standing::of(&c), Standing::NotConnected);
        let now = Utc::now();
        c.apply(StatusEvent::Authorized, Actor::System("t".into()), now)
            .unwrap();
        assert_eq!(Standing::of(&c), Standing::Connected);
        c.legacy_credentials = true;
        assert!(matches!(
            Standing::of(&c),
            Standing::Reconnect {
                why: ReconnectWhy::LegacyCredentials,
                ..
            }
        ));
        c.legacy_credentials = false;
        c.apply(
            StatusEvent::ReconnectNeeded(ReconnectReason::new(ReconnectKind::GrantRevoked, "")),
            Actor::System("t".into()),
            now,
        )
        .unwrap();
        assert_eq!(
            Standing::of(&c),
            Standing::Reconnect {
                why: ReconnectWhy::Required(ReconnectKind::GrantRevoked),
                since: now
            }
        );
    }

    #[test]
    fn the_connection_speaks_before_its_tenant() {
        let mut tenant = Tenant::new(TenantId::parse("acme").unwrap(), "Acme", Utc::now()).unwrap();
        tenant.locale = Some(Locale::English);
        tenant.time_zone = Some(TimeZone::parse("Europe/London").unwrap());
        let mut c = connection();
        let audience = Audience::of(&c, Some(&tenant));
        assert_eq!(audience.locale, Some(Locale::English));
        assert_eq!(audience.time_zone.name(), "Europe/London");
        c.locale = Some(Locale::Dutch);
        c.time_zone = Some(TimeZone::parse("Europe/Brussels").unwrap());
        let audience = Audience::of(&c, Some(&tenant));
        assert_eq!(audience.locale, Some(Locale::Dutch));
        assert_eq!(audience.time_zone.name(), "Europe/Brussels");
        let audience = Audience::of(&connection(), None);
        assert_eq!(audience.locale, None);
        assert_eq!(audience.time_zone.name(), "Europe/Amsterdam");
    }

    #[test]
    fn the_way_back_is_offered_only_to_an_allowed_origin() {
        let mut tenant = Tenant::new(TenantId::parse("acme").unwrap(), "Acme", Utc::now()).unwrap();
        let mut c = connection();
        c.return_url = Some(ReturnUrl::parse("https://app.example.com/back").unwrap());
        assert_eq!(Audience::of(&c, Some(&tenant)).return_url, None);
        tenant.return_origins =
            vec![crate::domain::ReturnOrigin::parse("https://app.example.com").unwrap()];
        assert_eq!(Audience::of(&c, Some(&tenant)).return_url, c.return_url);
        assert_eq!(Audience::of(&c, None).return_url, None);
    }
}
