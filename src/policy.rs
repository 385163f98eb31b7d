//! Validated policy values: a policy that exists can admit at least one request.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

/// The counting algorithm a policy uses; each has one Lua script and one Rust reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Counts requests in windows aligned to multiples of the window length since the Unix epoch.
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

    /// Parses a configuration name; `None` for an algorithm tollgate does not know.
    pub fn parse(name: &str) -> Option<Self> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
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

/// One rate limit: at most `limit` units of cost per `window`, per caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    name: PolicyName,
    algorithm: Algorithm,
    limit: NonZeroU64,
    window: Window,
    cost: NonZeroU64,
    /// The bucket size of a token bucket, when it differs from `limit`.
    burst: Option<NonZeroU64>,
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

/// A window length: a whole, positive number of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(NonZeroU64);

impl Window {
    /// A window of `ms` milliseconds; `None` for zero or more than [`MAX_WINDOW_MS`].
    ///
    /// Library users may pick any number of milliseconds; headers then round the window up to
    /// whole seconds, as `RateLimit-Policy` counts in seconds.
    pub fn from_millis(ms: u64) -> Option<Self> {
        NonZeroU64::new(ms)
            .filter(|ms| ms.get() <= MAX_WINDOW_MS)
            .map(Window)
    }

    /// Parses a configured window, `"30s"`, `"1m"`, `"2h"` or `"1d"`: whole seconds, minutes,
    /// hours or days, so that `RateLimit-Policy` advertises it exactly. The error says what is
    /// wrong and lists exactly the units a window takes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ms = u64::try_from(parse_in(text, &WINDOW_UNITS)?.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return Err(format!("{text:?} is not a positive length"));
        }
        Window::from_millis(ms).ok_or_else(|| format!("{text:?} is longer than 100 years"))
    }

    /// The length in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0.get()
    }

    /// The length in whole seconds, rounded up, as `RateLimit-Policy`'s `w` wants it.
    pub fn as_secs_ceil(self) -> u64 {
        self.0.get().div_ceil(1000)
    }

    /// The length as a `Duration`.
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0.get())
    }
}

/// The units a length may be written in, and the examples its errors give.
struct Units {
    /// Each unit and its length in milliseconds.
    units: &'static [(&'static str, u64)],
    /// How a length is written, for the error about a missing unit.
    examples: &'static str,
}

impl Units {
    /// `"ms, s, m, h or d"`: exactly the units accepted.
    fn list(&self) -> String {
        let names: Vec<&str> = self.units.iter().map(|(name, _)| *name).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// Durations: timeouts and cool-downs.
const DURATION_UNITS: Units = Units {
    units: &[
        ("ms", 1),
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ],
    examples: "\"100ms\", \"30s\" or \"1m\"",
};

/// Windows: no `ms`, because `RateLimit-Policy` advertises a window in whole seconds.
const WINDOW_UNITS: Units = Units {
    units: &[
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ],
    examples: "\"30s\", \"1m\" or \"1d\"",
};

/// Parses a duration written as a whole number and a unit: `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_in(text, &DURATION_UNITS)
}

/// Parses a whole number and one of `units`; an error lists exactly those units.
fn parse_in(text: &str, units: &Units) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!(
            "{text:?} has no unit; use {}, as in {}",
            units.list(),
            units.examples
        )
    })?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let Some(&(_, unit_ms)) = units.units.iter().find(|(name, _)| *name == unit) else {
        // Only windows refuse a unit that durations take: `ms`.
        if DURATION_UNITS.units.iter().any(|(name, _)| *name == unit) {
            return Err(format!(
                "{text:?}: use {} (not {unit}: RateLimit-Policy advertises a window in whole \
                 seconds)",
                units.list()
            ));
        }
        return Err(format!(
            "{text:?} has an unknown unit {unit:?}; use {}",
            units.list()
        ));
    };
    number
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations parse in every unit and reject what is not a duration.
    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1 fortnight").is_err());
        assert!(Window::parse("0s").is_err());
        assert!(Window::parse("1500ms").is_err(), "not whole seconds");
        assert!(Window::parse("36501d").is_err(), "over 100 years");
        assert_eq!(
            Window::parse("30000d").unwrap().as_millis(),
            30_000 * 86_400_000
        );
    }

    /// A window takes exactly the units its errors offer: s, m, h and d parse, and ms (whole
    /// seconds or not) is refused and never offered.
    #[test]
    fn window_errors_offer_exactly_the_units_windows_take() {
        for unit in ["s", "m", "h", "d"] {
            assert!(Window::parse(&format!("2{unit}")).is_ok(), "{unit}");
        }
        for text in ["1500ms", "1000ms", "1 minute", "60", "1w"] {
            let error = Window::parse(text).expect_err(text);
            assert!(error.contains(" s, m, h or d"), "{text}: {error}");
            assert!(!error.contains("ms, "), "{text} offers ms: {error}");
        }
        let error = parse_duration("1 minute").unwrap_err();
        assert!(error.contains("use ms, s, m, h or d"), "{error}");
    }

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
