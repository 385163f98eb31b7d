//! The limiter: from what a request says about its caller to a verdict, through the policies that
//! apply, the keys, the store and the failure modes. It knows nothing of HTTP responses: the
//! [`caller`](crate::caller) module gathers the facts, and the middleware renders the verdicts.

mod failure;
mod keys;

pub mod breaker;
pub mod denial_cache;

use std::num::NonZeroUsize;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::caller::{OnMissing, RequestFacts, Unidentified};
use crate::decision::Decision;
use crate::key::KeyBuilder;
use crate::log_throttle::LogThrottle;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyName};
use crate::store::MemoryStore;
use crate::store::{Check, Clock, Store, StoreCounts, StoreError};
use breaker::{Breaker, BreakerState, Permit};
use denial_cache::DenialCache;

pub use failure::{Degraded, OnError};

/// How many denials the denial cache holds at most (a few hundred bytes each).
pub const DENIAL_CACHE_CAPACITY: usize = 100_000;

/// The target of the limiter's logs, whichever file logs: the documentation and users' log filters
/// name it.
const LOG_TARGET: &str = module_path!();

/// The outcome of checking one request.
#[derive(Debug)]
pub enum Verdict {
    /// No policy applies to this request: it passes, and nothing is counted.
    Unlimited,
    /// The store decided.
    Decided(Decision),
    /// The store could not decide (it failed, or the breaker is open), and the failure mode did.
    Degraded(Degraded),
    /// A policy keyed by user applies, the request names nobody, and `on_missing` is `deny`.
    Unidentified,
}

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

/// Checks requests against policies in one store.
pub struct Limiter {
    store: Arc<dyn Store>,
    policies: Vec<Arc<Policy>>,
    keys: KeyBuilder,
    on_error: OnError,
    on_missing: OnMissing,
    /// Whether some policy can use the client address, worked out once: see
    /// [`Limiter::needs_address`].
    needs_address: bool,
    /// Keeps a failing store from costing every request the whole deadline; shared with the
    /// limiters a reload succeeds this one with, as the store is.
    breaker: Arc<Breaker>,
    /// Decides under `on_error = "local"`; shared with successors, so a reload during an outage
    /// keeps the counts.
    local: Arc<MemoryStore>,
    /// Policies decided for checks made elsewhere ([`Limiter::decide`]), never matched to a
    /// request: counted and divided like the others.
    unscoped: Vec<Arc<Policy>>,
    /// What the local fallback divides every limit by.
    local_divisor: u64,
    /// Per policy, then per unscoped policy, the local fallback's version of it (limits
    /// divided).
    local_policies: Vec<Arc<Policy>>,
    metrics: Metrics,
    /// Whether the breaker was closed before its last change, to log an outage once.
    breaker_was_closed: Arc<AtomicBool>,
    /// Recent denials, served without a store call until their retry time.
    denials: Option<Arc<DenialCache>>,
    /// An outage logs once a second rather than once a request.
    failure_warnings: Arc<LogThrottle>,
}

