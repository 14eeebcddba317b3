//! Seed 000's three states, Connected, Reconnect and Not connected, as a connect link shows them.

use super::*;
use oauth_callback::pages::bound_to;

/// In Dutch (the browser's language) while the connection names none, in English once it does; times
/// in the connection's zone, with the zone shown.
#[tokio::test]
async fn a_link_shows_the_connection_in_its_three_states() {
    let world = world().await;
    let created = world
        .connection("twinfield", "Administratie Jansen", json!({}))
        .await;
    world
        .change(&created.id, |c| {
            c.time_zone = Some(TimeZone::parse("Europe/Amsterdam").unwrap())
        })
        .await;
    let mut browser = Browser::start("connection_states", "nl-NL,nl")
        .await
        .unwrap();

    // Not connected: a Connect button.
    browser.open(&created.link).await.unwrap();
    browser.wait_for("#connect").await.unwrap();
    assert_eq!(browser.language().await.unwrap(), "nl");
    let text = browser.text().await.unwrap();
    for words in [
        "Niet gekoppeld",
        "Twinfield is niet gekoppeld",
        "Twinfield koppelen",
        "Boekhoudpartner",
        "Administratie Jansen",
    ] {
        assert!(text.contains(words), "{words:?} not in {text}");
    }
    look_at(&mut browser, "not-connected-nl").await;

    // The button starts the authorization; the sandbox consent page, then the success page.
    connect_in(&mut browser, &created.link, Some("sandbox-consent")).await;
    let text = browser.text().await.unwrap();
    assert!(text.contains("Twinfield is gekoppeld"), "{text}");
    assert!(text.contains("U kunt dit venster sluiten"), "{text}");
    look_at(&mut browser, "success-nl").await;
    let stored = world.stored(&created.id).await;

    // The spent link shows the page read-only.
    browser.open(&created.link).await.unwrap();
    browser.wait_for("#notice").await.unwrap();
    assert!(!browser.has("#connect").await.unwrap(), "no button");
    let text = browser.text().await.unwrap();
    assert!(text.contains("Deze link is al gebruikt"), "{text}");
    assert!(text.contains("Twinfield is gekoppeld"), "{text}");
    look_at(&mut browser, "spent-link-nl").await;

    // Connected, from a new link: nothing to do; what it is bound to, who authorized it and when.
    let again = world.reconnect_link(&created.id).await;
    browser.open(&again).await.unwrap();
    browser.wait_for("#connect").await.unwrap();
    let text = browser.text().await.unwrap();
    let who = stored.authorized_by.clone().unwrap();
    let at = moment(
        Locale::Dutch,
        stored.authorized_at.unwrap(),
        "Europe/Amsterdam",
    );
    for words in [
        "Gekoppeld".to_string(),
        "U hoeft niets te doen".to_string(),
        bound_to(words(Locale::Dutch), stored.context.as_ref().unwrap()),
        who.display_name.unwrap_or(who.subject),
        at.clone(),
    ] {
        assert!(text.contains(&words), "{words:?} not in {text}");
    }
    assert!(at.contains("CET") || at.contains("CEST"), "{at}");
    look_at(&mut browser, "connected-nl").await;

    // Reconnect, in the connection's own language and zone: why, since when, and the button.
    world.revoke(&created.id).await;
    world
        .change(&created.id, |c| {
            c.locale = Some(Locale::English);
            c.time_zone = Some(TimeZone::parse("America/Sao_Paulo").unwrap());
        })
        .await;
    let since = world.stored(&created.id).await.status_since();
    let reconnect = world.reconnect_link(&created.id).await;
    browser.open(&reconnect).await.unwrap();
    browser.wait_for("#why").await.unwrap();
    assert_eq!(browser.language().await.unwrap(), "en");
    let text = browser.text().await.unwrap();
    let since = moment(Locale::English, since, "America/Sao_Paulo");
    for words in [
        "Reconnect",
        "Twinfield needs to be reconnected",
        "no longer accepts the authorization",
        "Reconnect Twinfield",
        since.as_str(),
        "America/Sao_Paulo",
    ] {
        assert!(text.contains(words), "{words:?} not in {text}");
    }
    look_at(&mut browser, "reconnect-en").await;
    browser.click("#connect").await.unwrap();
    browser.wait_for("#allow").await.unwrap();
}

/// Not connected and connected in English (the browser's language), and reconnect in Dutch (the
/// connection's).
#[tokio::test]
async fn the_states_read_in_english_and_a_reconnect_in_dutch() {
    let world = world().await;
    let created = world
        .connection("twinfield", "Bookkeeping <main> & co", json!({}))
        .await;
    let mut browser = Browser::start("connection_states_en", "en-GB,en")
        .await
        .unwrap();
    browser.open(&created.link).await.unwrap();
    browser.wait_for("#connect").await.unwrap();
    assert_eq!(browser.language().await.unwrap(), "en");
    let text = browser.text().await.unwrap();
    for words in [
        "Not connected",
        "Twinfield is not connected",
        "Connect Twinfield",
        "Bookkeeping <main> & co",
    ] {
        assert!(text.contains(words), "{words:?} not in {text}");
    }
    look_at(&mut browser, "not-connected-en").await;
    connect_in(&mut browser, &created.link, None).await;
    assert!(browser
        .text()
        .await
        .unwrap()
        .contains("Twinfield is connected"));
    look_at(&mut browser, "success-en").await;
    let again = world.reconnect_link(&created.id).await;
    browser.open(&again).await.unwrap();
    browser.wait_for("#state").await.unwrap();
    let text = browser.text().await.unwrap();
    assert!(
        text.contains("Twinfield is connected") && text.contains("Nothing to do"),
        "{text}"
    );
    assert!(text.contains("Authorize again"), "{text}");
    look_at(&mut browser, "connected-en").await;

    world.revoke(&created.id).await;
    world
        .change(&created.id, |c| c.locale = Some(Locale::Dutch))
        .await;
    let reconnect = world.reconnect_link(&created.id).await;
    browser.open(&reconnect).await.unwrap();
    browser.wait_for("#why").await.unwrap();
    assert_eq!(browser.language().await.unwrap(), "nl");
    let text = browser.text().await.unwrap();
    for words in [
        "Opnieuw koppelen",
        "Twinfield moet opnieuw worden gekoppeld",
        "Twinfield opnieuw koppelen",
        "accepteert de toestemming niet meer",
    ] {
        assert!(text.contains(words), "{words:?} not in {text}");
    }
    look_at(&mut browser, "reconnect-nl").await;
}

/// Opening a link is safe for mail scanners: the page is shown, nothing is started or written, and
/// the link still works for the person afterwards.
#[tokio::test]
async fn opening_a_link_changes_nothing() {
    let world = world().await;
    let created = world.connection("twinfield", "Scanner", json!({})).await;
    let before = world.stored(&created.id).await;
    for _ in 0..2 {
        let page = world.http.get(&created.link).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers().get("set-cookie").is_none(), "no state bound");
        let head = world.http.head(&created.link).send().await.unwrap();
        assert!(head.headers().get("set-cookie").is_none());
    }
    assert_eq!(world.stored(&created.id).await, before);
    // The page's form may lead to the provider: the policy names its origin, and only it.
    let page = world.http.get(&created.link).send().await.unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let sandbox = world.running.sandbox.as_ref().unwrap().local_addr();
    assert!(
        policy.contains(&format!("form-action 'self' http://{sandbox};")),
        "{policy}"
    );
    let started = world.http.post(&created.link).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::FOUND);
    assert!(started.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&format!("http://{sandbox}/")));
}
