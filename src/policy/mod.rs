//! Validated policy values: a policy that exists can admit at least one request.

use crate::scope::Scope;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

mod window;

pub use window::{parse_duration, Window};

/// The counting algorithm a policy uses; each has one Lua script and one Rust reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Counts requests in windows aligned to multiples of the window length since the Unix epoch.
    #[default]
    FixedWindow,
    /// The sliding-window counter: the previous window's count, weighted by its overlap with
    /// the sliding window, plus the current window's count.
    SlidingWindow,
    /// A token bucket of `burst` (default `limit`) tokens refilled at `limit` per `window`,
    /// computed as GCRA from one stored theoretical arrival time.
    TokenBucket,
}

impl Algorithm {
    /// Every algorithm, in the order the documentation lists them.
    pub const ALL: [Algorithm; 3] = [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ];

    /// The name used in configuration, in logs, in the Lua scripts and their file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::TokenBucket => "token_bucket",
        }
    }
}

/// A policy's name: the last segment of its Redis keys and the item name in `RateLimit` headers.
///
/// Only ASCII letters, digits, `_`, `-` and `.` are allowed, so the name is safe in a key and in
/// a Structured Field string without escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyName(Arc<str>);

impl PolicyName {
    /// Checks `name`; the error says what is wrong with it.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        if name.len() > 64 {
            return Err("must be at most 64 characters".into());
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(format!(
                "{bad:?} is not allowed; use ASCII letters, digits, '_', '-' and '.'"
            ));
        }
        Ok(PolicyName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A policy, one `[[policies]]` entry: at most `limit` units of cost per `window`, per caller,
/// on the requests its scope names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    name: PolicyName,
    algorithm: Algorithm,
    limit: NonZeroU64,
    window: Window,
    cost: NonZeroU64,
    /// The bucket size of a token bucket, when it differs from `limit`.
    burst: Option<NonZeroU64>,
    /// Which requests it counts and who shares a bucket; by default every limited route, by user.
    scope: Scope,
    /// Decided and counted, but never denies nor shows in headers: a limit being tried out.
    shadow: bool,
}

/// The largest limit: Lua numbers are doubles, exact for integers up to 2^53, and the scripts
/// add costs to counts; 10^12 leaves ample room.
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

/// The longest window, 100 years in milliseconds: far beyond any real quota, and small enough
/// that a Unix time plus a window stays exact in Lua.
pub const MAX_WINDOW_MS: u64 = 100 * 365 * 86_400_000;

/// The largest `limit × window_ms` of a sliding window: its script multiplies counts by window
/// lengths, and sums of such products must stay below 2^53 to be exact in Lua.
pub const MAX_SLIDING_PRODUCT: u64 = 1 << 51;

impl Policy {
    /// A policy whose requests each cost 1; refused when the limit is above [`MAX_LIMIT`].
    pub fn new(
        name: PolicyName,
        algorithm: Algorithm,
        limit: NonZeroU64,
        window: Window,
    ) -> Result<Self, String> {
        if limit.get() > MAX_LIMIT {
            return Err(format!("{limit} is above the largest limit, {MAX_LIMIT}"));
        }
        let product = u128::from(limit.get()) * u128::from(window.as_millis());
        if algorithm == Algorithm::SlidingWindow && product > u128::from(MAX_SLIDING_PRODUCT) {
            return Err(format!(
                "limit × window in milliseconds is {product}, above {MAX_SLIDING_PRODUCT}: \
                 use a smaller limit or a shorter window"
            ));
        }
        let policy = Policy {
            name,
            algorithm,
            limit,
            window,
            cost: NonZeroU64::MIN,
            burst: None,
            scope: Scope::default(),
            shadow: false,
        };
        policy.check_bucket()?;
        Ok(policy)
    }

