//! From a request's facts to the keys its policies count it under, and to the denial cache's
//! probe; both are made from one encoding of the request's names.

use std::sync::Arc;

use super::Limiter;
use crate::caller::{OnMissing, RequestFacts, Unidentified};
use crate::key::CallerTag;
use crate::policy::Policy;
use crate::scope::Dimension;
use crate::store::Check;

/// Appends each name length-prefixed, so ("ab", "c") and ("a", "bc") never meet; `false` when
/// a name is missing, and the policy does not apply. Keys and probes both use it, so that a
/// probe can stand for the keys it was made beside.
fn encode_names<'f>(names: impl Iterator<Item = Option<&'f [u8]>>, out: &mut Vec<u8>) -> bool {
    for name in names {
        let Some(name) = name else { return false };
        out.extend_from_slice(&(name.len() as u64).to_be_bytes());
        out.extend_from_slice(name);
    }
    true
}

/// Whether some of `policies` can use the client address under `on_missing`.
pub(super) fn address_needed(policies: &[Arc<Policy>], on_missing: OnMissing) -> bool {
    policies.iter().any(|policy| {
        let by = policy.scope().by.dimensions();
        by.contains(&Dimension::Ip)
            || (on_missing == OnMissing::Ip && by.contains(&Dimension::User))
    })
}

impl Limiter {
    /// The key `policy` counts this request under, or `None` when the policy does not apply to it
    /// (its routes do not match, or a name it is keyed by is unknown).
    pub fn key_of(&self, policy: &Policy, facts: &RequestFacts<'_>) -> Option<String> {
        self.key_reusing(policy, facts, &mut None)
    }

    /// The key `policy` counts a caller named `name` under: for checks made elsewhere, like
    /// Envoy's descriptors, whose bucket names the caller.
    pub fn key_for(&self, name: &[u8], policy: &Policy) -> String {
        self.keys.key(&self.keys.tag(name), policy.name())
    }

    /// Whether some policy can use the client address: keyed by it, or by a user whose absence
    /// `on_missing = "ip"` fills with it. The middleware builds the address's name only then.
    pub fn needs_address(&self) -> bool {
        self.needs_address
    }

    /// [`Limiter::key_of`], reusing the last caller tag when this policy's caller is named by the
    /// same bytes, so a user under several policies is hashed once per request.
    fn key_reusing<'f>(
        &self,
        policy: &'f Policy,
        facts: &'f RequestFacts<'_>,
        last: &mut Option<(&'f [u8], CallerTag)>,
    ) -> Option<String> {
        let mut names = self.names(policy, facts);
        let first = names.next()??;
        let global;
        let tag = match policy.scope().by.dimensions()[0] {
            Dimension::Global => {
                global = CallerTag::global();
                &global
            }
            _ => match last {
                Some((name, tag)) if *name == first => tag,
                _ => &last.insert((first, self.keys.tag(first))).1,
            },
        };
        let mut rest = Vec::new();
        if !encode_names(names, &mut rest) {
            return None;
        }
        Some(if rest.is_empty() {
            self.keys.key(tag, policy.name())
        } else {
            self.keys.key_within(tag, policy.name(), &rest)
        })
    }

