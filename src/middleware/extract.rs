//! Who the caller is, from the request.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::client_ip::{self, Proxies};
use crate::limiter::RequestFacts;

/// How the caller is named: the identity header, the trusted proxies, IPv6 grouping.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The request header that names the caller, `x-user` by default.
    pub header: HeaderName,
    /// Proxies trusted for `X-Forwarded-For` / `Forwarded`, and, when any is set, the only
    /// peers whose identity header is believed.
    pub proxies: Proxies,
    /// How many leading bits of an IPv6 client address name its bucket.
    pub ipv6_prefix: u8,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            header: HeaderName::from_static("x-user"),
            proxies: Proxies::default(),
            ipv6_prefix: 64,
        }
    }
}

/// The value of the identity header that names the caller, if any.
///
/// An empty value names nobody, exactly like an absent header. With repeated headers, the first
/// one counts. Any bytes are a name: the key hashes them.
pub fn caller<'a>(headers: &'a HeaderMap, identity: &HeaderName) -> Option<&'a HeaderValue> {
    headers.get(identity).filter(|value| !value.is_empty())
}

impl Identity {
    /// Whether naming callers needs the peer's address: trusted proxies are judged by it.
    pub fn needs_peer(&self) -> bool {
        !self.proxies.trusted.is_empty()
    }

    /// The caller's name from the identity header, believed only from a trusted peer when
    /// trusted proxies are configured.
    pub fn user<'a>(&self, parts: &'a Parts) -> Option<&'a [u8]> {
        let believed = self.proxies.trusted.is_empty()
            || peer(parts).is_some_and(|peer| self.proxies.trusts(peer));
        caller(&parts.headers, &self.header)
            .filter(|_| believed)
            .map(HeaderValue::as_bytes)
    }
}

/// The address of the peer that sent the request, which axum's `ConnectInfo` carries only when
/// the app is served with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// What the limiter needs to know of one request, borrowed from its head.
///
/// Only the client address is built (hashing wants its text); the limiter asks for it only when
/// some rule or `on_missing = "ip"` can use it, so most requests allocate nothing here.
#[derive(Debug)]
pub struct Facts<'a> {
    user: Option<&'a [u8]>,
    ip: Option<String>,
    method: &'a Method,
    path: &'a str,
    route: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// The facts of a request's head; the client address only `with_address`.
    pub fn of(parts: &'a Parts, identity: &Identity, with_address: bool) -> Self {
        let ip = peer(parts).filter(|_| with_address).map(|peer| {
            client_ip::bucket(
                identity.proxies.client(peer, &parts.headers),
                identity.ipv6_prefix,
            )
        });
        Facts {
            user: identity.user(parts),
            ip,
            method: &parts.method,
            path: parts.uri.path(),
            route: parts
                .extensions
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
        }
    }

    /// The facts as the limiter takes them.
    pub fn borrow(&self) -> RequestFacts<'_> {
        RequestFacts {
            user: self.user,
            ip: self.ip.as_deref(),
            method: self.method,
            path: self.path,
            route: self.route.unwrap_or(self.path),
        }
    }
}
