//! The refresh engine's decisions, on the embedded store in memory with a scripted provider and a manual clock:
//! fast, and each reaching a branch that is fiddly to reach end to end. The same engine runs against
//! SQLite, moto and the provider simulators in `tests/tests/refresh_engine/`.

use super::engine::{Demand, EngineSettings, Outcome, RefreshEngine, Trigger};
use super::grant::{GrantFailure, GrantedTokens, TokenGrant};
use super::rules::{RefreshRules, RefreshTokenExpiry};
use crate::adapters::embedded::{EmbeddedStore, Faults};
use crate::clock::{Clock, ManualClock};
use crate::credential_keeper::CredentialKeeper;
use crate::domain::{
    Actor, Connection, Credentials, ErrorClass, ExactCountry, OAuthApp, ProviderKind,
    ProviderSettings, Recipients, ReconnectKind, RedirectUri, RefreshInFlight, StatusEvent,
    StatusKind, TokenSet, VaultSlot, WriteBudgetPolicy,
};
use crate::ids::{AppId, ConnectionId, LeaseOwner, TenantId};
use crate::notify::NoticeSubject;
use crate::ports::{
    ConnectionStore, Fence, NotificationStore, PageRequest, TenantStore, TokenVault,
};
use crate::secret::{AccessToken, ClientSecret, RefreshToken};
use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()
}

// The connection's status and lease through one place each, as callers outside the domain read them.
fn status_of(c: &Connection) -> StatusKind {
    c.status().kind()
}

fn is_leased(c: &Connection) -> bool {
    c.lease.is_some()
}

/// A provider with Exact Online's rules that answers from a script (then with fresh tokens), and
/// remembers every refresh token presented to it.
#[derive(Default)]
struct ScriptedProvider {
    answers: Mutex<VecDeque<Result<(), GrantFailure>>>,
    presented: Mutex<Vec<String>>,
    /// How long each call takes, so concurrent callers overlap.
    delay: std::time::Duration,
}

impl ScriptedProvider {
    fn then_fail(&self, class: ErrorClass, times: usize) {
        let mut answers = self.answers.lock().unwrap();
        for _ in 0..times {
            answers.push_back(Err(GrantFailure::new(class, format!("scripted {class:?}"))));
        }
    }

    fn presented(&self) -> Vec<String> {
        self.presented.lock().unwrap().clone()
    }
}

#[async_trait]
impl TokenGrant for ScriptedProvider {
    fn rules(&self, _app: &OAuthApp) -> RefreshRules {
        RefreshRules {
            rotating: true,
            expiry: RefreshTokenExpiry::Idle(Duration::days(30)),
            min_interval: Some(Duration::seconds(570)),
            health_check: None,
        }
    }

    async fn refresh(
        &self,
        _app: &OAuthApp,
        _client_secret: &ClientSecret,
        refresh_token: &RefreshToken,
    ) -> Result<GrantedTokens, GrantFailure> {
        let call = {
            let mut presented = self.presented.lock().unwrap();
            presented.push(refresh_token.expose().to_string());
            presented.len()
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let scripted = self.answers.lock().unwrap().pop_front();
        scripted.unwrap_or(Ok(())).map(|()| GrantedTokens {
            access_token: AccessToken::new(format!("access-{call}")),
            expires_in: Duration::seconds(600),
            refresh_token: Some(RefreshToken::new(format!("refresh-{call}"))),
            scope: None,
        })
    }
}

struct World {
    store: EmbeddedStore,
    clock: ManualClock,
    provider: Arc<ScriptedProvider>,
    engine: Arc<RefreshEngine>,
    app: OAuthApp,
}

impl World {
    async fn new() -> Self {
        Self::with(ScriptedProvider::default(), EngineSettings::default()).await
    }

    async fn with(provider: ScriptedProvider, settings: EngineSettings) -> Self {
        let store = EmbeddedStore::in_memory().unwrap();
        let clock = ManualClock::starting_at(t0());
        let provider = Arc::new(provider);
        let tenant = TenantId::parse("acme").unwrap();
        let app = OAuthApp {
            tenant: tenant.clone(),
            id: AppId::parse("exact-nl").unwrap(),
            settings: ProviderSettings::ExactOnline {
                country: ExactCountry::Netherlands,
            },
            client_id: "client".into(),
            redirect_uri: RedirectUri::parse("https://broker.example.com/oauth/callback").unwrap(),
            scopes: vec![],
            created_at: t0(),
        };
        store.put_app(&app).await.unwrap();
        store
            .put_client_secret(&tenant, &app.id, &ClientSecret::new("secret"))
            .await
            .unwrap();
        let engine = Arc::new(RefreshEngine::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            provider.clone(),
            Arc::new(clock.clone()),
            settings,
        ));
        Self {
            store,
            clock,
            provider,
            engine,
            app,
        }
    }

