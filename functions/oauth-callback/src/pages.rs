//! The pages people see: askama templates (`templates/`, checked at compile time, every value
//! escaped), words from the per-language catalogue (`shared/locales/*/pages.ftl`), times in the
//! connection's zone with the zone shown. No scripts, no third-party assets, readable on a phone.

use askama::Template;
use broker_core::connect::flow::division::{DivisionChosen, DivisionOffer};
use broker_core::connect::flow::onboarding::{Asks, SettingsForm, SettingsRefused};
use broker_core::connect::flow::{
    Audience, Completed, ConnectError, ConnectFailure, LinkPage, LinkUse, ReconnectWhy, Standing,
    STATE_LIFETIME,
};
use broker_core::domain::{ProviderContext, ProviderKind, ReconnectKind};
use broker_core::providers::ErrorClass;
use broker_core::wording::{WordValue, Words};

/// The one stylesheet, inline. The Content-Security-Policy allows exactly this block by its hash, so
/// an injected `<style>` or `style=` attribute would not apply even if escaping were ever missed.
pub const STYLE: &str = include_str!("../templates/style.css");

/// What every page has around its content.
struct Frame {
    lang: &'static str,
    title: String,
    service: String,
    style: &'static str,
}

impl Frame {
    fn new(words: &Words, title: String) -> Self {
        Self {
            lang: words.locale().tag(),
            title,
            service: words.text("service-name"),
            style: STYLE,
        }
    }
}

struct Row {
    label: String,
    value: String,
}

struct Link {
    href: String,
    label: String,
}

fn render(page: &impl Template) -> String {
    // The templates only format strings and numbers into a String, which cannot fail.
    page.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "a page could not be rendered");
        String::new()
    })
}

fn arg<'a>(name: &'a str, value: impl Into<WordValue<'a>>) -> (&'a str, WordValue<'a>) {
    (name, value.into())
}

fn provider_arg(provider: ProviderKind) -> (&'static str, WordValue<'static>) {
    ("provider", WordValue::from(provider.display_name()))
}

fn integration(words: &Words, audience: Option<&Audience>) -> String {
    audience
        .and_then(|a| a.integration.clone())
        .unwrap_or_else(|| words.text("page-integration-unnamed"))
}

/// What a connection is bound to at its provider, in the reader's words.
pub fn bound_to(words: &Words, context: &ProviderContext) -> String {
    match context {
        ProviderContext::Twinfield {
            organisation_code, ..
        } => words.text_with(
            "bound-twinfield",
            &[arg("code", organisation_code.as_str())],
        ),
        ProviderContext::ExactOnline {
            division,
            divisions,
            ..
        } => {
            let name = divisions
                .iter()
                .find(|d| d.code == *division)
                .and_then(|d| d.name.as_deref());
            let code = arg("division", division.to_string());
            match name {
                Some(name) => words.text_with("bound-exact-named", &[code, arg("name", name)]),
                None => words.text_with("bound-exact", &[code]),
            }
        }
        ProviderContext::Acumatica { tenant, .. } => {
            words.text_with("bound-acumatica", &[arg("tenant", tenant.as_str())])
        }
        ProviderContext::Generic {
            account: Some(account),
        } => words.text_with("bound-generic", &[arg("account", account.as_str())]),
        ProviderContext::Generic { account: None } => words.text("bound-generic-unnamed"),
    }
}

/// The way back to the integration, with the outcome in its query.
fn back(words: &Words, audience: Option<&Audience>, outcome: &[(&str, &str)]) -> Option<Link> {
    let audience = audience?;
    let url = audience.return_url.as_ref()?;
    let mut pairs = vec![("connection", audience.connection.as_str())];
    pairs.extend_from_slice(outcome);
    Some(Link {
        href: url.with_outcome(&pairs).to_string(),
        label: words.text_with(
            "page-back",
            &[arg("integration", integration(words, Some(audience)))],
        ),
    })
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    frame: Frame,
    lead: String,
    how: String,
}

/// `GET /`: names the service and says what its links are for.
pub fn home(words: &Words) -> String {
    render(&HomePage {
        frame: Frame::new(words, words.text("home-title")),
        lead: words.text("home-lead"),
        how: words.text("home-how"),
    })
}

