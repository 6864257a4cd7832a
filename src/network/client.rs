//! The partner Network's API, as `docs/network-protocol.md` writes it down: JSON over the
//! outbound client (and its SSRF guard), the vendor token as a bearer token.

use serde_json::Value;

use crate::outbound::Outbound;

/// Why a Network call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No answer: refused, not resolved, timed out, or refused by the SSRF guard.
    #[error("the Network could not be reached: {0}")]
    Unreachable(String),
    /// The Network answered with an error: `{"error": {"code", "message"}}`.
    #[error("the Network answered {status}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
}

impl NetworkError {
    /// Whether asking again later may succeed: no answer, a 408, a 429 or a 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
        }
    }
}

/// Calls `method {base}{path}` with `body` (JSON) and the vendor `token` when given; returns
/// the Network's JSON answer.
pub async fn call(
    outbound: &Outbound,
    method: reqwest::Method,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Value, NetworkError> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut request = outbound
        .request(method, &url)
        .map_err(|e| NetworkError::Unreachable(format!("{}: {}", e.class.as_str(), e.detail)))?;
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = outbound
        .send(request)
        .await
        .map_err(|e| NetworkError::Unreachable(format!("{}: {}", e.class.as_str(), e.detail)))?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(answer);
    }
    let text = |field: &str| answer["error"][field].as_str().map(str::to_owned);
    Err(NetworkError::Status {
        status,
        code: text("code").unwrap_or_else(|| "network_error".to_owned()),
        message: text("message").unwrap_or_else(|| format!("status {status}")),
    })
}
