//! The words of each email: which connection, what happened or will happen and by when, what to do,
//! and the reconnect link, in the reader's language and time zone. Nothing internal: no token, no
//! connection id, no secret. The provider's own words (an error code, its reason for blocking) go
//! only into the details for the reader's IT contact, which the reader need not understand.
//!
//! The wording lives in `locales/<language>/emails.ftl`; the layout in `templates/emails/`.

use super::email::Email;
use super::record::{NoticeKind, NoticeSubject, Reminder, Warning, WarningKind};
use crate::domain::{
    AccentColour, Connection, ConnectionStatus, EmailAddress, Locale, ProviderContext,
    ProviderKind, ReconnectKind, ReconnectReason, Tenant, TimeZone,
};
use crate::wording::{words, WordValue, Words};
use askama::Template;
use chrono::{DateTime, Utc};
use url::Url;

/// What an email is built from.
pub struct EmailFacts<'a> {
    pub kind: NoticeKind,
    pub subject: &'a NoticeSubject,
    pub connection: &'a Connection,
    /// The tenant the connection belongs to; `None` when its record is gone.
    pub tenant: Option<&'a Tenant>,
    /// The reconnect link and until when it works (none for "it works again").
    pub link: Option<(&'a Url, DateTime<Utc>)>,
    pub from: &'a EmailAddress,
    pub reply_to: Option<&'a EmailAddress>,
}

/// The language and time zone of the people on a connection: the connection's own, else its
/// tenant's, else English and UTC.
pub fn reader(connection: &Connection, tenant: Option<&Tenant>) -> (Locale, TimeZone) {
    let locale = connection
        .locale
        .or_else(|| tenant.and_then(|t| t.locale))
        .unwrap_or(Locale::English);
    let zone = connection
        .time_zone
        .or_else(|| tenant.and_then(|t| t.time_zone))
        .unwrap_or(TimeZone::UTC);
    (locale, zone)
}

pub fn compose(facts: &EmailFacts<'_>) -> Email {
    let (locale, zone) = reader(facts.connection, facts.tenant);
    let s = Sentences::new(facts, words(locale), zone);
    let content = s.content(facts);
    let view = s.view(facts, content);
    Email {
        from: facts.from.clone(),
        reply_to: facts.reply_to.cloned(),
        to: facts.connection.recipients.addresses().to_vec(),
        subject: view.subject.clone(),
        text: render(&TextEmail { v: &view }),
        html: render(&HtmlEmail { v: &view }),
        topic: format!(
            "{}-{}",
            facts.kind.as_str(),
            facts.connection.provider.display_name()
        )
        .to_lowercase()
        .replace(['_', ' '], "-"),
    }
}

/// Rendering writes into a String from fields that are all plain strings; it fails only if a
/// `Display` implementation does, which none of these has.
fn render(template: &impl Template) -> String {
    template
        .render()
        .expect("an email template renders from plain strings")
}

/// What an email says, before it is laid out.
struct Content {
    subject: String,
    what: String,
    todo: String,
    /// A provider-specific step that helps, after what to do.
    hint: Option<String>,
    /// What the provider said, word for word, for the details section.
    provider_said: Option<String>,
}

/// The reader's words, with the names every sentence is made of filled in.
struct Sentences<'a> {
    words: &'static Words,
    zone: TimeZone,
    connection: &'a Connection,
    provider: String,
    /// The connection as people know it: "Exact Online, division 123 (Acme B.V.)".
    label: String,
    tenant: String,
}

impl<'a> Sentences<'a> {
    fn new(facts: &EmailFacts<'a>, words: &'static Words, zone: TimeZone) -> Self {
        let c = facts.connection;
        let provider = match c.provider {
            ProviderKind::Generic => words.text("email-provider-generic"),
            other => other.display_name().to_owned(),
        };
        let tenant = facts
            .tenant
            .map(|t| t.display_name.clone())
            .unwrap_or_else(|| words.text("email-tenant-unknown"));
        let mut label = provider.clone();
        if let Some(context) = &c.context {
            label.push_str(", ");
            label.push_str(&context_label(words, context));
        }
        if let Some(name) = c.display_name.as_deref().filter(|n| !n.trim().is_empty()) {
            label.push_str(&format!(" ({})", name.trim()));
        }
        Self {
            words,
            zone,
            connection: c,
            provider,
            label,
            tenant,
        }
    }

