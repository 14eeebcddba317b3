//! `connection list` and `connection show`.

use crate::cli::ConnectionCommand;
use crate::output::{when, when_or_dash, Failure, Output, Table};
use crate::store::{Admin, AtStore};
use broker_core::domain::*;
use broker_core::history::{connection_history, describe_fields, HistoryEvent, MAX_LIMIT};
use broker_core::ids::ConnectionId;
use broker_core::ports::PageRequest;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One row of `connection list --json`.
#[derive(Serialize)]
struct ConnectionRow<'a> {
    id: &'a str,
    display_name: Option<&'a str>,
    app: &'a str,
    provider: ProviderKind,
    status: StatusKind,
    /// The provider's organisation or division it reaches, once authorized.
    #[serde(rename = "where")]
    place: Option<String>,
    created_at: DateTime<Utc>,
}

impl<'a> ConnectionRow<'a> {
    fn of(c: &'a Connection) -> Self {
        ConnectionRow {
            id: c.id.as_str(),
            display_name: c.display_name.as_deref(),
            app: c.app.as_str(),
            provider: c.provider,
            status: c.status().kind(),
            place: c.context.as_ref().map(|ctx| ctx.describe()),
            created_at: c.created_at,
        }
    }
}

/// `connection show --json`: the connection and its whole history (the events the API's
/// `GET /v1/connections/{id}/events` answers with, newest first). No token is part of it.
#[derive(Serialize)]
struct ConnectionDetail<'a> {
    #[serde(flatten)]
    row: ConnectionRow<'a>,
    tenant: &'a str,
    /// Why it needs a person, or why it was disabled.
    reason: Option<String>,
    status_since: DateTime<Utc>,
    recipients: Vec<String>,
    authorized_by: Option<&'a Identity>,
    authorized_at: Option<DateTime<Utc>>,
    /// Only this person may authorize it.
    required_identity: Option<&'a Identity>,
    access_expires_at: Option<DateTime<Utc>>,
    refresh_expires_at: Option<DateTime<Utc>>,
    next_refresh_at: Option<DateTime<Utc>>,
    history: Vec<HistoryEvent>,
}

fn reason(status: &ConnectionStatus) -> Option<String> {
    match status {
        ConnectionStatus::ReconnectRequired { reason } => Some(reason.explain()),
        ConnectionStatus::Disabled { reason } => Some(reason.clone()),
        _ => None,
    }
}