    /// Sets the bucket size of a token bucket, keeping its rate of `limit` per `window`.
    pub fn with_burst(mut self, burst: NonZeroU64) -> Result<Self, String> {
        if self.algorithm != Algorithm::TokenBucket {
            return Err(format!(
                "burst applies to token_bucket only, not to {}",
                self.algorithm.as_str()
            ));
        }
        self.burst = Some(burst);
        self.check_bucket()?;
        if self.cost.get() > self.capacity() {
            return Err(self.never_admits());
        }
        Ok(self)
    }

    /// Sets the weight of one request; a cost above the capacity could never be admitted.
    pub fn with_cost(mut self, cost: NonZeroU64) -> Result<Self, String> {
        self.cost = cost;
        if cost.get() > self.capacity() {
            return Err(self.never_admits());
        }
        Ok(self)
    }

    fn never_admits(&self) -> String {
        format!(
            "cost {} is above the {} {}, so no request could ever be admitted",
            self.cost,
            if self.burst.is_some() {
                "burst"
            } else {
                "limit"
            },
            self.capacity()
        )
    }

    /// A token bucket refills one token per whole microsecond at most, and its capacity in
    /// microseconds must stay exact in Lua once added to now.
    fn check_bucket(&self) -> Result<(), String> {
        if self.algorithm != Algorithm::TokenBucket {
            return Ok(());
        }
        if self.limit.get() > self.window.as_millis() * 1000 {
            return Err(format!(
                "{} per {} ms refills faster than one token per microsecond: use a longer window",
                self.limit,
                self.window.as_millis()
            ));
        }
        let capacity_us = u128::from(self.capacity()) * u128::from(self.emission_us());
        if capacity_us > u128::from(MAX_WINDOW_MS) * 1000 {
            return Err("the bucket takes more than 100 years to refill: lower burst".into());
        }
        Ok(())
    }

    /// This policy with its limit (and burst) divided by `divisor`, at least 1, and its cost
    /// capped to fit: what each of `divisor` instances applies on its own.
    pub fn divided(&self, divisor: u64) -> Policy {
        let divide =
            |n: NonZeroU64| NonZeroU64::new(n.get() / divisor.max(1)).unwrap_or(NonZeroU64::MIN);
        let mut policy = Policy {
            limit: divide(self.limit),
            burst: self.burst.map(divide),
            ..self.clone()
        };
        policy.cost = policy
            .cost
            .min(NonZeroU64::new(policy.capacity()).unwrap_or(NonZeroU64::MIN));
        policy
    }

    /// The most quota a caller can hold at once: `burst` for a token bucket that sets one,
    /// `limit` otherwise.
    pub fn capacity(&self) -> u64 {
        self.burst.unwrap_or(self.limit).get()
    }

    /// A token bucket's refill interval per token, in microseconds, rounded up so the bucket
    /// never refills faster than `limit` per `window`.
    pub fn emission_us(&self) -> u64 {
        (self.window.as_millis() * 1000).div_ceil(self.limit.get())
    }

    /// The `w` of `RateLimit-Policy`, in whole seconds (rounded up) over which `capacity()` is
    /// the quota: the window, or for a token bucket the time to refill it from empty.
    pub fn quota_window_secs(&self) -> u64 {
        match self.algorithm {
            // capacity × window / limit, exactly, not from the rounded emission interval.
            Algorithm::TokenBucket => {
                let refill_ms = u128::from(self.capacity()) * u128::from(self.window.as_millis());
                refill_ms.div_ceil(u128::from(self.limit.get()) * 1000) as u64
            }
            _ => self.window.as_secs_ceil(),
        }
    }

    /// A token bucket's size in microseconds of refill: `capacity × emission_us`.
    pub fn capacity_us(&self) -> u64 {
        self.capacity() * self.emission_us()
    }

    /// The name, used in keys and headers.
    pub fn name(&self) -> &PolicyName {
        &self.name
    }

    /// How requests are counted.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Which requests the policy counts, who shares a bucket, and what routes cost.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The policy on the requests `scope` names.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// The policy in shadow mode (`shadow = true`) or not: a shadow policy is decided and
    /// consumes as usual, but never denies a request and never shows in the headers.
    pub fn with_shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Whether the policy is in shadow mode: it only reports what it would have denied.
    pub fn shadow(&self) -> bool {
        self.shadow
    }

