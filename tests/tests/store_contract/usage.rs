//! Usage counters: limits per key and window, and concurrent takers.

use super::*;

contract!(
    a_usage_counter_grants_up_to_its_limit_per_key_and_window,
    twenty_concurrent_takers_of_a_limit_of_ten_get_exactly_ten_units,
);

fn usage_key(tenant_name: &str, app: &str, user: &str, counter: UsageCounter) -> UsageKey {
    UsageKey::new(
        tenant(tenant_name),
        AppId::parse(app).unwrap(),
        user,
        counter,
    )
    .unwrap()
}

async fn a_usage_counter_grants_up_to_its_limit_per_key_and_window(backend: Backend) {
    let store = &backend.store;
    let name = backend.name;
    let key = usage_key("acme", "exact-nl", "U-1", UsageCounter::TokenCalls);
    let day = UsageWindow::utc_day(t0());
    assert_eq!(store.units_used(&key, day).await.unwrap(), 0, "{name}");
    for used in 1..=3 {
        assert_eq!(
            store.take_unit(&key, day, 3).await.unwrap(),
            UsageTake::Granted { used },
            "{name}"
        );
    }
    assert_eq!(
        store.take_unit(&key, day, 3).await.unwrap(),
        UsageTake::Refused { used: 3 },
        "{name}: the limit holds"
    );
    assert_eq!(store.units_used(&key, day).await.unwrap(), 3, "{name}");
    // The same user spelled as Exact may spell it elsewhere is the same counter.
    let same = usage_key("acme", "exact-nl", " u-1 ", UsageCounter::TokenCalls);
    assert_eq!(
        store.take_unit(&same, day, 3).await.unwrap(),
        UsageTake::Refused { used: 3 },
        "{name}"
    );
    // A higher limit for the same window goes on from the count.
    assert_eq!(
        store.take_unit(&key, day, 4).await.unwrap(),
        UsageTake::Granted { used: 4 },
        "{name}"
    );
    // Windows are independent: the next day starts at zero, and the old day keeps its count.
    let next_day = UsageWindow::utc_day(t0() + Duration::days(1));
    assert_eq!(
        store.take_unit(&key, next_day, 3).await.unwrap(),
        UsageTake::Granted { used: 1 },
        "{name}"
    );
    assert_eq!(store.units_used(&key, day).await.unwrap(), 4, "{name}");
    // Keys are independent: another user, app, tenant or counter has a count of its own.
    for other in [
        usage_key("acme", "exact-nl", "U-2", UsageCounter::TokenCalls),
        usage_key("acme", "exact-be", "U-1", UsageCounter::TokenCalls),
        usage_key("globex", "exact-nl", "U-1", UsageCounter::TokenCalls),
        usage_key("acme", "exact-nl", "U-1", UsageCounter::FailedTokenCalls),
    ] {
        assert_eq!(
            store.take_unit(&other, day, 3).await.unwrap(),
            UsageTake::Granted { used: 1 },
            "{name}: {other:?}"
        );
    }
    // A user id is the last part of its key: one holding the separator cannot reach another's count.
    let tricky = usage_key(
        "acme",
        "exact-nl",
        "U-1#token_calls",
        UsageCounter::TokenCalls,
    );
    assert_eq!(store.units_used(&tricky, day).await.unwrap(), 0, "{name}");
    // Nothing is granted under a limit of zero, and nothing is counted.
    let unused = usage_key("acme", "exact-nl", "U-3", UsageCounter::TokenCalls);
    assert_eq!(
        store.take_unit(&unused, day, 0).await.unwrap(),
        UsageTake::Refused { used: 0 },
        "{name}"
    );
    assert_eq!(store.units_used(&unused, day).await.unwrap(), 0, "{name}");
    // Hours are windows too.
    let hour = UsageWindow::utc_hour(t0());
    let failures = key.with_counter(UsageCounter::FailedTokenCalls);
    store.take_unit(&failures, hour, 10).await.unwrap();
    store
        .take_unit(&failures, hour.previous(), 10)
        .await
        .unwrap();
    store
        .take_unit(&failures, hour.previous(), 10)
        .await
        .unwrap();
    assert_eq!(
        store.units_used(&failures, hour).await.unwrap(),
        1,
        "{name}"
    );
    assert_eq!(
        store.units_used(&failures, hour.previous()).await.unwrap(),
        2,
        "{name}"
    );
    // On DynamoDB each window is an item that TTL removes a day after the window ends.
    if let Some(aws) = &backend.aws {
        let items = aws
            .dynamodb
            .scan()
            .table_name(&aws.table)
            .filter_expression("entity = :usage")
            .expression_attribute_values(
                ":usage",
                aws_sdk_dynamodb::types::AttributeValue::S("usage".into()),
            )
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        let ttl_of_day = items
            .iter()
            .find(|item| {
                item.get("pk")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some("USAGE#acme#exact-nl#u-1")
                    && item
                        .get("sk")
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|sk| sk.starts_with("token_calls#2026-11-01T00:00:00"))
            })
            .and_then(|item| item.get("ttl"))
            .and_then(|v| v.as_n().ok())
            .cloned();
        assert_eq!(
            ttl_of_day,
            Some(day.expires_at().timestamp().to_string()),
            "{items:?}"
        );
    }
}

async fn twenty_concurrent_takers_of_a_limit_of_ten_get_exactly_ten_units(backend: Backend) {
    let key = usage_key("acme", "exact-nl", "U-1", UsageCounter::TokenCalls);
    let day = UsageWindow::utc_day(t0());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = backend.store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            store.take_unit(&key, day, 10).await.expect("take")
        }));
    }
    let mut granted = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            UsageTake::Granted { used } => granted.push(used),
            UsageTake::Refused { used } => {
                assert_eq!(used, 10, "{}", backend.name);
                refused += 1;
            }
        }
    }
    granted.sort_unstable();
    assert_eq!(
        granted,
        (1..=10).collect::<Vec<u32>>(),
        "{}: exactly ten takers are granted, each its own unit",
        backend.name
    );
    assert_eq!(refused, 10, "{}", backend.name);
    assert_eq!(
        backend.store.units_used(&key, day).await.unwrap(),
        10,
        "{}",
        backend.name
    );
}
