//! The simulator's shared state: one mutex around everything the providers change, so a token
//! request is atomic with respect to every other (no await is ever held across the lock).

use crate::accounts::{acumatica_tenant_of, Accounts, Provider};
use crate::clock::SimClock;
use crate::config::Knobs;
use crate::exact::ExactLimits;
use crate::faults::FaultState;
use crate::store::OAuthStore;
use crate::twinfield_soap::TwinfieldSession;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the next authorization request does instead of following `Knobs::auto_consent`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConsentOverride {
    pub decision: ConsentDecision,
    /// The user who consents; the provider's default user when `None`.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDecision {
    Allow,
    Deny,
    ShowPage,
}

pub(crate) struct State {
    pub knobs: Knobs,
    pub accounts: Accounts,
    pub oauth: OAuthStore,
    pub consent_overrides: VecDeque<ConsentOverride>,
    pub twinfield_sessions: HashMap<String, TwinfieldSession>,
    pub exact_limits: ExactLimits,
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub faults: Mutex<FaultState>,
    /// Requests per route key, counted before any fault is applied.
    pub calls: Mutex<BTreeMap<String, u64>>,
    pub clock: SimClock,
    pub base_url: String,
}

pub(crate) type Sim = Arc<Shared>;

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("simulator state lock poisoned")
    }

    pub fn twinfield_login_base(&self) -> String {
        format!("{}/twinfield", self.base_url)
    }

    pub fn twinfield_cluster_url(&self, cluster: &str) -> String {
        format!("{}/twinfield/clusters/{cluster}", self.base_url)
    }

    pub fn exact_base(&self, country: &str) -> String {
        format!("{}/exact/{country}", self.base_url)
    }

    pub fn acumatica_instance_url(&self, instance: &str) -> String {
        format!("{}/acumatica/{instance}", self.base_url)
    }
}

/// A registered client as the authorize and token endpoints need it.
pub(crate) struct ClientView {
    pub secret: String,
    pub redirect_uris: Vec<String>,
}

impl State {
    /// Dispatches to the provider's client registry. Acumatica clients live on one instance;
    /// Exact clients are valid on every country host (the connection is bound at authorization).
    pub fn client(
        &self,
        provider: Provider,
        location: &str,
        client_id: &str,
    ) -> Option<ClientView> {
        let a = &self.accounts;
        let (secret, uris) = match provider {
            Provider::Twinfield => a
                .twinfield_clients
                .get(client_id)
                .map(|c| (&c.client_secret, &c.redirect_uris))?,
            Provider::Exact => a
                .exact_clients
                .get(client_id)
                .map(|c| (&c.client_secret, &c.redirect_uris))?,
            Provider::Acumatica => {
                let c = a.acumatica.get(location)?.clients.get(client_id)?;
                (&c.client_secret, &c.redirect_uris)
            }
        };
        Some(ClientView {
            secret: secret.clone(),
            redirect_uris: uris.clone(),
        })
    }

    pub fn user_exists(
        &self,
        provider: Provider,
        location: &str,
        client_id: &str,
        user: &str,
    ) -> bool {
        let a = &self.accounts;
        match provider {
            Provider::Twinfield => a.twinfield_user_org(user).is_some(),
            Provider::Exact => a.exact_users.contains_key(user),
            Provider::Acumatica => acumatica_tenant_of(client_id)
                .and_then(|t| a.acumatica.get(location)?.tenants.get(t))
                .is_some_and(|t| t.users.contains_key(user)),
        }
    }

    pub fn default_user(&self, provider: Provider) -> String {
        match provider {
            Provider::Twinfield => self.knobs.twinfield_default_user.clone(),
            Provider::Exact => self.knobs.exact_default_user.clone(),
            Provider::Acumatica => self.knobs.acumatica_default_user.clone(),
        }
    }
}
