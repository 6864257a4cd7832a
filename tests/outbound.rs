//! The outbound client against a real local receiver: what its SSRF guard refuses and what it
//! lets through, and that it never follows a redirect.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::get;
use switchyard::outbound::{FailureClass, Guard, Outbound};

async fn receiver() -> u16 {
    let app = axum::Router::new()
        .route("/ok", get(|| async { "received" }))
        .route("/moved", get(|| async { Redirect::temporary("/ok") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn client(allow: &[&str]) -> Outbound {
    let allow = allow.iter().map(|net| net.parse().unwrap()).collect();
    Outbound::new(Guard::new(allow), Duration::from_secs(2))
}

async fn get_class(client: &Outbound, url: &str) -> Result<StatusCode, FailureClass> {
    let request = client
        .request(reqwest::Method::GET, url)
        .map_err(|e| e.class)?;
    client
        .send(request)
        .await
        .map(|r| r.status())
        .map_err(|e| e.class)
}

#[tokio::test]
async fn internal_addresses_are_refused_without_the_allowlist() {
    let port = receiver().await;
    let strict = client(&[]);
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://[::1]:{port}/ok"),
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        "http://10.0.0.1/ok".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ] {
        assert_eq!(
            get_class(&strict, &url).await,
            Err(FailureClass::SsrfBlocked),
            "{url}"
        );
    }
}

#[tokio::test]
async fn the_allowlist_lets_tests_reach_loopback_and_nothing_else() {
    let port = receiver().await;
    let tests = client(&["127.0.0.0/8"]);
    assert_eq!(
        get_class(&tests, &format!("http://127.0.0.1:{port}/ok")).await,
        Ok(StatusCode::OK)
    );
    assert_eq!(
        get_class(&tests, &format!("http://localhost:{port}/ok")).await,
        Ok(StatusCode::OK)
    );
    assert_eq!(
        get_class(&tests, "http://10.0.0.1/ok").await,
        Err(FailureClass::SsrfBlocked)
    );
    assert_eq!(
        get_class(&tests, &format!("http://127.0.0.1:{port}/moved")).await,
        Ok(StatusCode::TEMPORARY_REDIRECT),
        "redirects are answers, never followed"
    );
    assert_eq!(
        get_class(&tests, "ftp://127.0.0.1/x").await,
        Err(FailureClass::InvalidUrl)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(
        get_class(&tests, &format!("http://127.0.0.1:{closed}/")).await,
        Err(FailureClass::Connect)
    );
}
