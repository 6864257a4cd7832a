//! Stripe's side: events signed by Stripe's official library (the npm `stripe` package in
//! `tests/stripe-signer`, installed by `.ci/run`), sending them to the hub, and a local fake of
//! Stripe's API for what the hub calls.

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
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub content_type: Option<String>,
    /// The form body, decoded, in order.
    pub form: Vec<(String, String)>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl StripeRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer queued for the next request (to a path starting with `prefix`, when given). A
/// lost answer is given after the request was carried out, as when Stripe did the work and
/// the answer never arrived.
struct Queued {
    prefix: Option<String>,
    lost: bool,
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

/// A form, decoded, in order.
type Form = Vec<(String, String)>;

/// What the fake Stripe keeps, as Stripe does.
#[derive(Default)]
struct Ledger {
    requests: Vec<StripeRequest>,
    queued: std::collections::VecDeque<Queued>,
    accounts: std::collections::BTreeMap<String, Value>,
    transfers: Vec<Value>,
    /// Idempotency key -> (the request's form, status, body): a key's first result, replayed.
    keyed: std::collections::HashMap<String, (Form, u16, Value)>,
    replays: usize,
    delay: std::time::Duration,
}

/// A local stand-in for Stripe's API that answers as Stripe documents: accounts
/// (`POST /v1/accounts`, `GET /v1/accounts/{id}`), account links, transfers and meter events,
/// with Stripe's idempotency (a key's first result is replayed with `Idempotent-Replayed: true`;
/// the same key with other parameters is a 400 `idempotency_error`). Errors are queued on
/// request ([`FakeStripe::answer`], [`FakeStripe::answer_on`]) and, like Stripe's rate limits
/// and validation errors, are not kept for their key.
pub struct FakeStripe {
    pub url: String,
    ledger: std::sync::Arc<std::sync::Mutex<Ledger>>,
}

fn stripe_error(status: u16, kind: &str, code: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"type": kind, "code": code, "message": message}}),
    )
}

