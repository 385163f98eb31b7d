//! What the limiter knows of one request: who names it, its method, its path and its route.

use axum::extract::MatchedPath;
use axum::http::request::Parts;
use axum::http::Method;

use super::{address, peer, Identity};

/// What the limiter needs to know about one request, borrowed from its head.
///
/// Only the client address is owned: hashing wants its text, which the request does not hold.
/// [`RequestFacts::of`] builds it only when asked to, and the middleware asks only when some
/// policy or `on_missing = "ip"` can use it, so most requests allocate nothing here.
#[derive(Clone, Debug)]
pub struct RequestFacts<'a> {
    /// The identity header's value, when it names someone and may be believed.
    pub user: Option<&'a [u8]>,
    /// The client address's bucket name (`\0ip:192.0.2.1`, `\0ip:2001:db8::/64`), when known.
    pub ip: Option<String>,
    /// The request method.
    pub method: &'a Method,
    /// The request path.
    pub path: &'a str,
    /// The matched route pattern (or the path), for policies keyed by route.
    pub route: &'a str,
}

impl<'a> RequestFacts<'a> {
    /// The facts of a request's head, its caller named as `identity` says; the client address
    /// only `with_address`.
    pub fn of(parts: &'a Parts, identity: &Identity, with_address: bool) -> Self {
        let ip = peer(parts).filter(|_| with_address).map(|peer| {
            address::bucket(
                identity.proxies.client(peer, &parts.headers),
                identity.ipv6_prefix,
            )
        });
        let path = parts.uri.path();
        RequestFacts {
            user: identity.user(parts),
            ip,
            method: &parts.method,
            path,
            route: parts
                .extensions
                .get::<MatchedPath>()
                .map_or(path, MatchedPath::as_str),
        }
    }
}
