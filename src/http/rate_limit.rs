//! Request rate limits (GCRA, from `governor`): one bucket per API key for authenticated calls
//! and one per client IP for everything that presents no valid key. Over the limit the answer is
//! 429 `rate_limited` with `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::app::AppState;

use super::error::{Error, Result};

pub struct RateLimits {
    per_key: DefaultKeyedRateLimiter<String>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl RateLimits {
    /// Limits in requests per second; each bucket also allows a burst of that many.
    pub fn new(per_key: NonZeroU32, per_ip: NonZeroU32) -> Self {
        Self {
            per_key: RateLimiter::keyed(Quota::per_second(per_key)),
            per_ip: RateLimiter::keyed(Quota::per_second(per_ip)),
            clock: DefaultClock::default(),
        }
    }

    pub fn check_key(&self, key_id: &str) -> Result<()> {
        self.per_key
            .check_key(&key_id.to_owned())
            .map_err(|not_until| self.limited(not_until.wait_time_from(self.clock.now())))
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<()> {
        self.per_ip
            .check_key(&ip)
            .map_err(|not_until| self.limited(not_until.wait_time_from(self.clock.now())))
    }

    fn limited(&self, wait: std::time::Duration) -> Error {
        Error::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    /// Forgets buckets that are full again, so the maps do not grow with every client seen.
    pub fn forget_idle(&self) {
        self.per_key.retain_recent();
        self.per_ip.retain_recent();
    }
}

/// Middleware: requests without an API key are limited by client IP. Requests with one are
/// limited by key once the key is verified (see the `Principal` extractor), and by IP if it is not.
pub async fn limit_anonymous(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match check_anonymous(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(limited) => axum::response::IntoResponse::into_response(limited),
    }
}

/// The per-IP limit of a request that presents no API key.
pub fn check_anonymous(state: &AppState, request: &Request) -> Result<()> {
    if request.headers().contains_key(AUTHORIZATION) {
        return Ok(());
    }
    match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => state.limits.check_ip(addr.ip()),
        None => Ok(()),
    }
}
