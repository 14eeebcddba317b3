//! The way back to the integration: after success or failure, a button to the connection's return
//! URL with the outcome in its query; a return URL off the tenant's allow-list is refused.

use super::*;

#[tokio::test]
async fn success_and_failure_offer_the_way_back_with_the_outcome() {
    let world = world().await;
    let back_to = format!(
        "{}/instellingen/koppelingen?tab=boekhouding",
        world.integration
    );
    let created = world
        .connection(
            "twinfield",
            "Twinfield Jansen",
            json!({ "return_url": back_to }),
        )
        .await;
    let mut browser = Browser::start("way_back", "nl-NL,nl").await.unwrap();
    connect_in(&mut browser, &created.link, None).await;
    let text = browser.text().await.unwrap();
    assert!(text.contains("Terug naar Boekhoudpartner"), "{text}");
    look_at(&mut browser, "success-with-way-back-nl").await;
    browser.click("#back").await.unwrap();
    browser.wait_for("#query").await.unwrap();
    assert_eq!(
        browser.url().await.unwrap(),
        format!(
            "{back_to}&connection={}&outcome=connected",
            created.id.as_str()
        )
    );

    // Refused at the consent page: the failure page, and the way back says so.
    let refused = world
        .connection(
            "twinfield",
            "Twinfield Pietersen",
            json!({ "return_url": back_to }),
        )
        .await;
    browser.open(&refused.link).await.unwrap();
    browser.click("#connect").await.unwrap();
    browser.click("#deny").await.unwrap();
    browser.wait_for("h1.bad").await.unwrap();
    let text = browser.text().await.unwrap();
    for words in [
        "Twinfield koppelen is niet gelukt",
        "Er is geen toestemming gegeven bij Twinfield",
        "Er is niets gewijzigd",
        "Terug naar Boekhoudpartner",
    ] {
        assert!(text.contains(words), "{words:?} not in {text}");
    }
    look_at(&mut browser, "failure-with-way-back-nl").await;
    browser.click("#back").await.unwrap();
    browser.wait_for("#query").await.unwrap();
    assert_eq!(
        browser.url().await.unwrap(),
        format!(
            "{back_to}&connection={}&outcome=failed&reason=denied",
            refused.id.as_str()
        )
    );
}

#[tokio::test]
async fn a_return_url_off_the_allow_list_is_refused() {
    let world = world().await;
    let body = |url: &str| {
        json!({
            "app_id": "twinfield",
            "recipients": ["boekhouding@example.nl"],
            "return_url": url,
        })
    };
    for (url, says) in [
        (
            "https://evil.example.com/phish".to_string(),
            "https://evil.example.com is not on your tenant's list of return origins",
        ),
        (
            format!("{}.evil.example.com/x", world.integration),
            "is not an absolute URL",
        ),
        ("javascript:alert(1)".to_string(), "must use https"),
    ] {
        let (status, problem) = world.create(body(&url)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{url}: {detail}");
    }
    let allowed = format!("{}/back", world.integration);
    let (status, created) = world.create(body(&allowed)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["connection"]["return_url"], json!(allowed));
    let id = ConnectionId::parse(created["connection"]["id"].as_str().unwrap()).unwrap();
    assert_eq!(
        world.stored(&id).await.return_url.unwrap().as_str(),
        allowed
    );
}
