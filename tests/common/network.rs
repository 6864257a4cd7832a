//! A local partner Network that answers as `docs/network-protocol.md` says: signups with a
//! one-time token, upserts kept by revision, creators deduplicated by e-mail, backfills,
//! heartbeats, payouts reports, offerings and requests. It can be taken down (every call then
//! answers 503) and brought back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};

/// A request the fake Network received.
#[derive(Clone, Debug)]
pub struct NetworkRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    requests: Vec<NetworkRequest>,
    down: bool,
    /// Reports answer 500 while set.
    refuse_reports: bool,
    /// The one-time token mailed for each signup, and the signup's body.
    signups: Vec<(String, Value)>,
    tokens_used: Vec<String>,
    vendor_token: Option<String>,
    /// Creator id per e-mail address.
    creators: BTreeMap<String, String>,
    /// Per partner id: the applied state (the highest revision), and every state received.
    partners: BTreeMap<String, Value>,
    received: BTreeMap<String, Vec<Value>>,
    reports: Vec<Value>,
    heartbeats: usize,
}

pub struct FakeNetwork {
    pub url: String,
    state: Arc<Mutex<State>>,
}

fn error(status: StatusCode, code: &str, message: &str) -> axum::response::Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

impl State {
    /// The creator of `partner` (an upsert's or backfill's), made on first sight of its e-mail.
    fn creator(&mut self, partner: &Value) -> (String, bool) {
        let email = partner["email"].as_str().unwrap_or_default().to_owned();
        let next = format!("cr_{}", self.creators.len() + 1);
        match self.creators.get(&email) {
            Some(id) => (id.clone(), true),
            None => {
                self.creators.insert(email, next.clone());
                (next, false)
            }
        }
    }

    /// Applies a partner's state unless an equal or newer revision was applied; whether it was.
    fn apply(&mut self, partner: &Value) -> bool {
        let id = partner["partner_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.received
            .entry(id.clone())
            .or_default()
            .push(partner.clone());
        let revision = partner["revision"].as_i64().unwrap_or_default();
        let newer = self
            .partners
            .get(&id)
            .is_none_or(|p| p["revision"].as_i64().unwrap_or_default() < revision);
        if newer {
            self.partners.insert(id, partner.clone());
        }
        newer
    }

    fn answer(
        &mut self,
        method: &Method,
        path: &str,
        auth: Option<&str>,
        body: &Value,
    ) -> axum::response::Response {
        if self.down {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the Network is down",
            );
        }
        let public = matches!(path, "/vendors/signup" | "/vendors/verify-and-issue-token");
        let authorized = self
            .vendor_token
            .as_deref()
            .is_some_and(|t| auth == Some(&format!("Bearer {t}")));
        if !public && !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a vendor token is required",
            );
        }
        match (method.as_str(), path) {
            ("POST", "/vendors/signup") => {
                let token = format!("otk_{}", self.signups.len() + 1);
                self.signups.push((token, body.clone()));
                let id = format!("sgn_{}", self.signups.len());
                (StatusCode::ACCEPTED, axum::Json(json!({"signup_id": id, "status": "pending_verification"}))).into_response()
            }
            ("POST", "/vendors/verify-and-issue-token") => {
                let token = body["token"].as_str().unwrap_or_default().to_owned();
                let known = self.signups.iter().any(|(t, _)| *t == token);
                if !known || self.tokens_used.contains(&token) {
                    return error(StatusCode::BAD_REQUEST, "invalid_token", "The token is not valid.");
                }
                self.tokens_used.push(token);
                let vendor_token = format!("nvt_secret_vendor_token_{}", self.tokens_used.len());
                self.vendor_token = Some(vendor_token.clone());
                axum::Json(json!({"vendor_id": "vnd_8fK2", "vendor_token": vendor_token})).into_response()
            }
            ("POST", "/partners/upsert") => {
                let partner = &body["partner"];
                let (creator, existed) = self.creator(partner);
                let applied = self.apply(partner);
                axum::Json(json!({"creator_id": creator, "already_existed": existed, "stale": !applied})).into_response()
            }
            ("POST", "/vendors/backfill-partners") => {
                let mut results = Vec::new();
                for partner in body["partners"].as_array().cloned().unwrap_or_default() {
                    let id = partner["partner_id"].clone();
                    if !partner["email"].as_str().is_some_and(|e| e.contains('@')) {
                        results.push(json!({"partner_id": id, "status": "failed", "error": "invalid email"}));
                        continue;
                    }
                    let (creator, existed) = self.creator(&partner);
                    self.apply(&partner);
                    let status = if existed { "already_existed" } else { "created" };
                    results.push(json!({"partner_id": id, "creator_id": creator, "status": status}));
                }
                axum::Json(json!({"results": results})).into_response()
            }
            ("POST", "/vendors/me/heartbeat") => {
                self.heartbeats += 1;
                axum::Json(json!({})).into_response()
            }
            ("POST", "/vendors/me/report-payouts") => {
                if self.refuse_reports {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "try again later");
                }
                self.reports.push(body.clone());
                axum::Json(json!({"accepted": true})).into_response()
            }
            ("GET", "/vendors/me/offerings") => axum::Json(json!({"data": [
                {"id": "off_1", "title": "Spring", "status": "live"}]})).into_response(),
            ("POST", "/vendors/me/offerings") => {
                let mut offering = body.clone();
                offering["id"] = json!("off_2");
                axum::Json(offering).into_response()
            }
            ("PATCH", "/vendors/me/offerings/off_1") => {
                let mut offering = json!({"id": "off_1", "title": "Spring", "status": "live"});
                for (k, v) in body.as_object().cloned().unwrap_or_default() {
                    offering[k] = v;
                }
                axum::Json(offering).into_response()
            }
            ("DELETE", "/vendors/me/offerings/off_1") => {
                axum::Json(json!({"id": "off_1", "deleted": true})).into_response()
            }
            ("GET", "/vendors/me/requests") => axum::Json(json!({"data": [
                {"id": "req_1", "creator_id": "cr_9", "offering_id": "off_1", "status": "pending"}]}))
            .into_response(),
            ("POST", "/vendors/me/requests/req_1/approve") => axum::Json(json!(
                {"id": "req_1", "status": "approved"})).into_response(),
            ("POST", p) if p.starts_with("/vendors/me/requests/") => {
                error(StatusCode::NOT_FOUND, "not_found", "No such request.")
            }
            _ => error(StatusCode::NOT_FOUND, "not_found", "No such route."),
        }
    }
}

