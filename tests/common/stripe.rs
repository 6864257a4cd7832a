//! Stripe's side of the webhook: events signed by Stripe's official library (the npm `stripe`
//! package in `tests/stripe-signer`, installed by `.ci/run`), and sending them to the hub.

use std::io::Write as _;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::TestServer;

/// The `Stripe-Signature` header of `body` at `timestamp` (Unix seconds) under `secret`, made
/// by `stripe.webhooks.generateTestHeaderString`. Where the package is not installed the
/// header is made by the hub's own signer instead, unless SWITCHYARD_TEST_REFERENCE_VERIFIER=1
/// (as in CI) makes the official library mandatory.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let signer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stripe-signer");
    let installed = std::path::Path::new(signer)
        .join("node_modules/stripe")
        .exists();
    if !installed {
        assert!(
            std::env::var("SWITCHYARD_TEST_REFERENCE_VERIFIER").is_err(),
            "Stripe's library is mandatory here: run `npm ci` in tests/stripe-signer"
        );
        return format!(
            "t={timestamp},v1={}",
            switchyard::stripe::signature::sign(secret, timestamp, body.as_bytes())
        );
    }
    let mut child = Command::new("node")
        .arg(format!("{signer}/sign.js"))
        .args([secret, &timestamp.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the Stripe signer failed");
    String::from_utf8(output.stdout).unwrap()
}

/// A Stripe event envelope of `type` around `object`.
pub fn event(id: &str, event_type: &str, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": 1_700_000_000,
        "livemode": false,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": object},
    })
}

/// POSTs `event` to `path`, created and signed with `secret` at the server's now; (status, JSON
/// answer).
pub async fn deliver(
    srv: &TestServer,
    path: &str,
    secret: &str,
    event: &Value,
) -> (StatusCode, Value) {
    let now = srv.clock.now_ms() / 1000;
    let mut event = event.clone();
    event["created"] = json!(now);
    let body = event.to_string();
    let header = signature(secret, now, &body);
    send(srv, path, Some(&header), body).await
}

/// POSTs a raw body with an optional `Stripe-Signature`.
pub async fn send(
    srv: &TestServer,
    path: &str,
    header: Option<&str>,
    body: String,
) -> (StatusCode, Value) {
    let mut request = srv
        .client
        .post(srv.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(header) = header {
        request = request.header("stripe-signature", header);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A request the fake Stripe API received.
#[derive(Clone, Debug)]
pub struct StripeRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub content_type: Option<String>,
    /// The form body, decoded, in order.
    pub form: Vec<(String, String)>,
}

impl StripeRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answers the fake Stripe API gives, in order: (status, headers, JSON body).
type Answers = std::sync::Arc<
    std::sync::Mutex<std::collections::VecDeque<(u16, Vec<(String, String)>, Value)>>,
>;

/// A local stand-in for Stripe's API: records every request and answers from a queue of
/// (status, headers, JSON body), or 200 with an echo of the object when the queue is empty.
pub struct FakeStripe {
    pub url: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<StripeRequest>>>,
    answers: Answers,
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        use axum::http::HeaderMap;
        let requests: std::sync::Arc<std::sync::Mutex<Vec<StripeRequest>>> = Default::default();
        let answers: Answers = Default::default();
        let (seen, queued) = (requests.clone(), answers.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let (seen, queued) = (seen.clone(), queued.clone());
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    seen.lock().unwrap().push(StripeRequest {
                        path: uri.path().to_owned(),
                        authorization: header("authorization"),
                        idempotency_key: header("idempotency-key"),
                        content_type: header("content-type"),
                        form: url::form_urlencoded::parse(&body).into_owned().collect(),
                    });
                    let (status, extra, body) = queued.lock().unwrap().pop_front().unwrap_or((
                        200,
                        Vec::new(),
                        json!({"object": "billing.meter_event", "livemode": false}),
                    ));
                    let mut response = axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        axum::Json(body),
                    ));
                    for (name, value) in extra {
                        response.headers_mut().insert(
                            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                            value.parse().unwrap(),
                        );
                    }
                    response
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeStripe {
            url,
            requests,
            answers,
        }
    }

    /// Queues an answer for the next request.
    pub fn answer(&self, status: u16, headers: &[(&str, &str)], body: Value) {
        self.answers.lock().unwrap().push_back((
            status,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body,
        ));
    }

    pub fn received(&self) -> Vec<StripeRequest> {
        self.requests.lock().unwrap().clone()
    }
}
