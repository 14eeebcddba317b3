//! `GET /` names the service, `GET /health` answers for load balancers without the providers, and an
//! address that is no link says so.

use super::*;

#[tokio::test]
async fn the_home_page_names_the_service_and_health_needs_no_provider() {
    let world = world().await;
    // The providers are gone: health does not ask them.
    world.running.sandbox.as_ref().unwrap().shutdown();
    let health = world
        .http
        .get(format!("{}/health", world.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "The service is running.");
    let head = world
        .http
        .head(format!("{}/health", world.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    let home = world
        .http
        .get(format!("{}/", world.base))
        .header("accept-language", "nl-BE,nl;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    let html = home.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"nl\">") && html.contains("Koppelingsbeheer"),
        "{html}"
    );

    let mut browser = Browser::start("service_pages", "en-US,en").await.unwrap();
    browser.open(&format!("{}/", world.base)).await.unwrap();
    browser.wait_for("h1").await.unwrap();
    let text = browser.text().await.unwrap();
    assert!(
        text.contains("Connection broker") && text.contains("Twinfield"),
        "{text}"
    );
    look_at(&mut browser, "home-en").await;

    browser
        .open(&format!("{}/connect/not-a-link", world.base))
        .await
        .unwrap();
    browser.wait_for("h1.bad").await.unwrap();
    let text = browser.text().await.unwrap();
    assert!(text.contains("This link is not valid"), "{text}");
    assert!(text.contains("Ask for a new connect link"), "{text}");
    look_at(&mut browser, "unknown-link-en").await;
}
