//! The expiry notifier end to end: the outbox on both stores, SES through moto (sent mail read back
//! from moto's `/moto-api/data.json`, where SES v2 raw sends are recorded under `ses` → `RawMessage`),
//! and the local outbox folder.

use async_trait::async_trait;
use base64::Engine;
use broker_core::adapters::{OutboxMailer, SesMailer};
use broker_core::backend::Backend as CoreBackend;
use broker_core::connect::resolve_link;
use broker_core::context::BrokerContext;
use broker_core::domain::*;
use broker_core::ids::{AppId, TenantId, WriteId};
use broker_core::notify::*;
use broker_core::ports::Fence;
use broker_core::providers::{Catalogue, Providers};
use broker_core::refresh::EngineSettings;
use broker_core::secret::{AccessToken, LegacyAccessSecret, LegacyAccessToken, RefreshToken};
use broker_core::{Clock, CredentialKeeper, ManualClock};
use broker_tests::backends::{self, shared_moto, Backend};
use broker_tests::moto::unique_name;
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use url::Url;

const ACCESS_VALUE: &str = "ACCESS-TOKEN-VALUE-never-in-mail";
const REFRESH_VALUE: &str = "REFRESH-TOKEN-VALUE-never-in-mail";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 6, 0, 0).unwrap()
}

struct World {
    ctx: BrokerContext,
    clock: ManualClock,
    tenant: TenantId,
    recipient: String,
}

async fn world(backend: Backend) -> World {
    let clock = ManualClock::starting_at(t0());
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let providers = Providers::new(
        Catalogue::built_in(),
        broker_tests::provider_http(),
        clock_dyn.clone(),
    );
    let ctx = BrokerContext::new(
        CoreBackend {
            store: backend.store.clone(),
            vault: backend.vault.clone(),
        },
        providers,
        clock_dyn,
        Url::parse("https://broker.example.com/").unwrap(),
        EngineSettings::default(),
    );
    let tenant = TenantId::parse(unique_name("acme")).unwrap();
    ctx.backend
        .store
        .insert_tenant(&Tenant::new(tenant.clone(), "Acme Integrations", t0()).unwrap())
        .await
        .unwrap();
    let app = OAuthApp {
        tenant: tenant.clone(),
        id: AppId::parse("acumatica").unwrap(),
        settings: ProviderSettings::Acumatica {
            instance_url: ServiceUrl::parse("https://acme.acumatica.com").unwrap(),
            tenant: "AcmeCo".into(),
            refresh_tokens: None,
        },
        client_id: "00000000-0000-0000-0000-000000000000@AcmeCo".into(),
        redirect_uri: RedirectUri::parse("https://broker.example.com/oauth/callback").unwrap(),
        scopes: vec![],
        created_at: t0(),
    };
    ctx.backend.store.put_app(&app).await.unwrap();
    World {
        ctx,
        clock,
        tenant,
        recipient: format!("{}@example.com", unique_name("finance")),
    }
}

impl World {
    /// A connected Acumatica connection with tokens in the vault, its refresh token ending at `ends`.
    async fn connected(&self, ends: DateTime<Utc>) -> Connection {
        let now = self.clock.now();
        let mut c = Connection::new(
            self.tenant.clone(),
            AppId::parse("acumatica").unwrap(),
            ProviderKind::Acumatica,
            Recipients::parse(&[self.recipient.as_str(), "ops@example.com"]).unwrap(),
            now,
        );
        c.display_name = Some("Acme production".into());
        c.context = Some(ProviderContext::Acumatica {
            instance_url: ServiceUrl::parse("https://acme.acumatica.com").unwrap(),
            tenant: "AcmeCo".into(),
        });
        let pointer = CredentialsPointer {
            slot: VaultSlot::A,
            write: WriteId::generate(),
        };
        self.ctx
            .backend
            .vault
            .put_credentials(
                &c.tenant,
                &c.id,
                pointer.slot,
                &pointer.write,
                &Credentials::OAuth2(TokenSet {
                    access_token: AccessToken::new(ACCESS_VALUE),
                    refresh_token: Some(RefreshToken::new(REFRESH_VALUE)),
                    access_expires_at: now + Duration::hours(1),
                    refresh_expires_at: Some(ends),
                    scope: None,
                    received_at: now,
                }),
            )
            .await
            .unwrap();
        c.credentials = Some(pointer);
        c.refresh_expires_at = Some(ends);
        c.next_refresh_at = Some(now + Duration::days(7));
        let t = c
            .apply(
                StatusEvent::Authorized,
                Actor::EndUser("integration".into()),
                now,
            )
            .unwrap();
        self.ctx
            .backend
            .store
            .insert_connection(&c, &[t])
            .await
            .unwrap();
        c
    }