/// Counters for `policies`, going on from `base`'s, one per name (policies of one name, like
/// Envoy's rules of one path in two domains, share theirs), the shadow ones marked.
fn metrics_for(base: &Metrics, policies: &[Arc<Policy>]) -> Metrics {
    let mut names: Vec<PolicyName> = Vec::with_capacity(policies.len());
    for policy in policies {
        if !names.contains(policy.name()) {
            names.push(policy.name().clone());
        }
    }
    let shadow: Vec<PolicyName> = policies
        .iter()
        .filter(|p| p.shadow())
        .map(|p| p.name().clone())
        .collect();
    base.regrouped(names).with_shadow(&shadow)
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("policies", &self.policies)
            .field("keys", &self.keys)
            .field("on_error", &self.on_error)
            .field("on_missing", &self.on_missing)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter over `store` applying `policies`, in order.
    pub fn new<P: Into<Arc<Policy>>>(
        store: Arc<dyn Store>,
        policies: impl IntoIterator<Item = P>,
    ) -> Self {
        let policies: Vec<Arc<Policy>> = policies.into_iter().map(Into::into).collect();
        Limiter {
            needs_address: keys::address_needed(&policies, OnMissing::default()),
            store,
            local_policies: policies.clone(),
            metrics: metrics_for(&Metrics::new(Vec::new()), &policies),
            policies,
            unscoped: Vec::new(),
            local_divisor: 1,
            keys: KeyBuilder::new(crate::key::DEFAULT_PREFIX),
            on_error: OnError::default(),
            on_missing: OnMissing::default(),
            breaker: Arc::new(Breaker::new(
                breaker::DEFAULT_FAILURES,
                breaker::DEFAULT_COOL_DOWN,
            )),
            local: Arc::new(MemoryStore::new()),
            denials: Some(Arc::new(DenialCache::new(DENIAL_CACHE_CAPACITY))),
            breaker_was_closed: Arc::new(AtomicBool::new(true)),
            failure_warnings: Arc::new(LogThrottle::new(Duration::from_secs(1))),
        }
    }

    /// The limiter a reload puts in this one's place: `policies`, and the `unscoped` ones of
    /// [`Limiter::with_unscoped`], over the same store, breaker, local fallback and counters, so
    /// that a reload neither forgets an outage nor resets a metric. The rest starts as
    /// [`Limiter::new`] starts it and is set with the same `with_*` calls, except
    /// [`Limiter::with_breaker`] and [`Limiter::with_local_max_callers`], which would start a
    /// breaker or a fallback of its own. The denial cache is new: an entry never outlives the
    /// policies that decided it.
    pub fn successor<P: Into<Arc<Policy>>, U: Into<Arc<Policy>>>(
        &self,
        policies: impl IntoIterator<Item = P>,
        unscoped: impl IntoIterator<Item = U>,
    ) -> Self {
        let policies: Vec<Arc<Policy>> = policies.into_iter().map(Into::into).collect();
        let unscoped: Vec<Arc<Policy>> = unscoped.into_iter().map(Into::into).collect();
        let all: Vec<Arc<Policy>> = policies.iter().chain(&unscoped).cloned().collect();
        Limiter {
            needs_address: keys::address_needed(&policies, OnMissing::default()),
            store: self.store.clone(),
            local_policies: all.clone(),
            // Regrouped once over every policy, so that the counters of a policy of either kind
            // that keeps its name go on counting.
            metrics: metrics_for(&self.metrics, &all),
            policies,
            unscoped,
            local_divisor: 1,
            keys: KeyBuilder::new(crate::key::DEFAULT_PREFIX),
            on_error: OnError::default(),
            on_missing: OnMissing::default(),
            breaker: self.breaker.clone(),
            local: self.local.clone(),
            denials: Some(Arc::new(DenialCache::new(DENIAL_CACHE_CAPACITY))),
            breaker_was_closed: self.breaker_was_closed.clone(),
            failure_warnings: self.failure_warnings.clone(),
        }
    }

    /// Opens the circuit breaker after `failures` consecutive store failures, for `cool_down`.
    pub fn with_breaker(mut self, failures: u32, cool_down: Duration) -> Self {
        self.breaker = Arc::new(Breaker::new(failures, cool_down));
        self
    }

    /// Under `on_error = "local"`, divides every limit by `divisor` (the number of instances),
    /// so the fleet as a whole stays near the intended limit while the store is out.
    pub fn with_local_divisor(mut self, divisor: u64) -> Self {
        self.local_divisor = divisor;
        self.local_policies = self
            .policies
            .iter()
            .chain(&self.unscoped)
            .map(|p| Arc::new(p.divided(divisor)))
            .collect();
        self
    }

    /// Adds policies that no request matches, decided only for checks made elsewhere (Envoy's
    /// descriptors, through [`Limiter::decide`]), so that they share this limiter's breaker,
    /// denial cache, failure mode and metrics.
    pub fn with_unscoped<P: Into<Arc<Policy>>>(
        mut self,
        policies: impl IntoIterator<Item = P>,
    ) -> Self {
        self.unscoped = policies.into_iter().map(Into::into).collect();
        let all: Vec<Arc<Policy>> = self
            .policies
            .iter()
            .chain(&self.unscoped)
            .cloned()
            .collect();
        self.metrics = metrics_for(&self.metrics, &all);
        let divisor = self.local_divisor;
        self.with_local_divisor(divisor)
    }

    /// Caps the entries of the local fallback's memory store, as `memory.max_callers` does.
    pub fn with_local_max_callers(mut self, max_callers: NonZeroUsize) -> Self {
        self.local = Arc::new(MemoryStore::new().with_max_callers(max_callers));
        self
    }

    /// Turns the denial cache on (the default) or off.
    pub fn with_denial_cache(mut self, enabled: bool) -> Self {
        self.denials = enabled.then(|| Arc::new(DenialCache::new(DENIAL_CACHE_CAPACITY)));
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
        self.needs_address = keys::address_needed(&self.policies, on_missing);
        self
    }

    /// Forgets every cached denial, as `tollgate reset` asks of every running instance: the
    /// next request of each caller asks the store.
    pub fn forget_denials(&self) {
        if let Some(cache) = &self.denials {
            cache.clear();
        }
    }

    /// The denial cache, when it is on, for the watch that clears it after `tollgate reset`.
    pub fn denial_cache(&self) -> Option<&Arc<DenialCache>> {
        self.denials.as_ref()
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

    /// The policies, in configuration order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }

    /// Checks one request.
    pub async fn check(&self, facts: &RequestFacts<'_>) -> Verdict {
        // While nothing is cached (the usual state), a request builds no probe. A cached denial
        // is found before any key is built or hashed.
        if let Some(cache) = self.denials.as_ref().filter(|cache| !cache.is_empty()) {
            let found = cache.lookup(|probe| self.write_probe(facts, probe), Instant::now());
            if let Some(decision) = found {
                return self.cached(decision);
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
        self.decide_checks(checks, |probe| self.write_probe(facts, probe), None)
            .await
    }

    /// Decides checks made elsewhere, as Envoy's descriptors make them: the denial cache under
    /// the probe `write_probe` writes (see [`Limiter::check`] for what a probe must name), the
    /// breaker, the failure mode and the metrics, exactly as for a request. Their policies
    /// should be among [`Limiter::policies`] or [`Limiter::with_unscoped`]'s, to be counted
    /// and divided for the local fallback.
    ///
    /// A store that has not answered within `budget` (the caller's own deadline, when shorter
    /// than the store's) is a timeout like any other: the breaker and the metrics count it, and
    /// the failure mode answers in time.
    pub async fn decide(
        &self,
        checks: Vec<Check>,
        write_probe: impl Fn(&mut Vec<u8>) -> bool,
        budget: Option<Duration>,
    ) -> Verdict {
        if checks.is_empty() {
            return Verdict::Unlimited;
        }
        if let Some(cache) = self.denials.as_ref().filter(|cache| !cache.is_empty()) {
            if let Some(decision) = cache.lookup(&write_probe, Instant::now()) {
                return self.cached(decision);
            }
        }
        self.decide_checks(checks, write_probe, budget).await
    }

    /// A denial served from the denial cache, counted.
    fn cached(&self, decision: Decision) -> Verdict {
        self.metrics.cached_denial();
        self.metrics.decided(&decision);
        Verdict::Decided(decision)
    }

    /// Asks the store about `checks` (through the breaker, or the failure mode when it cannot
    /// answer), and caches a denial under the probe `write_probe` writes.
    async fn decide_checks(
        &self,
        checks: Vec<Check>,
        write_probe: impl Fn(&mut Vec<u8>) -> bool,
        budget: Option<Duration>,
    ) -> Verdict {
        // From before the call, so that a denial cached from it expires a little early, never
        // late.
        let started = Instant::now();
        let generation = self.denials.as_ref().map_or(0, |cache| cache.generation());
        // A store that decides in process answers at once: no round trip to time or to guard.
        let decided = match self.store.decide_now(&checks, Clock::Store) {
            Some(decided) => decided,
            None => {
                let (permit, changed) = self.breaker.admit();
                self.breaker_changed(changed);
                if permit == Permit::Reject {
                    return self.degrade(checks).await;
                }
                let decided = match budget {
                    None => self.store.decide(&checks, Clock::Store).await,
                    Some(budget) => {
                        tokio::time::timeout(budget, self.store.decide(&checks, Clock::Store))
                            .await
                            .unwrap_or(Err(StoreError::Timeout(budget)))
                    }
                };
                self.metrics
                    .store_call(started.elapsed(), decided.as_ref().err());
                self.breaker_changed(self.breaker.record(permit, decided.is_ok()));
                decided
            }
        };
        match decided {
            Ok(decision) => {
                self.metrics.decided(&decision);
                if decision.allowed {
                    // At debug, as denials are: a shadow limit far too low must not flood the logs.
                    for shadow in decision.shadow_denials() {
                        tracing::debug!(
                            policy = %shadow.policy.name(),
                            retry_after_ms = shadow.retry_after.as_millis() as u64,
                            "a shadow policy would have denied this request"
                        );
                    }
                }
                if let (Some(cache), false) = (&self.denials, decision.allowed) {
                    let mut probe = Vec::new();
                    if write_probe(&mut probe) {
                        cache.insert_since(probe, &decision, started, generation);
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scope::{By, Dimension, RoutePattern, Scope};
    use axum::http::{HeaderMap, Method};

    /// A policy from its text, on every route, keyed by `by`.
    pub(crate) fn policy(text: &str, by: Vec<Dimension>) -> Policy {
        policy_on(text, by, &[], &[])
    }

    /// A policy from its text on `routes` (every route when empty), keyed by `by`, with route
    /// `costs`.
    pub(crate) fn policy_on(
        text: &str,
        by: Vec<Dimension>,
        routes: &[&str],
        costs: &[(&str, u64)],
    ) -> Policy {
        let pattern = |text: &str| RoutePattern::parse(text).unwrap();
        text.parse::<Policy>().unwrap().with_scope(Scope {
            routes: routes.iter().map(|route| pattern(route)).collect(),
            by: By::new(by).unwrap(),
            costs: costs
                .iter()
                .map(|&(route, cost)| (pattern(route), cost))
                .collect(),
            when: Vec::new(),
        })
    }

    /// The memory store decides in process: its decisions are counted, not timed as round trips.
    #[test]
    fn in_process_decisions_are_counted_but_not_timed() {
        let limiter = Limiter::new(
            Arc::new(MemoryStore::new()),
            vec![policy("a: 1 per 1m", vec![Dimension::User])],
        );
        let facts = RequestFacts {
            user: Some(b"joe"),
            ip: None,
            method: Method::GET,
            path: "/user".into(),
            route: Some("/user"),
            headers: &HeaderMap::new(),
            host: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..2 {
            runtime.block_on(limiter.check(&facts));
        }
        let text = limiter
            .metrics()
            .render(StoreCounts::default(), BreakerState::Closed.as_str());
        for line in [
            "tollgate_decisions_total{policy=\"a\",outcome=\"allowed\"} 1",
            "tollgate_decisions_total{policy=\"a\",outcome=\"denied\"} 1",
            "tollgate_store_latency_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    /// The metrics label the failure modes and the breaker's states with the names the
    /// limiter gives them, in the limiter's order: metrics takes labels, not these types.
    #[test]
    fn metrics_labels_are_the_limiters_names() {
        let modes = [OnError::Allow, OnError::Deny, OnError::Local].map(OnError::as_str);
        assert_eq!(modes, crate::metrics::ON_ERROR);
        assert_eq!(
            BreakerState::ALL.map(BreakerState::as_str),
            crate::metrics::BREAKER_STATES
        );
    }
}
