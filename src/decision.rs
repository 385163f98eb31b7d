//! The one currency of tollgate: what the store decided, carried unchanged to headers and logs.

use std::sync::Arc;
use std::time::Duration;

use crate::algorithm::Outcome;
use crate::policy::Policy;

/// The answer for one request, over every policy that applied to it.
///
/// Policies are decided all-or-nothing: either all admit and each consumes its cost, or the
/// request is denied and nothing is consumed anywhere. Shadow policies only report: one that
/// does not fit leaves `allowed` as the others make it and consumes nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// One entry per policy that applied, in configuration order.
    pub policies: Vec<PolicyDecision>,
}

/// What one policy said about one request.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDecision {
    /// The policy, for its name and window in headers and logs.
    pub policy: Arc<Policy>,
    /// Whether this policy alone would admit the request.
    pub allowed: bool,
    /// The most quota the caller can hold: the limit, or a token bucket's burst.
    pub limit: u64,
    /// Quota left in the current window after this request.
    pub remaining: u64,
    /// Time until this policy would admit the request; zero when it admits now.
    pub retry_after: Duration,
    /// Time until the current window ends and the quota is whole again.
    pub reset_after: Duration,
}

impl PolicyDecision {
    /// What `policy` reported: it admits exactly when it asks for no wait.
    pub fn new(policy: Arc<Policy>, outcome: Outcome) -> Self {
        PolicyDecision {
            allowed: outcome.retry_after_ms == 0,
            limit: policy.capacity(),
            remaining: outcome.remaining,
            retry_after: Duration::from_millis(outcome.retry_after_ms),
            reset_after: Duration::from_millis(outcome.reset_after_ms),
            policy,
        }
    }
}

impl Decision {
    /// The policies that limit the request: every one but the shadow policies, which the
    /// headers, `Retry-After` and the denial cache never cite.
    pub fn limiting(&self) -> impl Iterator<Item = &PolicyDecision> {
        self.policies.iter().filter(|p| !p.policy.shadow())
    }

    /// The shadow policies that would have denied the request had they not been shadow.
    pub fn shadow_denials(&self) -> impl Iterator<Item = &PolicyDecision> {
        self.policies
            .iter()
            .filter(|p| p.policy.shadow() && !p.allowed)
    }

    /// The longest wait among the limiting policies that denied; zero when the request is
    /// allowed.
    pub fn retry_after(&self) -> Duration {
        self.limiting()
            .map(|p| p.retry_after)
            .max()
            .unwrap_or_default()
    }

    /// The policy closest to exhaustion, the one `X-RateLimit-*` headers describe.
    ///
    /// Only limiting policies count (see [`Decision::limiting`]). Denying policies come first,
    /// then the smallest share of quota left, then the later reset.
    pub fn tightest(&self) -> Option<&PolicyDecision> {
        self.limiting().min_by(|a, b| {
            // remaining/limit compared without division: a.r * b.l vs b.r * a.l.
            let share = |x: &PolicyDecision, y: &PolicyDecision| {
                u128::from(x.remaining) * u128::from(y.limit)
            };
            a.allowed
                .cmp(&b.allowed)
                .then(share(a, b).cmp(&share(b, a)))
                .then(b.reset_after.cmp(&a.reset_after))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Algorithm, PolicyName, Window};
    use std::num::NonZeroU64;

    fn decided(name: &str, limit: u64, remaining: u64, retry_ms: u64) -> PolicyDecision {
        let policy = Policy::new(
            PolicyName::new(name).unwrap(),
            Algorithm::FixedWindow,
            NonZeroU64::new(limit).unwrap(),
            Window::from_millis(60_000).unwrap(),
        )
        .unwrap();
        PolicyDecision {
            policy: Arc::new(policy),
            allowed: retry_ms == 0,
            limit,
            remaining,
            retry_after: Duration::from_millis(retry_ms),
            reset_after: Duration::from_millis(30_000),
        }
    }

    /// The tightest policy is the one with the smallest share left, and a denier beats all.
    #[test]
    fn tightest_is_closest_to_exhaustion() {
        let decision = Decision {
            allowed: true,
            policies: vec![decided("wide", 1000, 100, 0), decided("narrow", 10, 5, 0)],
        };
        assert_eq!(decision.tightest().unwrap().policy.name().as_str(), "wide");

        let decision = Decision {
            allowed: false,
            policies: vec![decided("a", 10, 0, 0), decided("b", 10, 3, 2_000)],
        };
        assert_eq!(decision.tightest().unwrap().policy.name().as_str(), "b");
        assert_eq!(decision.retry_after(), Duration::from_millis(2_000));
    }

    /// A shadow policy is never the tightest nor in `retry_after`, even when it alone denies.
    #[test]
    fn shadow_policies_are_never_cited() {
        let mut trial = decided("trial", 1, 0, 9_000);
        trial.policy = Arc::new(Policy::clone(&trial.policy).with_shadow(true));
        let decision = Decision {
            allowed: true,
            policies: vec![decided("real", 10, 5, 0), trial],
        };
        assert_eq!(decision.tightest().unwrap().policy.name().as_str(), "real");
        assert_eq!(decision.retry_after(), Duration::ZERO);
        let names: Vec<&str> = decision
            .limiting()
            .map(|p| p.policy.name().as_str())
            .collect();
        assert_eq!(names, ["real"]);
        assert_eq!(decision.shadow_denials().count(), 1);
    }
}
