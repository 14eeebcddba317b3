//! `key create`, `key list` and `key revoke`.

use crate::cli::KeyCommand;
use crate::output::{when, when_or_dash, Failure, Output, Table};
use crate::store::{Admin, AtStore};
use broker_core::domain::*;
use broker_core::ids::{ConnectionId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A key as `key list --json` prints it: never the key, nor its hash.
#[derive(Serialize)]
struct KeyView<'a> {
    prefix: &'a str,
    label: &'a str,
    scope: &'a ApiKeyScope,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

/// What a key may do, in a few words.
fn describe_scope(scope: &ApiKeyScope) -> String {
    let mut parts = vec![match &scope.connections {
        Some(connections) => {
            let ids: Vec<&str> = connections.iter().map(|c| c.as_str()).collect();
            format!("only {}", ids.join(" "))
        }
        None => "all connections".into(),
    }];
    if scope.session_only {
        parts.push("sessions only".into());
    }
    if scope.manage_apps {
        parts.push("manages apps".into());
    }
    parts.join(", ")
}

pub async fn run(admin: &Admin, command: KeyCommand, out: &mut Output) -> Result<(), Failure> {
    let store = &admin.backend.store;
    match command {
        KeyCommand::Create {
            tenant,
            label,
            session_only,
            connections,
            manage_apps,
        } => {
            if manage_apps && (session_only || !connections.is_empty()) {
                return Err(Failure::refused(
                    "--manage-apps needs a key that reaches the whole tenant: leave out \
                     --session-only and --connection, or make a separate key for managing apps",
                ));
            }
            let tenant = crate::existing_tenant(admin, &tenant).await?;
            let mut ids = Vec::with_capacity(connections.len());
            for id in connections {
                ids.push(tenant_connection(admin, &tenant, &id).await?);
            }
            let scope = ApiKeyScope {
                session_only,
                connections: (!ids.is_empty()).then_some(ids),
                manage_apps,
            };
            let key = ApiKeyRecord::generate(tenant, &label, scope, Utc::now());
            store
                .insert_api_key(&key.record)
                .await
                .at(&admin.location)?;
            eprintln!(
                "API key {} created. Store it now: it is shown only this once.",
                key.record.prefix.as_str()
            );
            out.line(key.plaintext.expose())?;
        }
        KeyCommand::List { tenant, json } => {
            let tenant = crate::existing_tenant(admin, &tenant).await?;
            let keys = store.list_api_keys(&tenant).await.at(&admin.location)?;
            if json {
                let views: Vec<KeyView> = keys
                    .iter()
                    .map(|k| KeyView {
                        prefix: k.prefix.as_str(),
                        label: &k.label,
                        scope: &k.scope,
                        created_at: k.created_at,
                        revoked_at: k.revoked_at,
                    })
                    .collect();
                return out.json(&views);
            }
            let mut table = Table::new(&["PREFIX", "LABEL", "SCOPE", "CREATED", "REVOKED"]);
            for k in &keys {
                table.row(vec![
                    k.prefix.as_str().into(),
                    if k.label.is_empty() {
                        "-".into()
                    } else {
                        k.label.clone()
                    },
                    describe_scope(&k.scope),
                    when(k.created_at),
                    when_or_dash(k.revoked_at),
                ]);
            }
            if table.is_empty() {
                eprintln!("tenant {tenant} has no keys: make one with `broker-admin key create`");
            }
            out.table(&table)?;
        }
        KeyCommand::Revoke { tenant, prefix } => {
            let tenant = crate::existing_tenant(admin, &tenant).await?;
            let prefix = ApiKeyPrefix::parse(&prefix)?;
            if !store
                .revoke_api_key(&tenant, &prefix, Utc::now())
                .await
                .at(&admin.location)?
            {
                return Err(Failure::refused(format!(
                    "tenant {tenant} has no key {}: see `broker-admin key list --tenant {tenant}`",
                    prefix.as_str()
                )));
            }
            out.line(format!("revoked {}", prefix.as_str()))?;
        }
    }
    Ok(())
}

/// A connection a key may be limited to: it must exist and belong to the key's tenant, or the key
/// would reach nothing (and a typo would go unnoticed until the integration's calls are refused).
async fn tenant_connection(
    admin: &Admin,
    tenant: &TenantId,
    value: &str,
) -> Result<ConnectionId, Failure> {
    let id = ConnectionId::parse(value)?;
    match admin
        .backend
        .store
        .get_tenant_connection(tenant, &id)
        .await
        .at(&admin.location)?
    {
        Some(_) => Ok(id),
        None => Err(Failure::refused(format!(
            "--connection {id}: tenant {tenant} has no such connection; see `broker-admin \
             connection list --tenant {tenant}` for its connections' ids"
        ))),
    }
}
