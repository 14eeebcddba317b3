//! Registered clients and the accounts behind them, per provider.

use crate::error::SimulatorError;
use crate::util::new_guid;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One of the three simulated providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Twinfield,
    Exact,
    Acumatica,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Twinfield => "twinfield",
            Provider::Exact => "exact",
            Provider::Acumatica => "acumatica",
        }
    }
}

/// Exact Online country hosts (`start.exactonline.<country>`).
pub const EXACT_COUNTRIES: [&str; 7] = ["nl", "be", "de", "co.uk", "com", "fr", "es"];

/// An OAuth client as registered with a provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRegistration {
    pub client_id: String,
    pub client_secret: String,
    /// Matched exactly, as the providers do.
    pub redirect_uris: Vec<String>,
}

/// A Twinfield organisation: one token reaches all of its companies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TwinfieldOrganisation {
    pub code: String,
    /// GUID reported as `twf.organisationId`; generated when empty.
    #[serde(default)]
    pub id: String,
    /// Cluster name; the cluster URL is `{base}/twinfield/clusters/{cluster}`.
    pub cluster: String,
    pub companies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TwinfieldUser {
    pub organisation: String,
    /// `twf.organisationUserCode`; also what the consent page's user field takes.
    pub code: String,
    #[serde(default)]
    pub name: String,
}

/// OAuth 1.0-era credentials accepted by `OAuthLogon` for one user of one organisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyCredentials {
    pub organisation: String,
    pub user: String,
    pub client_token: String,
    pub client_secret: String,
    pub access_token: String,
    pub access_secret: String,
}

/// Every value of the session service's LogonResult (seed 004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogonResult {
    Ok,
    Blocked,
    Untrusted,
    Invalid,
    Deleted,
    Disabled,
    OrganisationInactive,
    ClientInvalid,
    Failed,
    TokenInvalid,
    NoAvailableCompanies,
    OAuth2AuthenticationRequired,
}

impl LogonResult {
    pub const ALL: [LogonResult; 12] = [
        LogonResult::Ok,
        LogonResult::Blocked,
        LogonResult::Untrusted,
        LogonResult::Invalid,
        LogonResult::Deleted,
        LogonResult::Disabled,
        LogonResult::OrganisationInactive,
        LogonResult::ClientInvalid,
        LogonResult::Failed,
        LogonResult::TokenInvalid,
        LogonResult::NoAvailableCompanies,
        LogonResult::OAuth2AuthenticationRequired,
    ];

    /// The wire spelling, identical to the variant name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogonResult::Ok => "Ok",
            LogonResult::Blocked => "Blocked",
            LogonResult::Untrusted => "Untrusted",
            LogonResult::Invalid => "Invalid",
            LogonResult::Deleted => "Deleted",
            LogonResult::Disabled => "Disabled",
            LogonResult::OrganisationInactive => "OrganisationInactive",
            LogonResult::ClientInvalid => "ClientInvalid",
            LogonResult::Failed => "Failed",
            LogonResult::TokenInvalid => "TokenInvalid",
            LogonResult::NoAvailableCompanies => "NoAvailableCompanies",
            LogonResult::OAuth2AuthenticationRequired => "OAuth2AuthenticationRequired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NextAction {
    #[default]
    None,
    #[serde(rename = "SMSLogon")]
    SmsLogon,
    ChangePassword,
}

impl NextAction {
    pub fn as_str(self) -> &'static str {
        match self {
            NextAction::None => "None",
            NextAction::SmsLogon => "SMSLogon",
            NextAction::ChangePassword => "ChangePassword",
        }
    }
}

/// What the session service answers for an organisation or one of its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogonBehaviour {
    pub result: LogonResult,
    #[serde(default)]
    pub next_action: NextAction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExactUser {
    /// What the consent page's user field takes (`UserName` in `/current/Me`).
    pub user_name: String,
    #[serde(default)]
    pub full_name: String,
    pub current_division: i64,
    #[serde(default)]
    pub divisions: Vec<i64>,
}

