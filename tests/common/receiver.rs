//! A real local HTTP receiver standing in for Zapier, a tenant's service or a partner's ad
//! tracker: it answers with queued responses and reports every request it gets; and the check of
//! a signed delivery by the reference Standard Webhooks library.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::json;
use tokio::sync::mpsc;

/// A request the receiver got.
pub struct Received {
    pub method: Method,
    /// Path and query, as sent.
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A queued answer: status and extra headers.
pub type Answer = (u16, Vec<(&'static str, &'static str)>);

/// A local HTTP receiver: answers with the queued responses (200 when none is queued) and
/// reports every request it gets.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`; every path and method is received.
    pub url: String,
    answers: Arc<Mutex<VecDeque<Answer>>>,
    received: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let answers: Arc<Mutex<VecDeque<Answer>>> = Arc::default();
        let (tx, received) = mpsc::unbounded_channel();
        let queued = answers.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let queued = queued.clone();
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Received {
                        method,
                        uri,
                        headers,
                        body,
                    });
                    let (status, headers) = queued
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((200, Vec::new()));
                    let mut response =
                        (StatusCode::from_u16(status).unwrap(), "thanks").into_response();
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    response
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url,
            answers,
            received,
        }
    }

    pub fn answer(&self, status: u16, headers: Vec<(&'static str, &'static str)>) {
        self.answers.lock().unwrap().push_back((status, headers));
    }

    /// True when a request arrived that was not taken with [`Receiver::next`] yet.
    pub fn has_more(&mut self) -> bool {
        !self.received.is_empty()
    }

    /// The next request if one arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.received.recv())
            .await
            .expect("a delivery arrives")
            .unwrap()
    }
}

/// Verifies a delivery with the reference Standard Webhooks library (PyPI `standardwebhooks`).
/// CI installs it and sets SWITCHYARD_TEST_REFERENCE_VERIFIER=1, which makes it mandatory.
pub fn verify_with_reference_library(secret: &str, received: &Received) -> bool {
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
request = json.load(sys.stdin)
Webhook(request["secret"]).verify(request["body"], request["headers"])
"#;
    let header = |name: &str| received.headers[name].to_str().unwrap().to_owned();
    let input = json!({
        "secret": secret,
        "body": String::from_utf8(received.body.to_vec()).unwrap(),
        "headers": {
            "webhook-id": header("webhook-id"),
            "webhook-timestamp": header("webhook-timestamp"),
            "webhook-signature": header("webhook-signature"),
        },
    });
    let mut child = match std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            assert!(
                std::env::var("SWITCHYARD_TEST_REFERENCE_VERIFIER").is_err(),
                "the reference verifier is required here, and python3 does not run: {err}"
            );
            return false;
        }
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'standardwebhooks'") {
        assert!(
            std::env::var("SWITCHYARD_TEST_REFERENCE_VERIFIER").is_err(),
            "the reference verifier is required here: pip install standardwebhooks"
        );
        return false;
    }
    assert!(
        output.status.success(),
        "the reference library rejected the delivery: {stderr}"
    );
    true
}
