//! From a request's facts to the keys its rules count it under, and to the denial cache's
//! probe; both are made from one encoding of the request's names.

use super::{Limiter, Rule};
use crate::caller::{OnMissing, RequestFacts, Unidentified};
use crate::key::CallerTag;
use crate::scope::Dimension;
use crate::store::Check;

impl Rule {
    /// What a request with these facts spends of the policy: its route's cost, or the
    /// policy's own.
    fn cost_of(&self, facts: &RequestFacts<'_>) -> u64 {
        self.scope
            .cost_of(facts.method, facts.path, self.policy.cost())
    }
}

/// Appends each name length-prefixed, so ("ab", "c") and ("a", "bc") never meet; `false` when
/// a name is missing, and the rule does not apply. Keys and probes both use it, so that a
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
    /// The key `rule` counts this request under, or `None` when the rule does not apply to it
    /// (its routes do not match, or a name it is keyed by is unknown).
    pub fn key_of(&self, rule: &Rule, facts: &RequestFacts<'_>) -> Option<String> {
        self.key_reusing(rule, facts, &mut None)
    }

    /// Whether some rule can use the client address: keyed by it, or by a user whose absence
    /// `on_missing = "ip"` fills with it. The middleware builds the address's name only then.
    pub fn needs_address(&self) -> bool {
        self.rules.iter().any(|rule| {
            let by = rule.scope.by.dimensions();
            by.contains(&Dimension::Ip)
                || (self.on_missing == OnMissing::Ip && by.contains(&Dimension::User))
        })
    }

    /// [`Limiter::key_of`], reusing the last caller tag when this rule's caller is named by the
    /// same bytes, so a user under several policies is hashed once per request.
    fn key_reusing<'f>(
        &self,
        rule: &Rule,
        facts: &'f RequestFacts<'_>,
        last: &mut Option<(&'f [u8], CallerTag)>,
    ) -> Option<String> {
        let mut names = self.names(rule, facts);
        let first = names.next()??;
        let global;
        let tag = match rule.scope.by.dimensions()[0] {
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
            self.keys.key(tag, rule.policy.name())
        } else {
            self.keys.key_within(tag, rule.policy.name(), &rest)
        })
    }

    /// The names that pick this request's bucket under `rule`, one per dimension the rule is
    /// keyed by; `None` for a name the request lacks, when the rule does not apply.
    fn names<'r, 'f: 'r>(
        &self,
        rule: &'r Rule,
        facts: &'f RequestFacts<'_>,
    ) -> impl Iterator<Item = Option<&'f [u8]>> + 'r {
        // An address's name ("\0ip:<addr>", from caller::address::bucket) is built once per
        // request.
        let address = facts.ip.as_deref().map(str::as_bytes);
        let (user, route, on_missing) = (facts.user, facts.route, self.on_missing);
        rule.scope.by.dimensions().iter().map(move |d| match d {
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

    /// The rules whose routes this request matches, or [`Unidentified`] when one of them is
    /// keyed by user, the request names nobody, and `on_missing` is `deny`.
    fn matching<'r>(
        &'r self,
        facts: &'r RequestFacts<'_>,
    ) -> impl Iterator<Item = Result<(usize, &'r Rule), Unidentified>> + 'r {
        let unnamed = facts.user.is_none() && self.on_missing == OnMissing::Deny;
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.scope.applies_to(facts.method, facts.path))
            .map(move |(i, rule)| {
                if unnamed && rule.scope.by.needs_user() {
                    Err(Unidentified)
                } else {
                    Ok((i, rule))
                }
            })
    }

    /// The denial cache's key for this request: what its checks are made of, before any
    /// hashing (each rule that applies, by position, with its names and its cost). Equal
    /// probes make equal checks, so a cached denial is found without building them. `false`
    /// when the request has no checks.
    ///
    /// A rule's position stands for its policy: the cache belongs to this limiter, whose rules
    /// never change, so a new policy set is a new limiter with an empty cache.
    pub(super) fn write_probe(&self, facts: &RequestFacts<'_>, probe: &mut Vec<u8>) -> bool {
        let mut any = false;
        for matched in self.matching(facts) {
            let Ok((i, rule)) = matched else { return false };
            let start = probe.len();
            probe.extend_from_slice(&(i as u64).to_be_bytes());
            if !encode_names(self.names(rule, facts), probe) {
                probe.truncate(start);
                continue;
            }
            probe.extend_from_slice(&rule.cost_of(facts).to_be_bytes());
            any = true;
        }
        any
    }

    /// The checks for one request: one per rule that applies, or [`Unidentified`] when a rule
    /// keyed by user applies, the request names nobody, and `on_missing` is `deny`.
    pub fn checks(&self, facts: &RequestFacts<'_>) -> Result<Vec<Check>, Unidentified> {
        let mut checks = Vec::with_capacity(self.rules.len());
        let mut last_tag = None;
        for matched in self.matching(facts) {
            let (_, rule) = matched?;
            if let Some(key) = self.key_reusing(rule, facts, &mut last_tag) {
                checks.push(Check {
                    key,
                    policy: rule.policy.clone(),
                    cost: rule.cost_of(facts),
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
    use crate::limiter::tests::rule;
    use crate::store::MemoryStore;
    use axum::http::Method;

    /// Reusing one caller's tag across rules names every key exactly as `key_of` does alone,
    /// whatever the rules key by and in whatever order.
    #[test]
    fn keys_of_a_request_match_key_of_each_rule() {
        let rules = vec![
            rule("a: 3 per 1m", vec![Dimension::User]),
            rule("b: 3 per 1h", vec![Dimension::Ip]),
            rule("c: 3 per 1d", vec![Dimension::User]),
            rule("d: 3 per 1s", vec![Dimension::Global]),
            rule("e: 3 per 1m", vec![Dimension::User, Dimension::Route]),
            rule("f: 3 per 1m", vec![Dimension::Route]),
        ];
        let limiter = Limiter::new(Arc::new(MemoryStore::new()), rules)
            .with_keys(KeyBuilder::new("t").with_hash_key(b"k".to_vec()));
        assert!(limiter.needs_address());
        let facts = RequestFacts {
            user: Some(b"joe"),
            ip: Some("\0ip:192.0.2.1".into()),
            method: &Method::GET,
            path: "/user",
            route: "/user",
        };
        let keys: Vec<String> = limiter
            .checks(&facts)
            .unwrap()
            .into_iter()
            .map(|c| c.key)
            .collect();
        let alone: Vec<String> = limiter
            .rules()
            .iter()
            .map(|rule| limiter.key_of(rule, &facts).unwrap())
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
        use crate::scope::RoutePattern;
        let mut by_route = rule("r: 3 per 1m", vec![Dimension::User, Dimension::Route]);
        by_route.scope.costs = vec![(RoutePattern::parse("POST /user").unwrap(), 2)];
        let mut items_only = rule("i: 3 per 1h", vec![Dimension::Ip]);
        items_only.scope.routes = vec![RoutePattern::parse("/items/*").unwrap()];
        let rules = vec![
            rule("a: 3 per 1m", vec![Dimension::User]),
            by_route,
            items_only,
            rule("g: 9 per 1m", vec![Dimension::Global]),
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
        // Two rules keyed alike on different routes: only their positions tell them apart.
        let on = |text: &str, route: &str| {
            let mut rule = rule(text, vec![Dimension::User]);
            rule.scope.routes = vec![RoutePattern::parse(route).unwrap()];
            rule
        };
        let alike = vec![
            on("u1: 3 per 1m", "/items/*"),
            on("u2: 3 per 1m", "GET /user"),
        ];
        // All the rules together, each alone, and the two alike.
        let sets = std::iter::once(rules.clone())
            .chain(rules.iter().map(|r| vec![r.clone()]))
            .chain([alike]);
        for (rules, on_missing) in sets.flat_map(|rules| {
            [OnMissing::Allow, OnMissing::Ip, OnMissing::Deny].map(|m| (rules.clone(), m))
        }) {
            let limiter = Limiter::new(Arc::new(MemoryStore::new()), rules.clone())
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
                            method,
                            path,
                            route: path,
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

    /// The address is asked for only when a rule is keyed by it or falls back to it.
    #[test]
    fn needs_address_only_when_some_rule_can_use_it() {
        let by_user = || vec![rule("a: 3 per 1m", vec![Dimension::User])];
        let store = || Arc::new(MemoryStore::new());
        assert!(!Limiter::new(store(), by_user()).needs_address());
        assert!(Limiter::new(store(), by_user())
            .with_on_missing(OnMissing::Ip)
            .needs_address());
        assert!(!Limiter::new(store(), Vec::<Rule>::new())
            .with_on_missing(OnMissing::Ip)
            .needs_address());
    }
}