    /// What the refresh engine does when a person is needed: the event and a fenced save.
    async fn reconnect_needed(&self, c: &Connection) -> Connection {
        let mut c = self
            .ctx
            .backend
            .store
            .get_connection(&c.id)
            .await
            .unwrap()
            .unwrap();
        let t = c
            .apply(
                StatusEvent::ReconnectNeeded(ReconnectReason::new(
                    ReconnectKind::GrantRevoked,
                    "invalid_grant",
                )),
                Actor::System("token-refresh".into()),
                self.clock.now(),
            )
            .unwrap();
        c.next_refresh_at = None;
        self.ctx
            .backend
            .store
            .save_connection(&c, Fence::Version, &[t])
            .await
            .unwrap()
    }

    async fn unsettled(&self) -> Vec<NoticeKey> {
        self.ctx.backend.store.unsettled_notices(100).await.unwrap()
    }
}

// ----- SES through moto ------------------------------------------------------------------------

const SENDER: &str = "broker@example.com";

async fn ses_mailer() -> Arc<dyn Mailer> {
    let config = shared_moto().sdk_config().await;
    let client = SesMailer::client(&config);
    // moto refuses mail from an unverified sender, like SES outside the sandbox does.
    let _ = client
        .create_email_identity()
        .email_identity(SENDER)
        .send()
        .await;
    Arc::new(SesMailer::new(client))
}

fn settings() -> NotifySettings {
    let mut s = NotifySettings::new(EmailAddress::parse(SENDER).unwrap());
    s.reply_to = Some(EmailAddress::parse("support@example.com").unwrap());
    s
}

