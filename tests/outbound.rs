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

/// `HTTP_PROXY` and its kin in the server's environment do not route requests past the guard:
/// a proxy would resolve `localhost` itself and answer from inside the network.
#[tokio::test]
async fn proxies_in_the_environment_are_ignored() {
    let proxy_hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits = proxy_hits.clone();
    let proxy = axum::Router::new().fallback(move || {
        hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { "INTERNAL-OK" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, proxy).await.unwrap() });
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        std::env::set_var(name, &proxy_url);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    let strict = client(&[]);
    let port = receiver().await;
    for url in [
        format!("http://localhost:{port}/internal"),
        "http://internal.example.invalid/internal".to_owned(),
    ] {
        assert_eq!(
            get_class(&strict, &url).await,
            Err(FailureClass::SsrfBlocked),
            "{url}"
        );
    }
    // A permitted target is reached directly, not through the proxy.
    let tests = client(&["127.0.0.0/8"]);
    assert_eq!(
        get_class(&tests, &format!("http://localhost:{port}/ok")).await,
        Ok(StatusCode::OK)
    );
    assert_eq!(proxy_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A name that does not resolve and one that resolves only to internal addresses are refused in
/// the same words, naming no address.
#[tokio::test]
async fn refused_names_look_the_same_whether_they_resolve_or_not() {
    let strict = client(&[]);
    let detail = |url: &'static str| {
        let strict = strict.clone();
        async move {
            let request = strict.request(reqwest::Method::GET, url).unwrap();
            let err = strict.send(request).await.unwrap_err();
            (err.class, err.detail)
        }
    };
    let internal = detail("http://localhost:9/x").await;
    let missing = detail("http://no-such-host.invalid:9/x").await;
    assert_eq!(internal.0, FailureClass::SsrfBlocked);
    assert_eq!(missing.0, FailureClass::SsrfBlocked);
    assert!(
        !internal.1.contains("127.0.0.1") && !internal.1.contains("::1"),
        "{}",
        internal.1
    );
    assert_eq!(
        internal.1.replace("localhost", "HOST"),
        missing.1.replace("no-such-host.invalid", "HOST")
    );
}
