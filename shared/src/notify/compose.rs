//! The words of each email: which connection, what happened or will happen and by when, what to do,
//! and the reconnect link. Nothing internal: no token, no connection id, no secret.

use super::email::Email;
use super::record::{NoticeKind, NoticeSubject, WarningKind};
use crate::domain::{Connection, ConnectionStatus, EmailAddress, ProviderKind};
use crate::html::escape as escape_html;
use chrono::{DateTime, Utc};
use url::Url;

/// What an email is built from.
pub struct EmailFacts<'a> {
    pub kind: NoticeKind,
    pub subject: &'a NoticeSubject,
    pub connection: &'a Connection,
    pub tenant_name: &'a str,
    /// The reconnect link and until when it works (none for "it works again").
    pub link: Option<(&'a Url, DateTime<Utc>)>,
    pub from: &'a EmailAddress,
    pub reply_to: Option<&'a EmailAddress>,
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%A %-d %B %Y, %H:%M UTC").to_string()
}

/// "Exact Online, division 123 (Acme B.V.)".
fn connection_label(c: &Connection) -> String {
    let mut label = c.provider.display_name().to_string();
    if let Some(context) = &c.context {
        label.push_str(", ");
        label.push_str(&context.describe());
    }
    if let Some(name) = c.display_name.as_deref().filter(|n| !n.trim().is_empty()) {
        label.push_str(&format!(" ({})", name.trim()));
    }
    label
}

