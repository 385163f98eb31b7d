//! The client address: the TCP peer, or, behind trusted proxies, the first untrusted hop of
//! `Forwarded` / `X-Forwarded-For` read from the right.
//!
//! The leftmost entry is never believed blindly: any client can write it. Only entries that a
//! trusted proxy appended (everything to the right of the first untrusted hop) are skipped.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;

/// A network in CIDR notation: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address (a /32 or /128); the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
            None => max,
        };
        // Addresses are compared in canonical form, so an IPv4-mapped network becomes IPv4.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                if prefix < 96 {
                    return Err(format!(
                        "{text:?} mixes IPv4-mapped and other IPv6 addresses; write the IPv4 \
                         network instead"
                    ));
                }
                (addr.to_canonical(), prefix - 96)
            }
            _ => (addr, prefix),
        };
        Ok(Cidr {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `addr` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `addr` with all but its first `prefix` bits cleared (a prefix past the address's length
/// keeps it whole).
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let prefix = prefix.min(32);
            let bits = u32::from(v4);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - prefix))
            };
            IpAddr::V4(kept.into())
        }
        IpAddr::V6(v6) => {
            let prefix = prefix.min(128);
            let bits = u128::from(v6);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - prefix))
            };
            IpAddr::V6(Ipv6Addr::from(kept))
        }
    }
}

/// The header your proxies append the client address to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1`: what nginx, HAProxy and cloud load balancers append.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ForwardedHeader {
    /// The name used in configuration, which is the header's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// Who is trusted to report the client address, and in which header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxies {
    /// The networks of reverse proxies whose forwarding header is believed.
    pub trusted: Vec<Cidr>,
    /// The one header they append to. The other is ignored: a client could write it, and a
    /// proxy that does not append to it would pass it on untouched.
    pub header: ForwardedHeader,
}

impl Proxies {
    /// Whether `addr` is a trusted proxy.
    pub fn trusts(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|cidr| cidr.contains(addr))
    }

    /// The client address of a request from `peer` with `headers`.
    ///
    /// From an untrusted peer, the peer itself. From a trusted one, the hops of the forwarding
    /// header are read from the right, skipping trusted ones; the first untrusted hop is the
    /// client. An entry that cannot be parsed ends the walk at the
    /// last trusted hop, since nothing left of it can be believed.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_hops(headers, self.header);
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(addr) if self.trusts(*addr) => client = *addr,
                Some(addr) => return *addr,
                None => return client,
            }
        }
        client
    }
}

/// The hops of `header` (for `Forwarded`, its `for=` parameters), left to right, across all of
/// its lines; `None` for an entry that is not an address.
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    let elements = headers
        .get_all(header.as_str())
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','));
    match header {
        ForwardedHeader::XForwardedFor => elements.map(|hop| parse_node(hop.trim())).collect(),
        ForwardedHeader::Forwarded => elements
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, value)| parse_node(value.trim().trim_matches('"')))
            })
            .collect(),
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(addr.to_canonical());
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    text.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(|addr| addr.to_canonical())
}

/// The bucket name of a client address, `\0ip:<addr>`: IPv4 as is, IPv6 by its first
/// `ipv6_prefix` bits, so one host cannot mint endless buckets from its /64. The NUL byte keeps
/// the name apart from every user name: no header value can hold one.
pub fn bucket(addr: IpAddr, ipv6_prefix: u8) -> String {
    match addr.to_canonical() {
        IpAddr::V4(v4) => format!("\0ip:{v4}"),
        v6 => format!("\0ip:{}/{ipv6_prefix}", mask(v6, ipv6_prefix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(cidrs: &[&str]) -> Proxies {
        Proxies {
            trusted: cidrs.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            header: ForwardedHeader::XForwardedFor,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// From an untrusted peer, X-Forwarded-For is ignored: spoofing it changes nothing.
    #[test]
    fn untrusted_peers_cannot_spoof() {
        let p = proxies(&["10.0.0.0/8"]);
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(p.client(ip("203.0.113.9"), &spoofed), ip("203.0.113.9"));
    }

    /// Behind trusted proxies the chain is read from the right; the leftmost, client-written
    /// entry is not believed when an untrusted hop stands right of it.
    #[test]
    fn trusted_chains_are_read_from_the_right() {
        let p = proxies(&["10.0.0.0/8"]);
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(p.client(ip("10.0.0.2"), &chain), ip("198.51.100.7"));
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7, 10.1.1.1"),
        ]);
        assert_eq!(p.client(ip("10.0.0.2"), &split), ip("198.51.100.7"));
        let all_trusted = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(p.client(ip("10.0.0.2"), &all_trusted), ip("10.9.9.9"));
        let garbage = headers(&[("x-forwarded-for", "6.6.6.6, nonsense, 10.1.1.1")]);
        assert_eq!(p.client(ip("10.0.0.2"), &garbage), ip("10.1.1.1"));
    }

    /// Only the configured header is read: a client-written `Forwarded` cannot override the
    /// X-Forwarded-For a proxy appended to.
    #[test]
    fn only_the_configured_header_is_read() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.7"));
    }

    /// `Forwarded`, when configured, is parsed with quoted, bracketed IPv6 and ports.
    #[test]
    fn forwarded_header_is_parsed() {
        let mut p = proxies(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        p.header = ForwardedHeader::Forwarded;
        let h = headers(&[
            ("x-forwarded-for", "7.7.7.7"),
            (
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8:1:2::99]:4711\";proto=https, For=\"[2001:db8:ffff::1]\"",
            ),
        ]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("2001:db8:1:2::99"));
    }

    /// IPv6 clients share a bucket per /64; IPv4-mapped addresses are IPv4.
    #[test]
    fn ipv6_is_grouped_by_prefix() {
        assert_eq!(
            bucket(ip("2001:db8:1:2:aaaa::1"), 64),
            "\0ip:2001:db8:1:2::/64"
        );
        assert_eq!(
            bucket(ip("2001:db8:1:2:aaaa::1"), 64),
            bucket(ip("2001:db8:1:2:bbbb::7"), 64)
        );
        assert_ne!(
            bucket(ip("2001:db8:1:3::1"), 64),
            bucket(ip("2001:db8:1:2::1"), 64)
        );
        assert_eq!(bucket(ip("::ffff:192.0.2.1"), 64), "\0ip:192.0.2.1");
        assert_eq!(
            bucket(ip("2001:db8::1"), 200),
            "\0ip:2001:db8::1/200",
            "no overflow"
        );
    }

    /// CIDRs parse with or without a prefix, and reject what is not one.
    #[test]
    fn cidrs_parse_and_match() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.200.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(
            mapped.contains(ip("10.1.2.3")),
            "IPv4-mapped networks match IPv4"
        );
        for bad in [
            "10.0.0.0/33",
            "nope",
            "10.0.0.0/x",
            "::/129",
            "::ffff:10.0.0.0/64",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
