use super::*;
use crate::domain::{
    Actor, Branding, LogoUrl, ProviderContext, Recipients, ServiceUrl, StatusEvent,
};
use crate::ids::{AppId, TenantId};
use chrono::TimeZone as _;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 7, 1, 13, 5, 0).unwrap()
}

fn tenant(name: &str) -> Tenant {
    Tenant::new(TenantId::parse("acme").unwrap(), name, at()).unwrap()
}

/// An Exact Online connection that needs a reconnect because the grant was revoked, and the
/// transition that says so.
fn needs_reconnect(detail: &str) -> (Connection, NoticeSubject) {
    let mut c = Connection::new(
        TenantId::parse("acme").unwrap(),
        AppId::parse("exact-nl").unwrap(),
        ProviderKind::ExactOnline,
        Recipients::parse(&["finance@example.com"]).unwrap(),
        at(),
    );
    c.display_name = Some("Bakker & Zn".into());
    c.context = Some(ProviderContext::ExactOnline {
        base_url: ServiceUrl::parse("https://start.exactonline.nl").unwrap(),
        division: 123,
        user_id: None,
        divisions: vec![],
    });
    c.apply(StatusEvent::Authorized, Actor::System("test".into()), at())
        .unwrap();
    let transition = c
        .apply(
            StatusEvent::ReconnectNeeded(ReconnectReason::new(ReconnectKind::GrantRevoked, detail)),
            Actor::System("test".into()),
            at(),
        )
        .unwrap();
    (c, NoticeSubject::Transition(transition))
}

fn reconnect_email(c: &Connection, subject: &NoticeSubject, tenant: Option<&Tenant>) -> Email {
    let link = Url::parse("https://broker.example/connect/abc?x=1&y=2").unwrap();
    let from = EmailAddress::parse("broker@example.com").unwrap();
    compose(&EmailFacts {
        kind: NoticeKind::ReconnectRequired,
        subject,
        connection: c,
        tenant,
        link: Some((&link, at() + chrono::Duration::days(7))),
        from: &from,
        reply_to: None,
    })
}

#[test]
fn a_reconnect_email_says_what_happened_what_to_do_and_carries_the_link_once_escaped() {
    let (c, subject) = needs_reconnect("invalid_grant");
    let email = reconnect_email(&c, &subject, Some(&tenant("Acme <Books>")));
    assert_eq!(
        email.subject,
        "Action needed: reconnect Exact Online for Acme <Books>"
    );
    assert_eq!(email.topic, "reconnect-required-exact-online");
    assert!(email
        .text
        .contains("Open the link below and sign in to Exact Online"));
    assert!(email.text.contains("no longer accepts"), "{}", email.text);
    assert!(email.html.starts_with("<!DOCTYPE html>"));
    assert!(
        email.html.contains("Acme &#60;Books&#62;"),
        "{}",
        email.html
    );
    assert!(!email.html.contains("Acme <Books>"));
    assert!(email.html.contains("(Bakker &#38; Zn)"), "{}", email.html);
    assert!(email.html.contains("<meta name=\"viewport\""));
    // The link: once in each part, and in HTML only as the button.
    let href = "href=\"https://broker.example/connect/abc?x=1&#38;y=2\"";
    assert_eq!(email.html.matches("broker.example/connect").count(), 1);
    assert_eq!(email.html.matches(href).count(), 1, "{}", email.html);
    assert!(email.html.contains(">Reconnect Exact Online</a>"));
    assert_eq!(
        email
            .text
            .matches("https://broker.example/connect/abc?x=1&y=2")
            .count(),
        1
    );
    assert_eq!(email.to.len(), 1);
}

#[test]
fn the_providers_own_words_appear_only_in_the_details_for_the_it_contact() {
    let said = "invalid_grant: AADSTS70008 the grant <expired>";
    let (c, subject) = needs_reconnect(said);
    let email = reconnect_email(&c, &subject, Some(&tenant("Acme")));

    let text_details = email
        .text
        .find("Details for your IT contact")
        .expect("a details section in the text");
    assert_eq!(email.text.matches(said).count(), 1, "{}", email.text);
    assert!(email.text.find(said).unwrap() > text_details);

    let escaped = "invalid_grant: AADSTS70008 the grant &#60;expired&#62;";
    let html_details = email
        .html
        .find("Details for your IT contact")
        .expect("a details section in the HTML");
    assert_eq!(
        email.html.matches("invalid_grant").count(),
        1,
        "{}",
        email.html
    );
    assert!(email.html.find(escaped).unwrap() > html_details);
    assert!(email.subject.find("invalid_grant").is_none());

    // No provider words, no details section.
    let (c, subject) = needs_reconnect("");
    let email = reconnect_email(&c, &subject, Some(&tenant("Acme")));
    assert!(!email.text.contains("Details for your IT contact"));
    assert!(!email.html.contains("Details for your IT contact"));
}

