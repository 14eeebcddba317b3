//! The storage contract: every test here runs unchanged against both backends — the embedded store,
//! and the AWS adapters (the real aws-sdk clients) against moto server. The core's unit tests run on
//! the embedded store too (in memory), so they are held to this contract without a store of their own.

use broker_core::domain::*;
use broker_core::ids::{AppId, ConnectionId, LeaseOwner, TenantId, WriteId};
use broker_core::ports::*;
use broker_core::secret::{
    AccessToken, ClientSecret, LegacyAccessSecret, LegacyAccessToken, RefreshToken,
};
use broker_core::{Clock, CredentialKeeper, ManualClock};
use broker_tests::backends::Backend;
use broker_tests::vaults::RecordingVault;
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::sync::Arc;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(broker_tests::backends::embedded()).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(broker_tests::backends::aws().await).await;
                }
            )*
        }
    };
}

mod apps;
mod concurrency;
mod credentials;
mod events;
mod history;
mod records;
mod usage;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn new_connection(tenant_id: &TenantId, created: DateTime<Utc>) -> Connection {
    let mut c = Connection::new(
        tenant_id.clone(),
        AppId::parse("exact-nl").unwrap(),
        ProviderKind::ExactOnline,
        Recipients::parse(&["finance@example.com"]).unwrap(),
        created,
    );
    c.display_name = Some("Acme B.V.".into());
    c
}

async fn insert(backend: &Backend, connection: &Connection) {
    backend
        .store
        .insert_connection(connection, &[])
        .await
        .expect("insert");
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
