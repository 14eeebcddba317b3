//! The words of each email: which connection, what happened or will happen and by when, what to do,
//! and the reconnect link. Nothing internal: no token, no connection id, no secret.

use super::email::Email;
use super::record::{NoticeKind, NoticeSubject, Reminder, Warning, WarningKind};
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

/// The names an email's sentences are made of.
struct Names<'a> {
    connection: &'a Connection,
    provider: &'static str,
    /// The connection as people know it (see [`connection_label`]).
    label: String,
    tenant: &'a str,
    /// "Open the link below and sign in to … to authorize the connection again."
    sign_in: String,
}

/// What an email says, before it is laid out: its subject line, what is happening, what to do.
type Wording = (String, String, String);

pub fn compose(facts: &EmailFacts<'_>) -> Email {
    let n = names(facts);
    let wording = wording(facts, &n);
    render(facts, &n, wording)
}

fn names<'a>(facts: &EmailFacts<'a>) -> Names<'a> {
    let c = facts.connection;
    let provider = c.provider.display_name();
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
    Names {
        connection: c,
        provider,
        label: connection_label(c),
        tenant: facts.tenant_name,
        sign_in: format!(
            "Open the link below and sign in to {provider}{who} to authorize the connection again."
        ),
    }
}

/// The wording for each kind of notice.
fn wording(facts: &EmailFacts<'_>, n: &Names<'_>) -> Wording {
    let (provider, label, tenant, sign_in) = (n.provider, &n.label, n.tenant, &n.sign_in);
    match (facts.kind, facts.subject) {
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
        (NoticeKind::Warning(kind), NoticeSubject::Warning(w)) => warning(kind, w, n),
        (NoticeKind::Reminder(_), NoticeSubject::Reminder(r)) => reminder(r, n),
        // A subject that does not match its kind cannot be stored; say something true anyway.
        (_, _) => (
            format!("Check the {provider} connection for {tenant}"),
            format!("{label} needs attention."),
            sign_in.clone(),
        ),
    }
}

/// A warning that the connection is about to stop working.
fn warning(kind: WarningKind, w: &Warning, n: &Names<'_>) -> Wording {
    let (c, provider, label, tenant, sign_in) =
        (n.connection, n.provider, &n.label, n.tenant, &n.sign_in);
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

/// A reminder while the connection waits for a person.
fn reminder(r: &Reminder, n: &Names<'_>) -> Wording {
    let (c, provider, label, tenant, sign_in) =
        (n.connection, n.provider, &n.label, n.tenant, &n.sign_in);
    let days = (r.created_at - r.since).num_days().max(1);
    let waited = format!("{days} day{}", if days == 1 { "" } else { "s" });
    match &c.status() {
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

/// The email around the wording: greeting, the link and until when it works, why the reader gets it.
fn render(facts: &EmailFacts<'_>, n: &Names<'_>, (subject, what, todo): Wording) -> Email {
    let (c, provider, label, tenant) = (n.connection, n.provider, &n.label, n.tenant);
    let mut text = format!(
        "Hello,\n\nThis is about {tenant}'s connection to {label}.\n\nWhat is happening: {what}\n\nWhat to do: {todo}\n"
    );
    let mut html = format!(
        "<!DOCTYPE html><html><body><p>Hello,</p><p>This is about {}&#39;s connection to <strong>{}</strong>.</p><p><strong>What is happening:</strong> {}</p><p><strong>What to do:</strong> {}</p>",
        escape_html(tenant),
        escape_html(label),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, StatusEvent};

    #[test]
    fn a_reconnect_email_says_what_happened_what_to_do_and_carries_the_link_once_escaped() {
        let now = Utc::now();
        let mut c = crate::fixtures::acme_connection(now);
        c.display_name = Some("Bakker & Zn".into());
        let transition = c
            .apply(StatusEvent::Authorized, Actor::System("test".into()), now)
            .unwrap();
        let subject = NoticeSubject::Transition(transition);
        let link = Url::parse("https://broker.example/connect/abc?x=1&y=2").unwrap();
        let from = EmailAddress::parse("broker@example.com").unwrap();
        let email = compose(&EmailFacts {
            kind: NoticeKind::ReconnectRequired,
            subject: &subject,
            connection: &c,
            tenant_name: "Acme <Books>",
            link: Some((&link, now)),
            from: &from,
            reply_to: None,
        });
        assert_eq!(
            email.subject,
            "Action needed: reconnect Exact Online for Acme <Books>"
        );
        assert!(email
            .text
            .contains("What to do: Open the link below and sign in to Exact Online"));
        assert!(email
            .text
            .contains("Reconnect: https://broker.example/connect/abc?x=1&y=2"));
        assert!(email.html.contains("Acme &lt;Books&gt;"), "{}", email.html);
        assert!(email.html.contains("(Bakker &amp; Zn)"), "{}", email.html);
        assert!(email
            .html
            .contains("href=\"https://broker.example/connect/abc?x=1&amp;y=2\""));
        assert_eq!(email.to.len(), 1);
    }
}