    fn keeper(&self) -> CredentialKeeper {
        CredentialKeeper::new(Arc::new(self.store.clone()), Arc::new(self.store.clone()))
    }

    /// A connection a person authorized just now, holding `refresh-0`, due when Exact allows.
    async fn connected(&self) -> Connection {
        let now = self.clock.now();
        let mut c = Connection::new(
            self.app.tenant.clone(),
            self.app.id.clone(),
            ProviderKind::ExactOnline,
            Recipients::parse(&["ops@example.com"]).unwrap(),
            now,
        );
        let authorized = c
            .apply(StatusEvent::Authorized, Actor::System("test".into()), now)
            .unwrap();
        self.store
            .insert_connection(&c, &[authorized])
            .await
            .unwrap();
        c.last_refresh_at = Some(now);
        c.next_refresh_at = Some(now + Duration::seconds(570));
        let target = CredentialKeeper::next_target(&c);
        self.keeper()
            .commit(c, target, &tokens(0, now), Fence::Version, &[])
            .await
            .unwrap()
    }

    async fn stored(&self, id: &ConnectionId) -> Connection {
        self.store.get_connection(id).await.unwrap().unwrap()
    }

    async fn refresh(&self, id: &ConnectionId, trigger: Trigger) -> Outcome {
        self.engine.refresh(id, trigger).await.unwrap().outcome
    }

    async fn current_access_token(&self, id: &ConnectionId) -> String {
        let c = self.stored(id).await;
        let credentials = self.keeper().current(&c).await.unwrap().unwrap();
        credentials
            .token_set()
            .unwrap()
            .access_token
            .expose()
            .to_string()
    }
}

fn tokens(n: u32, now: DateTime<Utc>) -> Credentials {
    Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new(format!("access-{n}")),
        access_expires_at: now + Duration::seconds(600),
        refresh_token: Some(RefreshToken::new(format!("refresh-{n}"))),
        refresh_expires_at: Some(now + Duration::days(30)),
        scope: None,
        received_at: now,
    })
}

fn on_demand() -> Trigger {
    Trigger::on_demand(Duration::minutes(5))
}

#[tokio::test]
async fn two_concurrent_on_demand_callers_cause_one_provider_call() {
    let w = World::with(
        ScriptedProvider {
            delay: std::time::Duration::from_millis(20),
            ..ScriptedProvider::default()
        },
        EngineSettings::default(),
    )
    .await;
    let c = w.connected().await;
    w.clock.advance(Duration::seconds(700));
    let (a, b) = tokio::join!(w.refresh(&c.id, on_demand()), w.refresh(&c.id, on_demand()));
    let mut outcomes = [a, b];
    outcomes.sort_by_key(|o| o.label());
    assert_eq!(outcomes, [Outcome::AlreadyFresh, Outcome::Refreshed]);
    assert_eq!(w.provider.presented(), ["refresh-0"]);
    assert_eq!(w.current_access_token(&c.id).await, "access-1");
}

#[tokio::test]
async fn a_lease_held_elsewhere_keeps_an_on_demand_caller_from_the_provider() {
    let w = World::new().await;
    let c = w.connected().await;
    w.clock.advance(Duration::seconds(700));
    let other = LeaseOwner::generate();
    w.store
        .acquire_lease(&c.id, &other, w.clock.now(), Duration::seconds(60))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(150);
    let demand = Demand::valid_for(Duration::minutes(5)).by(Some(deadline));
    let outcome = w.refresh(&c.id, Trigger::OnDemand(demand)).await;
    assert_eq!(outcome, Outcome::Busy);
    assert!(w.provider.presented().is_empty());
}

