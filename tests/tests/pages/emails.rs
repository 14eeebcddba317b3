//! The reconnect email as its readers open it: the HTML part of the `.eml` the local outbox writes,
//! parsed by an independent MIME parser, opened in Chromium at a desktop's and a phone's width,
//! screenshotted and run through axe-core, in Dutch (Amsterdam) and in English.

use super::*;
use broker_core::adapters::outbox::OutboxMailer;
use broker_core::domain::{AccentColour, Branding, ProviderKind, Recipients};
use broker_core::notify::compose::{compose, EmailFacts};
use broker_core::notify::{Mailer, NoticeKind, NoticeSubject};
use chrono::TimeZone as _;
use mail_parser::MessageParser;

const LINK: &str = "https://broker.example.com/connect/abc";

/// An Acumatica connection of "Bakker & Zn" whose grant was revoked, in `locale` and `zone`.
fn revoked(locale: Locale, zone: &str) -> (Connection, NoticeSubject) {
    let at = chrono::Utc.with_ymd_and_hms(2026, 11, 2, 6, 0, 0).unwrap();
    let mut c = Connection::new(
        TenantId::parse("bakker").unwrap(),
        AppId::parse("acumatica").unwrap(),
        ProviderKind::Acumatica,
        Recipients::parse(&["boekhouding@example.nl"]).unwrap(),
        at,
    );
    c.display_name = Some("Bakker & Zn".into());
    c.locale = Some(locale);
    c.time_zone = Some(TimeZone::parse(zone).unwrap());
    c.apply(StatusEvent::Authorized, Actor::System("test".into()), at)
        .unwrap();
    let transition = c
        .apply(
            StatusEvent::ReconnectNeeded(ReconnectReason::new(
                ReconnectKind::GrantRevoked,
                "invalid_grant",
            )),
            Actor::System("test".into()),
            at,
        )
        .unwrap();
    (c, NoticeSubject::Transition(transition))
}

/// Composes the email, lets the outbox write it, and answers the path of its HTML part on disk.
/// `accent` is the tenant's brand colour, on which the button's words must stay readable.
async fn written_html(
    locale: Locale,
    zone: &str,
    accent: Option<&str>,
    name: &str,
) -> std::path::PathBuf {
    let (c, subject) = revoked(locale, zone);
    let mut tenant = Tenant::new(
        TenantId::parse("bakker").unwrap(),
        "Boekhoudpartner",
        c.created_at,
    )
    .unwrap();
    tenant.branding = Branding::new(None, accent.map(|a| AccentColour::parse(a).unwrap()));
    let link = url::Url::parse(LINK).unwrap();
    let from = broker_core::domain::EmailAddress::parse("broker@example.com").unwrap();
    let email = compose(&EmailFacts {
        kind: NoticeKind::ReconnectRequired,
        subject: &subject,
        connection: &c,
        tenant: Some(&tenant),
        link: Some((&link, c.created_at + chrono::Duration::days(7))),
        from: &from,
        reply_to: None,
    });
    let dir = std::env::temp_dir().join(format!("broker-emails-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    OutboxMailer::new(&dir).send(&email).await.unwrap();
    let eml = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "eml"))
        .expect("the outbox wrote an .eml");
    let raw = std::fs::read(&eml).unwrap();
    let message = MessageParser::default()
        .parse(&raw)
        .expect("a MIME message");
    let html = message.body_html(0).expect("an HTML part").into_owned();
    let path = dir.join(format!("{name}.html"));
    std::fs::write(&path, html).unwrap();
    path
}

/// Opens the email at both widths: the button is seen, the words are the reader's, axe is content.
async fn read_email(
    locale: Locale,
    zone: &str,
    accent: Option<&str>,
    accept: &str,
    expected: &[&str],
    button: &str,
) {
    let name = format!("reconnect-email-{}", locale.tag());
    let html = written_html(locale, zone, accent, &name).await;
    let mut browser = Browser::start(&format!("emails_{}", locale.tag()), accept)
        .await
        .unwrap();
    browser.open_file(&html).await.unwrap();
    browser.wait_for("a[href]").await.unwrap();
    assert_eq!(browser.language().await.unwrap(), locale.tag());
    let text = browser.text().await.unwrap();
    for words in expected {
        assert!(text.contains(words), "{words:?} not in {text}");
    }
    for width in [DESKTOP, PHONE] {
        browser.set_width(width).await.unwrap();
        // Seen: laid out inside the page's width, with its words readable against its colour.
        let seen = browser
            .execute(
                "const a = document.querySelector('a[href]');\
                 const r = a.getBoundingClientRect();\
                 return {text: a.innerText, href: a.href, left: r.left, right: r.right,\
                         width: r.width, height: r.height, page: document.documentElement.clientWidth,\
                         scroll: document.documentElement.scrollWidth};",
                json!([]),
            )
            .await
            .unwrap();
        assert_eq!(seen["text"], button, "{seen}");
        assert_eq!(seen["href"], LINK, "{seen}");
        assert!(seen["width"].as_f64().unwrap() > 100.0, "{seen}");
        assert!(seen["height"].as_f64().unwrap() >= 40.0, "{seen}");
        assert!(seen["left"].as_f64().unwrap() >= 0.0, "{seen}");
        assert!(
            seen["right"].as_f64().unwrap() <= seen["page"].as_f64().unwrap(),
            "the button fits at {width} px: {seen}"
        );
        assert!(
            seen["scroll"].as_f64().unwrap() <= seen["page"].as_f64().unwrap(),
            "nothing scrolls sideways at {width} px: {seen}"
        );
        let shot = browser.screenshot(&name).await.unwrap();
        assert!(shot.exists());
        let violations = browser.serious_accessibility_violations().await.unwrap();
        assert!(
            violations.is_empty(),
            "{name} at {width} px: {violations:#?}"
        );
    }
}

#[tokio::test]
async fn a_dutch_reconnect_email_reads_in_dutch_in_amsterdam_time_at_both_widths() {
    read_email(
        Locale::Dutch,
        "Europe/Amsterdam",
        None,
        "nl-NL,nl",
        &[
            "Bakker & Zn",
            "Boekhoudpartner",
            // 06:00 UTC, read in Amsterdam.
            "2 november 2026 om 07:00 CET",
            "De link werkt tot",
        ],
        "Acumatica opnieuw koppelen",
    )
    .await;
}

#[tokio::test]
async fn an_english_reconnect_email_on_a_light_brand_colour_reads_in_english_at_both_widths() {
    read_email(
        Locale::English,
        "UTC",
        // A light brand colour: the button's words turn dark on it.
        Some("#ffd500"),
        "en-GB,en",
        &["Bakker & Zn", "Boekhoudpartner", "The link works until"],
        "Reconnect Acumatica",
    )
    .await;
}
