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

impl Limiter {
    /// The key `policy` counts this request under, or `None` when the policy does not apply to it
    /// (its routes do not match, or a name it is keyed by is unknown).
    pub fn key_of(&self, policy: &Policy, facts: &RequestFacts<'_>) -> Option<String> {
        self.key_reusing(policy, facts, &mut None)
    }

    /// Whether some policy can use the client address: keyed by it, or by a user whose absence
    /// `on_missing = "ip"` fills with it. The middleware builds the address's name only then.
    pub fn needs_address(&self) -> bool {
        self.policies.iter().any(|policy| {
            let by = policy.scope().by.dimensions();
            by.contains(&Dimension::Ip)
                || (self.on_missing == OnMissing::Ip && by.contains(&Dimension::User))
        })
    }

    /// [`Limiter::key_of`], reusing the last caller tag when this policy's caller is named by the
    /// same bytes, so a user under several policies is hashed once per request.
    fn key_reusing<'f>(
        &self,
        policy: &Policy,
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
    ) -> impl Iterator<Item = Option<&'f [u8]>> + 'r {
        // An address's name ("\0ip:<addr>", from caller::address::bucket) is built once per
        // request.
        let address = facts.ip.as_deref().map(str::as_bytes);
        let (user, route, on_missing) = (facts.user, facts.route, self.on_missing);
        policy.scope().by.dimensions().iter().map(move |d| match d {
            Dimension::Header(name) => facts.header(name),
            Dimension::User => match (user, on_missing) {
                (Some(user), _) => Some(user),
                (None, OnMissing::Ip) => address,
                (None, _) => None,
            },
            Dimension::Ip => address,
            Dimension::Global => Some(&b"global"[..]),
            Dimension::Route => Some(route.as_bytes()),
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
                    .applies_to(&facts.method, facts.path, facts.headers, facts.host)
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
            probe.extend_from_slice(&policy.cost_of(&facts.method, facts.path).to_be_bytes());
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
                    cost: policy.cost_of(&facts.method, facts.path),
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
    use axum::http::{HeaderMap, Method};

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
            path: "/user",
            route: "/user",
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
    /// (keys, costs and policies), across users, addresses, routes, methods, costs and the
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
        let policies = vec![
            policy("a: 3 per 1m", vec![Dimension::User]),
            by_route,
            items_only,
            policy("g: 9 per 1m", vec![Dimension::Global]),
        ];
        // ("jo", "/x/user") and ("jo/x", "/user") would meet if names ran together.
        let users: [Option<&[u8]>; 5] = [
            Some(b"joe"),
            Some(b"jo"),
            Some(b"jo/x"),
            Some(b"\0ip:192.0.2.1"),
            None,
        ];
        let ips = [Some("\0ip:192.0.2.1"), Some("\0ip:192.0.2.2"), None];
        let requests = [
            (Method::GET, "/user"),
            (Method::POST, "/user"),
            (Method::GET, "/x/user"),
            (Method::GET, "/items/1"),
            (Method::GET, "/items/2"),
        ];
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
            for user in users {
                for ip in ips {
                    for (method, path) in &requests {
                        let facts = RequestFacts {
                            user,
                            ip: ip.map(String::from),
                            method: method.clone(),
                            path,
                            route: path,
                            headers: &HeaderMap::new(),
                            host: None,
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
        }
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