/// A refresh that wrote the provider's answer to the vault and crashed before switching the metadata.
#[tokio::test]
async fn tokens_a_crashed_refresh_wrote_are_adopted_without_calling_the_provider() {
    let w = World::new().await;
    let mut c = w.connected().await;
    w.clock.advance(Duration::seconds(600));
    let target = CredentialKeeper::next_target(&c);
    w.store
        .put_credentials(
            &c.tenant,
            &c.id,
            target.slot,
            &target.write,
            &tokens(7, w.clock.now()),
        )
        .await
        .unwrap();
    c.refresh_in_flight = Some(RefreshInFlight {
        started_at: w.clock.now(),
        spending: c.credentials.clone().unwrap(),
        target: target.clone(),
        escrow: None,
    });
    w.store
        .save_connection(&c, Fence::Version, &[])
        .await
        .unwrap();
    w.clock.advance(Duration::seconds(30));

    assert_eq!(
        w.refresh(&c.id, Trigger::Scheduled).await,
        Outcome::Recovered
    );
    assert!(
        w.provider.presented().is_empty(),
        "the answer was already kept"
    );
    let stored = w.stored(&c.id).await;
    assert_eq!(stored.credentials, Some(target));
    assert!(stored.refresh_in_flight.is_none());
    assert!(!is_leased(&stored), "the last save gives the lease up");
    assert_eq!(w.current_access_token(&c.id).await, "access-7");
}

/// A refresh that crashed after presenting a single-use token, with no answer stored: the token is
/// not presented again while the original call may still be running, and once only after that.
#[tokio::test]
async fn a_crash_marker_without_an_answer_holds_the_token_back_until_the_call_budget_has_passed() {
    let w = World::new().await;
    let mut c = w.connected().await;
    w.clock.advance(Duration::seconds(600));
    c.refresh_in_flight = Some(RefreshInFlight {
        started_at: w.clock.now(),
        spending: c.credentials.clone().unwrap(),
        target: CredentialKeeper::next_target(&c),
        escrow: None,
    });
    w.store
        .save_connection(&c, Fence::Version, &[])
        .await
        .unwrap();

    w.clock.advance(Duration::seconds(5));
    assert_eq!(w.refresh(&c.id, Trigger::Scheduled).await, Outcome::Busy);
    assert!(w.provider.presented().is_empty());

    w.clock
        .advance(w.engine.settings().call_budget() + Duration::seconds(1));
    assert_eq!(
        w.refresh(&c.id, Trigger::Scheduled).await,
        Outcome::Refreshed
    );
    assert_eq!(w.provider.presented(), ["refresh-0"]);
    assert!(w.stored(&c.id).await.refresh_in_flight.is_none());
}

/// A 5xx after presenting a single-use token says nothing about whether the provider spent it: the
/// engine does not present it again within the refresh, and leaves the next try to the schedule.
#[tokio::test]
async fn a_5xx_on_a_single_use_token_is_not_retried_within_the_refresh() {
    let w = World::new().await;
    w.provider.then_fail(ErrorClass::ProviderUnavailable, 1);
    let c = w.connected().await;
    w.clock.advance(Duration::seconds(700));

    let outcome = w.refresh(&c.id, on_demand()).await;
    assert_eq!(outcome, Outcome::Failed(ErrorClass::ProviderUnavailable));
    assert_eq!(w.provider.presented(), ["refresh-0"], "presented once");
    let stored = w.stored(&c.id).await;
    assert!(stored.refresh_in_flight.is_none());
    assert_eq!(
        stored.credentials, c.credentials,
        "the old token stays current"
    );
    assert_eq!(stored.failures.consecutive, 1);
    assert!(
        stored.next_refresh_at.unwrap() > w.clock.now(),
        "retried later"
    );
}

#[tokio::test]
async fn exact_is_not_asked_before_570_seconds_have_passed() {
    let w = World::new().await;
    let mut c = w.connected().await;
    w.clock.advance(Duration::seconds(100));
    c.next_refresh_at = Some(w.clock.now());
    let c = w
        .store
        .save_connection(&c, Fence::Version, &[])
        .await
        .unwrap();

    assert_eq!(w.refresh(&c.id, Trigger::Scheduled).await, Outcome::NotDue);
    // A caller whose token the provider refused still gets the current one: it is not 570 s old.
    let rejected = Demand::valid_for(Duration::minutes(5)).rejected(c.credentials.clone().unwrap());
    let outcome = w.refresh(&c.id, Trigger::OnDemand(rejected)).await;
    assert_eq!(outcome, Outcome::AlreadyFresh);
    assert!(w.provider.presented().is_empty());

    w.clock.advance(Duration::seconds(470));
    assert_eq!(
        w.refresh(&c.id, Trigger::Scheduled).await,
        Outcome::Refreshed
    );
    assert_eq!(w.provider.presented(), ["refresh-0"]);
}

