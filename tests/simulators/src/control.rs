//! The simulator's control surface: setup, knobs, faults and inspection. `SimulatorHandle` derefs
//! to it for in-process use and `admin` exposes the same calls under `/_sim/...`, so the library and
//! the binary can never drift apart.

use crate::accounts::{
    AcumaticaClientRegistration, AcumaticaInstance, AcumaticaRefreshPolicy, ClientRegistration,
    ExactUser, LegacyCredentials, LogonBehaviour, Provider, TwinfieldOrganisation, TwinfieldUser,
};
use crate::clock::SimClock;
use crate::config::Knobs;
use crate::error::SimulatorError;
use crate::faults::FaultRule;
use crate::state::{ConsentOverride, Sim};
use crate::store::{AccessTokenInfo, AuthRequest, CodeRecord};
use crate::util::new_guid;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Every operation on a running simulator. Cheap to clone; clones control the same simulator.
#[derive(Clone)]
pub struct Control {
    pub(crate) sim: Sim,
}

/// A token pair minted without the authorization flow, like the pre-authenticated credentials a
/// partner obtains in its own application (seed 002).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MintRequest {
    pub provider: Provider,
    /// Country for Exact, instance for Acumatica, empty for Twinfield.
    #[serde(default)]
    pub location: String,
    pub client_id: String,
    pub user: String,
    #[serde(default)]
    pub scope: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MintedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_expires_at: DateTime<Utc>,
}

impl Control {
    pub fn base_url(&self) -> String {
        self.sim.base_url.clone()
    }

    /// `{base}/twinfield`: the stand-in for `https://login.twinfield.com`.
    pub fn twinfield_login_base(&self) -> String {
        self.sim.twinfield_login_base()
    }

    /// `{base}/twinfield/clusters/{cluster}`, reported as `twf.clusterUrl`.
    pub fn twinfield_cluster_url(&self, cluster: &str) -> String {
        self.sim.twinfield_cluster_url(cluster)
    }

    /// `{base}/exact/{country}`: the stand-in for `https://start.exactonline.{country}`.
    pub fn exact_base(&self, country: &str) -> String {
        self.sim.exact_base(country)
    }

    /// `{base}/acumatica/{instance}`: the instance URL.
    pub fn acumatica_instance_url(&self, instance: &str) -> String {
        self.sim.acumatica_instance_url(instance)
    }

    pub fn clock(&self) -> SimClock {
        self.sim.clock.clone()
    }

    pub fn knobs(&self) -> Knobs {
        self.sim.lock().knobs.clone()
    }

    pub fn update_knobs(&self, change: impl FnOnce(&mut Knobs)) {
        change(&mut self.sim.lock().knobs);
    }

    pub fn set_auto_consent(&self, on: bool) {
        self.update_knobs(|k| k.auto_consent = on);
    }

    /// Decides the next authorization request (of any provider), ahead of `auto_consent`.
    pub fn push_consent_override(&self, next: ConsentOverride) {
        self.sim.lock().consent_overrides.push_back(next);
    }

    pub fn register_twinfield_client(&self, client: ClientRegistration) {
        self.sim
            .lock()
            .accounts
            .twinfield_clients
            .insert(client.client_id.clone(), client);
    }

    /// Exact clients are valid on every country host.
    pub fn register_exact_client(&self, client: ClientRegistration) {
        self.sim
            .lock()
            .accounts
            .exact_clients
            .insert(client.client_id.clone(), client);
    }

    /// Registers a connected application on an instance; instance and tenant are created if missing.
    pub fn register_acumatica_client(
        &self,
        instance: &str,
        client: AcumaticaClientRegistration,
    ) -> Result<(), SimulatorError> {
        let mut state = self.sim.lock();
        let default_user = state.knobs.acumatica_default_user.clone();
        state
            .accounts
            .register_acumatica_client(instance, client, &default_user)
    }

    pub fn add_twinfield_organisation(&self, organisation: TwinfieldOrganisation) {
        self.sim
            .lock()
            .accounts
            .add_twinfield_organisation(organisation);
    }

    pub fn add_twinfield_user(&self, user: TwinfieldUser) -> Result<(), SimulatorError> {
        self.sim.lock().accounts.add_twinfield_user(user)
    }

