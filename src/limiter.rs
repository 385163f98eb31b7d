//! The limiter: from what a request says about its caller to a verdict, through the rules that
//! apply, the keys, the store and the failure modes. It knows nothing of HTTP responses; the
//! middleware gathers the facts and renders the verdicts.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;

use crate::breaker::{Breaker, BreakerState, Permit};
use crate::decision::Decision;
use crate::denial_cache::DenialCache;
use crate::key::{CallerTag, KeyBuilder};
use crate::metrics::Metrics;

/// How many denials the local over-limit cache holds at most (a few hundred bytes each).
pub const DENIAL_CACHE_CAPACITY: usize = 100_000;
use crate::quota::Policy;
use crate::scope::{Dimension, Scope};
use crate::store::MemoryStore;
use crate::store::{Check, Clock, Store, StoreCounts, StoreError};
use crate::throttle::Throttle;
use std::time::Instant;

/// What happens to a request when the store cannot decide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Let the request pass and log a warning (at most once a second): the API stays up.
    #[default]
    Allow,
    /// Answer 503 with `Retry-After: 1`: nothing passes unprotected.
    Deny,
    /// Decide in this process's memory, with the same policies (limits divided by
    /// `local_divisor`): still limited, per instance, while the store is out.
    Local,
}

impl OnError {
    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Allow => "allow",
            OnError::Deny => "deny",
            OnError::Local => "local",
        }
    }
}

/// What happens to a request that names no user when a policy keyed by user applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// A policy and what it applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// How requests are counted.
    pub policy: Arc<Policy>,
    /// Which requests, and who shares a bucket.
    pub scope: Scope,
}

impl From<Policy> for Rule {
    /// The policy on every route, one bucket per user.
    fn from(policy: Policy) -> Self {
        Rule {
            policy: Arc::new(policy),
            scope: Scope::default(),
        }
    }
}

impl Rule {
    /// What a request with these facts spends of the policy: its route's cost, or the
    /// policy's own.
    fn cost_of(&self, facts: &RequestFacts<'_>) -> u64 {
        self.scope
            .cost_of(facts.method, facts.path, self.policy.cost())
    }
}

/// What the limiter needs to know about one request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The identity header's value, when it names someone and may be believed.
    pub user: Option<&'a [u8]>,
    /// The client address's bucket name (`\0ip:192.0.2.1`, `\0ip:2001:db8::/64`), when known.
    pub ip: Option<&'a str>,
    /// The request method.
    pub method: &'a Method,
    /// The request path.
    pub path: &'a str,
    /// The matched route pattern (or the path), for policies keyed by route.
    pub route: &'a str,
}

/// The outcome of checking one request.
#[derive(Debug)]
pub enum Verdict {
    /// No policy applies to this request: it passes, and nothing is counted.
    Unlimited,
    /// The store decided.
    Decided(Decision),
    /// The store failed (or the breaker is open), and the failure mode `allow` or `deny`
    /// decides.
    Degraded(OnError),
    /// The store failed (or the breaker is open), and under `on_error = "local"` this process's
    /// memory decided, with the limits divided by `local_divisor`.
    DecidedLocally(Decision),
    /// A policy keyed by user applies, the request names nobody, and `on_missing` is `deny`.
    Unidentified,
}

/// A policy keyed by user applies to a request that names nobody, under `on_missing = "deny"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unidentified;

/// Why a decision would not be made by the store right now, as `/readyz` reports it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NotReady {
    /// The circuit breaker is open (or its probe is under way): the failure mode decides.
    #[error("the circuit breaker is open: redis.on_error decides without asking the store")]
    BreakerOpen,
    /// The store could not make a decision that writes.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks requests against rules in one store.
