//! What the limiter knows of one request: who names it, its method, its path and its route.

use std::borrow::Cow;

use axum::extract::MatchedPath;
use axum::http::header::HOST;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{address, path, peer, Identity};

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
    pub method: Method,
    /// The request path; for a proxy's question, cleaned as [`path::normalize`] says.
    pub path: Cow<'a, str>,
    /// The route pattern the router matched, for policies keyed by route; `None` when no
    /// router matched, as for a proxy's question, where a policy's own matching pattern names
    /// the route instead.
    pub route: Option<&'a str>,
    /// The request's headers, for policies keyed by a header or conditioned on one.
    pub headers: &'a HeaderMap,
    /// The host the request was sent to: its `Host` (or HTTP/2 authority), or, for a question
    /// a trusted proxy asks, `X-Forwarded-Host` before it. A `when` on `host` reads this.
    pub host: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// The value of header `name`, when the request has a non-empty one.
    pub fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        self.headers
            .get(name)
            .map(HeaderValue::as_bytes)
            .filter(|value| !value.is_empty())
    }
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
            method: parts.method.clone(),
            path: Cow::Borrowed(path),
            route: Some(
                parts
                    .extensions
                    .get::<MatchedPath>()
                    .map_or(path, MatchedPath::as_str),
            ),
            headers: &parts.headers,
            host: parts
                .headers
                .get(HOST)
                .and_then(|host| host.to_str().ok())
                .or_else(|| parts.uri.host()),
        }
    }

    /// The facts of the request a proxy asks about (forward-auth): its method and path from the
    /// proxy's headers when they are `believed`, else the asking request's own; the caller and
    /// the client address named as for any request.
    ///
    /// The method is `X-Forwarded-Method` (Traefik, Caddy), else `X-Original-Method` (nginx's
    /// convention); the path is `X-Forwarded-Uri`, else `X-Original-URI`, without its query and
    /// cleaned; the host is `X-Forwarded-Host`, else `Host`. No router has matched the forwarded
    /// path, so it has no route pattern of its own.
    pub fn forwarded(
        parts: &'a Parts,
        identity: &Identity,
        with_address: bool,
        believed: bool,
    ) -> Self {
        let mut facts = RequestFacts::of(parts, identity, with_address);
        if !believed {
            return facts;
        }
        let first = |names: [HeaderName; 2]| {
            names
                .iter()
                .find_map(|name| parts.headers.get(name))
                .and_then(|value| value.to_str().ok())
                .filter(|value| !value.is_empty())
        };
        let method = first([X_FORWARDED_METHOD, X_ORIGINAL_METHOD])
            .and_then(|method| Method::from_bytes(method.as_bytes()).ok());
        if let Some(method) = method {
            facts.method = method;
        }
        let uri = first([X_FORWARDED_URI, X_ORIGINAL_URI]);
        if let Some(uri) = uri.and_then(|uri| uri.split(['?', '#']).next()) {
            facts.path = path::normalize(uri);
            facts.route = None;
        }
        if let Some(host) = first([X_FORWARDED_HOST, HOST]) {
            facts.host = Some(host);
        }
        facts
    }
}

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