pub fn compose(facts: &EmailFacts<'_>) -> Email {
    let c = facts.connection;
    let provider = c.provider.display_name();
    let label = connection_label(c);
    let tenant = facts.tenant_name;
    let who = c
        .required_identity
        .as_ref()
        .map(|i| {
            format!(
                " as {}",
                i.display_name.clone().unwrap_or_else(|| i.subject.clone())
            )
        })
        .unwrap_or_default();
    let sign_in = format!(
        "Open the link below and sign in to {provider}{who} to authorize the connection again."
    );
    let (subject, what, todo): (String, String, String) = match (facts.kind, facts.subject) {
        (NoticeKind::ReconnectRequired, NoticeSubject::Transition(t)) => (
            format!("Action needed: reconnect {provider} for {tenant}"),
            format!(
                "Since {}, {tenant} can no longer reach {label}. {}",
                when(t.at),
                t.reason
            ),
            sign_in.clone(),
        ),
        (NoticeKind::Disabled, NoticeSubject::Transition(t)) => (
            format!("Action needed: {provider} disabled the connection for {tenant}"),
            format!(
                "Since {}, {provider} refuses {label}: it blocked, disabled or deleted the organisation. {provider} said: {}",
                when(t.at),
                t.reason
            ),
            format!("Resolve it with {provider} first; then open the link below and authorize the connection again."),
        ),
        (NoticeKind::Recovered, NoticeSubject::Transition(t)) => (
            format!("{provider} works again for {tenant}"),
            format!("Since {}, {label} is connected again.", when(t.at)),
            "Nothing more to do.".to_string(),
        ),
        (NoticeKind::Warning(kind), NoticeSubject::Warning(w)) => {
            let by = w.deadline.map(when);
            match kind {
                WarningKind::AbsoluteExpiry => {
                    let mut todo = format!("Reconnect before then to keep the integration running. {sign_in}");
                    if c.provider == ProviderKind::Acumatica {
                        todo.push_str(" On Acumatica 2024 R1 or newer, an administrator can set the connected application's refresh tokens to Sliding Expiration with an infinite lifetime (Connected Applications screen) so this stops recurring.");
                    }
                    (
                        format!("{provider} connection for {tenant} stops working {}", by.clone().map(|b| format!("on {b}")).unwrap_or_else(|| "soon".into())),
                        format!("{provider} ends the authorization of {label} on {}: it lasts a fixed time that refreshing cannot extend.", by.unwrap_or_else(|| "a date it does not tell".into())),
                        todo,
                    )
                }
                WarningKind::IdleExpiry => (
                    format!("{provider} connection for {tenant} is failing and will expire"),
                    format!("Refreshing {label} keeps failing. If it cannot be refreshed by {}, its authorization expires.", by.unwrap_or_else(|| "its expiry".into())),
                    format!("To be safe, reconnect now. {sign_in}"),
                ),
                WarningKind::LegacyCredentials => (
                    format!("{provider} connection for {tenant} uses retired credentials"),
                    format!("{label} still signs in with old-style credentials, which {provider} is retiring in favour of OAuth 2.0; once they are refused the integration stops."),
                    format!("Reconnect to move it to OAuth 2.0. {sign_in}"),
                ),
            }
        }
        (NoticeKind::Reminder(_), NoticeSubject::Reminder(r)) => {
            let days = (r.created_at - r.since).num_days().max(1);
            let waited = format!("{days} day{}", if days == 1 { "" } else { "s" });
            match &c.status {
                ConnectionStatus::Disabled { reason } => (
                    format!("Reminder: {provider} still refuses the connection for {tenant}"),
                    format!(
                        "Since {} ({waited} ago), {provider} refuses {label}: it blocked, disabled or deleted the organisation. {provider} said: {reason}",
                        when(r.since)
                    ),
                    format!("Resolve it with {provider} first; then open the link below and authorize the connection again."),
                ),
                ConnectionStatus::ReconnectRequired { reason } => (
                    format!("Reminder: reconnect {provider} for {tenant}"),
                    format!(
                        "Since {} ({waited} ago), {tenant} can no longer reach {label}. {}",
                        when(r.since),
                        reason.explain()
                    ),
                    sign_in.clone(),
                ),
                // Sent only while the wait lasts (the notifier checks); say something true anyway.
                _ => (
                    format!("Reminder: check the {provider} connection for {tenant}"),
                    format!("Since {}, {label} has needed attention.", when(r.since)),
                    sign_in.clone(),
                ),
            }
        }
        // A subject that does not match its kind cannot be stored; say something true anyway.
        (_, _) => (
            format!("Check the {provider} connection for {tenant}"),
            format!("{label} needs attention."),
            sign_in.clone(),
        ),
    };
    let mut text = format!(
        "Hello,\n\nThis is about {tenant}'s connection to {label}.\n\nWhat is happening: {what}\n\nWhat to do: {todo}\n"
    );
    let mut html = format!(
        "<!DOCTYPE html><html><body><p>Hello,</p><p>This is about {}&#39;s connection to <strong>{}</strong>.</p><p><strong>What is happening:</strong> {}</p><p><strong>What to do:</strong> {}</p>",
        escape_html(tenant),
        escape_html(&label),
        escape_html(&what),
        escape_html(&todo)
    );
    if let Some((link, until)) = facts.link {
        text.push_str(&format!(
            "\nReconnect: {link}\n(The link works until {}. Do not forward it: anyone with it can reconnect.)\n",
            when(until)
        ));
        html.push_str(&format!(
            "<p><a href=\"{0}\">Reconnect {1}</a></p><p>Or copy this link into your browser: {0}<br>It works until {2}. Do not forward it: anyone with it can reconnect.</p>",
            escape_html(link.as_str()),
            escape_html(provider),
            escape_html(&when(until))
        ));
    }
    text.push_str(&format!(
        "\nYou receive this because your address is named on this connection in {tenant}.\n"
    ));
    html.push_str(&format!(
        "<p style=\"color:#666\">You receive this because your address is named on this connection in {}.</p></body></html>",
        escape_html(tenant)
    ));
    Email {
        from: facts.from.clone(),
        reply_to: facts.reply_to.cloned(),
        to: c.recipients.addresses().to_vec(),
        subject,
        text,
        html,
    }
}