struct Notice {
    heading: String,
    text: String,
}

struct Why {
    heading: String,
    text: String,
    since: String,
}

struct Button {
    label: String,
    hint: String,
    secondary: bool,
}

#[derive(Template)]
#[template(path = "connection.html")]
struct ConnectionTemplate {
    frame: Frame,
    notice: Option<Notice>,
    state_class: &'static str,
    state_label: String,
    heading: String,
    lead: String,
    why: Option<Why>,
    button: Option<Button>,
    action: String,
    settings: Option<SettingsView>,
    details: String,
    rows: Vec<Row>,
}

/// One text field of the settings form.
struct Field {
    name: &'static str,
    label: String,
    hint: String,
    value: String,
    /// `autocomplete`: what browsers may fill in (`url`, `email`, `off`).
    autocomplete: &'static str,
    /// The refusal is about this field: it is marked invalid and described by the message.
    invalid: bool,
}

/// The form a connection page shows before its button, when the customer must name their instance.
struct SettingsView {
    action: String,
    heading: String,
    intro: String,
    error: Option<String>,
    fields: Vec<Field>,
    submit: String,
    sign_in_heading: String,
    sign_in: String,
    sliding_heading: String,
    sliding_intro: String,
    sliding_steps: Vec<String>,
}

fn settings_view(
    words: &Words,
    asks: Asks,
    zone: &str,
    action: &str,
    retry: Option<(&SettingsForm, SettingsRefused)>,
) -> SettingsView {
    let typed = retry.map(|(form, _)| form);
    let refused = retry.map(|(_, refused)| refused);
    let value = |pick: fn(&SettingsForm) -> Option<&str>| {
        typed.and_then(pick).unwrap_or_default().to_owned()
    };
    let mut fields = vec![
        Field {
            name: "instance_url",
            label: words.text("settings-instance-url"),
            hint: words.text("settings-instance-url-hint"),
            value: value(|f| Some(&f.instance_url)),
            autocomplete: "url",
            invalid: matches!(
                refused,
                Some(SettingsRefused::InstanceUrl | SettingsRefused::InstanceSilent)
            ),
        },
        Field {
            name: "tenant",
            label: words.text("settings-tenant"),
            hint: words.text("settings-tenant-hint"),
            value: value(|f| Some(&f.tenant)),
            autocomplete: "off",
            invalid: refused == Some(SettingsRefused::Tenant),
        },
    ];
    if asks.recipients {
        fields.push(Field {
            name: "recipients",
            label: words.text("settings-recipients"),
            hint: words.text("settings-recipients-hint"),
            value: value(|f| f.recipients.as_deref()),
            autocomplete: "email",
            invalid: refused == Some(SettingsRefused::Recipients),
        });
    }
    if asks.time_zone {
        fields.push(Field {
            name: "time_zone",
            label: words.text("settings-time-zone"),
            hint: words.text("settings-time-zone-hint"),
            // The zone pages are written in now: the customer checks it rather than types it.
            value: typed
                .and_then(|f| f.time_zone.clone())
                .unwrap_or_else(|| zone.to_owned()),
            autocomplete: "off",
            invalid: refused == Some(SettingsRefused::TimeZone),
        });
    }
    SettingsView {
        action: action.to_owned(),
        heading: words.text("settings-heading"),
        intro: words.text("settings-intro"),
        error: refused.map(|r| words.text(r.wording_key())),
        fields,
        submit: words.text("settings-submit"),
        sign_in_heading: words.text("settings-sign-in-heading"),
        sign_in: words.text("settings-sign-in"),
        sliding_heading: words.text("settings-sliding-heading"),
        sliding_intro: words.text("settings-sliding-intro"),
        sliding_steps: (1..=4)
            .map(|n| words.text(&format!("settings-sliding-step-{n}")))
            .collect(),
    }
}