    /// What the session service answers for the organisation, or for one user of it (the user's
    /// setting wins). `None` behaviour clears the setting (back to Ok / None).
    pub fn set_twinfield_logon_behaviour(
        &self,
        organisation: &str,
        user: Option<&str>,
        behaviour: Option<LogonBehaviour>,
    ) -> Result<(), SimulatorError> {
        let mut state = self.sim.lock();
        let accounts = &mut state.accounts;
        match user {
            Some(u) => {
                accounts
                    .twinfield_users
                    .get_mut(u)
                    .ok_or_else(|| SimulatorError::UnknownUser(u.into()))?
                    .behaviour = behaviour
            }
            None => {
                let org = accounts.twinfield_orgs.get_mut(organisation);
                org.ok_or_else(|| SimulatorError::UnknownOrganisation(organisation.into()))?
                    .1 = behaviour;
            }
        }
        Ok(())
    }

    pub fn add_twinfield_legacy_credentials(
        &self,
        credentials: LegacyCredentials,
    ) -> Result<(), SimulatorError> {
        let mut state = self.sim.lock();
        if state
            .accounts
            .twinfield_user_org(&credentials.user)
            .is_none()
        {
            return Err(SimulatorError::UnknownUser(credentials.user));
        }
        state.accounts.twinfield_legacy.push(credentials);
        Ok(())
    }

    pub fn add_exact_user(&self, user: ExactUser) {
        self.sim.lock().accounts.add_exact_user(user);
    }

    /// What the Exact user grants on the consent page from now on: only these divisions (Exact's
    /// division scoping), or `None` for every division the user can reach. Grants already given keep
    /// their scope.
    pub fn set_exact_division_scope(&self, user: &str, divisions: Option<Vec<i64>>) {
        let scopes = &mut self.sim.lock().accounts.exact_division_scopes;
        match divisions {
            Some(d) => scopes.insert(user.to_string(), d),
            None => scopes.remove(user),
        };
    }

    pub fn add_acumatica_instance(&self, instance: AcumaticaInstance) {
        let mut state = self.sim.lock();
        let default_user = state.knobs.acumatica_default_user.clone();
        state
            .accounts
            .add_acumatica_instance(instance, &default_user);
    }

    pub fn add_acumatica_user(
        &self,
        instance: &str,
        tenant: &str,
        user: &str,
    ) -> Result<(), SimulatorError> {
        let mut state = self.sim.lock();
        state
            .accounts
            .acumatica_tenant_mut(instance, tenant)?
            .users
            .entry(user.to_string())
            .or_insert_with(new_guid);
        Ok(())
    }

    /// Concurrent API sessions allowed for the tenant; `None` is unlimited.
    pub fn set_acumatica_login_limit(
        &self,
        instance: &str,
        tenant: &str,
        limit: Option<u32>,
    ) -> Result<(), SimulatorError> {
        self.sim
            .lock()
            .accounts
            .acumatica_tenant_mut(instance, tenant)?
            .login_limit = limit;
        Ok(())
    }

    pub fn inject_fault(&self, rule: FaultRule) {
        self.faults_lock().add(rule);
    }

    /// Removes every fault rule and per-route latency, and reseeds the fault RNG.
    pub fn clear_faults(&self) {
        let seed = self.knobs().fault_seed;
        self.faults_lock().clear(seed);
    }

    pub fn faults(&self) -> Vec<FaultRule> {
        self.faults_lock().rules()
    }

    pub fn set_global_latency(&self, latency: std::time::Duration) {
        self.update_knobs(|k| k.global_latency_ms = latency.as_millis() as u64);
    }

    /// Latency for one route key (or `exact.*`, `*`), on top of the global latency.
    pub fn set_route_latency(&self, route: &str, latency: std::time::Duration) {
        self.faults_lock()
            .set_route_latency(route, latency.as_millis() as u64);
    }

