//! Connect and reconnect links. A link is `<public base>/connect/<token>`: the token is 256 random
//! bits, stored only as its SHA-256, names one connection and one purpose, and expires. A link never
//! carries the connection id, so knowing an id gives no way in.

use crate::context::BrokerContext;
use crate::domain::{AuthorizationPurpose, ConnectLink, Consumed, OneTimeKey};
use crate::ids::{ConnectionId, TenantId};
use crate::ports::StoreError;
use crate::secret::OneTimeSecret;
use chrono::Duration;
use url::Url;

/// Long enough for an emailed link to be opened after a weekend and a holiday; short enough that an
/// old email in a forwarded thread stops working.
pub const LINK_LIFETIME: Duration = Duration::days(7);

/// Issues a new link for `connection`, retiring the links issued before it. The returned URL is the
/// only place the token exists.
pub async fn issue_link(
    ctx: &BrokerContext,
    tenant: &TenantId,
    connection: &ConnectionId,
    purpose: AuthorizationPurpose,
) -> Result<Url, StoreError> {
    let (token, key) = crate::domain::new_one_time_secret();
    let generation = next_link_generation(ctx, tenant, connection).await?;
    let now = ctx.clock.now();
    let link = ConnectLink {
        tenant: tenant.clone(),
        connection: connection.clone(),
        purpose,
        generation,
        created_at: now,
        expires_at: now + LINK_LIFETIME,
    };
    ctx.backend.store.put_link(&key, &link).await?;
    Ok(ctx.public_url(&format!("connect/{}", token.expose())))
}

/// Moves the connection to its next link generation (retiring every link issued before) and returns
/// it; fenced on the connection's version and retried when a refresh or another writer got there first.
async fn next_link_generation(
    ctx: &BrokerContext,
    tenant: &TenantId,
    id: &ConnectionId,
) -> Result<u64, StoreError> {
    let store = &ctx.backend.store;
    for _ in 0..5 {
        let Some(mut connection) = store.get_tenant_connection(tenant, id).await? else {
            return Err(StoreError::NotFound(format!("connection {id}")));
        };
        connection.link_generation += 1;
        match store
            .save_connection(&connection, crate::ports::Fence::Version, &[])
            .await
        {
            Err(StoreError::Conflict) => continue,
            other => return other.map(|saved| saved.link_generation),
        }
    }
    Err(StoreError::Conflict)
}

/// Looks up the link a browser presented (the last path segment of the link URL).
pub async fn resolve_link(
    ctx: &BrokerContext,
    token: &str,
) -> Result<Consumed<ConnectLink>, StoreError> {
    // Tokens are 43 URL-safe base64 characters; anything else cannot be one and is not looked up.
    if token.len() != 43
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok(Consumed::Unknown);
    }
    let key = OneTimeKey::of(&OneTimeSecret::new(token));
    ctx.backend.store.get_link(&key, ctx.clock.now()).await
}