/// The page a connect link shows: the connection as its customer should see it, and, while the link
/// works, the button that starts the authorization (a form posting to `action`).
/// `settings_action` is where the settings form posts, shown while the link asks first; `retry` is that
/// form as typed and why it was refused.
pub fn connection(
    page: &LinkPage,
    words: &Words,
    action: &str,
    settings_action: &str,
    retry: Option<(&SettingsForm, SettingsRefused)>,
) -> String {
    let provider = provider_arg(page.provider);
    let zone = page.audience.time_zone;
    let integration = integration(words, Some(&page.audience));
    let with = |key: &str| {
        words.text_with(
            key,
            &[provider.clone(), arg("integration", integration.as_str())],
        )
    };
    let (state_class, state, why) = match &page.standing {
        Standing::Connected => ("connected", "connected", None),
        Standing::NotConnected => ("not-connected", "not-connected", None),
        Standing::Reconnect { why, since } => (
            "reconnect",
            "reconnect",
            Some(Why {
                heading: words.text("connection-why"),
                text: with(&format!("reconnect-why-{}", reason_key(*why))),
                since: words.text_with(
                    "connection-since",
                    &[arg("moment", words.moment(*since, zone))],
                ),
            }),
        ),
    };
    let notice = match page.link {
        LinkUse::Usable { .. } | LinkUse::AsksFirst(_) => None,
        LinkUse::Spent => Some(Notice {
            heading: words.text("connection-link-spent"),
            text: words.text("connection-link-spent-text"),
        }),
        LinkUse::Replaced => Some(Notice {
            heading: words.text("connection-link-replaced"),
            text: words.text("connection-link-replaced-text"),
        }),
    };
    let button = matches!(page.link, LinkUse::Usable { .. }).then(|| {
        let (key, secondary) = match page.standing {
            Standing::Connected => ("connection-button-again", true),
            Standing::Reconnect { .. } => ("connection-button-reconnect", false),
            Standing::NotConnected => ("connection-button-connect", false),
        };
        let hint = if secondary {
            "connection-again-hint"
        } else {
            "connection-button-hint"
        };
        Button {
            label: with(key),
            hint: with(hint),
            secondary,
        }
    });
    let settings = match page.link {
        LinkUse::AsksFirst(asks) => Some(settings_view(
            words,
            asks,
            zone.name(),
            settings_action,
            retry,
        )),
        _ => None,
    };
    render(&ConnectionTemplate {
        frame: Frame::new(words, with("connection-title")),
        notice,
        state_class,
        state_label: words.text(&format!("connection-state-{state}")),
        heading: with(&format!("connection-heading-{state}")),
        lead: with(&format!("connection-lead-{state}")),
        why,
        button,
        action: action.to_owned(),
        settings,
        details: words.text("connection-details"),
        rows: connection_rows(page, words),
    })
}

/// What the page tells of the connection: its names, what it is bound to, who authorized it and when.
fn connection_rows(page: &LinkPage, words: &Words) -> Vec<Row> {
    let zone = page.audience.time_zone;
    let mut rows = Vec::new();
    let mut row = |key: &str, value: String| {
        rows.push(Row {
            label: words.text(key),
            value,
        })
    };
    if let Some(name) = &page.audience.integration {
        row("connection-row-integration", name.clone());
    }
    if let Some(name) = &page.display_name {
        row("connection-row-name", name.clone());
    }
    if let Some(context) = &page.context {
        row("connection-row-bound", bound_to(words, context));
    }
    if let Some(who) = &page.authorized_by {
        let name = who.display_name.as_deref().unwrap_or(&who.subject);
        row("connection-row-authorized-by", name.to_owned());
    }
    if let Some(at) = page.authorized_at {
        row("connection-row-authorized-at", words.moment(at, zone));
    }
    rows
}

fn reason_key(why: ReconnectWhy) -> &'static str {
    match why {
        ReconnectWhy::Required(kind) => match kind {
            ReconnectKind::GrantRevoked => "grant_revoked",
            ReconnectKind::RefreshTokenExpired => "refresh_token_expired",
            ReconnectKind::RefreshTokenReused => "refresh_token_reused",
            ReconnectKind::RefreshInterrupted => "refresh_interrupted",
            ReconnectKind::LegacyCredentialsRetired => "legacy_credentials_retired",
            ReconnectKind::RepeatedFailures => "repeated_failures",
            ReconnectKind::ClientMisconfigured => "client_misconfigured",
        },
        ReconnectWhy::RefreshFailing => "refresh_failing",
        ReconnectWhy::Disabled => "disabled",
        ReconnectWhy::LegacyCredentials => "legacy_credentials",
    }
}

