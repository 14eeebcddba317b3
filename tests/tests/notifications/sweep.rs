//! The daily sweep, with the clock moving; recipients, and the outbox rule on both stores.

use super::*;

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
    let stored = w.stored(&c).await;
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