/// The raw messages moto recorded for `recipient`.
async fn moto_mail_to(recipient: &str) -> Vec<String> {
    let url = format!("{}/moto-api/data.json", shared_moto().endpoint);
    let data: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    data["ses"]["RawMessage"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m["destinations"]
                .as_array()
                .is_some_and(|d| d.iter().any(|a| a.as_str() == Some(recipient)))
        })
        .map(|m| m["raw_data"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A message's headers and decoded text and HTML parts.
struct Parsed {
    headers: String,
    text: String,
    html: String,
}

fn parse(raw: &str) -> Parsed {
    let (headers, body) = raw
        .split_once("\r\n\r\n")
        .expect("headers end with an empty line");
    let boundary = headers
        .split("boundary=\"")
        .nth(1)
        .and_then(|b| b.split('"').next())
        .expect("a multipart boundary");
    let mut parts = Vec::new();
    for part in body.split(&format!("--{boundary}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let (part_headers, content) = part.split_once("\r\n\r\n").expect("part headers");
        assert!(part_headers.contains("Content-Transfer-Encoding: base64"));
        let joined: String = content.split_whitespace().collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(joined)
            .unwrap();
        parts.push((
            part_headers.to_string(),
            String::from_utf8(decoded).unwrap(),
        ));
    }
    assert_eq!(parts.len(), 2, "multipart/alternative with text and html");
    assert!(parts[0].0.contains("text/plain") && parts[1].0.contains("text/html"));
    Parsed {
        headers: headers.to_string(),
        text: parts[0].1.clone(),
        html: parts[1].1.clone(),
    }
}

fn link_token(text: &str) -> String {
    let start = text
        .find("https://broker.example.com/connect/")
        .expect("a reconnect link");
    text[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("https://broker.example.com/connect/")
        .to_string()
}

async fn reconnect_required_is_emailed_exactly_once(backend: Backend) {
    let w = world(backend).await;
    let notifier = Arc::new(Notifier::new(w.ctx.clone(), ses_mailer().await, settings()));
    let c = w.connected(t0() + Duration::days(30)).await;
    assert!(w.unsettled().await.is_empty(), "connecting needs no email");
    w.reconnect_needed(&c).await;
    let keys = w.unsettled().await;
    assert_eq!(keys.len(), 1, "the transition is the outbox entry");
    // The same event delivered three times, two of them at once.
    let (a, b) = tokio::join!(notifier.notify(&keys[0]), notifier.notify(&keys[0]));
    let mut outcomes = vec![
        a.unwrap(),
        b.unwrap(),
        notifier.notify(&keys[0]).await.unwrap(),
    ];
    outcomes.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(
        outcomes
            .iter()
            .filter(|d| matches!(d, Delivery::Sent { recipients: 2 }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(w.unsettled().await.is_empty());
    assert_eq!(notifier.drain_outbox().await.unwrap().sent, 0);
    let record = w
        .ctx
        .backend
        .store
        .get_notice(&keys[0])
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        record.state,
        NoticeState::Settled(NoticeOutcome::Sent {
            kind: NoticeKind::ReconnectRequired,
            recipients: 2,
            ..
        })
    ));

    let mail = moto_mail_to(&w.recipient).await;
    assert_eq!(mail.len(), 1, "exactly one email");
    let email = parse(&mail[0]);
    assert!(email.headers.contains(&format!("From: {SENDER}")));
    assert!(email.headers.contains("Reply-To: support@example.com"));
    assert!(email
        .headers
        .contains("Subject: Action needed: reconnect Acumatica for Acme Integrations"));
    for part in [&email.text, &email.html] {
        assert!(part.contains("Acme Integrations"));
        assert!(
            part.contains("Acumatica, tenant AcmeCo (Acme production)"),
            "{part}"
        );
        assert!(
            part.contains("no longer accepts"),
            "the classified reason: {part}"
        );
        for secret in [
            ACCESS_VALUE,
            REFRESH_VALUE,
            c.id.as_str(),
            "00000000-0000-0000-0000-000000000000",
        ] {
            assert!(!part.contains(secret), "{secret} in the email");
        }
    }
    let token = link_token(&email.text);
    match resolve_link(&w.ctx, &token).await.unwrap() {
        Consumed::Fresh(link) => {
            assert_eq!(link.connection, c.id);
            assert_eq!(link.purpose, AuthorizationPurpose::Reconnect);
        }
        other => panic!("the emailed link does not resolve: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_reconnect_required_is_emailed_exactly_once() {
    reconnect_required_is_emailed_exactly_once(backends::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_reconnect_required_is_emailed_exactly_once() {
    reconnect_required_is_emailed_exactly_once(backends::aws().await).await;
}

/// On DynamoDB the stream record of the transition item is the trigger; delivered twice, one email.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_record_delivered_twice_sends_one_email() {
    let w = world(backends::aws().await).await;
    let notifier = Notifier::new(w.ctx.clone(), ses_mailer().await, settings());
    let c = w.connected(t0() + Duration::days(30)).await;
    w.reconnect_needed(&c).await;
    let key = w.unsettled().await.remove(0);
    // The record names the transition item by its table keys, which the adapter's notice key joins.
    let (pk, sk) = key.as_str().split_once('|').unwrap();
    let event = serde_json::json!({"Records": [{
        "eventName": "INSERT",
        "dynamodb": {"SequenceNumber": "4200", "Keys": {"pk": {"S": pk}, "sk": {"S": sk}}}
    }]});
    for _ in 0..2 {
        let out = expiry_notifier::handle(&notifier, event.clone())
            .await
            .unwrap();
        assert_eq!(out["batchItemFailures"], serde_json::json!([]));
    }
    assert_eq!(moto_mail_to(&w.recipient).await.len(), 1);
}

// ----- crash and failure injection -------------------------------------------------------------

/// Sends, then never returns: the process "dies" between sending and recording.
struct CrashAfterSend(Arc<dyn Mailer>);

#[async_trait]
impl Mailer for CrashAfterSend {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        self.0.send(email).await?;
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_after_sending_is_recorded_as_unknown_and_never_resent() {
    let w = world(backends::embedded()).await;
    let ses = ses_mailer().await;
    let c = w.connected(t0() + Duration::days(30)).await;
    w.reconnect_needed(&c).await;
    let key = w.unsettled().await.remove(0);
    let crashing = Notifier::new(
        w.ctx.clone(),
        Arc::new(CrashAfterSend(ses.clone())),
        settings(),
    );
    let crashed =
        tokio::time::timeout(std::time::Duration::from_secs(3), crashing.notify(&key)).await;
    assert!(crashed.is_err(), "the send never returned");
    assert_eq!(moto_mail_to(&w.recipient).await.len(), 1);

    let healthy = Notifier::new(w.ctx.clone(), ses, settings());
    // Soon after: the claim may still be alive; nothing is sent.
    assert_eq!(healthy.notify(&key).await.unwrap(), Delivery::Busy);
    // Past the stale limit: recorded as delivery unknown, not resent.
    w.clock.advance(Duration::minutes(16));
    assert_eq!(healthy.drain_outbox().await.unwrap().unknown, 1);
    assert_eq!(
        healthy.notify(&key).await.unwrap(),
        Delivery::AlreadySettled
    );
    assert_eq!(
        moto_mail_to(&w.recipient).await.len(),
        1,
        "never sent twice"
    );
    let record = w.ctx.backend.store.get_notice(&key).await.unwrap().unwrap();
    assert!(matches!(
        record.state,
        NoticeState::Settled(NoticeOutcome::DeliveryUnknown { .. })
    ));
}

/// Refuses every message, like SES with a throttled or suspended account.
struct Refusing(AtomicUsize);

#[async_trait]
impl Mailer for Refusing {
    async fn send(&self, _: &Email) -> Result<(), MailError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(MailError::NotSent(
            "Throttling: Maximum sending rate exceeded".into(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_send_is_retried_with_a_bound_then_recorded_as_failed() {
    for backend in [backends::embedded(), backends::aws().await] {
        let w = world(backend).await;
        let mailer = Arc::new(Refusing(AtomicUsize::new(0)));
        let notifier = Notifier::new(w.ctx.clone(), mailer.clone(), settings());
        let c = w.connected(t0() + Duration::days(30)).await;
        w.reconnect_needed(&c).await;
        let key = w.unsettled().await.remove(0);
        for attempt in 1..5 {
            assert!(
                matches!(notifier.notify(&key).await, Err(NotifyError::RetryLater(_))),
                "attempt {attempt}"
            );
        }
        assert_eq!(notifier.notify(&key).await.unwrap(), Delivery::Failed);
        assert_eq!(
            notifier.notify(&key).await.unwrap(),
            Delivery::AlreadySettled
        );
        assert_eq!(mailer.0.load(Ordering::SeqCst), 5);
        let record = w.ctx.backend.store.get_notice(&key).await.unwrap().unwrap();
        match record.state {
            NoticeState::Settled(NoticeOutcome::Failed {
                attempts, error, ..
            }) => {
                assert_eq!(attempts, 5);
                assert!(error.contains("Throttling"));
            }
            other => panic!("{other:?}"),
        }
        assert!(w.unsettled().await.is_empty());
    }
}

// ----- the daily sweep, with the clock moving ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absolute_expiry_warns_at_lead_times_then_requires_reconnect_and_stops_once_reconnected() {
    let w = world(backends::embedded()).await;
    let outbox = backends::temp_dir("outbox");
    let notifier = Notifier::new(
        w.ctx.clone(),
        Arc::new(OutboxMailer::new(&outbox)),
        settings(),
    );
    let deadline = t0() + Duration::days(30);
    let c = w.connected(deadline).await;
    let count = || {
        std::fs::read_dir(&outbox)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "eml")
                })
                .count()
            })
            .unwrap_or(0)
    };
    let mut sent_on_day = Vec::new();
    for day in 0..=30 {
        w.clock.set(t0() + Duration::days(day));
        let before = count();
        notifier.daily().await.unwrap();
        // A second run the same day (a retried schedule) sends nothing more.
        notifier.daily().await.unwrap();
        let new = count() - before;
        assert!(new <= 1, "day {day}: {new} emails");
        if new == 1 {
            sent_on_day.push(day);
        }
    }
    // Warnings 7 days before, a reminder 3 days later, 1 day before; at expiry, reconnect required.
    assert_eq!(sent_on_day, vec![23, 26, 29, 30]);
    let stored = w
        .ctx
        .backend
        .store
        .get_connection(&c.id)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        stored.status(),
        ConnectionStatus::ReconnectRequired { .. }
    ));

    // Someone reconnects on day 31: one "it works again", then silence for the new grant's first weeks.
    w.clock.set(t0() + Duration::days(31));
    let mut again = stored.clone();
    let t = again
        .apply(
            StatusEvent::Authorized,
            Actor::EndUser("integration".into()),
            w.clock.now(),
        )
        .unwrap();
    again.refresh_expires_at = Some(w.clock.now() + Duration::days(30));
    again.next_refresh_at = Some(w.clock.now() + Duration::days(7));
    w.ctx
        .backend
        .store
        .save_connection(&again, Fence::Version, &[t])
        .await
        .unwrap();
    let before = count();
    for day in 31..=50 {
        w.clock.set(t0() + Duration::days(day));
        notifier.daily().await.unwrap();
    }
    assert_eq!(count() - before, 1, "only the recovery email");

    // Every message is a well-formed .eml.
    let mut subjects = Vec::new();
    for entry in std::fs::read_dir(&outbox).unwrap() {
        let path = entry.unwrap().path();
        let raw = std::fs::read_to_string(&path).unwrap();
        let email = parse(&raw);
        for header in [
            "From: ",
            "To: ",
            "Subject: ",
            "Date: ",
            "Message-ID: <",
            "MIME-Version: 1.0",
            "Content-Type: multipart/alternative",
        ] {
            assert!(
                email.headers.contains(header),
                "{header} missing in {}",
                path.display()
            );
        }
        assert!(email.html.starts_with("<!DOCTYPE html>"));
        assert!(!raw.contains(ACCESS_VALUE) && !raw.contains(c.id.as_str()));
        subjects.push(
            email
                .headers
                .lines()
                .find(|l| l.starts_with("Subject: "))
                .unwrap()
                .to_string(),
        );
    }
    subjects.sort();
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.contains("stops working on"))
            .count(),
        3,
        "{subjects:?}"
    );
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.contains("Action needed: reconnect"))
            .count(),
        1
    );
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.contains("works again"))
            .count(),
        1
    );
}