    fn faults_lock(&self) -> std::sync::MutexGuard<'_, crate::faults::FaultState> {
        self.sim.faults.lock().expect("fault lock poisoned")
    }

    /// For every refresh token ever issued: `token_hash(token)` → times presented to a token
    /// endpoint that processed the request (faults answering before the provider do not count).
    pub fn refresh_token_presentations(&self) -> HashMap<String, u32> {
        self.sim.lock().oauth.presentations()
    }

    pub fn presentations_of(&self, refresh_token: &str) -> u32 {
        self.sim
            .lock()
            .oauth
            .refresh
            .get(refresh_token)
            .map_or(0, |r| r.presentations)
    }

    pub fn max_presentations_of_any_refresh_token(&self) -> u32 {
        self.refresh_token_presentations()
            .into_values()
            .max()
            .unwrap_or(0)
    }

    /// Requests per route key (`exact.token`, ...), counted before faults apply.
    pub fn route_calls(&self) -> BTreeMap<String, u64> {
        self.sim
            .calls
            .lock()
            .expect("call counter lock poisoned")
            .clone()
    }

    pub fn calls(&self, route: &str) -> u64 {
        self.route_calls().get(route).copied().unwrap_or(0)
    }

    /// Requests to the provider's token endpoint (`<provider>.token`).
    pub fn token_calls(&self, provider: Provider) -> u64 {
        self.calls(&format!("{}.token", provider.as_str()))
    }

    pub fn valid_access_tokens(&self) -> Vec<AccessTokenInfo> {
        self.sim
            .lock()
            .oauth
            .valid_access_tokens(self.sim.clock.now())
    }

    pub fn is_access_token_valid(&self, token: &str) -> bool {
        self.sim
            .lock()
            .oauth
            .live_access(token, self.sim.clock.now())
            .is_some()
    }

    /// Ends a user's grants (all clients, or one): their refresh and access tokens stop working,
    /// and Acumatica sessions held by them are freed. Returns how many grants were revoked.
    pub fn revoke_grant(&self, provider: Provider, user: &str, client_id: Option<&str>) -> usize {
        self.sim.lock().oauth.revoke(provider, user, client_id)
    }

    /// Live legacy session.asmx sessions.
    pub fn twinfield_session_count(&self) -> usize {
        let state = self.sim.lock();
        let idle = Duration::seconds(state.knobs.twinfield_session_idle_timeout_secs);
        let now = self.sim.clock.now();
        state
            .twinfield_sessions
            .values()
            .filter(|s| now - s.last_used < idle)
            .count()
    }

    pub fn acumatica_active_sessions(&self, instance: &str, tenant: &str) -> usize {
        crate::acumatica::active_sessions(&self.sim.lock(), instance, tenant, self.sim.clock.now())
    }

    /// Issues a token pair for a registered client and existing user without the browser flow.
    pub fn mint_tokens(&self, request: MintRequest) -> Result<MintedTokens, SimulatorError> {
        let mut state = self.sim.lock();
        let now = self.sim.clock.now();
        let (p, location) = (request.provider, request.location.as_str());
        if p == Provider::Exact && !crate::accounts::EXACT_COUNTRIES.contains(&location) {
            return Err(SimulatorError::UnknownCountry(location.to_string()));
        }
        let client = state
            .client(p, location, &request.client_id)
            .ok_or_else(|| SimulatorError::UnknownClient(request.client_id.clone()))?;
        if !state.user_exists(p, location, &request.client_id, &request.user) {
            return Err(SimulatorError::UnknownUser(request.user));
        }
        let code = CodeRecord {
            request: AuthRequest {
                provider: p,
                location: location.to_string(),
                client_id: request.client_id.clone(),
                redirect_uri: client.redirect_uris.first().cloned().unwrap_or_default(),
                state: String::new(),
                scope: request.scope.clone(),
                nonce: None,
                code_challenge: None,
            },
            user: request.user.clone(),
            expires_at: now,
            used: true,
        };
        let k = state.knobs.clone();
        let (access_secs, refresh_expires_at) = match p {
            Provider::Twinfield => (
                k.twinfield_access_token_lifetime_secs,
                now + Duration::seconds(k.twinfield_refresh_token_lifetime_secs),
            ),
            Provider::Exact => (
                k.exact_access_token_lifetime_secs,
                now + Duration::seconds(k.exact_refresh_token_lifetime_secs),
            ),
            Provider::Acumatica => {
                let policy =
                    state.accounts.acumatica[location].clients[&request.client_id].refresh_policy;
                let expiry = match policy {
                    AcumaticaRefreshPolicy::Absolute { lifetime_secs } => {
                        now + Duration::seconds(lifetime_secs)
                    }
                    AcumaticaRefreshPolicy::Sliding {
                        sliding_secs,
                        absolute_cap_secs,
                    } => {
                        let slid = now + Duration::seconds(sliding_secs);
                        absolute_cap_secs.map_or(slid, |cap| slid.min(now + Duration::seconds(cap)))
                    }
                };
                (k.acumatica_access_token_lifetime_secs, expiry)
            }
        };
        let grant_id = state.oauth.new_grant(&code, now);
        crate::exact::scope_grant(&mut state, grant_id);
        let access_token = state
            .oauth
            .issue_access(grant_id, now, Duration::seconds(access_secs));
        let refresh_token = state.oauth.issue_refresh(grant_id, refresh_expires_at);
        Ok(MintedTokens {
            access_token,
            refresh_token,
            access_expires_at: now + Duration::seconds(access_secs),
            refresh_expires_at,
        })
    }
}
