//! Prometheus metrics, rendered as text for `GET /metrics`. Names start with `tollgate_`, and
//! labels never carry caller identities: only policy names, outcomes and kinds.
//!
//! - `tollgate_decisions_total{policy, outcome}`: requests each policy applied to, by outcome
//!   (`allowed`, `denied`).
//! - `tollgate_denials_total{policy}`: denials each policy caused (over-limit callers, per
//!   policy, without a label per user).
//! - `tollgate_shadow_denials_total{policy}`: admitted requests each shadow policy would have
//!   denied (see [`Policy::shadow`](crate::Policy::shadow)).
//! - `tollgate_degraded_total{on_error}`: requests the failure mode decided (`allow`, `deny`,
//!   `local`).
//! - `tollgate_unidentified_total`: requests refused 401 under `on_missing = "deny"`.
//! - `tollgate_cached_denials_total`: denials served by the denial cache.
//! - `tollgate_store_latency_seconds`: a histogram of store decisions, successful or not, for
//!   stores that are awaited (Redis); the memory store decides in process and is not timed.
//! - `tollgate_store_errors_total{kind}`: store failures by kind (`timeout`, `connection`,
//!   `redis`, `reply`).
//! - `tollgate_store_calls_total`: script calls issued to the store (EVALSHA), refunds, peeks,
//!   probes and retries included; on a single Redis the decisions in flight together share one,
//!   so `tollgate_store_latency_seconds_count` over this is about the decisions per call.
//! - `tollgate_store_script_reloads_total`: scripts loaded again after NOSCRIPT.
//! - `tollgate_memory_entries`: entries held by the memory store (and the local fallback's),
//!   live or not yet swept.
//! - `tollgate_memory_full_total`: new callers denied untracked because a memory store held
//!   `memory.max_callers` entries.
//! - `tollgate_breaker_state{state}`: 1 for the breaker's current state, 0 for the others.
//! - `tollgate_breaker_transitions_total{to}`: breaker state changes.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::decision::Decision;
use crate::policy::PolicyName;
use crate::store::{StoreCounts, StoreError};

/// Upper bounds of the store latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Store error kinds, as labelled.
const ERROR_KINDS: [&str; 4] = ["timeout", "connection", "redis", "reply"];

/// The failure modes (`redis.on_error`), as labelled and listed. Labels, not the limiter's
/// types, so that the limiter, which feeds these counters, is not imported back.
pub const ON_ERROR: [&str; 3] = ["allow", "deny", "local"];

/// The circuit breaker's states, as labelled and listed.
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// Up to how many policies a name is looked for among them rather than hashed.
const LOOKED_THROUGH: usize = 16;

/// Every counter tollgate keeps; lock-free, one per label set.
///
/// A reload makes a new set for the new policies with [`Metrics::regrouped`]: the counters of a
/// policy that keeps its name, and those of the store and the breaker, go on counting, so a
/// reload never resets a series.
#[derive(Debug)]
pub struct Metrics {
    policies: Vec<PolicyName>,
    /// Each policy's position, when there are too many to look through: Envoy's rules may
    /// number thousands.
    positions: Option<HashMap<PolicyName, usize>>,
    /// Per policy: [allowed, denied, caused the denial, would have denied as a shadow].
    per_policy: Vec<Arc<[AtomicU64; 4]>>,
    /// Per policy, whether it is shadow: only those have a `tollgate_shadow_denials_total`.
    shadow: Vec<bool>,
    /// The counters that concern no policy, shared with the sets regrouped from this one.
    common: Arc<Common>,
}

/// Each policy's position, when there are too many to look through.
fn positions(policies: &[PolicyName]) -> Option<HashMap<PolicyName, usize>> {
    (policies.len() > LOOKED_THROUGH).then(|| {
        policies
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect()
    })
}

/// The counters of the store, the breaker and the failure modes.
#[derive(Debug, Default)]
struct Common {
    degraded: [AtomicU64; 3],
    unidentified: AtomicU64,
    cached_denials: AtomicU64,
    /// Calls per bucket, each counted once in the narrowest bucket that holds it.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    errors: [AtomicU64; 4],
    transitions: [AtomicU64; 3],
}

impl Metrics {
    /// Counters for `policies`, all zero.
    pub fn new(policies: Vec<PolicyName>) -> Self {
        Metrics {
            positions: positions(&policies),
            per_policy: policies.iter().map(|_| Default::default()).collect(),
            shadow: vec![false; policies.len()],
            policies,
            common: Default::default(),
        }
    }

    /// Counters for `policies` that go on from these: a policy of a name counted here keeps
    /// its counts, and the counters of no policy are shared.
    pub fn regrouped(&self, policies: Vec<PolicyName>) -> Self {
        Metrics {
            positions: positions(&policies),
            per_policy: policies
                .iter()
                .map(|name| match self.index_of(name) {
                    Some(i) => self.per_policy[i].clone(),
                    None => Default::default(),
                })
                .collect(),
            shadow: vec![false; policies.len()],
            policies,
            common: self.common.clone(),
        }
    }