pub struct Limiter {
    store: Arc<dyn Store>,
    rules: Vec<Rule>,
    keys: KeyBuilder,
    on_error: OnError,
    on_missing: OnMissing,
    /// Keeps a failing store from costing every request the whole deadline.
    breaker: Breaker,
    /// Decides under `on_error = "local"`.
    local: MemoryStore,
    /// Per rule, its policy as the local fallback applies it (limits divided).
    local_policies: Vec<Arc<Policy>>,
    metrics: Metrics,
    /// Whether the breaker was closed before its last change, to log an outage once.
    breaker_was_closed: AtomicBool,
    /// Recent denials, served without a store call until their retry time.
    denials: Option<DenialCache>,
    /// An outage logs once a second rather than once a request.
    failure_warnings: Throttle,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rules", &self.rules)
            .field("keys", &self.keys)
            .field("on_error", &self.on_error)
            .field("on_missing", &self.on_missing)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter over `store` applying `rules` (a `Policy` is a rule for every route, by user).
    pub fn new<R: Into<Rule>>(store: Arc<dyn Store>, rules: impl IntoIterator<Item = R>) -> Self {
        let rules: Vec<Rule> = rules.into_iter().map(Into::into).collect();
        Limiter {
            store,
            local_policies: rules.iter().map(|r| r.policy.clone()).collect(),
            metrics: Metrics::new(rules.iter().map(|r| r.policy.name().clone()).collect()),
            rules,
            keys: KeyBuilder::new("tollgate"),
            on_error: OnError::default(),
            on_missing: OnMissing::default(),
            breaker: Breaker::new(5, Duration::from_millis(500)),
            local: MemoryStore::new(),
            denials: Some(DenialCache::new(DENIAL_CACHE_CAPACITY)),
            breaker_was_closed: AtomicBool::new(true),
            failure_warnings: Throttle::new(Duration::from_secs(1)),
        }
    }

    /// Opens the circuit breaker after `failures` consecutive store failures, for `cool_down`.
    pub fn with_breaker(mut self, failures: u32, cool_down: Duration) -> Self {
        self.breaker = Breaker::new(failures, cool_down);
        self
    }

    /// Under `on_error = "local"`, divides every limit by `divisor` (the number of instances),
    /// so the fleet as a whole stays near the intended limit while the store is out.
    pub fn with_local_divisor(mut self, divisor: u64) -> Self {
        self.local_policies = self
            .rules
            .iter()
            .map(|r| Arc::new(r.policy.divided(divisor)))
            .collect();
        self
    }

    /// Caps the entries of the local fallback's memory store, as `memory.max_callers` does.
    pub fn with_local_max_callers(mut self, max_callers: NonZeroUsize) -> Self {
        self.local = self.local.with_max_callers(max_callers);
        self
    }

    /// Turns the local over-limit cache on (the default) or off.
    pub fn with_local_cache(mut self, enabled: bool) -> Self {
        self.denials = enabled.then(|| DenialCache::new(DENIAL_CACHE_CAPACITY));
        self
    }

    /// The counters behind `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store's counts, with the entries and refusals of the local fallback's memory added,
    /// for `/metrics`.
    pub fn counts(&self) -> StoreCounts {
        let local = self.local.counts();
        let mut counts = self.store.counts();
        counts.memory_entries += local.memory_entries;
        counts.memory_full += local.memory_full;
        counts
    }

    /// The circuit breaker's state, for `/readyz`.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Uses `keys` to name Redis keys (a different prefix, a hash key).
    pub fn with_keys(mut self, keys: KeyBuilder) -> Self {
        self.keys = keys;
        self
    }

    /// Sets what happens when the store fails.
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Sets what happens when a policy keyed by user applies to a request that names nobody.
    pub fn with_on_missing(mut self, on_missing: OnMissing) -> Self {
        self.on_missing = on_missing;
        self
    }