// ----- recipients, and the outbox rule on both stores ------------------------------------------

#[test]
fn a_bad_recipient_is_refused_with_a_clear_error() {
    let err = Recipients::parse(&["finance@example.com", "finance at example.com"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"finance at example.com\" is not a usable email address: it has no '@'"
    );
    let err = Recipients::parse(&["ops@example"]).unwrap_err();
    assert!(
        err.to_string().contains("must be a name like example.com"),
        "{err}"
    );
}

/// Each store decides which transitions become notices itself (DynamoDB in Rust, SQLite in a
/// trigger); both must follow `notice_kind_of`.
async fn every_transition_that_needs_an_email_gets_exactly_one_notice(backend: Backend) {
    let w = world(backend).await;
    use StatusKind::*;
    let kinds = [
        NotConnected,
        Connected,
        RefreshFailing,
        ReconnectRequired,
        Disabled,
        Disconnected,
    ];
    let mut transitions = Vec::new();
    for from in kinds {
        for to in kinds {
            transitions.push(StatusTransition {
                from,
                to,
                at: t0() + Duration::seconds(transitions.len() as i64),
                actor: Actor::System("test".into()),
                reason: "test".into(),
            });
        }
    }
    let c = Connection::new(
        w.tenant.clone(),
        AppId::parse("acumatica").unwrap(),
        ProviderKind::Acumatica,
        Recipients::parse(&[w.recipient.as_str()]).unwrap(),
        t0(),
    );
    w.ctx
        .backend
        .store
        .insert_connection(&c, &transitions)
        .await
        .unwrap();
    let expected: Vec<&StatusTransition> = transitions
        .iter()
        .filter(|t| notice_kind_of(t).is_some())
        .collect();
    assert_eq!(
        expected.len(),
        5 + 5 + 2,
        "into reconnect_required/disabled from elsewhere, and recoveries"
    );
    let keys = w.unsettled().await;
    assert_eq!(keys.len(), expected.len());
    for (key, want) in keys.iter().zip(expected) {
        let record = w.ctx.backend.store.get_notice(key).await.unwrap().unwrap();
        assert_eq!(record.subject, NoticeSubject::Transition(want.clone()));
        assert_eq!(record.state, NoticeState::Pending);
        assert_eq!(record.connection, c.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_every_transition_that_needs_an_email_gets_exactly_one_notice() {
    every_transition_that_needs_an_email_gets_exactly_one_notice(backends::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_every_transition_that_needs_an_email_gets_exactly_one_notice() {
    every_transition_that_needs_an_email_gets_exactly_one_notice(backends::aws().await).await;
}

// ----- reminders while a person is needed, and legacy credentials -------------------------------

impl World {
    /// A status only a person can end, as the refresh engine records it.
    async fn waits_for_person(&self, c: &Connection, event: StatusEvent) {
        let mut c = self.stored(c).await;
        let t = c
            .apply(
                event,
                Actor::System("token-refresh".into()),
                self.clock.now(),
            )
            .unwrap();
        c.next_refresh_at = None;
        self.ctx
            .backend
            .store
            .save_connection(&c, Fence::Version, &[t])
            .await
            .unwrap();
    }

    /// A person authorizes again with OAuth 2.0, as the callback records it.
    async fn reconnects(&self, c: &Connection) {
        let now = self.clock.now();
        let mut c = self.stored(c).await;
        let t = c
            .apply(
                StatusEvent::Authorized,
                Actor::EndUser("integration".into()),
                now,
            )
            .unwrap();
        c.refresh_expires_at = Some(now + Duration::days(30));
        c.next_refresh_at = Some(now + Duration::days(7));
        let keeper = CredentialKeeper::new(
            self.ctx.backend.store.clone(),
            self.ctx.backend.vault.clone(),
        );
        let target = CredentialKeeper::next_target(&c);
        let tokens = Credentials::OAuth2(TokenSet {
            access_token: AccessToken::new(ACCESS_VALUE),
            refresh_token: Some(RefreshToken::new(REFRESH_VALUE)),
            access_expires_at: now + Duration::hours(1),
            refresh_expires_at: Some(now + Duration::days(30)),
            scope: None,
            received_at: now,
        });
        keeper
            .commit(c, target, &tokens, Fence::Version, &[t])
            .await
            .unwrap();
    }

    async fn stored(&self, c: &Connection) -> Connection {
        self.ctx
            .backend
            .store
            .get_connection(&c.id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Runs the daily sweep twice (a retried schedule) on each day from `days`, and returns the days
    /// on which mail reached this world's recipient, with the mail of each.
    async fn daily_mail(
        &self,
        notifier: &Notifier,
        days: std::ops::RangeInclusive<i64>,
    ) -> Vec<(i64, String)> {
        let mut mail = Vec::new();
        for day in days {
            self.clock.set(t0() + Duration::days(day));
            let before = moto_mail_to(&self.recipient).await.len();
            notifier.daily().await.unwrap();
            notifier.daily().await.unwrap();
            let all = moto_mail_to(&self.recipient).await;
            for raw in &all[before..] {
                mail.push((day, raw.clone()));
            }
        }
        mail
    }
}

fn subject_of(raw: &str) -> String {
    parse(raw)
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap()
        .to_string()
}

/// The email's reconnect link leads into the connect flow for this connection.
async fn assert_reconnect_link(w: &World, raw: &str, c: &Connection, secrets: &[&str]) {
    let email = parse(raw);
    for part in [&email.text, &email.html] {
        for secret in secrets.iter().chain([&c.id.as_str()]) {
            assert!(!part.contains(secret), "{secret} in the email");
        }
    }
    match resolve_link(&w.ctx, &link_token(&email.text))
        .await
        .unwrap()
    {
        Consumed::Fresh(link) => {
            assert_eq!(link.connection, c.id);
            assert_eq!(link.purpose, AuthorizationPurpose::Reconnect);
        }
        other => panic!("the emailed link does not resolve: {other:?}"),
    }
}

/// Reconnect required (or disabled) on day 0: the transition's email, then a reminder every 3 days
/// while nobody acts; a reminder already owed when someone reconnects is not sent; after the
/// reconnect only the "works again" email.
async fn reminders_repeat_while_a_person_is_needed_and_stop_once_reconnected(
    backend: Backend,
    event: StatusEvent,
    transition_subject: &str,
    reminder_subject: &str,
) {
    let w = world(backend).await;
    let ses = ses_mailer().await;
    let notifier = Notifier::new(w.ctx.clone(), ses.clone(), settings());
    let c = w.connected(t0() + Duration::days(300)).await;
    w.waits_for_person(&c, event).await;
    let mail = w.daily_mail(&notifier, 0..=10).await;
    let days: Vec<i64> = mail.iter().map(|(day, _)| *day).collect();
    assert_eq!(
        days,
        vec![0, 3, 6, 9],
        "the transition's email, then every 3 days"
    );
    assert_eq!(subject_of(&mail[0].1), transition_subject);
    for (day, raw) in &mail[1..] {
        assert_eq!(subject_of(raw), reminder_subject, "day {day}");
        assert!(
            parse(raw).text.contains(&format!("({day} days ago)")),
            "day {day}: {}",
            parse(raw).text
        );
        // Followed the day it arrived (links last a week).
        w.clock.set(t0() + Duration::days(*day));
        assert_reconnect_link(&w, raw, &c, &[ACCESS_VALUE, REFRESH_VALUE]).await;
    }

    // Day 12's reminder is owed but SES refuses it; someone reconnects before the retry.
    w.clock.set(t0() + Duration::days(12));
    let refusing = Notifier::new(
        w.ctx.clone(),
        Arc::new(Refusing(AtomicUsize::new(0))),
        settings(),
    );
    let refused = refusing.daily().await.unwrap();
    assert_eq!((refused.reminders_created, refused.retry_later), (1, 1));
    let owed = w.unsettled().await;
    w.reconnects(&c).await;
    let mail = w.daily_mail(&notifier, 12..=25).await;
    let subjects: Vec<String> = mail.iter().map(|(_, raw)| subject_of(raw)).collect();
    assert_eq!(
        subjects,
        vec!["Acumatica works again for Acme Integrations".to_string()],
        "no reminder after the reconnect"
    );
    let record = w
        .ctx
        .backend
        .store
        .get_notice(&owed[0])
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&record.state, NoticeState::Settled(NoticeOutcome::Skipped { why, .. }) if why.contains("status changed")),
        "{record:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_reminders_repeat_while_reconnect_is_required() {
    reminders_repeat_while_a_person_is_needed_and_stop_once_reconnected(
        backends::embedded(),
        StatusEvent::ReconnectNeeded(ReconnectReason::new(
            ReconnectKind::GrantRevoked,
            "invalid_grant",
        )),
        "Action needed: reconnect Acumatica for Acme Integrations",
        "Reminder: reconnect Acumatica for Acme Integrations",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_reminders_repeat_while_reconnect_is_required() {
    reminders_repeat_while_a_person_is_needed_and_stop_once_reconnected(
        backends::aws().await,
        StatusEvent::ReconnectNeeded(ReconnectReason::new(
            ReconnectKind::GrantRevoked,
            "invalid_grant",
        )),
        "Action needed: reconnect Acumatica for Acme Integrations",
        "Reminder: reconnect Acumatica for Acme Integrations",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_reminders_repeat_while_disabled() {
    reminders_repeat_while_a_person_is_needed_and_stop_once_reconnected(
        backends::aws().await,
        StatusEvent::ProviderDisabled {
            reason: "The company is blocked".into(),
        },
        "Action needed: Acumatica disabled the connection for Acme Integrations",
        "Reminder: Acumatica still refuses the connection for Acme Integrations",
    )
    .await;
}

/// With the limit set, reminders stop after that many, though the connection still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reminders_stop_at_the_configured_limit() {
    let w = world(backends::embedded()).await;
    let mut limited = settings();
    limited.max_reminders = 2;
    let notifier = Notifier::new(w.ctx.clone(), ses_mailer().await, limited);
    let c = w.connected(t0() + Duration::days(300)).await;
    w.reconnect_needed(&c).await;
    let days: Vec<i64> = w
        .daily_mail(&notifier, 0..=20)
        .await
        .into_iter()
        .map(|(day, _)| day)
        .collect();
    assert_eq!(days, vec![0, 3, 6]);
    assert!(matches!(
        w.stored(&c).await.status(),
        ConnectionStatus::ReconnectRequired { .. }
    ));
}

/// A Twinfield connection registered with legacy credentials works (nothing to refresh) but the
/// provider is retiring them: warned on the first sweep, then every 3 days, until someone reconnects
/// with OAuth 2.0.
async fn legacy_credentials_are_warned_until_the_connection_moves_to_oauth(backend: Backend) {
    let w = world(backend).await;
    let twinfield = OAuthApp {
        tenant: w.tenant.clone(),
        id: AppId::parse("twinfield").unwrap(),
        settings: ProviderSettings::Twinfield,
        client_id: "acme-twinfield-client".into(),
        redirect_uri: RedirectUri::parse("https://broker.example.com/oauth/callback").unwrap(),
        scopes: vec![],
        created_at: t0(),
    };
    w.ctx.backend.store.put_app(&twinfield).await.unwrap();
    let mut c = Connection::new(
        w.tenant.clone(),
        twinfield.id.clone(),
        ProviderKind::Twinfield,
        Recipients::parse(&[w.recipient.as_str()]).unwrap(),
        t0(),
    );
    c.context = Some(ProviderContext::Twinfield {
        cluster_url: ServiceUrl::parse("https://accounting.twinfield.com").unwrap(),
        organisation_code: "ACME".into(),
        organisation_id: None,
    });
    w.ctx
        .backend
        .store
        .insert_connection(&c, &[])
        .await
        .unwrap();
    let keeper = CredentialKeeper::new(w.ctx.backend.store.clone(), w.ctx.backend.vault.clone());
    let t = c
        .apply(
            StatusEvent::Authorized,
            Actor::ApiKey("bk_live_1234".into()),
            t0(),
        )
        .unwrap();
    let target = CredentialKeeper::next_target(&c);
    let legacy = Credentials::TwinfieldLegacy(LegacyTwinfieldCredentials {
        access_token: LegacyAccessToken::new("LEGACY-ACCESS-never-in-mail"),
        access_secret: LegacyAccessSecret::new("LEGACY-SECRET-never-in-mail"),
    });
    let c = keeper
        .commit(c, target, &legacy, Fence::Version, &[t])
        .await
        .unwrap();
    assert!(c.legacy_credentials && c.next_refresh_at.is_none());

    let ses = ses_mailer().await;
    let notifier = Notifier::new(w.ctx.clone(), ses, settings());
    let mail = w.daily_mail(&notifier, 0..=7).await;
    let days: Vec<i64> = mail.iter().map(|(day, _)| *day).collect();
    assert_eq!(days, vec![0, 3, 6]);
    for (day, raw) in &mail {
        w.clock.set(t0() + Duration::days(*day));
        assert_eq!(
            subject_of(raw),
            "Twinfield connection for Acme Integrations uses retired credentials"
        );
        let text = parse(raw).text;
        assert!(text.contains("Twinfield, organisation ACME"), "{text}");
        assert!(text.contains("OAuth 2.0"), "{text}");
        assert_reconnect_link(
            &w,
            raw,
            &c,
            &["LEGACY-ACCESS-never-in-mail", "LEGACY-SECRET-never-in-mail"],
        )
        .await;
    }

    w.clock.set(t0() + Duration::days(8));
    w.reconnects(&c).await;
    assert!(!w.stored(&c).await.legacy_credentials);
    let after = w.daily_mail(&notifier, 8..=20).await;
    assert!(after.is_empty(), "{} more emails", after.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_legacy_credentials_are_warned_until_the_connection_moves_to_oauth() {
    legacy_credentials_are_warned_until_the_connection_moves_to_oauth(backends::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_legacy_credentials_are_warned_until_the_connection_moves_to_oauth() {
    legacy_credentials_are_warned_until_the_connection_moves_to_oauth(backends::aws().await).await;
}

/// An Exact connection whose refreshes keep failing: its refresh token dies 30 days after its last
/// use, so the people on it are warned at the lead times, and told it needs a reconnect once the
/// token's life is over. A healthy connection with the same deadline gets nothing: its next
/// refresh renews it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_that_cannot_refresh_is_warned_before_its_idle_expiry() {
    let w = world(backends::embedded()).await;
    let exact = OAuthApp {
        tenant: w.tenant.clone(),
        id: AppId::parse("exact-nl").unwrap(),
        settings: ProviderSettings::ExactOnline {
            country: ExactCountry::Netherlands,
        },
        client_id: "exact-client".into(),
        redirect_uri: RedirectUri::parse("https://broker.example.com/oauth/callback").unwrap(),
        scopes: vec![],
        created_at: t0(),
    };
    w.ctx.backend.store.put_app(&exact).await.unwrap();
    let deadline = t0() + Duration::days(10);
    let exact_connection = |failing: bool| {
        let mut c = Connection::new(
            w.tenant.clone(),
            exact.id.clone(),
            ProviderKind::ExactOnline,
            Recipients::parse(&[w.recipient.as_str()]).unwrap(),
            t0(),
        );
        c.context = Some(ProviderContext::ExactOnline {
            base_url: ServiceUrl::parse("https://start.exactonline.nl").unwrap(),
            division: 123,
            user_id: None,
            divisions: vec![],
        });
        let mut transitions = vec![c
            .apply(StatusEvent::Authorized, Actor::EndUser("u".into()), t0())
            .unwrap()];
        if failing {
            transitions.push(
                c.apply(
                    StatusEvent::RefreshFailed {
                        error: "503 Service Unavailable".into(),
                    },
                    Actor::System("token-refresh".into()),
                    t0(),
                )
                .unwrap(),
            );
        }
        c.refresh_expires_at = Some(deadline);
        c.next_refresh_at = Some(t0() + Duration::minutes(10));
        (c, transitions)
    };
    for failing in [false, true] {
        let (c, transitions) = exact_connection(failing);
        w.ctx
            .backend
            .store
            .insert_connection(&c, &transitions)
            .await
            .unwrap();
    }
    let notifier = Notifier::new(w.ctx.clone(), ses_mailer().await, settings());
    let mail = w.daily_mail(&notifier, 0..=10).await;
    let sent: Vec<(i64, String)> = mail
        .iter()
        .map(|(day, raw)| (*day, subject_of(raw)))
        .collect();
    let warning = "Exact Online connection for Acme Integrations is failing and will expire";
    assert_eq!(
        sent,
        vec![
            (3, warning.to_string()),
            (6, warning.to_string()),
            (9, warning.to_string()),
            (
                10,
                "Action needed: reconnect Exact Online for Acme Integrations".to_string()
            ),
        ]
    );
    let text = parse(&mail[0].1).text;
    assert!(
        text.contains("Exact Online, division 123") && text.contains("Thursday 12 November 2026"),
        "{text}"
    );
}
