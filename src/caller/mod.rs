//! The caller: how a request names who sent it (the identity header, the client address behind
//! trusted proxies), what happens when it names nobody, and the facts the limiter takes.

pub mod address;
mod facts;
pub mod path;

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

use address::Proxies;

pub use facts::RequestFacts;

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
fn named<'a>(headers: &'a HeaderMap, identity: &HeaderName) -> Option<&'a HeaderValue> {
    headers.get(identity).filter(|value| !value.is_empty())
}

impl Identity {
    /// Whether naming callers needs the peer's address: trusted proxies are judged by it.
    pub fn needs_peer(&self) -> bool {
        !self.proxies.trusted.is_empty()
    }

    /// Whether this request lacks the peer address that naming its caller needs, with the
    /// client address wanted (`with_address`) or trusted proxies to judge.
    pub fn lacks_peer(&self, parts: &Parts, with_address: bool) -> bool {
        (with_address || self.needs_peer()) && peer(parts).is_none()
    }

    /// The caller's name from the identity header, believed only from a trusted peer when
    /// trusted proxies are configured.
    pub fn user<'a>(&self, parts: &'a Parts) -> Option<&'a [u8]> {
        let believed = self.proxies.trusted.is_empty()
            || peer(parts).is_some_and(|peer| self.proxies.trusts(peer));
        named(&parts.headers, &self.header)
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

/// What happens to a request that names no user when a policy keyed by user applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Those policies do not apply: the original example's behaviour.
    #[default]
    Allow,
    /// Answer 401 with a JSON reason.
    Deny,
    /// Count the request under its client address instead.
    Ip,
}

impl OnMissing {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            OnMissing::Allow => "allow",
            OnMissing::Deny => "deny",
            OnMissing::Ip => "ip",
        }
    }
}

/// A policy keyed by user applies to a request that names nobody, under `on_missing = "deny"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unidentified;
