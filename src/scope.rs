//! What a policy applies to: which routes and requests, and who the caller is (`by`).

use std::fmt;

use axum::http::{HeaderMap, HeaderName, Method};

/// One part of what names a policy's bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// The identity header (`identity.header`).
    User,
    /// The client address, IPv6 grouped by prefix.
    Ip,
    /// Everyone: one bucket.
    Global,
    /// The matched route, so each route has its own bucket.
    Route,
    /// A request header's value (`header:x-api-key`): one bucket per API key, tenant or plan.
    Header(HeaderName),
}

impl Dimension {
    /// The dimensions with a name of their own, in the order the documentation lists them.
    pub const NAMED: [Dimension; 4] = [
        Dimension::User,
        Dimension::Ip,
        Dimension::Global,
        Dimension::Route,
    ];

    /// Parses a configuration name: `user`, `ip`, `global`, `route` or `header:<name>`.
    pub fn parse(name: &str) -> Result<Self, String> {
        if let Some(header) = name.strip_prefix(HEADER_PREFIX) {
            return HeaderName::from_bytes(header.as_bytes())
                .map(Dimension::Header)
                .map_err(|_| format!("{header:?} is not a valid HTTP header name"));
        }
        Dimension::NAMED
            .into_iter()
            .find(|d| d.to_string() == name)
            .ok_or_else(|| {
                format!("unknown {name:?}; use user, ip, global, route or header:<name>")
            })
    }
}

/// How a header dimension is written: `header:x-api-key`.
const HEADER_PREFIX: &str = "header:";

impl fmt::Display for Dimension {
    /// The name used in configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dimension::User => f.write_str("user"),
            Dimension::Ip => f.write_str("ip"),
            Dimension::Global => f.write_str("global"),
            Dimension::Route => f.write_str("route"),
            Dimension::Header(name) => write!(f, "{HEADER_PREFIX}{name}"),
        }
    }
}

/// Who shares a bucket: `["user"]` (the default), `["ip"]`, `["global"]`, `["user", "route"]`…
///
/// The first dimension becomes the key's hash tag, so all of one caller's policies that start
/// with it share a Redis Cluster slot and are decided in one call there. Off a cluster, one call
/// decides every policy of a request, whatever its dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct By(Vec<Dimension>);

impl By {
    /// Checks `dimensions`: at least one, none twice.
    pub fn new(dimensions: Vec<Dimension>) -> Result<Self, String> {
        if dimensions.is_empty() {
            return Err("must name at least one of user, ip, global, route, header:<name>".into());
        }
        for (i, d) in dimensions.iter().enumerate() {
            if dimensions[..i].contains(d) {
                return Err(format!("names {:?} twice", d.to_string()));
            }
        }
        Ok(By(dimensions))
    }

    /// One bucket per user, the default.
    pub fn user() -> Self {
        By(vec![Dimension::User])
    }

    /// The dimensions, the first being the hash tag.
    pub fn dimensions(&self) -> &[Dimension] {
        &self.0
    }

    /// Whether the caller's identity header is needed.
    pub fn needs_user(&self) -> bool {
        self.0.contains(&Dimension::User)
    }
}

impl Default for By {
    fn default() -> Self {
        By::user()
    }
}

/// A method and path pattern: `"GET /user"`, `"/api/*"`, `"POST /api/items/*"`.
///
/// Without a method it matches every method. A path ending in `/*` matches every path below
/// that prefix (not the prefix itself); any other path matches exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePattern {
    method: Option<Method>,
    path: String,
    prefix: bool,
    /// The pattern as written, cleaned of spaces: a forwarded request's route name.
    text: String,
}