struct DivisionOption {
    code: i64,
    label: String,
    checked: bool,
}

struct DivisionFormView {
    action: String,
    text: String,
    connection: String,
    ticket: String,
    options: Vec<DivisionOption>,
    button: String,
}

#[derive(Template)]
#[template(path = "success.html")]
struct SuccessPage {
    frame: Frame,
    heading: String,
    rows: Vec<Row>,
    division: Option<DivisionFormView>,
    next: String,
    back: Option<Link>,
    close: String,
}

pub fn success(done: &Completed, words: &Words) -> String {
    let provider = provider_arg(done.provider);
    let outcome = if done.was_reconnect() {
        "reconnected"
    } else {
        "connected"
    };
    let heading = words.text_with(
        &format!("success-heading-{outcome}"),
        std::slice::from_ref(&provider),
    );
    let mut rows = Vec::new();
    if let Some(name) = &done.display_name {
        rows.push(Row {
            label: words.text("connection-row-name"),
            value: name.clone(),
        });
    }
    rows.push(Row {
        label: words.text("connection-row-bound"),
        value: bound_to(words, &done.context),
    });
    if let Some(who) = &done.authorized_by {
        rows.push(Row {
            label: words.text("connection-row-authorized-by"),
            value: who
                .display_name
                .as_deref()
                .unwrap_or(&who.subject)
                .to_owned(),
        });
    }
    let next = words.text_with(
        "success-next",
        &[
            provider,
            arg("integration", integration(words, Some(&done.audience))),
            arg(
                "moment",
                words.moment(done.next_refresh_at, done.audience.time_zone),
            ),
        ],
    );
    render(&SuccessPage {
        frame: Frame::new(words, heading.clone()),
        heading,
        rows,
        division: done
            .division_choice
            .as_ref()
            .map(|offer| division_form(offer, words)),
        next,
        back: back(words, Some(&done.audience), &[("outcome", outcome)]),
        close: words.text("page-close"),
    })
}

/// The granted divisions to choose from; the provisional one is preselected.
fn division_form(offer: &DivisionOffer, words: &Words) -> DivisionFormView {
    DivisionFormView {
        action: offer.action.to_string(),
        text: words.text_with(
            "division-offer",
            &[
                arg("count", offer.granted.len()),
                arg("bound", offer.bound.to_string()),
            ],
        ),
        connection: offer.connection.as_str().to_owned(),
        ticket: offer.ticket.expose().to_owned(),
        options: offer
            .granted
            .iter()
            .map(|d| DivisionOption {
                code: d.code,
                label: match &d.name {
                    Some(name) => format!("{} ({name})", d.code),
                    None => d.code.to_string(),
                },
                checked: d.code == offer.bound,
            })
            .collect(),
        button: words.text("division-button"),
    }
}

#[derive(Template)]
#[template(path = "division_chosen.html")]
struct DivisionChosenPage {
    frame: Frame,
    name: Option<Row>,
    text: String,
    back: Option<Link>,
    close: String,
}

pub fn division_chosen(chosen: &DivisionChosen, words: &Words) -> String {
    render(&DivisionChosenPage {
        frame: Frame::new(words, words.text("division-chosen-title")),
        name: chosen.display_name.as_ref().map(|name| Row {
            label: words.text("connection-row-name"),
            value: name.clone(),
        }),
        text: words.text_with(
            "division-chosen-text",
            &[arg("bound", bound_to(words, &chosen.context))],
        ),
        back: back(words, Some(&chosen.audience), &[("outcome", "connected")]),
        close: words.text("page-close"),
    })
}

#[derive(Template)]
#[template(path = "failure.html")]
struct FailurePage {
    frame: Frame,
    heading: String,
    what_label: String,
    what: String,
    todo_label: String,
    todo: String,
    try_again: Option<Link>,
    back: Option<Link>,
    close: String,
}

pub fn failure(failed: &ConnectFailure, words: &Words) -> String {
    let heading = match failed.provider {
        Some(p) => words.text_with("failure-title", &[provider_arg(p)]),
        None => words.text("failure-title-unnamed"),
    };
    let (what, todo) = explain(&failed.error, words);
    let audience = failed.audience.as_ref();
    render(&FailurePage {
        frame: Frame::new(words, heading.clone()),
        heading,
        what_label: words.text("page-what-went-wrong"),
        what,
        todo_label: words.text("page-what-to-do"),
        todo,
        try_again: failed.try_again.as_ref().map(|url| Link {
            href: url.to_string(),
            label: words.text("page-try-again"),
        }),
        back: back(
            words,
            audience,
            &[("outcome", "failed"), ("reason", failed.error.label())],
        ),
        close: words.text("page-close"),
    })
}