    /// The store, for readiness checks.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Succeeds when a request would be decided by the store, writing: the breaker lets it
    /// through and the store's write probe succeeds.
    ///
    /// Once the breaker's cool-down is over, this check is its half-open probe, as a request
    /// would be: an instance that its orchestrator stopped sending requests to, because it was
    /// not ready, would otherwise never close its breaker and never be ready again.
    pub async fn ready(&self) -> Result<(), NotReady> {
        let (permit, changed) = self.breaker.admit();
        self.breaker_changed(changed);
        if permit == Permit::Reject {
            return Err(NotReady::BreakerOpen);
        }
        let ready = self.store.ready(&self.keys.readiness_key()).await;
        // Only a probe's outcome is recorded: with the breaker closed, decisions alone count.
        if permit == Permit::Probe {
            self.breaker_changed(self.breaker.record(permit, ready.is_ok()));
        }
        Ok(ready?)
    }

    /// The rules, in configuration order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

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
        facts: &RequestFacts<'f>,
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
        for name in names {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") never collide.
            let name = name?;
            rest.extend_from_slice(&(name.len() as u64).to_be_bytes());
            rest.extend_from_slice(name);
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
        facts: &RequestFacts<'f>,
    ) -> impl Iterator<Item = Option<&'f [u8]>> + 'r {
        // An address's name ("\0ip:<addr>", from client_ip::bucket) is built once per request.
        let address = facts.ip.map(str::as_bytes);
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

    /// The over-limit cache's key for this request: what its checks are made of, before any
    /// hashing (each rule that applies, by position, with its names and its cost). Equal
    /// probes make equal checks, so a cached denial is found without building them. `false`
    /// when the request has no checks.
    ///
    /// A rule's position stands for its policy: the cache belongs to this limiter, whose rules
    /// never change, so a new policy set is a new limiter with an empty cache.
    fn write_probe(&self, facts: &RequestFacts<'_>, probe: &mut Vec<u8>) -> bool {
        let mut any = false;
        for matched in self.matching(facts) {
            let Ok((i, rule)) = matched else { return false };
            let start = probe.len();
            probe.extend_from_slice(&(i as u64).to_be_bytes());
            let mut named = true;
            for name in self.names(rule, facts) {
                let Some(name) = name else {
                    named = false;
                    break;
                };
                // Length-prefixed, so ("ab", "c") and ("a", "bc") never meet.
                probe.extend_from_slice(&(name.len() as u64).to_be_bytes());
                probe.extend_from_slice(name);
            }
            if !named {
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

    /// Checks one request.
    pub async fn check(&self, facts: &RequestFacts<'_>) -> Verdict {
        // While nothing is cached (the usual state), a request builds no probe. A cached denial
        // is found before any key is built or hashed.
        if let Some(cache) = self.denials.as_ref().filter(|cache| !cache.is_empty()) {
            let found = cache.lookup(|probe| self.write_probe(facts, probe), Instant::now());
            if let Some(decision) = found {
                self.metrics.cached_denial();
                self.metrics.decided(&decision);
                return Verdict::Decided(decision);
            }
        }
        let checks = match self.checks(facts) {
            Ok(checks) if checks.is_empty() => return Verdict::Unlimited,
            Ok(checks) => checks,
            Err(Unidentified) => {
                self.metrics.unidentified();
                return Verdict::Unidentified;
            }
        };
        // From before the call, so that a denial cached from it expires a little early, never
        // late.
        let started = Instant::now();
        // A store that decides in process answers at once: no round trip to time or to guard.
        let decided = match self.store.decide_now(&checks, Clock::Store) {
            Some(decided) => decided,
            None => {
                let (permit, changed) = self.breaker.admit();
                self.breaker_changed(changed);
                if permit == Permit::Reject {
                    return self.degrade(checks).await;
                }
                let decided = self.store.decide(&checks, Clock::Store).await;
                self.metrics
                    .store_call(started.elapsed(), decided.as_ref().err());
                self.breaker_changed(self.breaker.record(permit, decided.is_ok()));
                decided
            }
        };
        match decided {
            Ok(decision) => {
                self.metrics.decided(&decision);
                if let (Some(cache), false) = (&self.denials, decision.allowed) {
                    let mut probe = Vec::new();
                    if self.write_probe(facts, &mut probe) {
                        cache.insert(probe, &decision, started);
                    }
                }
                Verdict::Decided(decision)
            }
            Err(error) => {
                self.warn_throttled(&error);
                self.degrade(checks).await
            }
        }
    }

    /// The failure mode's verdict for a request the store could not decide.
    async fn degrade(&self, mut checks: Vec<Check>) -> Verdict {
        self.metrics.degraded(self.on_error);
        if self.on_error != OnError::Local {
            return Verdict::Degraded(self.on_error);
        }
        // The real cost, even above a divided capacity: such a request is denied locally, rather
        // than let each instance admit it at a cheaper price.
        for check in &mut checks {
            check.policy = self.local_policy(&check.policy);
        }
        match self.local.decide(&checks, Clock::Store).await {
            Ok(decision) => {
                self.metrics.decided(&decision);
                Verdict::DecidedLocally(decision)
            }
            // The memory store never fails; were it to, allowing is the mode's spirit.
            Err(_) => Verdict::Degraded(OnError::Allow),
        }
    }

    /// The local fallback's version of `policy`, one of the rules' own. Rules that share a
    /// policy share its local version too, so the first rule holding it answers for all.
    fn local_policy(&self, policy: &Arc<Policy>) -> Arc<Policy> {
        let rule = self
            .rules
            .iter()
            .position(|r| Arc::ptr_eq(&r.policy, policy));
        rule.map_or_else(|| policy.clone(), |i| self.local_policies[i].clone())
    }

    /// Logs and counts a breaker state change, once per change.
    fn breaker_changed(&self, changed: Option<BreakerState>) {
        let Some(state) = changed else { return };
        self.metrics.breaker(state);
        // The outage's first opening warns and its end informs; the probes in between (every
        // cool-down) are debug, so a long outage does not fill the logs.
        match (
            self.breaker_was_closed
                .swap(state == BreakerState::Closed, AtomicOrdering::Relaxed),
            state,
        ) {
            (true, BreakerState::Open) => tracing::warn!(
                state = state.as_str(),
                on_error = self.on_error.as_str(),
                "circuit breaker opened: the store is skipped, the failure mode decides"
            ),
            (_, BreakerState::Closed) => {
                tracing::info!(state = state.as_str(), "circuit breaker closed")
            }
            _ => tracing::debug!(state = state.as_str(), "circuit breaker"),
        }
    }

    /// Logs a store failure, at most once a second.
    fn warn_throttled(&self, error: &StoreError) {
        if self.failure_warnings.ready() {
            tracing::warn!(
                %error,
                on_error = self.on_error.as_str(),
                "store failed; the failure mode decides"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::By;

    fn rule(text: &str, by: Vec<Dimension>) -> Rule {
        Rule {
            policy: Arc::new(text.parse().unwrap()),
            scope: Scope {
                by: By::new(by).unwrap(),
                ..Scope::default()
            },
        }
    }

    /// The memory store decides in process: its decisions are counted, not timed as round trips.
    #[test]
    fn in_process_decisions_are_counted_but_not_timed() {
        let limiter = Limiter::new(
            Arc::new(MemoryStore::new()),
            vec![rule("a: 1 per 1m", vec![Dimension::User])],
        );
        let facts = RequestFacts {
            user: Some(b"joe"),
            ip: None,
            method: &Method::GET,
            path: "/user",
            route: "/user",
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..2 {
            runtime.block_on(limiter.check(&facts));
        }
        let text = limiter
            .metrics()
            .render(StoreCounts::default(), BreakerState::Closed);
        for line in [
            "tollgate_decisions_total{policy=\"a\",outcome=\"allowed\"} 1",
            "tollgate_decisions_total{policy=\"a\",outcome=\"denied\"} 1",
            "tollgate_store_latency_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

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
            ip: Some("\0ip:192.0.2.1"),
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

    /// Two requests have the same over-limit cache probe exactly when they make the same checks
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
                            ip,
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