impl RoutePattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (method, path) = match text.trim().split_once(' ') {
            Some((method, path)) => (Some(method), path.trim()),
            None => (None, text.trim()),
        };
        let method = match method {
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Some(
                Method::from_bytes(m.as_bytes()).map_err(|_| format!("{m:?} is not a method"))?,
            ),
            Some(m) => return Err(format!("{m:?} is not an upper-case HTTP method")),
            None => None,
        };
        if !path.starts_with('/') {
            return Err(format!("{text:?}: the path must start with '/'"));
        }
        let (path, prefix) = match path.strip_suffix("/*") {
            Some(stem) => (format!("{stem}/"), true),
            None => (path.to_owned(), false),
        };
        if path.contains('*') {
            return Err(format!("{text:?}: '*' is allowed only as a final \"/*\""));
        }
        if path.contains(char::is_whitespace) {
            return Err(format!("{text:?}: the path has spaces"));
        }
        let text = match &method {
            Some(method) => format!("{method} {path}{}", if prefix { "*" } else { "" }),
            None => format!("{path}{}", if prefix { "*" } else { "" }),
        };
        Ok(RoutePattern {
            method,
            path,
            prefix,
            text,
        })
    }

    /// The pattern as written (`POST /export`, `/api/*`), naming the route of a request that no
    /// router matched, like a proxy's question: so `/api/1` and `/api/2` share one bucket of a
    /// policy keyed by route on `/api/*`, as they would behind an axum route `/api/{id}`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a request with `method` and `path` matches.
    ///
    /// An exact pattern also matches its path with a final `/`, which many services route alike
    /// (Express, and FastAPI by redirecting), so that `/export/` cannot dodge `/export`.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        // HEAD runs the GET handler, so a GET pattern limits it too.
        let same_method = |m: &Method| m == method || (m == Method::GET && method == Method::HEAD);
        self.method.as_ref().is_none_or(same_method)
            && if self.prefix {
                path.starts_with(&self.path) && path.len() > self.path.len()
            } else {
                path == self.path
                    || (!self.path.ends_with('/')
                        && path.strip_suffix('/') == Some(self.path.as_str()))
            }
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A host as a `when` compares it: without its port or a final dot, so that
/// `API.example.com:443` and `api.example.com.` are the host `api.example.com` names (the case is
/// ignored where it is compared).
pub fn bare_host(host: &str) -> &str {
    let without_port = match host.rsplit_once(':') {
        // An IPv6 literal keeps its brackets; only a port after them goes.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            if host.starts_with('[') && !name.ends_with(']') {
                host
            } else {
                name
            }
        }
        _ => host,
    };
    without_port.trim_end_matches('.')
}

/// Which requests a policy applies to, who shares its buckets, and what routes cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// The routes it applies to; empty for every limited route.
    pub routes: Vec<RoutePattern>,
    /// Who shares a bucket.
    pub by: By,
    /// Routes that spend more (or less) of the same quota than the policy's own cost.
    pub costs: Vec<(RoutePattern, u64)>,
    /// Request headers that must have exactly these values for the policy to apply (`when`):
    /// a `free` plan's policy and a `pro` plan's, side by side.
    pub when: Vec<(HeaderName, String)>,
}

impl Scope {
    /// Whether the policy applies to a request with `method`, `path`, `headers` and `host`; a
    /// `when` on `host` reads `host`, which a proxy's question names in `X-Forwarded-Host`.
    pub fn applies_to(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        host: Option<&str>,
    ) -> bool {
        let holds = |(name, value): &(HeaderName, String)| {
            if name == axum::http::header::HOST {
                host.is_some_and(|host| bare_host(host).eq_ignore_ascii_case(value))
            } else {
                headers.get(name).is_some_and(|v| v == value.as_str())
            }
        };
        (self.routes.is_empty() || self.routes.iter().any(|r| r.matches(method, path)))
            && self.when.iter().all(holds)
    }

    /// The first of the policy's route patterns that a request with `method` and `path`
    /// matches, if it has any.
    pub fn route_of(&self, method: &Method, path: &str) -> Option<&RoutePattern> {
        self.routes.iter().find(|r| r.matches(method, path))
    }