impl FakeNetwork {
    pub async fn start() -> FakeNetwork {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let state = shared.clone();
                async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let mut state = state.lock().unwrap();
                    let path = uri.path().to_owned();
                    state.requests.push(NetworkRequest {
                        method: method.to_string(),
                        path: match uri.query() {
                            Some(q) => format!("{path}?{q}"),
                            None => path.clone(),
                        },
                        authorization: auth.clone(),
                        body: body.clone(),
                    });
                    state.answer(&method, &path, auth.as_deref(), &body)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeNetwork { url, state }
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn refuse_reports(&self, refuse: bool) {
        self.state.lock().unwrap().refuse_reports = refuse;
    }

    /// The one-time token the Network mailed for the latest signup, and that signup's body.
    pub fn mailed(&self) -> (String, Value) {
        self.state
            .lock()
            .unwrap()
            .signups
            .last()
            .cloned()
            .expect("a signup")
    }

    pub fn vendor_token(&self) -> Option<String> {
        self.state.lock().unwrap().vendor_token.clone()
    }

    pub fn requests(&self) -> Vec<NetworkRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The state the Network applied for a partner (its highest revision).
    pub fn partner(&self, id: &str) -> Option<Value> {
        self.state.lock().unwrap().partners.get(id).cloned()
    }

    /// Every state of a partner received, in arrival order.
    pub fn received(&self, id: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .received
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn known(&self) -> usize {
        self.state.lock().unwrap().partners.len()
    }

    pub fn reports(&self) -> Vec<Value> {
        self.state.lock().unwrap().reports.clone()
    }

    pub fn heartbeats(&self) -> usize {
        self.state.lock().unwrap().heartbeats
    }

    /// A creator the Network knows by e-mail already (from another vendor).
    pub fn knows_creator(&self, email: &str) {
        let mut state = self.state.lock().unwrap();
        let id = format!("cr_elsewhere_{}", state.creators.len() + 1);
        state.creators.insert(email.to_owned(), id);
    }
}