/// Why an attempt stopped and what to do, in the reader's words. Values from outside (a provider's
/// description, a person's name) are inserted as they are; the page escapes them.
fn explain(error: &ConnectError, words: &Words) -> (String, String) {
    (
        sentence(&what_went_wrong(error, words)),
        what_to_do(error, words),
    )
}

fn what_went_wrong(error: &ConnectError, words: &Words) -> String {
    use ConnectError as E;
    let what_key = format!("failure-{}", error.label());
    let described = |d: &Option<String>| match d {
        Some(d) if !d.is_empty() => format!(": {d}"),
        _ => String::new(),
    };
    match error {
        E::MalformedRequest(detail) => {
            words.text_with(&what_key, &[arg("detail", detail.as_str())])
        }
        E::StateExpired => {
            words.text_with(&what_key, &[arg("minutes", STATE_LIFETIME.num_minutes())])
        }
        E::Denied {
            provider,
            description,
        } => words.text_with(
            &what_key,
            &[
                provider_arg(*provider),
                arg("description", described(description)),
            ],
        ),
        E::ProviderRefused {
            provider,
            error,
            description,
        } => words.text_with(
            &what_key,
            &[
                provider_arg(*provider),
                arg("error", error.as_str()),
                arg("description", described(description)),
            ],
        ),
        E::Provider(e) => words.text_with(
            &what_key,
            &[provider_arg(e.provider), arg("detail", e.to_string())],
        ),
        E::NonceUnverified { provider } => words.text_with(&what_key, &[provider_arg(*provider)]),
        E::IdentityMismatch {
            provider,
            required,
            actual,
        } => words.text_with(
            &what_key,
            &[
                provider_arg(*provider),
                arg("required", required.as_str()),
                arg("actual", actual.as_str()),
            ],
        ),
        E::OrganisationMismatch {
            provider,
            expected,
            actual,
        }
        | E::OtherUser {
            provider,
            expected,
            actual,
        } => words.text_with(
            &what_key,
            &[
                provider_arg(*provider),
                arg("expected", expected.as_str()),
                arg("actual", actual.as_str()),
            ],
        ),
        E::DivisionNotGranted { division, granted } => words.text_with(
            &what_key,
            &[
                arg("division", division.to_string()),
                arg("granted", granted_list(words, granted)),
            ],
        ),
        E::DivisionsUnknown {
            current_division: division,
        }
        | E::DivisionChoiceClosed { bound: division } => {
            words.text_with(&what_key, &[arg("division", division.to_string())])
        }
        _ => words.text(&what_key),
    }
}

fn what_to_do(error: &ConnectError, words: &Words) -> String {
    use ConnectError as E;
    let label = error.label();
    match error {
        E::MalformedRequest(_) | E::StateUnknown | E::WrongBrowser => {
            words.text("todo-start-again-here")
        }
        E::LinkSpent { .. } | E::LinkReplaced { .. } => words.text("todo-newest-link"),
        E::LinkUnknown | E::LinkExpired => words.text("todo-new-link"),
        E::Denied { provider, .. } => words.text_with("todo-denied", &[provider_arg(*provider)]),
        E::Provider(e) if e.class == ErrorClass::ClientMisconfigured => {
            words.text("todo-app-registration")
        }
        E::ProviderRefused { .. } | E::Provider(_) | E::NonceUnverified { .. } => {
            words.text("todo-retry-later")
        }
        E::IdentityMismatch {
            provider, required, ..
        } => words.text_with(
            "todo-identity_mismatch",
            &[provider_arg(*provider), arg("required", required.as_str())],
        ),
        E::OrganisationMismatch {
            provider, expected, ..
        }
        | E::OtherUser {
            provider, expected, ..
        } => words.text_with(
            &format!("todo-{label}"),
            &[provider_arg(*provider), arg("expected", expected.as_str())],
        ),
        E::DivisionNotGranted { division, .. } => words.text_with(
            "todo-division_not_granted",
            &[arg("division", division.to_string())],
        ),
        E::Conflict | E::Unavailable(_) => words.text("todo-try-in-a-minute"),
        E::StateExpired
        | E::DivisionsUnknown { .. }
        | E::DivisionChoiceUnknown
        | E::DivisionChoiceClosed { .. }
        | E::ConnectionGone
        | E::Misconfigured(_) => words.text(&format!("todo-{label}")),
    }
}

