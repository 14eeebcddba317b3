//! Delivery: one email per transition however often its stream record arrives, and crash and failure
//! injection around the send.

use super::*;

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
