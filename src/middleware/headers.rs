//! Renders a [`Decision`] as response headers.
//!
//! - `RateLimit-Policy` and `RateLimit`, Structured Field lists with one item per policy, as in
//!   draft-ietf-httpapi-ratelimit-headers-11: `"per_minute";q=3;w=60` and `"per_minute";r=0;t=42`.
//! - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds), describing the
//!   policy closest to exhaustion: the names GitHub and most clients know.
//! - On denials only, `Retry-After` (whole seconds, rounded up, at least 1) and the original
//!   example's `X-Rate-Limit` (the limit).

use std::cell::RefCell;
use std::sync::LazyLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::decimal;
use crate::decision::{Decision, PolicyDecision};

/// `RateLimit-Policy`: the quota policies that applied.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of each policy's quota.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit`: the tightest policy's quota.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: what is left of the tightest policy's quota.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: seconds until the tightest policy's window ends.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `X-Rate-Limit`: the limit, on denials, as the original FastAPI example sent it.
pub const X_RATE_LIMIT: HeaderName = HeaderName::from_static("x-rate-limit");

/// Adds the headers every limited response carries, admitted or denied.
pub fn apply(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(RATELIMIT_POLICY, policy_list(decision));
    headers.insert(RATELIMIT, quota_list(decision));
    if let Some(tightest) = decision.tightest() {
        headers.insert(X_RATELIMIT_LIMIT, number(tightest.limit));
        headers.insert(X_RATELIMIT_REMAINING, number(tightest.remaining));
        headers.insert(X_RATELIMIT_RESET, number(secs_ceil(tightest.reset_after)));
    }
}

/// `X-RateLimit-Degraded: local`: the store was out, and this process decided alone.
pub const X_RATELIMIT_DEGRADED: HeaderName = HeaderName::from_static("x-ratelimit-degraded");

/// Marks a response decided by the local fallback (`on_error = "local"`).
pub fn mark_degraded(headers: &mut HeaderMap) {
    headers.insert(X_RATELIMIT_DEGRADED, HeaderValue::from_static("local"));
}

/// How many headers [`apply_denial`] writes at most, for sizing a denial's header map.
pub const DENIAL_HEADER_COUNT: usize = 7;

/// Adds what a denial carries on top of [`apply`].
pub fn apply_denial(headers: &mut HeaderMap, decision: &Decision) {
    apply(headers, decision);
    headers.insert(
        axum::http::header::RETRY_AFTER,
        number(retry_after_secs(decision.retry_after())),
    );
    if let Some(tightest) = decision.tightest() {
        headers.insert(X_RATE_LIMIT, number(tightest.limit));
    }
}

/// Whole seconds for `Retry-After`: rounded up, so a client that waits is admitted, and at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    secs_ceil(wait).max(1)
}

/// The integers below this have their header values made once: limits, counts left and
/// seconds (an hour is 3,600) are mostly small, and every response carries three to five.
const SMALL_NUMBERS: usize = 4096;

/// `n` as a header value; a small one is a copy of a static value, not a new allocation.
fn number(n: u64) -> HeaderValue {
    static SMALL: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
        let mut digits = String::new();
        let mut ends = Vec::with_capacity(SMALL_NUMBERS);
        for i in 0..SMALL_NUMBERS as u64 {
            decimal::push(&mut digits, i);
            ends.push(digits.len());
        }
        // Leaked once, for the process's life: static values are shared without counting.
        let digits: &'static str = Box::leak(digits.into_boxed_str());
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let value = HeaderValue::from_static(&digits[start..end]);
                start = end;
                value
            })
            .collect()
    });
    match usize::try_from(n).ok().and_then(|i| SMALL.get(i)) {
        Some(value) => value.clone(),
        None => n.into(),
    }
}

fn secs_ceil(duration: Duration) -> u64 {
    (duration.as_millis() as u64).div_ceil(1000)
}

/// `"per_minute";q=3;w=60, "per_day";q=1000;w=86400`
fn policy_list(decision: &Decision) -> HeaderValue {
    sf_list(decision, |list, p| {
        list.push_str(";q=");
        decimal::push(list, p.limit);
        list.push_str(";w=");
        decimal::push(list, p.policy.quota_window_secs());
    })
}

/// `"per_minute";r=0;t=42, "per_day";r=990;t=3600`
fn quota_list(decision: &Decision) -> HeaderValue {
    sf_list(decision, |list, p| {
        list.push_str(";r=");
        decimal::push(list, p.remaining);
        list.push_str(";t=");
        decimal::push(list, secs_ceil(p.reset_after));
    })
}

/// A Structured Field list with one item per policy: its name as a string, then `params`.
///
/// Written into this thread's scratch buffer, then copied once into the value: one exact
/// allocation per header, where a `String` of its own would cost two.
fn sf_list(decision: &Decision, params: impl Fn(&mut String, &PolicyDecision)) -> HeaderValue {
    thread_local! {
        static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
    }
    SCRATCH.with_borrow_mut(|list| {
        list.clear();
        for p in &decision.policies {
            if !list.is_empty() {
                list.push_str(", ");
            }
            list.push('"');
            list.push_str(p.policy.name().as_str());
            list.push('"');
            params(list, p);
        }
        // Policy names are restricted to header-safe ASCII when they are built.
        HeaderValue::from_str(list).expect("policy names are header-safe")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::PolicyDecision;
    use crate::quota::Policy;
    use std::sync::Arc;

    fn decision(remaining: u64, reset_ms: u64, retry_ms: u64) -> Decision {
        let policy: Policy = "per_minute: 3 per 1m".parse().unwrap();
        Decision {
            allowed: retry_ms == 0,
            policies: vec![PolicyDecision {
                policy: Arc::new(policy),
                allowed: retry_ms == 0,
                limit: 3,
                remaining,
                retry_after: Duration::from_millis(retry_ms),
                reset_after: Duration::from_millis(reset_ms),
            }],
        }
    }

    /// A denial carries every header, with seconds rounded up.
    #[test]
    fn denial_headers_render_as_specified() {
        let mut headers = HeaderMap::new();
        apply_denial(&mut headers, &decision(0, 41_001, 41_001));
        let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(get("ratelimit-policy"), "\"per_minute\";q=3;w=60");
        assert_eq!(get("ratelimit"), "\"per_minute\";r=0;t=42");
        assert_eq!(get("retry-after"), "42");
        assert_eq!(get("x-rate-limit"), "3");
        assert_eq!(get("x-ratelimit-limit"), "3");
        assert_eq!(get("x-ratelimit-remaining"), "0");
        assert_eq!(get("x-ratelimit-reset"), "42");
        assert_eq!(headers.len(), DENIAL_HEADER_COUNT);
    }

    /// Small numbers come from the table and large ones are formatted, both as Display does.
    #[test]
    fn numbers_render_like_display() {
        for n in [0, 1, 9, 10, 3_600, 4_095, 4_096, 1_000_000_000, u64::MAX] {
            assert_eq!(number(n).to_str().unwrap(), n.to_string());
        }
    }

    /// Retry-After is never 0, even a millisecond before the window turns.
    #[test]
    fn retry_after_is_at_least_one_second() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
    }
}