#[tokio::test]
async fn failures_beyond_the_hourly_ceiling_cool_the_connection_down() {
    let w = World::new().await;
    let ceiling = w.engine.settings().max_failures_per_hour;
    w.provider
        .then_fail(ErrorClass::ProviderUnavailable, ceiling + 1);
    let c = w.connected().await;
    w.clock.advance(Duration::seconds(700));
    for _ in 0..ceiling {
        let outcome = w.refresh(&c.id, on_demand()).await;
        assert_eq!(outcome, Outcome::Failed(ErrorClass::ProviderUnavailable));
        w.clock.advance(Duration::minutes(5));
    }
    assert_eq!(w.refresh(&c.id, on_demand()).await, Outcome::CoolingDown);
    assert_eq!(w.provider.presented().len(), ceiling);

    // An hour after the first failure, one attempt is allowed again.
    w.clock.advance(Duration::minutes(35));
    assert_eq!(
        w.refresh(&c.id, on_demand()).await,
        Outcome::Failed(ErrorClass::ProviderUnavailable)
    );
    assert_eq!(w.provider.presented().len(), ceiling + 1);
}

#[tokio::test]
async fn a_revoked_grant_ends_in_reconnect_required_with_one_notice_and_no_more_calls() {
    let w = World::new().await;
    w.provider.then_fail(ErrorClass::GrantRevoked, 1);
    let c = w.connected().await;
    w.clock.advance(Duration::seconds(700));

    let outcome = w.refresh(&c.id, on_demand()).await;
    assert_eq!(
        outcome,
        Outcome::ReconnectRequired(ReconnectKind::GrantRevoked)
    );
    let stored = w.stored(&c.id).await;
    assert_eq!(status_of(&stored), StatusKind::ReconnectRequired);
    assert_eq!(stored.next_refresh_at, None, "out of the schedule");
    let awaiting = w
        .store
        .awaiting_person(PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(awaiting.items.len(), 1);
    assert_eq!(awaiting.items[0].id, c.id);
    let notices = w.store.unsettled_notices(10).await.unwrap();
    assert_eq!(
        notices.len(),
        1,
        "one email owed, written with the transition"
    );
    let notice = w.store.get_notice(&notices[0]).await.unwrap().unwrap();
    assert!(matches!(
        notice.subject,
        NoticeSubject::Transition(t) if t.to == StatusKind::ReconnectRequired
    ));

    w.clock.advance(Duration::minutes(10));
    assert_eq!(
        w.refresh(&c.id, on_demand()).await,
        Outcome::NotUsable(StatusKind::ReconnectRequired)
    );
    assert_eq!(w.provider.presented(), ["refresh-0"]);
}

#[tokio::test]
async fn the_vault_write_budget_holds_a_refresh_back_and_moves_the_schedule() {
    let policy = WriteBudgetPolicy {
        per_day: 10,
        burst: 1,
    };
    let settings = EngineSettings {
        write_budget: policy,
        ..EngineSettings::default()
    };
    let w = World::with(ScriptedProvider::default(), settings).await;
    let mut c = w.connected().await;
    // The slot the next refresh writes to took a write just now.
    let next = c
        .credentials
        .as_ref()
        .map_or(VaultSlot::A, |p| p.slot.other());
    c.vault_writes.spend(next, &policy, w.clock.now());
    let c = w
        .store
        .save_connection(&c, Fence::Version, &[])
        .await
        .unwrap();
    w.clock.advance(Duration::seconds(700));

    let Outcome::BudgetLimited { until } = w.refresh(&c.id, Trigger::Scheduled).await else {
        panic!("the budget must hold the refresh back");
    };
    assert!(until > w.clock.now());
    assert!(w.provider.presented().is_empty());
    let stored = w.stored(&c.id).await;
    assert_eq!(stored.refresh_limited_since, Some(w.clock.now()));
    assert_eq!(stored.next_refresh_at, Some(until));

    w.clock.set(until);
    assert_eq!(
        w.refresh(&c.id, Trigger::Scheduled).await,
        Outcome::Refreshed
    );
    assert_eq!(w.provider.presented(), ["refresh-0"]);
}

/// The vault refuses the provider's answer once: the answer is escrowed, the write retried, and the
/// single-use token is not presented again.
#[tokio::test(start_paused = true)]
async fn an_answer_the_vault_refused_once_is_stored_on_retry_without_a_second_call() {
    let w = World::new().await;
    let c = w.connected().await;
    w.clock.advance(Duration::seconds(700));
    w.store.fail_next(Faults {
        vault_writes: 1,
        ..Faults::default()
    });

    assert_eq!(w.refresh(&c.id, on_demand()).await, Outcome::Refreshed);
    assert_eq!(w.provider.presented(), ["refresh-0"]);
    let stored = w.stored(&c.id).await;
    assert!(
        stored.refresh_in_flight.is_none(),
        "the marker and its escrow are cleared"
    );
    assert_eq!(w.current_access_token(&c.id).await, "access-1");
}
