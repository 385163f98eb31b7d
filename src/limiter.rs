//! The limiter: from what a request says about its caller to a verdict, through the rules that
//! apply, the keys, the store and the failure modes. It knows nothing of HTTP responses; the
//! middleware gathers the facts and renders the verdicts.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;

use crate::decision::Decision;
use crate::key::{CallerTag, KeyBuilder};
use crate::quota::Policy;
use crate::scope::{Dimension, Scope};
use crate::store::{Check, Clock, Store, StoreError};
use crate::throttle::Throttle;

/// What happens to a request when the store cannot decide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// What the limiter needs to know about one request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The identity header's value, when it names someone and may be believed.
    pub user: Option<&'a [u8]>,
    /// The client address's bucket name (`ip:192.0.2.1`, `ip:2001:db8::/64`), when known.
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
    /// The store failed, and the failure mode decides.
    Degraded(OnError),
    /// A policy keyed by user applies, the request names nobody, and `on_missing` is `deny`.
    Unidentified,
}

/// A policy keyed by user applies to a request that names nobody, under `on_missing = "deny"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unidentified;

/// Checks requests against rules in one store.
pub struct Limiter {
    store: Arc<dyn Store>,
    rules: Vec<Rule>,
    keys: KeyBuilder,
    on_error: OnError,
    on_missing: OnMissing,
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
        Limiter {
            store,
            rules: rules.into_iter().map(Into::into).collect(),
            keys: KeyBuilder::new("tollgate"),
            on_error: OnError::default(),
            on_missing: OnMissing::default(),
            failure_warnings: Throttle::new(Duration::from_secs(1)),
        }
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

    /// The rules, in configuration order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The key `rule` counts this request under, or `None` when the rule does not apply to it
    /// (its routes do not match, or a name it is keyed by is unknown).
    pub fn key_of(&self, rule: &Rule, facts: &RequestFacts<'_>) -> Option<String> {
        // Addresses are named "\0ip:<addr>": no header value can hold a NUL byte, so no user
        // can pick a name that lands in an address's bucket.
        let address = facts.ip.map(|ip| [&b"\0"[..], ip.as_bytes()].concat());
        let address = address.as_deref();
        let mut names = rule.scope.by.dimensions().iter().map(|d| match d {
            Dimension::User => match (facts.user, self.on_missing) {
                (Some(user), _) => Some(user),
                (None, OnMissing::Ip) => address,
                (None, _) => None,
            },
            Dimension::Ip => address,
            Dimension::Global => Some(&b"global"[..]),
            Dimension::Route => Some(facts.route.as_bytes()),
        });
        let first = names.next()??;
        let tag = match rule.scope.by.dimensions()[0] {
            Dimension::Global => CallerTag::global(),
            _ => self.keys.tag(first),
        };
        let mut rest = Vec::new();
        for name in names {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") never collide.
            let name = name?;
            rest.extend_from_slice(&(name.len() as u64).to_be_bytes());
            rest.extend_from_slice(name);
        }
        Some(if rest.is_empty() {
            self.keys.key(&tag, rule.policy.name())
        } else {
            self.keys.key_within(&tag, rule.policy.name(), &rest)
        })
    }

    /// The checks for one request: one per rule that applies, or [`Unidentified`] when a rule
    /// keyed by user applies, the request names nobody, and `on_missing` is `deny`.
    pub fn checks(&self, facts: &RequestFacts<'_>) -> Result<Vec<Check>, Unidentified> {
        let mut checks = Vec::new();
        for rule in &self.rules {
            if !rule.scope.applies_to(facts.method, facts.path) {
                continue;
            }
            let unnamed = facts.user.is_none() && rule.scope.by.needs_user();
            if unnamed && self.on_missing == OnMissing::Deny {
                return Err(Unidentified);
            }
            if let Some(key) = self.key_of(rule, facts) {
                let cost = rule
                    .scope
                    .cost_of(facts.method, facts.path, rule.policy.cost());
                checks.push(Check {
                    key,
                    policy: rule.policy.clone(),
                    cost,
                });
            }
        }
        Ok(checks)
    }

    /// Checks one request.
    pub async fn check(&self, facts: &RequestFacts<'_>) -> Verdict {
        let checks = match self.checks(facts) {
            Ok(checks) if checks.is_empty() => return Verdict::Unlimited,
            Ok(checks) => checks,
            Err(Unidentified) => return Verdict::Unidentified,
        };
        match self.store.decide(&checks, Clock::Store).await {
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