    /// The names that pick this request's bucket under `policy`, one per dimension the policy is
    /// keyed by; `None` for a name the request lacks, when the policy does not apply.
    fn names<'r, 'f: 'r>(
        &self,
        policy: &'r Policy,
        facts: &'f RequestFacts<'_>,
    ) -> impl Iterator<Item = Option<&'r [u8]>> + 'r {
        // An address's name ("\0ip:<addr>", from caller::address::bucket) is built once per
        // request.
        let address = facts.ip.as_deref().map(str::as_bytes);
        let (user, on_missing) = (facts.user, self.on_missing);
        // A request no router matched (a proxy's question) is on the route of the policy's
        // pattern it matches, else on its path.
        let route = move || {
            facts
                .route
                .or_else(|| {
                    let scope = policy.scope();
                    scope.route_of(&facts.method, &facts.path).map(|r| r.text())
                })
                .unwrap_or(&facts.path)
                .as_bytes()
        };
        policy.scope().by.dimensions().iter().map(move |d| match d {
            Dimension::Header(name) => facts.header(name),
            Dimension::User => match (user, on_missing) {
                (Some(user), _) => Some(user),
                (None, OnMissing::Ip) => address,
                (None, _) => None,
            },
            Dimension::Ip => address,
            Dimension::Global => Some(&b"global"[..]),
            Dimension::Route => Some(route()),
        })
    }

    /// The policies whose routes this request matches, or [`Unidentified`] when one of them is
    /// keyed by user, the request names nobody, and `on_missing` is `deny`.
    fn matching<'r>(
        &'r self,
        facts: &'r RequestFacts<'_>,
    ) -> impl Iterator<Item = Result<(usize, &'r Arc<Policy>), Unidentified>> + 'r {
        let unnamed = facts.user.is_none() && self.on_missing == OnMissing::Deny;
        self.policies
            .iter()
            .enumerate()
            .filter(|(_, policy)| {
                policy
                    .scope()
                    .applies_to(&facts.method, &facts.path, facts.headers, facts.host)
            })
            .map(move |(i, policy)| {
                if unnamed && policy.scope().by.needs_user() {
                    Err(Unidentified)
                } else {
                    Ok((i, policy))
                }
            })
    }

    /// The denial cache's key for this request: what its checks are made of, before any
    /// hashing (each policy that applies, by position, with its names and its cost). Equal
    /// probes make equal checks, so a cached denial is found without building them. `false`
    /// when the request has no checks.
    ///
    /// A policy's position stands for its policy: the cache belongs to this limiter, whose policies
    /// never change, so a new policy set is a new limiter with an empty cache.
    pub(super) fn write_probe(&self, facts: &RequestFacts<'_>, probe: &mut Vec<u8>) -> bool {
        let mut any = false;
        for matched in self.matching(facts) {
            let Ok((i, policy)) = matched else {
                return false;
            };
            let start = probe.len();
            probe.extend_from_slice(&(i as u64).to_be_bytes());
            if !encode_names(self.names(policy, facts), probe) {
                probe.truncate(start);
                continue;
            }
            probe.extend_from_slice(&policy.cost_of(&facts.method, &facts.path).to_be_bytes());
            any = true;
        }
        any
    }

    /// The checks for one request: one per policy that applies, or [`Unidentified`] when a policy
    /// keyed by user applies, the request names nobody, and `on_missing` is `deny`.
    pub fn checks(&self, facts: &RequestFacts<'_>) -> Result<Vec<Check>, Unidentified> {
        let mut checks = Vec::with_capacity(self.policies.len());
        let mut last_tag = None;
        for matched in self.matching(facts) {
            let (_, policy) = matched?;
            if let Some(key) = self.key_reusing(policy, facts, &mut last_tag) {
                checks.push(Check {
                    key,
                    policy: policy.clone(),
                    cost: policy.cost_of(&facts.method, &facts.path),
                });
            }
        }
        Ok(checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::key::KeyBuilder;
    use crate::limiter::tests::{policy, policy_on};
    use crate::store::MemoryStore;
    use axum::http::header::HOST;
    use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};

    /// Reusing one caller's tag across policies names every key exactly as `key_of` does alone,
    /// whatever the policies key by and in whatever order.
    #[test]
    fn keys_of_a_request_match_key_of_each_rule() {
        let policies = vec![
            policy("a: 3 per 1m", vec![Dimension::User]),
            policy("b: 3 per 1h", vec![Dimension::Ip]),
            policy("c: 3 per 1d", vec![Dimension::User]),
            policy("d: 3 per 1s", vec![Dimension::Global]),
            policy("e: 3 per 1m", vec![Dimension::User, Dimension::Route]),
            policy("f: 3 per 1m", vec![Dimension::Route]),
        ];
        let limiter = Limiter::new(Arc::new(MemoryStore::new()), policies)
            .with_keys(KeyBuilder::new("t").with_hash_key(b"k".to_vec()));
        assert!(limiter.needs_address());
        let facts = RequestFacts {
            user: Some(b"joe"),
            ip: Some("\0ip:192.0.2.1".into()),
            method: Method::GET,
            path: "/user".into(),
            route: Some("/user"),
            headers: &HeaderMap::new(),
            host: None,
        };
        let keys: Vec<String> = limiter
            .checks(&facts)
            .unwrap()
            .into_iter()
            .map(|c| c.key)
            .collect();
        let alone: Vec<String> = limiter
            .policies()
            .iter()
            .map(|policy| limiter.key_of(policy, &facts).unwrap())
            .collect();
        assert_eq!(keys, alone);
        assert_eq!(keys[0].split(':').nth(1), keys[2].split(':').nth(1));
        assert_ne!(keys[0].split(':').nth(1), keys[1].split(':').nth(1));
    }

    /// Two requests have the same denial cache probe exactly when they make the same checks
    /// (keys, costs and policies), across users, addresses, routes (a router's, or none as for
    /// a proxy's question), methods, costs, headers keyed by or conditioned on, hosts and the
    /// `on_missing` fallbacks; a request with no checks has no probe.
    #[test]
    fn probes_are_equal_exactly_when_checks_are() {
        let by_route = policy_on(
            "r: 3 per 1m",
            vec![Dimension::User, Dimension::Route],
            &[],
            &[("POST /user", 2)],
        );
        let items_only = policy_on("i: 3 per 1h", vec![Dimension::Ip], &["/items/*"], &[]);
        let items_by_route = policy_on(
            "ir: 3 per 1h",
            vec![Dimension::Route, Dimension::User],
            &["/items/*", "GET /user"],
            &[],
        );
        let api_key = HeaderName::from_static("x-api-key");
        let plan = HeaderName::from_static("x-plan");
        let by_key = policy("k: 3 per 1m", vec![Dimension::Header(api_key.clone())]);
        let when = |text: &str, name: &HeaderName, value: &str| {
            let policy = policy(text, vec![Dimension::User]);
            let mut scope = policy.scope().clone();
            scope.when = vec![(name.clone(), value.into())];
            policy.with_scope(scope)
        };
        let policies = vec![
            policy("a: 3 per 1m", vec![Dimension::User]),
            by_route,
            items_only,
            items_by_route,
            policy("g: 9 per 1m", vec![Dimension::Global]),
            by_key,
            when("free: 3 per 1m", &plan, "free"),
            when("on_api: 3 per 1m", &HOST, "api.example.com"),
        ];
        // ("jo", "/x/user") and ("jo/x", "/user") would meet if names ran together.
        let users: [Option<&[u8]>; 4] = [Some(b"joe"), Some(b"jo"), Some(b"jo/x"), None];
        let ips = [Some("\0ip:192.0.2.1"), Some("\0ip:192.0.2.2"), None];
        let requests = [
            (Method::GET, "/user"),
            (Method::POST, "/user"),
            (Method::GET, "/x/user"),
            (Method::GET, "/items/1"),
            (Method::GET, "/items/2"),
        ];
        let headers: Vec<HeaderMap> = [
            vec![],
            vec![(&plan, "free"), (&api_key, "k1")],
            vec![(&plan, "pro"), (&api_key, "k2")],
        ]
        .into_iter()
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
                .collect()
        })
        .collect();
        let hosts = [None, Some("api.example.com"), Some("API.example.com:443")];
        // Two policies keyed alike on different routes: only their positions tell them apart.
        let on = |text: &str, route: &str| policy_on(text, vec![Dimension::User], &[route], &[]);
        let alike = vec![
            on("u1: 3 per 1m", "/items/*"),
            on("u2: 3 per 1m", "GET /user"),
        ];
        // All the policies together, each alone, and the two alike.
        let sets = std::iter::once(policies.clone())
            .chain(policies.iter().map(|r| vec![r.clone()]))
            .chain([alike]);
        for (policies, on_missing) in sets.flat_map(|policies| {
            [OnMissing::Allow, OnMissing::Ip, OnMissing::Deny].map(|m| (policies.clone(), m))
        }) {
            let limiter = Limiter::new(Arc::new(MemoryStore::new()), policies.clone())
                .with_on_missing(on_missing);
            // Each request's probe, beside its checks as (key, cost, policy).
            type Made = (Vec<u8>, Vec<(String, u64, String)>);
            let mut seen: Vec<Made> = Vec::new();
            let requests = requests.iter().flat_map(|(method, path)| {
                // Routed by a router (the route is the path here), or not at all.
                [Some(*path), None].map(|route| (method, *path, route))
            });
            for ((method, path, route), user, ip, headers, host) in requests
                .flat_map(|r| users.map(|u| (r, u)))
                .flat_map(|(r, u)| ips.map(|ip| (r, u, ip)))
                .flat_map(|(r, u, ip)| headers.iter().map(move |h| (r, u, ip, h)))
                .flat_map(|(r, u, ip, h)| hosts.map(|host| (r, u, ip, h, host)))
            {
                let facts = RequestFacts {
                    user,
                    ip: ip.map(String::from),
                    method: method.clone(),
                    path: path.into(),
                    route,
                    headers,
                    host,
                };
                let checks: Vec<_> = match limiter.checks(&facts) {
                    Ok(checks) => checks
                        .into_iter()
                        .map(|c| (c.key, c.cost, c.policy.name().to_string()))
                        .collect(),
                    Err(Unidentified) => continue,
                };
                let mut probe = Vec::new();
                let probed = limiter.write_probe(&facts, &mut probe);
                assert_eq!(probed, !checks.is_empty(), "{facts:?}");
                for (other, other_checks) in &seen {
                    assert_eq!(*other == probe, *other_checks == checks, "{facts:?}");
                }
                seen.push((probe, checks));
            }
        }
    }

    /// A request no router matched (a proxy's question) is keyed by the route pattern its policy
    /// matched, so `/items/1` and `/items/2` share the bucket of a policy on `/items/*`; on a
    /// policy without routes, by its path.
    #[test]
    fn unrouted_requests_are_keyed_by_the_pattern_they_matched() {
        let on_items = policy_on(
            "ir: 3 per 1h",
            vec![Dimension::User, Dimension::Route],
            &["/items/*"],
            &[],
        );
        let everywhere = policy("r: 3 per 1h", vec![Dimension::User, Dimension::Route]);
        let limiter = Limiter::new(Arc::new(MemoryStore::new()), [on_items, everywhere]);
        let headers = HeaderMap::new();
        let key = |path: &'static str, route: Option<&'static str>, i: usize| {
            let facts = RequestFacts {
                user: Some(b"joe"),
                ip: None,
                method: Method::GET,
                path: path.into(),
                route,
                headers: &headers,
                host: None,
            };
            limiter.key_of(&limiter.policies()[i], &facts).unwrap()
        };
        assert_eq!(key("/items/1", None, 0), key("/items/2", None, 0));
        assert_ne!(key("/items/1", None, 1), key("/items/2", None, 1));
        assert_ne!(
            key("/items/1", Some("/items/1"), 0),
            key("/items/2", Some("/items/2"), 0),
            "a router's route names its own bucket"
        );
    }

    /// The address is asked for only when a policy is keyed by it or falls back to it.
    #[test]
    fn needs_address_only_when_some_rule_can_use_it() {
        let by_user = || vec![policy("a: 3 per 1m", vec![Dimension::User])];
        let store = || Arc::new(MemoryStore::new());
        assert!(!Limiter::new(store(), by_user()).needs_address());
        assert!(Limiter::new(store(), by_user())
            .with_on_missing(OnMissing::Ip)
            .needs_address());
        assert!(!Limiter::new(store(), Vec::<Policy>::new())
            .with_on_missing(OnMissing::Ip)
            .needs_address());
    }
}