    /// What a request with `method` and `path` spends of this policy: its route's cost, or the
    /// policy's own.
    pub fn cost_of(&self, method: &axum::http::Method, path: &str) -> u64 {
        self.scope.cost_of(method, path, self.cost.get())
    }

    /// The quota per window.
    pub fn limit(&self) -> u64 {
        self.limit.get()
    }

    /// The window length.
    pub fn window(&self) -> Window {
        self.window
    }

    /// How much of the quota one request spends.
    pub fn cost(&self) -> u64 {
        self.cost.get()
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    /// Parses the short form `"<name>: <limit> per <window>"`, a fixed window of cost 1, as in
    /// `"per_minute: 3 per 1m"`: handy for library users and tests.
    fn from_str(text: &str) -> Result<Self, String> {
        let (name, rule) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not \"<name>: <limit> per <window>\""))?;
        let (limit, window) = rule
            .split_once(" per ")
            .ok_or_else(|| format!("{text:?} is not \"<name>: <limit> per <window>\""))?;
        let limit = limit
            .trim()
            .parse::<NonZeroU64>()
            .map_err(|_| format!("{limit:?} is not a positive whole number"))?;
        Policy::new(
            PolicyName::new(name.trim())?,
            Algorithm::FixedWindow,
            limit,
            Window::parse(window)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cost above the limit is refused, because such a policy could never admit anything.
    #[test]
    fn cost_above_limit_is_refused() {
        let policy = Policy::new(
            PolicyName::new("p").unwrap(),
            Algorithm::FixedWindow,
            NonZeroU64::new(3).unwrap(),
            Window::from_millis(1000).unwrap(),
        )
        .unwrap();
        assert!(policy
            .clone()
            .with_cost(NonZeroU64::new(4).unwrap())
            .is_err());
        assert_eq!(
            policy
                .with_cost(NonZeroU64::new(3).unwrap())
                .unwrap()
                .cost(),
            3
        );
    }

    /// A token bucket faster than one token per microsecond is refused, and its advertised
    /// window is the exact refill time, not one inflated by rounding.
    #[test]
    fn token_bucket_bounds_and_window() {
        let bucket = |limit: u64, window_ms: u64| {
            Policy::new(
                PolicyName::new("b").unwrap(),
                Algorithm::TokenBucket,
                NonZeroU64::new(limit).unwrap(),
                Window::from_millis(window_ms).unwrap(),
            )
        };
        assert!(bucket(10_000_000, 1_000).is_err());
        assert!(bucket(1_000_000, 1_000).is_ok());
        assert_eq!(bucket(7, 1_000).unwrap().quota_window_secs(), 1);
        let burst = bucket(10, 1_000)
            .unwrap()
            .with_burst(NonZeroU64::new(20).unwrap());
        assert_eq!(burst.unwrap().quota_window_secs(), 2);
    }

    /// Limits beyond what Lua's doubles count exactly are refused.
    #[test]
    fn limits_are_bounded_for_lua() {
        let at = |limit: u64| {
            Policy::new(
                PolicyName::new("p").unwrap(),
                Algorithm::FixedWindow,
                NonZeroU64::new(limit).unwrap(),
                Window::from_millis(1000).unwrap(),
            )
        };
        assert!(at(MAX_LIMIT).is_ok());
        assert!(at(MAX_LIMIT + 1).is_err());
        assert!(at(u64::MAX).is_err());
    }

    /// Policy names that would need escaping in a key or a header are refused.
    #[test]
    fn policy_names_are_header_and_key_safe() {
        assert!(PolicyName::new("per_minute").is_ok());
        assert!(PolicyName::new("").is_err());
        assert!(PolicyName::new("a b").is_err());
        assert!(PolicyName::new("a\"b").is_err());
        assert!(PolicyName::new("{x}").is_err());
    }
}
