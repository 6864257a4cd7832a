//! The OpenAPI document: committed, served and browsable, always what the code generates.

mod common;

use common::{Engine, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[test]
fn the_committed_document_is_what_the_code_generates() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    let generated = switchyard::http::openapi::document_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
    let document: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}

on_both_engines!(the_server_serves_its_document_and_a_browser_without_a_cdn);

async fn the_server_serves_its_document_and_a_browser_without_a_cdn(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, served) = srv.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let generated: Value =
        serde_json::from_str(&switchyard::http::openapi::document_json()).unwrap();
    assert_eq!(served, generated);

    let page = srv.send(Method::GET, "/docs/", None, None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "assets come from this server: {html}"
    );
    let bundle = srv
        .send(Method::GET, "/docs/swagger-ui-bundle.js", None, None)
        .await;
    assert_eq!(bundle.status(), StatusCode::OK);
    let initializer = srv
        .send(Method::GET, "/docs/swagger-initializer.js", None, None)
        .await;
    assert!(initializer.text().await.unwrap().contains("/openapi.json"));
    srv.stop().await;
}