    fn moment(&self, at: DateTime<Utc>) -> String {
        self.words.moment(at, self.zone)
    }

    /// The message `key` with the names and `extra` arguments filled in.
    fn say(&self, key: &str, extra: &[(&str, WordValue<'_>)]) -> String {
        let mut args: Vec<(&str, WordValue<'_>)> = vec![
            ("provider", WordValue::from(self.provider.as_str())),
            ("tenant", WordValue::from(self.tenant.as_str())),
            ("connection", WordValue::from(self.label.as_str())),
        ];
        args.extend(extra.iter().cloned());
        self.words.text_with(key, &args)
    }

    /// "Open the link below and sign in to … (as …) to authorize the connection again."
    fn sign_in(&self) -> String {
        match &self.connection.required_identity {
            Some(person) => {
                let name = person.display_name.as_deref().unwrap_or(&person.subject);
                self.say("email-todo-sign-in-as", &[("person", name.into())])
            }
            None => self.say("email-todo-sign-in", &[]),
        }
    }

    fn content(&self, facts: &EmailFacts<'_>) -> Content {
        match (facts.kind, facts.subject) {
            (NoticeKind::ReconnectRequired, NoticeSubject::Transition(t)) => {
                self.waiting(t.at, None)
            }
            (NoticeKind::Disabled, NoticeSubject::Transition(t)) => self.waiting(t.at, None),
            (NoticeKind::Recovered, NoticeSubject::Transition(t)) => Content {
                subject: self.say("email-subject-recovered", &[]),
                what: self.say(
                    "email-what-recovered",
                    &[("since", self.moment(t.at).into())],
                ),
                todo: self.say("email-todo-recovered", &[]),
                hint: None,
                provider_said: None,
            },
            (NoticeKind::Warning(kind), NoticeSubject::Warning(w)) => self.warning(kind, w),
            (NoticeKind::Reminder(_), NoticeSubject::Reminder(r)) => self.reminder(r),
            // A subject that does not match its kind cannot be stored; say something true anyway.
            (_, subject) => self.check(subject_time(subject)),
        }
    }

    /// A connection that waits for a person since `since` (a reminder says for how many days):
    /// the words follow its current status, which holds the reason in full.
    fn waiting(&self, since: DateTime<Utc>, days: Option<i64>) -> Content {
        let since_words = self.moment(since);
        let mut extra: Vec<(&str, WordValue<'_>)> = vec![("since", since_words.into())];
        if let Some(days) = days {
            extra.push(("days", days.into()));
        }
        let reminder = days.is_some();
        match self.connection.status() {
            ConnectionStatus::ReconnectRequired { reason } => {
                let ReconnectReason { kind, detail } = reason;
                extra.push(("reason", self.reason(*kind).into()));
                let (subject, what) = if reminder {
                    (
                        "email-subject-reminder-reconnect",
                        "email-what-reconnect-reminder",
                    )
                } else {
                    ("email-subject-reconnect", "email-what-reconnect")
                };
                let todo = match kind {
                    ReconnectKind::ClientMisconfigured => {
                        self.say("email-todo-client-misconfigured", &[])
                    }
                    _ => self.sign_in(),
                };
                Content {
                    subject: self.say(subject, &[]),
                    what: self.say(what, &extra),
                    todo,
                    hint: None,
                    provider_said: Some(detail.clone()).filter(|d| !d.trim().is_empty()),
                }
            }
            ConnectionStatus::Disabled { reason } => {
                let (subject, what) = if reminder {
                    (
                        "email-subject-reminder-disabled",
                        "email-what-disabled-reminder",
                    )
                } else {
                    ("email-subject-disabled", "email-what-disabled")
                };
                Content {
                    subject: self.say(subject, &[]),
                    what: self.say(what, &extra),
                    todo: self.say("email-todo-disabled", &[]),
                    hint: None,
                    provider_said: Some(reason.clone()).filter(|r| !r.trim().is_empty()),
                }
            }
            // Sent only while the wait lasts (the notifier checks); say something true anyway.
            _ => self.check(since),
        }
    }

    fn reason(&self, kind: ReconnectKind) -> String {
        let key = match kind {
            ReconnectKind::GrantRevoked => "email-reason-grant-revoked",
            ReconnectKind::RefreshTokenExpired => "email-reason-refresh-token-expired",
            ReconnectKind::RefreshTokenReused => "email-reason-refresh-token-reused",
            ReconnectKind::RefreshInterrupted => "email-reason-refresh-interrupted",
            ReconnectKind::LegacyCredentialsRetired => "email-reason-legacy-retired",
            ReconnectKind::RepeatedFailures => "email-reason-repeated-failures",
            ReconnectKind::ClientMisconfigured => "email-reason-client-misconfigured",
        };
        self.say(key, &[])
    }

    /// A warning that the connection is about to stop working.
    fn warning(&self, kind: WarningKind, w: &Warning) -> Content {
        let deadline = w.deadline.map(|d| self.moment(d));
        let dated = |key: &str| match &deadline {
            Some(d) => self.say(key, &[("deadline", d.as_str().into())]),
            None => self.say(&format!("{key}-undated"), &[]),
        };
        let then_sign_in = |key: &str| format!("{} {}", self.say(key, &[]), self.sign_in());
        match kind {
            WarningKind::AbsoluteExpiry => Content {
                subject: dated("email-subject-absolute-expiry"),
                what: dated("email-what-absolute-expiry"),
                todo: then_sign_in("email-todo-absolute-expiry"),
                hint: (self.connection.provider == ProviderKind::Acumatica)
                    .then(|| self.say("email-hint-acumatica-sliding", &[])),
                provider_said: None,
            },
            WarningKind::IdleExpiry => Content {
                subject: self.say("email-subject-idle-expiry", &[]),
                what: dated("email-what-idle-expiry"),
                todo: then_sign_in("email-todo-idle-expiry"),
                hint: None,
                provider_said: match self.connection.status() {
                    ConnectionStatus::RefreshFailing { last_error, .. } => {
                        Some(last_error.clone()).filter(|e| !e.trim().is_empty())
                    }
                    _ => None,
                },
            },
            WarningKind::LegacyCredentials => Content {
                subject: self.say("email-subject-legacy", &[]),
                what: self.say("email-what-legacy", &[]),
                todo: then_sign_in("email-todo-legacy"),
                hint: None,
                provider_said: None,
            },
        }
    }

    /// A reminder while the connection waits for a person.
    fn reminder(&self, r: &Reminder) -> Content {
        let days = (r.created_at - r.since).num_days().max(1);
        self.waiting(r.since, Some(days))
    }

    fn check(&self, since: DateTime<Utc>) -> Content {
        Content {
            subject: self.say("email-subject-check", &[]),
            what: self.say("email-what-check", &[("since", self.moment(since).into())]),
            todo: self.sign_in(),
            hint: None,
            provider_said: None,
        }
    }

    /// The email around the wording: the tenant's look, the call to action, the details.
    fn view(&self, facts: &EmailFacts<'_>, content: Content) -> View {
        let branding = facts.tenant.and_then(|t| t.branding.as_ref());
        let accent = branding
            .and_then(|b| b.accent_colour)
            .unwrap_or(AccentColour::DEFAULT);
        let action = facts.link.map(|(url, until)| Action {
            label: self.say("email-action-reconnect", &[]),
            url: url.to_string(),
            until: self.say(
                "email-action-until",
                &[("until", self.moment(until).into())],
            ),
        });
        let details = content.provider_said.map(|said| Details {
            heading: self.say("email-details-heading", &[]),
            intro: self.say("email-details-intro", &[]),
            rows: vec![
                Row {
                    label: self.say("email-details-message", &[]),
                    value: said,
                    verbatim: true,
                },
                Row {
                    label: self.say("email-details-connection", &[]),
                    value: self.label.clone(),
                    verbatim: false,
                },
                Row {
                    label: self.say("email-details-time", &[]),
                    value: self.moment(subject_time(facts.subject)),
                    verbatim: false,
                },
            ],
        });
        View {
            lang: self.words.locale().tag(),
            subject: content.subject,
            tenant: self.tenant.clone(),
            logo_url: branding
                .and_then(|b| b.logo_url.as_ref())
                .map(|u| u.as_str().to_owned()),
            accent: accent.to_string(),
            accent_text: accent.text_colour().to_string(),
            greeting: self.say("email-greeting", &[]),
            about: self.say("email-about", &[]),
            what_heading: self.say("email-what-heading", &[]),
            what: content.what,
            todo_heading: self.say("email-todo-heading", &[]),
            todo: content.todo,
            hint: content.hint,
            action,
            details,
            footer: self.say("email-footer", &[]),
        }
    }
}

/// When what the email is about happened (or, for a warning, was noticed).
fn subject_time(subject: &NoticeSubject) -> DateTime<Utc> {
    match subject {
        NoticeSubject::Transition(t) => t.at,
        NoticeSubject::Warning(w) => w.created_at,
        NoticeSubject::Reminder(r) => r.since,
    }
}

/// "division 123 (Acme B.V.)", in the reader's language.
fn context_label(words: &Words, context: &ProviderContext) -> String {
    match context {
        ProviderContext::Twinfield {
            organisation_code, ..
        } => words.text_with(
            "email-context-twinfield",
            &[("code", organisation_code.as_str().into())],
        ),
        ProviderContext::ExactOnline {
            division,
            divisions,
            ..
        } => {
            let code = division.to_string();
            match divisions
                .iter()
                .find(|d| d.code == *division)
                .and_then(|d| d.name.as_deref())
            {
                Some(name) => words.text_with(
                    "email-context-exact-named",
                    &[("division", code.into()), ("name", name.into())],
                ),
                None => words.text_with("email-context-exact", &[("division", code.into())]),
            }
        }
        ProviderContext::Acumatica { tenant, .. } => words.text_with(
            "email-context-acumatica",
            &[("tenant", tenant.as_str().into())],
        ),
        ProviderContext::Generic {
            account: Some(account),
        } => words.text_with(
            "email-context-generic",
            &[("account", account.as_str().into())],
        ),
        ProviderContext::Generic { account: None } => words.text("email-context-generic-unnamed"),
    }
}

/// Everything the templates show, already in the reader's words. The HTML template escapes each
/// value; the text template shows them as they are.
struct View {
    lang: &'static str,
    subject: String,
    tenant: String,
    logo_url: Option<String>,
    accent: String,
    accent_text: String,
    greeting: String,
    about: String,
    what_heading: String,
    what: String,
    todo_heading: String,
    todo: String,
    hint: Option<String>,
    action: Option<Action>,
    details: Option<Details>,
    footer: String,
}

/// The one call to action: a button in HTML, the bare link in text.
struct Action {
    label: String,
    url: String,
    until: String,
}

struct Details {
    heading: String,
    intro: String,
    rows: Vec<Row>,
}

struct Row {
    label: String,
    value: String,
    /// The provider's own words, shown in a monospace font so they can be copied exactly.
    verbatim: bool,
}

#[derive(Template)]
#[template(path = "emails/notice.html")]
struct HtmlEmail<'a> {
    v: &'a View,
}

#[derive(Template)]
#[template(path = "emails/notice.txt")]
struct TextEmail<'a> {
    v: &'a View,
}

#[cfg(test)]
#[path = "compose_tests.rs"]
mod tests;