#[test]
fn a_dutch_connection_is_written_to_in_dutch_with_times_in_its_zone() {
    let (mut c, subject) = needs_reconnect("invalid_grant");
    c.locale = Some(Locale::Dutch);
    c.time_zone = Some(TimeZone::parse("Europe/Amsterdam").unwrap());
    let email = reconnect_email(&c, &subject, Some(&tenant("Acme")));
    assert_eq!(
        email.subject,
        "Actie nodig: koppel Exact Online opnieuw voor Acme"
    );
    for part in [&email.text, &email.html] {
        assert!(part.contains("Goedendag,"), "{part}");
        assert!(
            part.contains("Exact Online, administratie 123 (Bakker"),
            "{part}"
        );
        assert!(part.contains("Sinds 1 juli 2026 om 15:05 CEST"), "{part}");
        assert!(
            part.contains("De link werkt tot 8 juli 2026 om 15:05 CEST"),
            "{part}"
        );
        assert!(part.contains("Details voor uw IT-contactpersoon"), "{part}");
        assert!(!part.contains("Hello"), "{part}");
    }
    assert!(email.html.contains("<html lang=\"nl\">"));
    assert!(email.html.contains(">Exact Online opnieuw koppelen</a>"));
}

#[test]
fn without_its_own_language_and_zone_a_connection_takes_its_tenants_then_english_and_utc() {
    let (c, _) = needs_reconnect("x");
    let mut t = tenant("Acme");
    assert_eq!(reader(&c, None), (Locale::English, TimeZone::UTC));
    assert_eq!(reader(&c, Some(&t)), (Locale::English, TimeZone::UTC));
    t.locale = Some(Locale::Dutch);
    t.time_zone = Some(TimeZone::parse("Europe/Brussels").unwrap());
    let brussels = TimeZone::parse("Europe/Brussels").unwrap();
    assert_eq!(reader(&c, Some(&t)), (Locale::Dutch, brussels));
    let mut own = c.clone();
    own.locale = Some(Locale::English);
    own.time_zone = Some(TimeZone::parse("Europe/London").unwrap());
    let london = TimeZone::parse("Europe/London").unwrap();
    assert_eq!(reader(&own, Some(&t)), (Locale::English, london));

    let (c, subject) = needs_reconnect("x");
    let email = reconnect_email(&c, &subject, None);
    assert!(
        email.text.contains("Since 1 July 2026, 13:05 UTC"),
        "{}",
        email.text
    );
    assert!(
        email.subject.ends_with("for your integration"),
        "{}",
        email.subject
    );
}

#[test]
fn a_tenants_logo_and_colour_show_with_text_that_keeps_its_contrast() {
    let (c, subject) = needs_reconnect("x");
    let plain = reconnect_email(&c, &subject, Some(&tenant("Acme")));
    assert!(!plain.html.contains("<img"));
    assert!(plain.html.contains("background-color:#1d4f91"));
    assert!(plain.html.contains("color:#ffffff;text-decoration:none"));

    let mut t = tenant("Acme");
    t.branding = Branding::new(
        Some(LogoUrl::parse("https://cdn.example.com/logo.png?v=1&s=2").unwrap()),
        Some(AccentColour::parse("#ffd500").unwrap()),
    );
    let branded = reconnect_email(&c, &subject, Some(&t));
    assert!(
        branded
            .html
            .contains("<img src=\"https://cdn.example.com/logo.png?v=1&#38;s=2\" alt=\"Acme\""),
        "{}",
        branded.html
    );
    assert!(branded.html.contains("background-color:#ffd500"));
    // Yellow is light: the button's text is dark.
    assert!(branded.html.contains("color:#1a1a1a;text-decoration:none"));
    assert!(
        !branded.text.contains("logo.png"),
        "the text part has no images"
    );
}

#[test]
fn a_recovery_email_has_no_call_to_action_and_a_warning_names_its_deadline() {
    let (mut c, _) = needs_reconnect("x");
    let t = c
        .apply(StatusEvent::Authorized, Actor::System("test".into()), at())
        .unwrap();
    let from = EmailAddress::parse("broker@example.com").unwrap();
    let recovered = compose(&EmailFacts {
        kind: NoticeKind::Recovered,
        subject: &NoticeSubject::Transition(t),
        connection: &c,
        tenant: Some(&tenant("Acme")),
        link: None,
        from: &from,
        reply_to: None,
    });
    assert_eq!(recovered.subject, "Exact Online works again for Acme");
    assert!(!recovered.html.contains("<a "));
    assert!(recovered.text.contains("Nothing more to do."));

    c.locale = Some(Locale::Dutch);
    c.time_zone = Some(TimeZone::parse("Europe/Amsterdam").unwrap());
    let warning = NoticeSubject::Warning(Warning {
        kind: WarningKind::AbsoluteExpiry,
        deadline: Some(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()),
        created_at: at(),
    });
    let link = Url::parse("https://broker.example/connect/abc").unwrap();
    let warned = compose(&EmailFacts {
        kind: NoticeKind::Warning(WarningKind::AbsoluteExpiry),
        subject: &warning,
        connection: &c,
        tenant: Some(&tenant("Acme")),
        link: Some((&link, at())),
        from: &from,
        reply_to: None,
    });
    assert_eq!(
        warned.subject,
        "Koppeling met Exact Online voor Acme stopt op 1 december 2026 om 10:00 CET"
    );
}
