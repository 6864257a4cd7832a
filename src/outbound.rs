//! The one outbound HTTP client: webhooks, postbacks, the Network and Stripe all send through it.
//!
//! Its SSRF guard refuses loopback, private, link-local, multicast, unspecified, reserved and
//! IPv4-mapped/NAT64 forms of them, unless the address is inside an allowlisted network
//! (`SWITCHYARD_OUTBOUND_ALLOW`; tests allow 127.0.0.0/8). The check runs where the connection is
//! made: host names are resolved by the guard's own resolver, which hands the connector only
//! permitted addresses, so a name that resolves to a public address when checked and to an
//! internal one when used (DNS rebinding) cannot slip through. Literal addresses never reach a
//! resolver and are checked before sending. Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses outbound requests may reach.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

/// Why an outbound request failed, as recorded on attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    Timeout,
    Dns,
    Connect,
    SsrfBlocked,
    InvalidUrl,
    Other,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::SsrfBlocked => "ssrf_blocked",
            Self::InvalidUrl => "invalid_url",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{class:?}: {detail}")]
pub struct SendError {
    pub class: FailureClass,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
#[error("address {0} is not allowed for outbound requests")]
struct Blocked(IpAddr);

impl Guard {
    /// A guard that additionally permits `allow` (CIDR networks such as `127.0.0.0/8`).
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }
}

/// True for addresses on the public internet.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) embeds an IPv4 address in the last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., a, b, c, d] = v6.octets();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || segments[..2] == [0x2001, 0xdb8]) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || a >= 240) // reserved 240.0.0.0/4
}

/// Resolves host names and keeps only the addresses the guard permits.
struct GuardedResolver {
    guard: Arc<Guard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            let permitted: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| guard.permits(addr.ip()))
                .collect();
            if permitted.is_empty() {
                if let Some(first) = resolved.first() {
                    return Err(
                        Box::new(Blocked(first.ip())) as Box<dyn std::error::Error + Send + Sync>
                    );
                }
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// The outbound client.
#[derive(Clone, Debug)]
pub struct Outbound {
    client: reqwest::Client,
    guard: Arc<Guard>,
}

impl Outbound {
    pub fn new(guard: Guard, timeout: Duration) -> Self {
        let guard = Arc::new(guard);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("Switchyard/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
            .build()
            .expect("the outbound HTTP client builds");
        Self { client, guard }
    }

    /// A request builder; send it with [`Outbound::send`].
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        let parsed = url::Url::parse(url).map_err(|e| SendError {
            class: FailureClass::InvalidUrl,
            detail: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SendError {
                class: FailureClass::InvalidUrl,
                detail: format!("scheme {:?} is not http or https", parsed.scheme()),
            });
        }
        // Literal addresses are connected to directly, without the resolver: check them here.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.guard.permits(*ip)) {
            return Err(SendError {
                class: FailureClass::SsrfBlocked,
                detail: Blocked(ip).to_string(),
            });
        }
        Ok(self.client.request(method, parsed))
    }

    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        request.send().await.map_err(classify)
    }
}

fn classify(err: reqwest::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut blocked = None;
    let mut io_kind = None;
    while let Some(cause) = source {
        if let Some(b) = cause.downcast_ref::<Blocked>() {
            blocked = Some(b.to_string());
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        source = cause.source();
    }
    let class = if let Some(detail) = blocked {
        return SendError {
            class: FailureClass::SsrfBlocked,
            detail,
        };
    } else if err.is_timeout() {
        FailureClass::Timeout
    } else if err.is_connect() && format!("{err:?}").contains("dns error") {
        FailureClass::Dns
    } else if err.is_connect() || io_kind.is_some() {
        FailureClass::Connect
    } else {
        FailureClass::Other
    };
    SendError {
        class,
        detail: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowlisted() {
        let guard = Guard::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!guard.permits(refused.parse().unwrap()), "{refused}");
        }
        for allowed in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:93.184.216.34",
        ] {
            assert!(guard.permits(allowed.parse().unwrap()), "{allowed}");
        }
        let tests = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(tests.permits("127.0.0.1".parse().unwrap()));
        assert!(!tests.permits("10.0.0.1".parse().unwrap()));
    }
}