    /// Marks the policies named in `shadow` as shadow policies, whose would-be denials are
    /// counted apart.
    pub fn with_shadow(mut self, shadow: &[PolicyName]) -> Self {
        for (name, is_shadow) in self.policies.iter().zip(&mut self.shadow) {
            *is_shadow = shadow.contains(name);
        }
        self
    }

    /// The counters' row of the policy named `name`.
    fn index_of(&self, name: &PolicyName) -> Option<usize> {
        match &self.positions {
            Some(positions) => positions.get(name).copied(),
            None => self.policies.iter().position(|p| p == name),
        }
    }

    /// Counts a decision over the policies it lists (a failed peek may leave one out).
    ///
    /// A shadow policy never causes a denial; when it would have denied an admitted request,
    /// that counts in its `tollgate_shadow_denials_total` instead. Under a real denial it
    /// would change nothing, so it is not counted there.
    pub fn decided(&self, decision: &Decision) {
        for policy in &decision.policies {
            let Some(i) = self.index_of(policy.policy.name()) else {
                continue;
            };
            let counters = &self.per_policy[i];
            let outcome = if decision.allowed { 0 } else { 1 };
            counters[outcome].fetch_add(1, Ordering::Relaxed);
            if policy.allowed {
                continue;
            }
            if !policy.policy.shadow() {
                counters[2].fetch_add(1, Ordering::Relaxed);
            } else if decision.allowed {
                counters[3].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts a request the failure mode decided, `on_error` one of [`ON_ERROR`].
    pub fn degraded(&self, on_error: &str) {
        let i = ON_ERROR.iter().position(|m| *m == on_error).unwrap_or(0);
        self.common.degraded[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a denial served from the denial cache, without a store call.
    pub fn cached_denial(&self) {
        self.common.cached_denials.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a 401 under `on_missing = "deny"`.
    pub fn unidentified(&self) {
        self.common.unidentified.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long the store took, and whether and how it failed.
    pub fn store_call(&self, took: Duration, error: Option<&StoreError>) {
        // One count in the narrowest bucket that holds it (rendering sums them up to each
        // bound), so a call costs one atomic add here, not one per bucket.
        let seconds = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.common.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.common.latency_count.fetch_add(1, Ordering::Relaxed);
        self.common
            .latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if let Some(error) = error {
            let i = ERROR_KINDS
                .iter()
                .position(|k| *k == error.kind())
                .unwrap_or(2);
            self.common.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a breaker state change, `to` one of [`BREAKER_STATES`].
    pub fn breaker(&self, to: &str) {
        let i = BREAKER_STATES.iter().position(|s| *s == to).unwrap_or(0);
        self.common.transitions[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric; `store` comes from the store and
    /// `breaker` (one of [`BREAKER_STATES`]) from the breaker itself, so the gauge never lags a
    /// transition.
    pub fn render(&self, store: StoreCounts, breaker: &str) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(
            &mut out,
            "tollgate_decisions_total",
            "counter",
            "Requests each policy applied to, by outcome.",
        );
        for (name, counters) in self.policies.iter().zip(&self.per_policy) {
            for (outcome, counter) in ["allowed", "denied"].iter().zip(counters.iter()) {
                let _ = writeln!(
                    out,
                    "tollgate_decisions_total{{policy=\"{name}\",outcome=\"{outcome}\"}} {}",
                    load(counter)
                );
            }
        }
        family(
            &mut out,
            "tollgate_denials_total",
            "counter",
            "Denials each policy caused.",
        );
        for (name, counters) in self.policies.iter().zip(&self.per_policy) {
            let _ = writeln!(
                out,
                "tollgate_denials_total{{policy=\"{name}\"}} {}",
                load(&counters[2])
            );
        }
        family(
            &mut out,
            "tollgate_shadow_denials_total",
            "counter",
            "Admitted requests each shadow policy would have denied.",
        );
        let shadows = self.policies.iter().zip(&self.per_policy).zip(&self.shadow);
        for ((name, counters), _) in shadows.filter(|(_, &shadow)| shadow) {
            let _ = writeln!(
                out,
                "tollgate_shadow_denials_total{{policy=\"{name}\"}} {}",
                load(&counters[3])
            );
        }
        family(
            &mut out,
            "tollgate_degraded_total",
            "counter",
            "Requests the failure mode decided.",
        );
        for (mode, counter) in ON_ERROR.iter().zip(&self.common.degraded) {
            let _ = writeln!(
                out,
                "tollgate_degraded_total{{on_error=\"{mode}\"}} {}",
                load(counter)
            );
        }
        family(
            &mut out,
            "tollgate_unidentified_total",
            "counter",
            "Requests refused for naming no caller.",
        );
        let _ = writeln!(
            out,
            "tollgate_unidentified_total {}",
            load(&self.common.unidentified)
        );
        family(
            &mut out,
            "tollgate_cached_denials_total",
            "counter",
            "Denials served from the denial cache, without a store call.",
        );
        let _ = writeln!(
            out,
            "tollgate_cached_denials_total {}",
            load(&self.common.cached_denials)
        );
        family(
            &mut out,
            "tollgate_store_latency_seconds",
            "histogram",
            "How long store decisions took.",
        );
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.common.latency_buckets) {
            cumulative += load(bucket);
            let _ = writeln!(
                out,
                "tollgate_store_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.common.latency_count);
        let _ = writeln!(
            out,
            "tollgate_store_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = load(&self.common.latency_sum_us) as f64 / 1e6;
        let _ = writeln!(out, "tollgate_store_latency_seconds_sum {sum}");
        let _ = writeln!(out, "tollgate_store_latency_seconds_count {count}");
        family(
            &mut out,
            "tollgate_store_calls_total",
            "counter",
            "Script calls sent to the store; decisions in flight together share one.",
        );
        let _ = writeln!(out, "tollgate_store_calls_total {}", store.calls);
        family(
            &mut out,
            "tollgate_store_script_reloads_total",
            "counter",
            "Scripts loaded again after NOSCRIPT.",
        );
        let _ = writeln!(
            out,
            "tollgate_store_script_reloads_total {}",
            store.script_reloads
        );
        family(
            &mut out,
            "tollgate_store_errors_total",
            "counter",
            "Store failures by kind.",
        );
        for (kind, counter) in ERROR_KINDS.iter().zip(&self.common.errors) {
            let _ = writeln!(
                out,
                "tollgate_store_errors_total{{kind=\"{kind}\"}} {}",
                load(counter)
            );
        }
        family(
            &mut out,
            "tollgate_memory_entries",
            "gauge",
            "Entries the memory stores hold, live or not yet swept.",
        );
        let _ = writeln!(out, "tollgate_memory_entries {}", store.memory_entries);
        family(
            &mut out,
            "tollgate_memory_full_total",
            "counter",
            "New callers denied untracked because a memory store was full.",
        );
        let _ = writeln!(out, "tollgate_memory_full_total {}", store.memory_full);
        family(
            &mut out,
            "tollgate_breaker_state",
            "gauge",
            "1 for the circuit breaker's state.",
        );
        for state in BREAKER_STATES {
            let on = u8::from(state == breaker);
            let _ = writeln!(out, "tollgate_breaker_state{{state=\"{state}\"}} {on}");
        }
        family(
            &mut out,
            "tollgate_breaker_transitions_total",
            "counter",
            "Circuit breaker state changes.",
        );
        for (state, counter) in BREAKER_STATES.iter().zip(&self.common.transitions) {
            let _ = writeln!(
                out,
                "tollgate_breaker_transitions_total{{to=\"{state}\"}} {}",
                load(counter)
            );
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each bucket counts every call up to its bound, as Prometheus histograms are cumulative,
    /// though a call is stored once.
    #[test]
    fn latency_buckets_render_cumulative() {
        let metrics = Metrics::new(Vec::new());
        for ms in [0.3, 3.0, 3_000.0] {
            metrics.store_call(Duration::from_secs_f64(ms / 1000.0), None);
        }
        let text = metrics.render(StoreCounts::default(), "closed");
        let bucket = |le: &str| {
            let line = format!("tollgate_store_latency_seconds_bucket{{le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .unwrap_or_else(|| panic!("no bucket {le} in {text}"))
                .to_owned()
        };
        assert_eq!(bucket("0.0005"), "1");
        assert_eq!(bucket("0.0025"), "1");
        assert_eq!(bucket("0.005"), "2");
        assert_eq!(bucket("2.5"), "2");
        assert!(text.contains("tollgate_store_latency_seconds_count 3"));
    }

    /// A shadow policy's would-be denial of an admitted request counts in its own family, not
    /// as a denial it caused; under a real denial it counts in neither.
    #[test]
    fn shadow_denials_are_counted_apart() {
        use crate::algorithm::Outcome;
        use crate::decision::PolicyDecision;
        use crate::policy::Policy;
        use std::sync::Arc;

        let real: Arc<Policy> = Arc::new("real: 5 per 1m".parse().unwrap());
        let trial: Policy = "trial: 1 per 1m".parse().unwrap();
        let trial = Arc::new(trial.with_shadow(true));
        let metrics = Metrics::new(vec![real.name().clone(), trial.name().clone()])
            .with_shadow(&[trial.name().clone()]);
        let fits = Outcome::default();
        let over = Outcome {
            retry_after_ms: 1_000,
            ..Outcome::default()
        };
        let decision = |allowed: bool, real_outcome: Outcome| Decision {
            allowed,
            policies: vec![
                PolicyDecision::new(real.clone(), real_outcome),
                PolicyDecision::new(trial.clone(), over),
            ],
        };
        metrics.decided(&decision(true, fits));
        metrics.decided(&decision(false, over));
        let text = metrics.render(StoreCounts::default(), "closed");
        for sample in [
            "tollgate_shadow_denials_total{policy=\"trial\"} 1",
            "tollgate_denials_total{policy=\"real\"} 1",
            "tollgate_denials_total{policy=\"trial\"} 0",
        ] {
            assert!(text.lines().any(|l| l == sample), "{sample} in:\n{text}");
        }
        assert!(!text.contains("tollgate_shadow_denials_total{policy=\"real\"}"));
    }
}
