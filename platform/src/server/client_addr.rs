//! Who a request comes from: the peer address, or, when the peer is a trusted proxy, the
//! client it forwarded for. Per-address limits (sessions created, observes held) count by it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The address a request comes from, as far as this server can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// A key naming the client for per-address limits, usable as a NATS key: the IPv4
    /// address, or the /64 of an IPv6 address (one subscriber gets a whole /64, so counting
    /// single IPv6 addresses would count nothing).
    pub fn limit_key(&self) -> String {
        match self.limit_ip() {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                format!("ip4-{a}-{b}-{c}-{d}")
            }
            IpAddr::V6(v6) => {
                let prefix = &v6.octets()[..8];
                format!("ip6-{}", lingr_proto::values::hex(prefix))
            }
        }
    }

    /// What [`ClientAddr::limit_key`] names, as an address: the IPv4 address (also when
    /// written as IPv4-mapped IPv6), or the /64 of an IPv6 one with the rest zeroed. A key
    /// for in-process counts that costs no allocation.
    pub fn limit_ip(&self) -> IpAddr {
        match self.0.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 127.0.0.1, ::1`.
    ///
    /// # Errors
    /// When an entry is neither an address nor a CIDR block.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("'{entry}' is not an IP address or CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client behind `peer`: the peer itself unless it is trusted, else the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy (entries left of it were written
    /// by the client and prove nothing).
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return ClientAddr(client);
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in forwarded.iter().rev() {
            let Some(hop) = parse_forwarded(entry.trim()) else {
                break;
            };
            client = hop.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        ClientAddr(client)
    }
}

/// An `X-Forwarded-For` entry: an address, with or without a port or IPv6 brackets.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

/// Says once per process that a private or loopback peer sends `X-Forwarded-For` without
/// being trusted: a load balancer left out of `--trusted-proxies` makes every client look
/// like one, and per-address limits then throttle the whole service.
pub(super) fn warn_if_untrusted_proxy(proxies: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let peer = peer.to_canonical();
    let looks_like_a_proxy = match peer {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local(),
    };
    if looks_like_a_proxy
        && headers.contains_key("x-forwarded-for")
        && !proxies.trusts(peer)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            %peer,
            "requests carry X-Forwarded-For from a peer --trusted-proxies does not list; per-address limits count that peer as a single client"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(list: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in list {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("header"),
            );
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let none = TrustedProxies::default();
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(none.client_of(ip("10.0.0.5"), &headers).0, ip("10.0.0.5"));
        let proxies = TrustedProxies::parse("10.0.0.0/8").expect("valid");
        assert_eq!(
            proxies.client_of(ip("10.0.0.5"), &headers).0,
            ip("203.0.113.9")
        );
        assert_eq!(
            proxies.client_of(ip("192.0.2.1"), &headers).0,
            ip("192.0.2.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").expect("valid");
        // The client wrote 1.1.1.1 itself; 198.51.100.7 is what our proxy saw.
        let headers = forwarded(&["1.1.1.1, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(
            proxies.client_of(ip("127.0.0.1"), &headers).0,
            ip("198.51.100.7")
        );
        let garbage = forwarded(&["nonsense"]);
        assert_eq!(
            proxies.client_of(ip("10.0.0.1"), &garbage).0,
            ip("10.0.0.1")
        );
        let with_port = forwarded(&["[2001:db8::1]:443"]);
        assert_eq!(
            proxies.client_of(ip("10.0.0.1"), &with_port).0,
            ip("2001:db8::1")
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let a = ClientAddr(ip("2001:db8:1:2::1")).limit_key();
        let b = ClientAddr(ip("2001:db8:1:2:ffff::9")).limit_key();
        assert_eq!(a, b);
        assert_ne!(a, ClientAddr(ip("2001:db8:1:3::1")).limit_key());
        let prefix = ClientAddr(ip("2001:db8:1:2::1")).limit_ip();
        assert_eq!(prefix, ip("2001:db8:1:2::"));
        assert_eq!(ClientAddr(ip("2001:db8:1:2:ffff::9")).limit_ip(), prefix);
        assert_ne!(ClientAddr(ip("2001:db8:1:3::1")).limit_ip(), prefix);
        assert_eq!(
            ClientAddr(ip("192.0.2.1")).limit_ip(),
            ip("192.0.2.1"),
            "an IPv4 client is its own key"
        );
        assert_eq!(
            ClientAddr(ip("::ffff:192.0.2.1")).limit_key(),
            "ip4-192-0-2-1",
            "IPv4-mapped is the IPv4 client, however it came"
        );
        assert_eq!(
            ClientAddr(ip("::ffff:192.0.2.1").to_canonical()).limit_key(),
            "ip4-192-0-2-1"
        );
        assert!(TrustedProxies::parse("10.0.0.0/8,bogus").is_err());
    }
}