    /// The cost of a request with `method` and `path`: the largest of its matching route costs,
    /// or `default` when none matches.
    pub fn cost_of(&self, method: &Method, path: &str, default: u64) -> u64 {
        self.costs
            .iter()
            .filter(|(route, _)| route.matches(method, path))
            .map(|(_, cost)| *cost)
            .max()
            .unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host is compared without its port, a final dot or its case; an IPv6 literal keeps
    /// its brackets.
    #[test]
    fn hosts_are_bare() {
        for (host, bare) in [
            ("api.example.com", "api.example.com"),
            ("api.example.com:443", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("api.example.com.:8080", "api.example.com"),
            ("[2001:db8::1]:443", "[2001:db8::1]"),
            ("[2001:db8::1]", "[2001:db8::1]"),
        ] {
            assert_eq!(bare_host(host), bare, "{host}");
        }
    }

    /// A dimension reads the name it writes, `header:<name>` included, and a bad header name
    /// or an unknown word is refused.
    #[test]
    fn dimensions_read_what_they_write() {
        let header = Dimension::Header(HeaderName::from_static("x-api-key"));
        for dimension in Dimension::NAMED.into_iter().chain([header]) {
            assert_eq!(Dimension::parse(&dimension.to_string()), Ok(dimension));
        }
        assert!(Dimension::parse("header:x api key").is_err());
        assert!(Dimension::parse("planet").is_err());
    }

    /// Patterns match by method and exact path, or by prefix with a final "/*".
    #[test]
    fn route_patterns_match_method_and_path() {
        let get_user = RoutePattern::parse("GET /user").unwrap();
        assert!(get_user.matches(&Method::GET, "/user"));
        assert!(!get_user.matches(&Method::POST, "/user"));
        assert!(
            get_user.matches(&Method::HEAD, "/user"),
            "HEAD runs the GET handler"
        );
        assert!(!get_user.matches(&Method::GET, "/user/1"));
        assert!(get_user.matches(&Method::GET, "/user/"), "a final slash");
        assert!(!get_user.matches(&Method::GET, "/user//"));
        assert!(!RoutePattern::parse("/user/")
            .unwrap()
            .matches(&Method::GET, "/user"));
        assert!(RoutePattern::parse("/").unwrap().matches(&Method::GET, "/"));
        assert!(!RoutePattern::parse("/")
            .unwrap()
            .matches(&Method::GET, "//"));
        let api = RoutePattern::parse("/api/*").unwrap();
        assert!(api.matches(&Method::POST, "/api/items"));
        assert!(api.matches(&Method::GET, "/api/items/1"));
        assert!(!api.matches(&Method::GET, "/api"));
        assert!(!api.matches(&Method::GET, "/apix"));
        assert_eq!(api.to_string(), "/api/*");
    }

    /// Malformed patterns are refused with a reason.
    #[test]
    fn malformed_route_patterns_are_refused() {
        for bad in [
            "user",
            "get /user",
            "GET",
            "/a*b",
            "/api/*/x",
            "GET  /a b",
            "",
        ] {
            assert!(
                RoutePattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    /// A route's cost overrides the policy's; overlapping routes take the largest.
    #[test]
    fn route_costs_take_the_largest_match() {
        let scope = Scope {
            costs: vec![
                (RoutePattern::parse("/api/*").unwrap(), 2),
                (RoutePattern::parse("POST /api/export").unwrap(), 10),
            ],
            ..Scope::default()
        };
        assert_eq!(scope.cost_of(&Method::GET, "/user", 1), 1);
        assert_eq!(scope.cost_of(&Method::GET, "/api/export", 1), 2);
        assert_eq!(scope.cost_of(&Method::POST, "/api/export", 1), 10);
    }

    /// `by` needs at least one dimension and no repeats.
    #[test]
    fn by_is_validated() {
        assert!(By::new(vec![]).is_err());
        assert!(By::new(vec![Dimension::User, Dimension::User]).is_err());
        assert!(By::new(vec![Dimension::User, Dimension::Route]).is_ok());
    }
}
