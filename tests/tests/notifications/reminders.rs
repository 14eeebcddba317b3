//! Reminders while a person is needed, and legacy credentials.

use super::*;

impl World {
    /// A person authorizes again with OAuth 2.0, as the callback records it.
    async fn reconnects(&self, c: &Connection) {
        let now = self.clock.now();
        let mut c = self.stored(c).await;
        let t = authorized_by_integration(&mut c, now);
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
        broker_tests::world::grant_revoked(),
        "Action needed: reconnect Acumatica for Acme Integrations",
        "Reminder: reconnect Acumatica for Acme Integrations",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_reminders_repeat_while_reconnect_is_required() {
    reminders_repeat_while_a_person_is_needed_and_stop_once_reconnected(
        backends::aws().await,
        broker_tests::world::grant_revoked(),
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
    let callback = "https://broker.example.com/oauth/callback";
    let exact =
        broker_tests::world::exact_nl_app(&w.tenant, "exact-nl", "exact-client", callback, t0());
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
        text.contains("Exact Online, division 123") && text.contains("12 November 2026, 06:00 UTC"),
        "{text}"
    );
}