/// How an Acumatica connected application's refresh tokens expire (seed 003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum AcumaticaRefreshPolicy {
    /// Dies `lifetime_secs` after the grant's first issue, however often it is refreshed.
    Absolute { lifetime_secs: i64 },
    /// Each refresh extends the new token by `sliding_secs`, up to `absolute_cap_secs` after the
    /// first issue (`None`: no cap).
    Sliding {
        sliding_secs: i64,
        absolute_cap_secs: Option<i64>,
    },
}

impl Default for AcumaticaRefreshPolicy {
    fn default() -> Self {
        AcumaticaRefreshPolicy::Absolute {
            lifetime_secs: 30 * 86_400,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcumaticaClientRegistration {
    /// `<GUID>@<Tenant>`; the tenant must exist on the instance (it is created if missing).
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub refresh_policy: AcumaticaRefreshPolicy,
    /// One-time refresh tokens (IdentityServer's default); `false` reuses the same token.
    #[serde(default = "yes")]
    pub rotate_refresh_tokens: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcumaticaInstance {
    pub name: String,
    pub tenants: Vec<String>,
    /// Concurrent API sessions allowed per tenant; `None` is unlimited (a trial allows 2).
    #[serde(default)]
    pub login_limit: Option<u32>,
}

pub(crate) struct TwinfieldUserEntry {
    pub user: TwinfieldUser,
    pub sub: String,
    pub behaviour: Option<LogonBehaviour>,
}

pub(crate) struct ExactUserEntry {
    pub user: ExactUser,
    pub user_id: String,
}

pub(crate) struct AcumaticaTenant {
    pub login_limit: Option<u32>,
    /// user name → subject id
    pub users: HashMap<String, String>,
}

#[derive(Default)]
pub(crate) struct AcumaticaInstanceEntry {
    pub tenants: HashMap<String, AcumaticaTenant>,
    pub clients: HashMap<String, AcumaticaClientRegistration>,
}

/// Everything registered with the three providers.
#[derive(Default)]
pub(crate) struct Accounts {
    pub twinfield_clients: HashMap<String, ClientRegistration>,
    pub twinfield_orgs: HashMap<String, (TwinfieldOrganisation, Option<LogonBehaviour>)>,
    pub twinfield_users: HashMap<String, TwinfieldUserEntry>,
    pub twinfield_legacy: Vec<LegacyCredentials>,
    pub exact_clients: HashMap<String, ClientRegistration>,
    pub exact_users: HashMap<String, ExactUserEntry>,
    /// Exact user name → the divisions that user's next consents grant (division scoping).
    pub exact_division_scopes: HashMap<String, Vec<i64>>,
    pub acumatica: HashMap<String, AcumaticaInstanceEntry>,
}

impl Accounts {
    pub fn add_twinfield_organisation(&mut self, mut org: TwinfieldOrganisation) {
        if org.id.is_empty() {
            org.id = new_guid();
        }
        let behaviour = self.twinfield_orgs.get(&org.code).and_then(|(_, b)| *b);
        self.twinfield_orgs
            .insert(org.code.clone(), (org, behaviour));
    }

    pub fn add_twinfield_user(&mut self, mut user: TwinfieldUser) -> Result<(), SimulatorError> {
        if !self.twinfield_orgs.contains_key(&user.organisation) {
            return Err(SimulatorError::UnknownOrganisation(user.organisation));
        }
        if user.name.is_empty() {
            user.name = user.code.clone();
        }
        let entry = TwinfieldUserEntry {
            user,
            sub: new_guid(),
            behaviour: None,
        };
        self.twinfield_users.insert(entry.user.code.clone(), entry);
        Ok(())
    }

    pub fn twinfield_user_org(
        &self,
        user: &str,
    ) -> Option<(&TwinfieldUserEntry, &TwinfieldOrganisation)> {
        let entry = self.twinfield_users.get(user)?;
        let (org, _) = self.twinfield_orgs.get(&entry.user.organisation)?;
        Some((entry, org))
    }

    /// The user's own setting wins over the organisation's; both default to Ok / None.
    pub fn twinfield_behaviour(&self, user: &str) -> LogonBehaviour {
        let default = LogonBehaviour {
            result: LogonResult::Ok,
            next_action: NextAction::None,
        };
        let Some(entry) = self.twinfield_users.get(user) else {
            return default;
        };
        let org = self
            .twinfield_orgs
            .get(&entry.user.organisation)
            .and_then(|(_, b)| *b);
        entry.behaviour.or(org).unwrap_or(default)
    }

    pub fn add_exact_user(&mut self, mut user: ExactUser) {
        if user.full_name.is_empty() {
            user.full_name = user.user_name.clone();
        }
        if !user.divisions.contains(&user.current_division) {
            user.divisions.insert(0, user.current_division);
        }
        let user_id = self
            .exact_users
            .get(&user.user_name)
            .map(|e| e.user_id.clone())
            .unwrap_or_else(new_guid);
        self.exact_users
            .insert(user.user_name.clone(), ExactUserEntry { user, user_id });
    }

    pub fn add_acumatica_instance(&mut self, instance: AcumaticaInstance, default_user: &str) {
        let entry = self.acumatica.entry(instance.name.clone()).or_default();
        for tenant in instance.tenants {
            let t = entry
                .tenants
                .entry(tenant)
                .or_insert_with(|| AcumaticaTenant {
                    login_limit: None,
                    users: HashMap::new(),
                });
            t.login_limit = instance.login_limit;
            // The integration user has to exist for the automatic consent mode to work.
            t.users
                .entry(default_user.to_string())
                .or_insert_with(new_guid);
        }
    }

    pub fn acumatica_tenant_mut(
        &mut self,
        instance: &str,
        tenant: &str,
    ) -> Result<&mut AcumaticaTenant, SimulatorError> {
        self.acumatica
            .get_mut(instance)
            .ok_or_else(|| SimulatorError::UnknownInstance(instance.to_string()))?
            .tenants
            .get_mut(tenant)
            .ok_or_else(|| SimulatorError::UnknownTenant(tenant.to_string()))
    }

    pub fn register_acumatica_client(
        &mut self,
        instance: &str,
        client: AcumaticaClientRegistration,
        default_user: &str,
    ) -> Result<(), SimulatorError> {
        let tenant = acumatica_tenant_of(&client.client_id)
            .ok_or_else(|| SimulatorError::InvalidClientId(client.client_id.clone()))?
            .to_string();
        if !self
            .acumatica
            .get(instance)
            .is_some_and(|i| i.tenants.contains_key(&tenant))
        {
            let setup = AcumaticaInstance {
                name: instance.to_string(),
                tenants: vec![tenant],
                login_limit: None,
            };
            self.add_acumatica_instance(setup, default_user);
        }
        let entry = self
            .acumatica
            .get_mut(instance)
            .expect("instance was just ensured");
        entry.clients.insert(client.client_id.clone(), client);
        Ok(())
    }

    /// The demo setup a person can click through without registering anything but a client.
    pub fn seed_demo(&mut self, knobs: &crate::config::Knobs) {
        self.add_twinfield_organisation(TwinfieldOrganisation {
            code: "TWF-DEMO".into(),
            id: String::new(),
            cluster: "accounting".into(),
            companies: vec!["NL001".into(), "NL002".into()],
        });
        let user = TwinfieldUser {
            organisation: "TWF-DEMO".into(),
            code: knobs.twinfield_default_user.clone(),
            name: "Demo User".into(),
        };
        self.add_twinfield_user(user)
            .expect("demo organisation exists");
        self.add_exact_user(ExactUser {
            user_name: knobs.exact_default_user.clone(),
            full_name: "Demo User".into(),
            current_division: 123456,
            divisions: vec![123456, 654321],
        });
        let instance = AcumaticaInstance {
            name: "demo".into(),
            tenants: vec!["Company".into()],
            login_limit: None,
        };
        self.add_acumatica_instance(instance, &knobs.acumatica_default_user);
    }
}

/// The tenant part of an Acumatica client id `<GUID>@<Tenant>`.
pub fn acumatica_tenant_of(client_id: &str) -> Option<&str> {
    let (guid, tenant) = client_id.split_once('@')?;
    (!guid.is_empty() && !tenant.is_empty()).then_some(tenant)
}
