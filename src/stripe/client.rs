//! The one outbound Stripe client: usage meters, Connect accounts and transfers for payouts.
//!
//! - Requests are form-encoded as Stripe expects, nested objects as `a[b]=v` and arrays as
//!   `a[0]=v` ([`form`]), and every POST carries an `Idempotency-Key` derived from what the
//!   request is for (a meter window, a payout), so a retry after a crash is the same request.
//! - One attempt per call; the caller's job retries on the queue (durable, as every side effect
//!   here), after [`StripeError::retry`] decides as Stripe's libraries do: `Stripe-Should-Retry`
//!   wins when present; otherwise connection errors, 409 and 5xx are retried, 429 only when the
//!   header says so; `Retry-After` is honoured up to 60 s.
//! - A request-rate limit per Stripe account (`SWITCHYARD_STRIPE_RATE_LIMIT`, default 25/s)
//!   makes requests wait their turn before they reach Stripe's own limit. They are spaced
//!   evenly, without a burst, so no second ever carries more than the limit.
//! - Every request goes through the outbound client and its SSRF guard. The API base
//!   (`SWITCHYARD_STRIPE_API_BASE`, for a local fake in tests) is allowlisted only when set.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use serde_json::Value;

use crate::outbound::{Guard, Outbound, SendError};

/// Stripe's production API.
pub const API_BASE: &str = "https://api.stripe.com";
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

pub struct StripeClient {
    outbound: Outbound,
    base: String,
    limits: DefaultKeyedRateLimiter<String>,
}

/// Why a Stripe request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error: `{"error": {type, code, message, param}}`.
    #[error("Stripe answered {status}: {kind} {code}: {message}")]
    Api {
        status: u16,
        kind: String,
        code: String,
        message: String,
        param: Option<String>,
        /// `Stripe-Should-Retry`, when Stripe sent it.
        should_retry: Option<bool>,
        retry_after: Option<Duration>,
    },
    /// No answer: the request may or may not have reached Stripe (retrying is safe: the
    /// idempotency key makes it the same request).
    #[error("Stripe could not be reached: {0}")]
    Transport(SendError),
}

impl StripeError {
    /// Whether to try again, and after how long at the earliest (`None`: the queue's schedule).
    pub fn retry(&self) -> Option<Option<Duration>> {
        match self {
            Self::Api {
                status,
                should_retry,
                retry_after,
                ..
            } => {
                let retry = should_retry.unwrap_or(*status == 409 || *status >= 500);
                retry.then_some(*retry_after)
            }
            Self::Transport(_) => Some(None),
        }
    }
}

impl StripeClient {
    /// A client for `base` (Stripe's API unless configured otherwise). `allow` is the outbound
    /// allowlist; an explicitly configured base is added to it.
    pub fn new(
        base: Option<&str>,
        allow: &[IpNet],
        timeout: Duration,
        per_account: NonZeroU32,
    ) -> anyhow::Result<Self> {
        let mut allow = allow.to_vec();
        if let Some(base) = base {
            let url = url::Url::parse(base)
                .map_err(|e| anyhow::anyhow!("SWITCHYARD_STRIPE_API_BASE: {e}"))?;
            let loopback = url.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            anyhow::ensure!(
                url.scheme() == "https" || loopback,
                "SWITCHYARD_STRIPE_API_BASE must be https (plain http only to a loopback stand-in)"
            );
            let port = url.port_or_known_default().unwrap_or(443);
            let host = url
                .host_str()
                .ok_or_else(|| anyhow::anyhow!("SWITCHYARD_STRIPE_API_BASE has no host"))?
                .trim_matches(['[', ']']);
            for addr in std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                .map_err(|e| anyhow::anyhow!("SWITCHYARD_STRIPE_API_BASE {host}: {e}"))?
            {
                allow.push(IpNet::from(addr.ip()));
            }
        }
        Ok(Self {
            outbound: Outbound::new(Guard::new(allow), timeout),
            base: base.unwrap_or(API_BASE).trim_end_matches('/').to_owned(),
            limits: RateLimiter::keyed(Quota::per_second(per_account).allow_burst(NonZeroU32::MIN)),
        })
    }

