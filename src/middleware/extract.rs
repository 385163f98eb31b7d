//! Who the caller is, from the request.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request};
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

/// What a request says about its caller, owned, so it can travel into the limiter's future.
#[derive(Clone, Debug)]
pub struct OwnedFacts {
    user: Option<HeaderValue>,
    ip: Option<String>,
    method: Method,
    path: String,
    route: Option<String>,
}

impl OwnedFacts {
    /// Gathers the facts of `request` under `identity`.
    pub fn of(request: &Request, identity: &Identity) -> Self {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let headers = request.headers();
        // With trusted proxies configured, only they may name the caller.
        let believed = identity.proxies.trusted.is_empty()
            || peer.is_some_and(|peer| identity.proxies.trusts(peer));
        OwnedFacts {
            user: caller(headers, &identity.header)
                .filter(|_| believed)
                .cloned(),
            ip: peer.map(|peer| {
                client_ip::bucket(identity.proxies.client(peer, headers), identity.ipv6_prefix)
            }),
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            route: request
                .extensions()
                .get::<MatchedPath>()
                .map(|matched| matched.as_str().to_owned()),
        }
    }

    /// The facts, borrowed, as the limiter takes them.
    pub fn borrow(&self) -> RequestFacts<'_> {
        RequestFacts {
            user: self.user.as_ref().map(HeaderValue::as_bytes),
            ip: self.ip.as_deref(),
            method: &self.method,
            path: &self.path,
            route: self.route.as_deref().unwrap_or(&self.path),
        }
    }
}
