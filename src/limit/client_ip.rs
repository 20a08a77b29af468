//! Who the client is: the TCP peer, unless the peer is a trusted proxy, in which
//! case `X-Forwarded-For` is walked right to left past every trusted hop.
//! Only entries added by proxies we trust can be believed; the leftmost ones are
//! whatever the client wrote.

use ipnet::IpNet;
use std::net::IpAddr;

/// The configured trusted proxy ranges.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trust exactly these ranges.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether `ip` is one of our proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a connection from `peer` carrying the given
    /// `X-Forwarded-For` header values (in order received).
    pub fn client_ip<'a, I>(&self, peer: IpAddr, xff: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: DoubleEndedIterator,
    {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for header in xff.into_iter().rev() {
            for entry in header.rsplit(',') {
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                let Some(ip) = parse_entry(entry) else {
                    // Garbage: nothing left of it can be trusted.
                    return client;
                };
                client = ip;
                if !self.contains(ip) {
                    return ip;
                }
            }
        }
        client
    }
}

/// An XFF entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    None
}

/// The address block one client holds: an IPv4 address (IPv4-mapped IPv6
/// included), or the /64 an IPv6 address is in (one host usually holds a
/// whole /64, so single addresses would give it endless fresh keys).
pub fn block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(
            tp().client_ip(ip("203.0.113.9"), ["1.1.1.1"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn walks_right_to_left_past_trusted_hops() {
        let got = tp().client_ip(ip("10.0.0.2"), ["6.6.6.6, 198.51.100.7, 10.0.0.5"]);
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn several_headers_are_one_list() {
        let got = tp().client_ip(ip("10.0.0.2"), ["6.6.6.6", "198.51.100.7", "10.1.1.1"]);
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn all_trusted_gives_leftmost() {
        assert_eq!(tp().client_ip(ip("10.0.0.2"), ["10.0.0.3"]), ip("10.0.0.3"));
    }

    #[test]
    fn garbage_stops_the_walk() {
        assert_eq!(
            tp().client_ip(ip("10.0.0.2"), ["1.1.1.1, junk, 10.0.0.9"]),
            ip("10.0.0.9")
        );
        assert_eq!(tp().client_ip(ip("10.0.0.2"), ["junk"]), ip("10.0.0.2"));
    }

    #[test]
    fn mapped_v4_and_ports() {
        let got = tp().client_ip(ip("::ffff:10.0.0.2"), ["198.51.100.7:4444"]);
        assert_eq!(got, ip("198.51.100.7"));
        assert_eq!(
            tp().client_ip(ip("::1"), ["[2001:db8::1]:80"]),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn no_header_means_the_peer() {
        assert_eq!(tp().client_ip(ip("10.0.0.2"), []), ip("10.0.0.2"));
    }
}