pub async fn run(
    admin: &Admin,
    command: ConnectionCommand,
    out: &mut Output,
) -> Result<(), Failure> {
    match command {
        ConnectionCommand::List { tenant, json } => {
            let tenant = crate::existing_tenant(admin, &tenant).await?;
            let mut connections = Vec::new();
            let mut cursor = None;
            loop {
                let page = admin
                    .backend
                    .store
                    .list_connections(&tenant, PageRequest::after(200, cursor))
                    .await
                    .at(&admin.location)?;
                connections.extend(page.items);
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
            if json {
                let rows: Vec<ConnectionRow> = connections.iter().map(ConnectionRow::of).collect();
                return out.json(&rows);
            }
            let mut table = Table::new(&["ID", "NAME", "APP", "PROVIDER", "STATUS", "WHERE"]);
            for c in &connections {
                let row = ConnectionRow::of(c);
                table.row(vec![
                    row.id.into(),
                    row.display_name.unwrap_or("-").into(),
                    row.app.into(),
                    c.provider.display_name().into(),
                    row.status.to_string(),
                    row.place.unwrap_or_else(|| "-".into()),
                ]);
            }
            if table.is_empty() {
                eprintln!(
                    "tenant {tenant} has no connections: an integration creates them through the API"
                );
            }
            out.table(&table)
        }
        ConnectionCommand::Show { tenant, id, json } => {
            let tenant = crate::existing_tenant(admin, &tenant).await?;
            let id = ConnectionId::parse(id)?;
            let c = admin
                .backend
                .store
                .get_tenant_connection(&tenant, &id)
                .await
                .at(&admin.location)?
                .ok_or_else(|| {
                    Failure::refused(format!(
                        "tenant {tenant} has no connection {id}: see `broker-admin connection \
                         list --tenant {tenant}` for its connections' ids"
                    ))
                })?;
            let detail = ConnectionDetail {
                row: ConnectionRow::of(&c),
                tenant: c.tenant.as_str(),
                reason: reason(c.status()),
                status_since: c.status_since(),
                recipients: c
                    .recipients
                    .addresses()
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
                authorized_by: c.authorized_by.as_ref(),
                authorized_at: c.authorized_at,
                required_identity: c.required_identity.as_ref(),
                access_expires_at: c.access_expires_at,
                refresh_expires_at: c.refresh_expires_at,
                next_refresh_at: c.next_refresh_at,
                history: history(admin, &id).await?,
            };
            if json {
                out.json(&detail)
            } else {
                print_detail(&detail, c.provider, out)
            }
        }
    }
}

fn print_detail(
    d: &ConnectionDetail,
    provider: ProviderKind,
    out: &mut Output,
) -> Result<(), Failure> {
    out.field("connection", d.row.id)?;
    out.field("name", d.row.display_name.unwrap_or("-"))?;
    out.field(
        "app",
        format!("{} ({})", d.row.app, provider.display_name()),
    )?;
    out.field(
        "status",
        format!("{} since {}", d.row.status, when(d.status_since)),
    )?;
    if let Some(reason) = &d.reason {
        out.field("why", reason)?;
    }
    out.field("where", d.row.place.as_deref().unwrap_or("-"))?;
    out.field(
        "authorized by",
        match (d.authorized_by, d.authorized_at) {
            (Some(who), Some(at)) => format!("{} at {}", who.describe(), when(at)),
            (Some(who), None) => who.describe(),
            (None, _) => "- (not yet authorized)".into(),
        },
    )?;
    if let Some(required) = d.required_identity {
        out.field("only by", required.describe())?;
    }
    out.field(
        "recipients",
        if d.recipients.is_empty() {
            "none (no emails are sent)".to_string()
        } else {
            d.recipients.join(", ")
        },
    )?;
    out.field("created", when(d.row.created_at))?;
    out.field("access until", when_or_dash(d.access_expires_at))?;
    out.field("refresh until", when_or_dash(d.refresh_expires_at))?;
    out.field("next refresh", when_or_dash(d.next_refresh_at))?;
    if d.history.is_empty() {
        return out.field("history", "none yet");
    }
    out.line("history (newest first):")?;
    for event in &d.history {
        out.line(format!("  {}  {}", when(event.at()), describe_event(event)))?;
    }
    Ok(())
}

/// A connection's whole history, newest first: the list `GET /v1/connections/{id}/events` pages
/// through.
async fn history(admin: &Admin, id: &ConnectionId) -> Result<Vec<HistoryEvent>, Failure> {
    let mut events = Vec::new();
    let mut cursor = None;
    loop {
        let page = connection_history(
            admin.backend.store.as_ref(),
            id,
            MAX_LIMIT,
            cursor.as_deref(),
        )
        .await
        .at(&admin.location)?;
        events.extend(page.events);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(events),
        }
    }
}

fn actor(a: &Actor) -> String {
    match a {
        Actor::System(who) => format!("system {who}"),
        Actor::ApiKey(prefix) => format!("API key {prefix}"),
        Actor::Operator(who) => format!("operator {who}"),
        Actor::EndUser(who) => format!("user {who}"),
    }
}

/// One history entry for people: what happened, who did it and why.
fn describe_event(event: &HistoryEvent) -> String {
    match event {
        HistoryEvent::Transition(t) => format!(
            "status {} -> {}  by {}: {}",
            t.from,
            t.to,
            actor(&t.actor),
            t.reason
        ),
        HistoryEvent::Notice(n) => {
            format!(
                "notice {}: {}{}{}",
                n.notice,
                n.state,
                n.recipients
                    .map_or(String::new(), |r| format!(" to {r} recipient(s)")),
                n.settled_at
                    .map_or(String::new(), |at| format!(" at {}", when(at))),
            ) + &n
                .detail
                .as_ref()
                .map_or(String::new(), |d| format!(" ({d})"))
        }
        HistoryEvent::Change(c) => format!(
            "changed by {}: {}",
            actor(&c.actor),
            describe_fields(&c.fields)
        ),
        HistoryEvent::Sessions(s) => format!(
            "{} token(s) handed out to API key {} ({} .. {})",
            s.count,
            s.key_prefix,
            when(s.first),
            when(s.last)
        ),
    }
}
