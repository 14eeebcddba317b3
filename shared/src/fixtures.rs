//! The connection most unit tests start from: a tenant's Exact Online connection, new, with one
//! recipient. Tests that need other parts set them on the copy they get.

use crate::domain::{Connection, ProviderKind, Recipients};
use crate::ids::{AppId, TenantId};
use chrono::{DateTime, Utc};

pub(crate) fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// A new connection of `tenant` to the app `exact-nl`, created at `created`, warning
/// `finance@example.com`.
pub(crate) fn connection(tenant: &TenantId, created: DateTime<Utc>) -> Connection {
    Connection::new(
        tenant.clone(),
        AppId::parse("exact-nl").unwrap(),
        ProviderKind::ExactOnline,
        Recipients::parse(&["finance@example.com"]).unwrap(),
        created,
    )
}

/// [`connection`] of the tenant `acme`.
pub(crate) fn acme_connection(created: DateTime<Utc>) -> Connection {
    connection(&acme(), created)
}
