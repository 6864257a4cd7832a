//! Request rate limits (GCRA, from `governor`): one bucket per API key for authenticated calls
//! and one per client IP for everything that presents no valid key, whatever its headers, and
//! for every click. Over the limit the answer is 429 `rate_limited` with `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, Request};
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

/// The per-IP limit of a request that is not authenticated by a valid key (see
/// [`super::auth::authenticate`]), and of every click.
pub fn check_ip(state: &AppState, request: &Request) -> Result<()> {
    match client_ip(&state.config.trusted_proxies, request) {
        Some(ip) => state.limits.check_ip(ip),
        None => Ok(()),
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the last address
/// of `X-Forwarded-For` that is not a trusted proxy itself (each proxy appends the address it
/// saw, so only the addresses it and its trusted peers added are true).
pub fn client_ip(trusted: &[ipnet::IpNet], request: &Request) -> Option<IpAddr> {
    let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    let peer = peer.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    let forwarded = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A malformed entry ends what can be believed.
            Err(_) => break,
        }
    }
    Some(client)
}