    /// POSTs `params` (a JSON object, form-encoded) to `path` with `secret_key`, on behalf of
    /// the connected `account` when given. Returns Stripe's JSON answer.
    pub async fn post(
        &self,
        secret_key: &str,
        path: &str,
        params: &Value,
        idempotency_key: &str,
        account: Option<&str>,
    ) -> Result<Value, StripeError> {
        let request = self
            .outbound
            .request(reqwest::Method::POST, &format!("{}{path}", self.base))
            .map_err(StripeError::Transport)?
            .header("Idempotency-Key", idempotency_key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form(params));
        self.send(secret_key, request, account).await
    }

    /// GETs `path` (an object: `/v1/accounts/acct_...`) with `secret_key`.
    pub async fn get(&self, secret_key: &str, path: &str) -> Result<Value, StripeError> {
        let request = self
            .outbound
            .request(reqwest::Method::GET, &format!("{}{path}", self.base))
            .map_err(StripeError::Transport)?;
        self.send(secret_key, request, None).await
    }

    async fn send(
        &self,
        secret_key: &str,
        request: reqwest::RequestBuilder,
        account: Option<&str>,
    ) -> Result<Value, StripeError> {
        // Waits its turn (a fraction of a second at the default rate) rather than failing.
        let bucket = account.map_or_else(|| key_account(secret_key), str::to_owned);
        self.limits.until_key_ready(&bucket).await;
        let mut request = request.bearer_auth(secret_key);
        if let Some(account) = account {
            request = request.header("Stripe-Account", account);
        }
        let response = self
            .outbound
            .send(request)
            .await
            .map_err(StripeError::Transport)?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let should_retry = header("stripe-should-retry").map(|v| v == "true");
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let error = &body["error"];
        let text = |field: &str| error[field].as_str().unwrap_or_default().to_owned();
        Err(StripeError::Api {
            status,
            kind: text("type"),
            code: text("code"),
            message: text("message"),
            param: error["param"].as_str().map(str::to_owned),
            should_retry,
            retry_after,
        })
    }
}

/// The rate-limit bucket of a platform key: its last characters (never the key itself).
fn key_account(secret_key: &str) -> String {
    let tail: Vec<char> = secret_key.chars().rev().take(8).collect();
    format!("key:{}", tail.into_iter().rev().collect::<String>())
}

/// Stripe's form encoding of a JSON object: nested objects as `a[b]=v`, arrays as `a[0]=v`,
/// booleans as `true`/`false`, nulls left out.
pub fn form(params: &Value) -> String {
    fn flatten(prefix: &str, value: &Value, out: &mut url::form_urlencoded::Serializer<String>) {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields {
                    let key = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}[{name}]")
                    };
                    flatten(&key, field, out);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    flatten(&format!("{prefix}[{i}]"), item, out);
                }
            }
            Value::Null => {}
            Value::String(text) => {
                out.append_pair(prefix, text);
            }
            other => {
                out.append_pair(prefix, &other.to_string());
            }
        }
    }
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    flatten("", params, &mut out);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_objects_and_arrays_are_form_encoded_as_stripe_reads_them() {
        let params = json!({
            "event_name": "switchyard_attributed_revenue",
            "payload": {"stripe_customer_id": "cus_1", "value": "1250"},
            "metadata": {"payout_id": "pay_1"},
            "expand": ["a", "b"],
            "livemode": false,
            "amount": 125,
            "skipped": null,
            "note": "a&b=c ü",
        });
        // Fields in name order (serde_json's maps are sorted; Stripe does not mind).
        assert_eq!(
            form(&params),
            "amount=125&event_name=switchyard_attributed_revenue&expand%5B0%5D=a\
             &expand%5B1%5D=b&livemode=false&metadata%5Bpayout_id%5D=pay_1\
             &note=a%26b%3Dc+%C3%BC&payload%5Bstripe_customer_id%5D=cus_1&payload%5Bvalue%5D=1250"
        );
    }

    #[test]
    fn retries_follow_stripes_rules() {
        let api = |status, should_retry| StripeError::Api {
            status,
            kind: String::new(),
            code: String::new(),
            message: String::new(),
            param: None,
            should_retry,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(api(500, None).retry(), Some(Some(Duration::from_secs(3))));
        assert_eq!(api(409, None).retry(), Some(Some(Duration::from_secs(3))));
        assert_eq!(api(429, None).retry(), None, "429 only when told");
        assert!(api(429, Some(true)).retry().is_some());
        assert_eq!(api(500, Some(false)).retry(), None, "the header wins");
        assert_eq!(api(400, None).retry(), None);
    }
}
