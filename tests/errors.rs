//! Bad input gets a clear 4xx problem document, never a 500; limits answer 413 and 429.

mod common;

use common::{assert_problem, Engine, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;

on_both_engines!(
    malformed_and_mistyped_bodies_are_client_errors,
    oversized_bodies_are_refused_with_413,
    unknown_routes_and_methods_are_problems,
    anonymous_callers_are_limited_per_ip,
    an_authorization_header_without_a_valid_key_is_limited_per_ip,
    keys_are_limited_per_key,
    every_response_carries_a_request_id,
    operations_endpoints_report_health_and_metrics,
    x_forwarded_for_is_believed_only_from_trusted_proxies,
    metrics_take_a_token_when_one_is_configured,
);

async fn raw(srv: &TestServer, body: &str, content_type: Option<&str>) -> (StatusCode, Value) {
    let mut request = srv
        .client
        .post(srv.url("/v1/api-keys"))
        .bearer_auth(&srv.admin_key)
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    (status, response.json().await.unwrap())
}

async fn malformed_and_mistyped_bodies_are_client_errors(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let json = Some("application/json");
    assert_problem(
        &raw(&srv, "{\"name\": ", json).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    let mistyped = raw(&srv, r#"{"name": 5, "scopes": ["events:write"]}"#, json).await;
    let problem = assert_problem(&mistyped, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert!(
        problem["detail"].as_str().unwrap().contains("name"),
        "{problem}"
    );
    let missing = raw(&srv, r#"{"scopes": ["events:write"]}"#, json).await;
    assert_problem(&missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let text = raw(&srv, r#"{"name": "x"}"#, Some("text/plain")).await;
    assert_problem(
        &text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_problem(
        &raw(&srv, "{}", None).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    srv.stop().await;
}

async fn oversized_bodies_are_refused_with_413(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--max-body-bytes", "1024"]).await;
    let big = format!(
        r#"{{"name": "{}", "scopes": ["events:write"]}}"#,
        "x".repeat(4096)
    );
    let response = raw(&srv, &big, Some("application/json")).await;
    assert_problem(
        &response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    srv.stop().await;
}

async fn unknown_routes_and_methods_are_problems(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let missing = srv.get("/v1/nothing-here", &srv.admin_key).await;
    assert_problem(&missing, StatusCode::NOT_FOUND, "not_found");
    let wrong_method = srv
        .call(Method::PUT, "/v1/whoami", Some(&srv.admin_key), None)
        .await;
    assert_problem(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let bad_header = srv
        .client
        .get(srv.url("/v1/whoami"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_header.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bad_header.headers()["www-authenticate"], "Bearer");
    srv.stop().await;
}

async fn anonymous_callers_are_limited_per_ip(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--rate-limit-per-ip", "3"]).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(srv.send(Method::GET, "/healthz", None, None).await.status());
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let limited = srv.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    // The click router, mounted apart from the API, draws on the same bucket.
    let click = srv.send(Method::GET, "/r/no-such-link", None, None).await;
    assert_eq!(click.status(), StatusCode::TOO_MANY_REQUESTS);

    // Guessing keys counts against the address too, while a valid key has its own bucket.
    let guess = srv
        .send(Method::GET, "/v1/whoami", Some("sy_guess"), None)
        .await;
    assert_eq!(guess.status(), StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = srv.get("/v1/whoami", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    srv.stop().await;
}

/// Public routes never authenticate, so a header that merely looks like credentials must not lift
/// the per-IP limit on them (seen: 100 requests with `Authorization: x` all answered).
async fn an_authorization_header_without_a_valid_key_is_limited_per_ip(engine: Engine) {
    // One request per second per address: the first takes the only token, and the bucket
    // cannot refill during the few milliseconds the rest take.
    let srv = TestServer::start_with(engine, &["--rate-limit-per-ip", "1"]).await;
    let started = std::time::Instant::now();
    let with_header = |path: &'static str, value: &'static str| {
        srv.client
            .get(srv.url(path))
            .header("authorization", value)
            .send()
    };
    assert_eq!(
        with_header("/healthz", "x").await.unwrap().status(),
        StatusCode::OK
    );
    for path in [
        "/metrics",
        "/r/some-link",
        "/openapi.json",
        "/healthz",
        "/readyz",
    ] {
        for value in ["x", "Bearer sy_guess", "Basic dXNlcjpwYXNz"] {
            let response = with_header(path, value).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "{path} with Authorization: {value}"
            );
        }
    }
    assert!(started.elapsed() < std::time::Duration::from_millis(900));
    // A public route takes no key, so even a valid one does not lift its limit; on the API the
    // key has a bucket of its own.
    let metrics = srv
        .send(Method::GET, "/metrics", Some(&srv.admin_key), None)
        .await;
    assert_eq!(metrics.status(), StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = srv.get("/v1/whoami", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    srv.stop().await;
}

async fn keys_are_limited_per_key(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--rate-limit-per-key", "2"]).await;
    let (_, other) = srv
        .mint(serde_json::json!({"name": "other", "scopes": ["events:write"]}))
        .await;
    // The mint above used one of the admin key's two requests.
    assert_eq!(
        srv.get("/v1/whoami", &srv.admin_key).await.0,
        StatusCode::OK
    );
    let limited = srv
        .send(Method::GET, "/v1/whoami", Some(&srv.admin_key), None)
        .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        srv.get("/v1/whoami", &other).await.0,
        StatusCode::OK,
        "other keys are unaffected"
    );
    srv.stop().await;
}

async fn every_response_carries_a_request_id(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let generated = srv.send(Method::GET, "/healthz", None, None).await;
    assert!(!generated.headers()["x-request-id"].is_empty());
    let echoed = srv
        .client
        .get(srv.url("/v1/whoami"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
    srv.stop().await;
}

async fn operations_endpoints_report_health_and_metrics(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let (status, health) = srv.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, ready) = srv.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, ready["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    srv.get("/v1/whoami", &srv.admin_key).await;
    let metrics = srv.send(Method::GET, "/metrics", None, None).await;
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            r#"switchyard_http_requests_total{method="GET",route="/v1/whoami",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("switchyard_http_request_duration_seconds_bucket"));
    assert!(text.trim_end().ends_with("# EOF"));

    // Readiness follows the database.
    let state = srv.running.as_ref().unwrap().state.clone();
    state.db.close().await;
    let (status, problem) = srv.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "unavailable");
}

/// `count` anonymous requests, each claiming to come from `forwarded(n)`; their statuses.
async fn forwarded_statuses(
    srv: &TestServer,
    count: usize,
    forwarded: impl Fn(usize) -> String,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for n in 0..count {
        let response = srv
            .client
            .get(srv.url("/healthz"))
            .header("x-forwarded-for", forwarded(n))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

async fn x_forwarded_for_is_believed_only_from_trusted_proxies(engine: Engine) {
    // From an untrusted peer, a spoofed header changes nothing: one bucket, the peer's.
    let srv = TestServer::start_with(engine, &["--rate-limit-per-ip", "2"]).await;
    let statuses = forwarded_statuses(&srv, 4, |n| format!("203.0.113.{n}")).await;
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    srv.stop().await;

    // Behind a trusted proxy (the test's loopback), each client has its own bucket; addresses
    // a client put in front of the proxy's are not believed.
    let srv = TestServer::start_with(
        engine,
        &[
            "--rate-limit-per-ip",
            "2",
            "--trusted-proxies",
            "127.0.0.0/8",
        ],
    )
    .await;
    let statuses = forwarded_statuses(&srv, 4, |n| format!("203.0.113.{n}")).await;
    assert_eq!(statuses, vec![200, 200, 200, 200], "a bucket per client");
    let statuses = forwarded_statuses(&srv, 3, |n| format!("198.51.100.{n}, 192.0.2.7")).await;
    assert_eq!(
        statuses,
        vec![200, 200, 429],
        "the client is the last untrusted hop"
    );
    srv.stop().await;
}

async fn metrics_take_a_token_when_one_is_configured(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--metrics-token", "m3tr1cs-t0ken"]).await;
    let open = srv.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(open.status(), StatusCode::UNAUTHORIZED);
    let wrong = srv.send(Method::GET, "/metrics", Some("nope"), None).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = wrong.json().await.unwrap();
    assert_eq!(problem["code"], "unauthorized");
    let right = srv
        .send(Method::GET, "/metrics", Some("m3tr1cs-t0ken"), None)
        .await;
    assert_eq!(right.status(), StatusCode::OK);
    assert!(right.text().await.unwrap().contains("# EOF"));
    // Health checks stay open.
    let health = srv.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status(), StatusCode::OK);
    srv.stop().await;
}