fn granted_list(words: &Words, codes: &[i64]) -> String {
    if codes.is_empty() {
        return words.text("failure-granted-none");
    }
    let list: Vec<String> = codes.iter().map(i64::to_string).collect();
    words.text_with(
        "failure-granted",
        &[arg("count", codes.len()), arg("codes", list.join(", "))],
    )
}

/// A sentence: capitalised, and ended by a full stop unless a provider's words already end it.
fn sentence(text: &str) -> String {
    let mut chars = text.trim_end().chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::domain::Locale;
    use broker_core::wording::words;

    fn failure_of(error: ConnectError) -> ConnectFailure {
        ConnectFailure {
            error,
            provider: Some(ProviderKind::Twinfield),
            try_again: None,
            state_consumed: false,
            audience: None,
        }
    }

    #[test]
    fn values_from_outside_are_escaped() {
        let page = failure(
            &failure_of(ConnectError::ProviderRefused {
                provider: ProviderKind::Twinfield,
                error: "<script>alert('x')</script>".into(),
                description: Some("\"><img src=x>".into()),
            }),
            words(Locale::English),
        );
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("alert(&#39;x&#39;)"), "{page}");
    }

    #[test]
    fn every_failure_is_explained_in_both_languages() {
        use broker_core::domain::ProviderKind::ExactOnline;
        let errors = || {
            vec![
                ConnectError::MalformedRequest("x".into()),
                ConnectError::LinkUnknown,
                ConnectError::LinkExpired,
                ConnectError::LinkSpent {
                    provider: ExactOnline,
                    name: None,
                    status: "connected".into(),
                },
                ConnectError::LinkReplaced {
                    provider: ExactOnline,
                    name: None,
                    status: "connected".into(),
                },
                ConnectError::StateUnknown,
                ConnectError::StateExpired,
                ConnectError::WrongBrowser,
                ConnectError::Denied {
                    provider: ExactOnline,
                    description: None,
                },
                ConnectError::NonceUnverified {
                    provider: ExactOnline,
                },
                ConnectError::IdentityMismatch {
                    provider: ExactOnline,
                    required: "a".into(),
                    actual: "b".into(),
                },
                ConnectError::OrganisationMismatch {
                    provider: ExactOnline,
                    expected: "a".into(),
                    actual: "b".into(),
                },
                ConnectError::OtherUser {
                    provider: ExactOnline,
                    expected: "a".into(),
                    actual: "b".into(),
                },
                ConnectError::DivisionNotGranted {
                    division: 1,
                    granted: vec![2, 3],
                },
                ConnectError::DivisionsUnknown {
                    current_division: 1,
                },
                ConnectError::DivisionChoiceUnknown,
                ConnectError::DivisionChoiceClosed { bound: 1 },
                ConnectError::ConnectionGone,
                ConnectError::Conflict,
                ConnectError::Misconfigured("x".into()),
                ConnectError::Unavailable("x".into()),
            ]
        };
        for locale in Locale::ALL {
            for error in errors() {
                let (what, todo) = explain(&error, words(locale));
                for text in [&what, &todo] {
                    assert!(
                        !text.is_empty() && !text.contains("failure-") && !text.contains("todo-"),
                        "{locale} {error:?}: {text}"
                    );
                }
            }
        }
        let (nl, _) = explain(&ConnectError::LinkExpired, words(Locale::Dutch));
        assert_eq!(nl, "Deze link is verlopen.");
        let (told, _) = explain(
            &ConnectError::Denied {
                provider: ExactOnline,
                description: Some("The user denied access.".into()),
            },
            words(Locale::English),
        );
        assert_eq!(
            told,
            "Access was not granted at Exact Online: The user denied access."
        );
    }
}
