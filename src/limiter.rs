//! The limiter: from a caller's name to a verdict, through the keys, the store and the failure
//! mode. It knows nothing of HTTP responses; the middleware renders its verdicts.

use std::sync::Arc;
use std::time::Duration;

use crate::decision::Decision;
use crate::key::{CallerTag, KeyBuilder};
use crate::quota::Policy;
use crate::store::{Check, Clock, Store, StoreError};
use crate::throttle::Throttle;

/// What happens to a request when the store cannot decide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Let the request pass and log a warning (at most once a second): the API stays up.
    #[default]
    Allow,
    /// Answer 503 with `Retry-After: 1`: nothing passes unprotected.
    Deny,
}

impl OnError {
    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Allow => "allow",
            OnError::Deny => "deny",
        }
    }
}

/// The outcome of checking one request.
#[derive(Debug)]
pub enum Verdict {
    /// The request names no caller, or no policy is configured: it passes, and nothing is
    /// counted.
    Unlimited,
    /// The store decided.
    Decided(Decision),
    /// The store failed, and the failure mode decides.
    Degraded(OnError),
}

/// Checks callers against a list of policies in one store.
pub struct Limiter {
    store: Arc<dyn Store>,
    policies: Vec<Arc<Policy>>,
    keys: KeyBuilder,
    on_error: OnError,
    /// An outage logs once a second rather than once a request.
    failure_warnings: Throttle,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("policies", &self.policies)
            .field("keys", &self.keys)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter over `store` applying every one of `policies` to each caller.
    pub fn new(store: Arc<dyn Store>, policies: Vec<Policy>) -> Self {
        Limiter {
            store,
            policies: policies.into_iter().map(Arc::new).collect(),
            keys: KeyBuilder::new("tollgate"),
            on_error: OnError::default(),
            failure_warnings: Throttle::new(Duration::from_secs(1)),
        }
    }

    /// Uses `keys` to name Redis keys (a different prefix).
    pub fn with_keys(mut self, keys: KeyBuilder) -> Self {
        self.keys = keys;
        self
    }

    /// Sets what happens when the store fails.
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The store, for readiness checks.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The policies, in configuration order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }

    /// The checks for `caller`: one key per policy, all under the caller's hash tag.
    pub fn checks(&self, caller: &[u8]) -> Vec<Check> {
        let tag = CallerTag::of(caller);
        self.policies
            .iter()
            .map(|policy| Check {
                key: self.keys.key(&tag, policy.name()),
                policy: policy.clone(),
            })
            .collect()
    }

    /// Decides one request of `caller`, or says why the store could not.
    pub async fn decide(&self, caller: &[u8], clock: Clock) -> Result<Decision, StoreError> {
        let checks = self.checks(caller);
        self.store.decide(&checks, clock).await
    }

    /// Checks one request from `caller` (`None` when the request names none).
    pub async fn check(&self, caller: Option<&[u8]>) -> Verdict {
        let Some(caller) = caller.filter(|_| !self.policies.is_empty()) else {
            return Verdict::Unlimited;
        };
        match self.decide(caller, Clock::Store).await {
            Ok(decision) => Verdict::Decided(decision),
            Err(error) => {
                self.warn_throttled(&error);
                Verdict::Degraded(self.on_error)
            }
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