/// The nested form field `a[b][c]` of a decoded form.
fn form_value<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Ledger {
    /// Stripe's answer to a request no queued answer took.
    fn route(&mut self, method: &str, path: &str, form: &[(String, String)]) -> (u16, Value) {
        let n = self.requests.len();
        match (method, path) {
            ("POST", "/v1/accounts") => {
                let id = format!("acct_1Fake{n:011}");
                let account = json!({
                    "id": id, "object": "account", "type": "express",
                    "email": form_value(form, "email"),
                    "country": form_value(form, "country").unwrap_or("US"),
                    "metadata": {"switchyard_partner_id": form_value(form, "metadata[switchyard_partner_id]")},
                    "details_submitted": false, "charges_enabled": false, "payouts_enabled": false,
                    "capabilities": {"transfers": "inactive"},
                    "requirements": {"currently_due": ["external_account", "tos_acceptance.date"],
                                     "disabled_reason": "requirements.past_due"},
                });
                self.accounts.insert(id, account.clone());
                (200, account)
            }
            ("POST", "/v1/account_links") => {
                let account = form_value(form, "account").unwrap_or_default();
                if !self.accounts.contains_key(account) {
                    return stripe_error(
                        400,
                        "invalid_request_error",
                        "resource_missing",
                        &format!("No such account: '{account}'"),
                    );
                }
                (
                    200,
                    json!({
                        "object": "account_link", "created": 1_700_000_000,
                        "expires_at": 1_700_000_300,
                        "url": format!("https://connect.stripe.com/setup/e/{account}/link{n}"),
                    }),
                )
            }
            ("POST", "/v1/transfers") => {
                let destination = form_value(form, "destination").unwrap_or_default();
                let ready = self
                    .accounts
                    .get(destination)
                    .is_some_and(|a| a["capabilities"]["transfers"] == "active");
                if !ready {
                    return stripe_error(400, "invalid_request_error", "insufficient_capabilities_for_transfer",
                        "Your destination account needs to have at least one of the following capabilities enabled: transfers, crypto_transfers, legacy_payments");
                }
                let transfer = json!({
                    "id": format!("tr_1Fake{n:011}"), "object": "transfer",
                    "amount": form_value(form, "amount").and_then(|a| a.parse::<i64>().ok()),
                    "currency": form_value(form, "currency"),
                    "destination": destination,
                    "transfer_group": form_value(form, "transfer_group"),
                    "metadata": {"payout_id": form_value(form, "metadata[payout_id]")},
                    "reversed": false, "amount_reversed": 0,
                });
                self.transfers.push(transfer.clone());
                (200, transfer)
            }
            ("POST", "/v1/billing/meter_events") => (
                200,
                json!({
                    "object": "billing.meter_event", "livemode": false,
                    "identifier": form_value(form, "identifier"),
                }),
            ),
            ("GET", "/v1/transfers") => {
                let group = form_value(form, "transfer_group");
                let data: Vec<Value> = self
                    .transfers
                    .iter()
                    .filter(|t| group.is_none_or(|g| t["transfer_group"] == g))
                    .cloned()
                    .collect();
                (
                    200,
                    json!({"object": "list", "data": data, "has_more": false, "url": "/v1/transfers"}),
                )
            }
            ("GET", path) if path.starts_with("/v1/accounts/") => {
                let id = &path["/v1/accounts/".len()..];
                match self.accounts.get(id) {
                    Some(account) => (200, account.clone()),
                    None => stripe_error(
                        404,
                        "invalid_request_error",
                        "resource_missing",
                        &format!("No such account: '{id}'"),
                    ),
                }
            }
            _ => stripe_error(
                404,
                "invalid_request_error",
                "resource_missing",
                &format!("Unrecognized request URL ({method}: {path})"),
            ),
        }
    }
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        use axum::http::HeaderMap;
        let ledger: std::sync::Arc<std::sync::Mutex<Ledger>> = Default::default();
        let shared = ledger.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: axum::body::Bytes| {
                let ledger = shared.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let request = StripeRequest {
                        method: method.to_string(),
                        path: uri.path().to_owned(),
                        authorization: header("authorization"),
                        idempotency_key: header("idempotency-key"),
                        content_type: header("content-type"),
                        // A GET's parameters are in its query, a POST's in its body.
                        form: url::form_urlencoded::parse(if method == axum::http::Method::GET {
                            uri.query().unwrap_or_default().as_bytes()
                        } else {
                            &body
                        })
                        .into_owned()
                        .collect(),
                        at: std::time::Instant::now(),
                    };
                    // The answer is decided at once, under the lock (as Stripe commits a
                    // request before answering it); only the answer's sending is delayed.
                    let (status, extra, body, delay) = {
                        let mut ledger = ledger.lock().unwrap();
                        ledger.requests.push(request.clone());
                        let delay = ledger.delay;
                        let queued = ledger.queued.iter().position(|q| {
                            q.prefix.as_deref().is_none_or(|p| request.path.starts_with(p))
                        });
                        if let Some(at) = queued.filter(|at| !ledger.queued[*at].lost) {
                            let q = ledger.queued.remove(at).unwrap();
                            (q.status, q.headers, q.body, delay)
                        } else if let Some((form, status, body)) = request
                            .idempotency_key
                            .as_ref()
                            .and_then(|key| ledger.keyed.get(key))
                            .cloned()
                        {
                            if form == request.form {
                                ledger.replays += 1;
                                let replayed = vec![("idempotent-replayed".to_owned(), "true".to_owned())];
                                (status, replayed, body, delay)
                            } else {
                                let (status, body) = stripe_error(400, "idempotency_error", "",
                                    "Keys for idempotent requests can only be used with the same parameters they were first used with.");
                                (status, Vec::new(), body, delay)
                            }
                        } else {
                            let (status, body) = ledger.route(&request.method, &request.path, &request.form);
                            if let (Some(key), "POST") = (&request.idempotency_key, request.method.as_str()) {
                                ledger.keyed.insert(key.clone(), (request.form.clone(), status, body.clone()));
                            }
                            match queued {
                                Some(at) => {
                                    let q = ledger.queued.remove(at).unwrap();
                                    (q.status, q.headers, q.body, delay)
                                }
                                None => (status, Vec::new(), body, delay),
                            }
                        }
                    };
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
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
        FakeStripe { url, ledger }
    }

    fn queue(
        &self,
        prefix: Option<&str>,
        lost: bool,
        status: u16,
        headers: &[(&str, &str)],
        body: Value,
    ) {
        self.ledger.lock().unwrap().queued.push_back(Queued {
            prefix: prefix.map(str::to_owned),
            lost,
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body,
        });
    }

    /// Queues an answer for the next request.
    pub fn answer(&self, status: u16, headers: &[(&str, &str)], body: Value) {
        self.queue(None, false, status, headers, body);
    }

    /// Queues an answer for the next request to a path starting with `prefix`.
    pub fn answer_on(&self, prefix: &str, status: u16, headers: &[(&str, &str)], body: Value) {
        self.queue(Some(prefix), false, status, headers, body);
    }

    /// The next request to a path starting with `prefix` is carried out, but answered with a
    /// 500 instead of its result.
    pub fn lose_answer_on(&self, prefix: &str) {
        let body = json!({"error": {"type": "api_error", "message": "An unknown error occurred"}});
        self.queue(Some(prefix), true, 500, &[], body);
    }

    /// Answers every request `delay` after deciding it.
    pub fn delay(&self, delay: std::time::Duration) {
        self.ledger.lock().unwrap().delay = delay;
    }

    pub fn received(&self) -> Vec<StripeRequest> {
        self.ledger.lock().unwrap().requests.clone()
    }

    /// The transfers made, in order.
    pub fn transfers(&self) -> Vec<Value> {
        self.ledger.lock().unwrap().transfers.clone()
    }

    /// How many requests were answered with a key's first result.
    pub fn replays(&self) -> usize {
        self.ledger.lock().unwrap().replays
    }

    pub fn accounts(&self) -> Vec<Value> {
        self.ledger
            .lock()
            .unwrap()
            .accounts
            .values()
            .cloned()
            .collect()
    }

    /// The account finishes onboarding: payouts enabled, transfers active. Returns it as
    /// `account.updated` carries it.
    pub fn make_ready(&self, id: &str) -> Value {
        let mut ledger = self.ledger.lock().unwrap();
        let account = ledger.accounts.get_mut(id).expect("a known account");
        account["details_submitted"] = json!(true);
        account["payouts_enabled"] = json!(true);
        account["capabilities"]["transfers"] = json!("active");
        account["requirements"] = json!({"currently_due": [], "disabled_reason": null});
        account.clone()
    }

    /// Stripe restricts the account (e.g. a verification became due).
    pub fn restrict(&self, id: &str) -> Value {
        let mut ledger = self.ledger.lock().unwrap();
        let account = ledger.accounts.get_mut(id).expect("a known account");
        account["payouts_enabled"] = json!(false);
        account["capabilities"]["transfers"] = json!("inactive");
        account["requirements"] = json!({"currently_due": ["individual.verification.document"],
            "disabled_reason": "requirements.past_due"});
        account.clone()
    }
}
