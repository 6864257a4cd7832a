//! The one outbound HTTP client: webhooks, postbacks, the Network and Stripe all send through it.
//!
//! Its SSRF guard refuses loopback, private, link-local, multicast, unspecified, reserved and
//! IPv4-embedding forms of them (mapped, compatible, NAT64, 6to4), unless the address is inside an allowlisted network
//! (`SWITCHYARD_OUTBOUND_ALLOW`; tests allow 127.0.0.0/8). The check runs where the connection is
//! made: host names are resolved by the guard's own resolver, which hands the connector only
//! permitted addresses, so a name that resolves to a public address when checked and to an
//! internal one when used (DNS rebinding) cannot slip through. Literal addresses never reach a
//! resolver and are checked before sending. Redirects are never followed, and proxies from the
//! environment are ignored (a proxy would resolve names past the guard).

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
    Connect,
    SsrfBlocked,
    InvalidUrl,
    Other,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
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

/// A target the guard refused. A host name that does not resolve is refused in the same words
/// as one that resolves only to internal addresses, and neither names an address: a tenant
/// probing with webhook URLs cannot tell which internal names exist.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("address {0} is not allowed for outbound requests")]
    Address(IpAddr),
    #[error("host {0} has no address that outbound requests may reach")]
    Name(String),
}

impl Guard {
    /// A guard that additionally permits `allow` (CIDR networks such as `127.0.0.0/8`).
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }
}

/// True for addresses on the public internet. IPv6 forms that carry an IPv4 address (mapped,
/// IPv4-compatible, NAT64, 6to4) are judged by the IPv4 address they carry.
fn is_public(ip: IpAddr) -> bool {
    let v6 = match ip {
        IpAddr::V4(v4) => return is_public_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    let segments = v6.segments();
    let octets = v6.octets();
    let v4_at = |i: usize| Ipv4Addr::new(octets[i], octets[i + 1], octets[i + 2], octets[i + 3]);
    // Mapped ::ffff:0:0/96, IPv4-compatible ::/96 (:: and ::1 included), SIIT ::ffff:0:0:0/96,
    // NAT64 64:ff9b::/96.
    if v6.to_ipv4_mapped().is_some()
        || segments[..6] == [0; 6]
        || segments[..6] == [0, 0, 0, 0, 0xffff, 0]
        || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        return is_public_v4(v4_at(12));
    }
    // 6to4 2002::/16 carries the IPv4 address in its second and third segments.
    if segments[0] == 0x2002 {
        return is_public_v4(v4_at(2));
    }
    !(v6.is_multicast()
        || segments[..3] == [0x64, 0xff9b, 1] // local-use NAT64 64:ff9b:1::/48
        || (segments[0] == 0x2001 && segments[1] < 0x200) // IETF 2001::/23 (Teredo, ORCHID, benchmarking)
        || segments[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || (segments[0] == 0x3fff && segments[1] < 0x1000) // documentation 3fff::/20
        || segments[0] == 0x5f00 // segment routing 5f00::/16
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || segments[..2] == [0x2001, 0xdb8]) // documentation
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
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments 192.0.0.0/24
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
            let permitted: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map(|found| found.filter(|addr| guard.permits(addr.ip())).collect())
                .unwrap_or_default();
            if permitted.is_empty() {
                let refused = Refused::Name(name.as_str().to_owned());
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
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
            // HTTP_PROXY and its kin would send host names to a proxy that resolves them past
            // the guard: outbound requests always connect themselves.
            .no_proxy()
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
                detail: Refused::Address(ip).to_string(),
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
        if let Some(b) = cause.downcast_ref::<Refused>() {
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
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b:1::5db8:d822",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "::ffff:0:7f00:1",
            "100::1",
            "3fff::1",
            "5f00::1",
            "192.0.0.170",
        ] {
            assert!(!guard.permits(refused.parse().unwrap()), "{refused}");
        }
        for allowed in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:93.184.216.34",
            "::93.184.216.34",
            "2002:5db8:d822::1",
            "2001:4860:4860::8888",
            "192.0.1.1",
        ] {
            assert!(guard.permits(allowed.parse().unwrap()), "{allowed}");
        }
        let tests = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(tests.permits("127.0.0.1".parse().unwrap()));
        assert!(!tests.permits("10.0.0.1".parse().unwrap()));
    }
}
