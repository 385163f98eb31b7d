//! What happens when the store cannot decide: the failure modes, the local fallback that
//! decides in this process's memory, and the breaker's and the failures' logs.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use super::breaker::BreakerState;
use super::{Limiter, Verdict, LOG_TARGET};
use crate::decision::Decision;
use crate::policy::Policy;
use crate::store::{Check, Clock, Store, StoreError};

/// What happens to a request when the store cannot decide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// What the failure mode decided for a request the store could not decide: a degraded verdict.
#[derive(Debug)]
pub enum Degraded {
    /// `on_error = "allow"`: the request passes, and nothing is counted.
    Allow,
    /// `on_error = "deny"`: 503 with `Retry-After: 1`.
    Deny,
    /// `on_error = "local"`: the local fallback, this process's memory, decided, with the limits
    /// divided by `local_divisor`.
    Local(Decision),
}

impl Limiter {
    /// The failure mode's verdict for a request the store could not decide.
    pub(super) async fn degrade(&self, mut checks: Vec<Check>) -> Verdict {
        self.metrics.degraded(self.on_error.as_str());
        match self.on_error {
            OnError::Allow => return Verdict::Degraded(Degraded::Allow),
            OnError::Deny => return Verdict::Degraded(Degraded::Deny),
            OnError::Local => {}
        }
        // The real cost, even above a divided capacity: such a request is denied locally, rather
        // than let each instance admit it at a cheaper price.
        for check in &mut checks {
            check.policy = self.local_policy(&check.policy);
        }
        match self.local.decide(&checks, Clock::Store).await {
            Ok(decision) => {
                self.metrics.decided(&decision);
                Verdict::Degraded(Degraded::Local(decision))
            }
            // The memory store never fails; were it to, allowing is the mode's spirit.
            Err(_) => Verdict::Degraded(Degraded::Allow),
        }
    }

    /// The local fallback's version of `policy`: one of this limiter's own, divided once; or
    /// one made for a single request (Envoy's override), divided now.
    fn local_policy(&self, policy: &Arc<Policy>) -> Arc<Policy> {
        let position =
            (self.policies.iter().chain(&self.unscoped)).position(|p| Arc::ptr_eq(p, policy));
        position.map_or_else(
            || Arc::new(policy.divided(self.local_divisor)),
            |i| self.local_policies[i].clone(),
        )
    }

    /// Logs and counts a breaker state change, once per change.
    pub(super) fn breaker_changed(&self, changed: Option<BreakerState>) {
        let Some(state) = changed else { return };
        self.metrics.breaker(state.as_str());
        // The outage's first opening warns and its end informs; the probes in between (every
        // cool-down) are debug, so a long outage does not fill the logs.
        match (
            self.breaker_was_closed
                .swap(state == BreakerState::Closed, AtomicOrdering::Relaxed),
            state,
        ) {
            (true, BreakerState::Open) => tracing::warn!(
                target: LOG_TARGET,
                state = state.as_str(),
                on_error = self.on_error.as_str(),
                "circuit breaker opened: the store is skipped, the failure mode decides"
            ),
            (_, BreakerState::Closed) => {
                tracing::info!(target: LOG_TARGET, state = state.as_str(), "circuit breaker closed")
            }
            _ => tracing::debug!(target: LOG_TARGET, state = state.as_str(), "circuit breaker"),
        }
    }

    /// Logs a store failure, at most once a second.
    pub(super) fn warn_throttled(&self, error: &StoreError) {
        if self.failure_warnings.ready() {
            tracing::warn!(
                target: LOG_TARGET,
                %error,
                on_error = self.on_error.as_str(),
                "store failed; the failure mode decides"
            );
        }
    }
}
