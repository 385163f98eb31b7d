//! Fixed window: at most `limit` units of cost in each window aligned to the Unix epoch.
//!
//! The reference for `lua/fixed_window.lua`. A window starts at a multiple of the window length
//! since the epoch. A denied request consumes nothing, so a count never exceeds its limit unless
//! the limit is lowered mid-window. A count is read only under the window start and the window
//! length it was counted in; the limit is not part of it, so a raised limit admits at once and
//! a lowered one denies at once.

use crate::algorithm::{Evaluation, Outcome, State};
use crate::policy::Policy;

/// Evaluates one request of `policy` at `now_us` against what was `stored`.
pub fn evaluate(policy: &Policy, cost: u64, stored: Option<&State>, now_us: u64) -> Evaluation {
    let (limit, window) = (policy.limit(), policy.window().as_millis());
    let now = now_us / 1000;
    let window_start = now - now % window;
    let reset_after_ms = window_start + window - now;
    let count = match stored {
        Some(&State::FixedWindow {
            count,
            window_start: start,
            window_ms,
        }) if start == window_start && window_ms == window => count,
        _ => 0,
    };
    let fits = count + cost <= limit;
    let retry_after_ms = if fits { 0 } else { reset_after_ms };
    let outcome = |count: u64| Outcome {
        remaining: limit.saturating_sub(count),
        reset_after_ms,
        retry_after_ms,
    };
    Evaluation {
        fits,
        next: State::FixedWindow {
            count: count + cost,
            window_start,
            window_ms: window,
        },
        ttl_ms: reset_after_ms,
        admitted: outcome(count + cost),
        denied: outcome(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows align to the epoch, so a count from the previous minute does not carry over.
    #[test]
    fn windows_align_to_the_epoch() {
        let policy: Policy = "per_minute: 3 per 1m".parse().unwrap();
        let full = State::FixedWindow {
            count: 3,
            window_start: 120_000,
            window_ms: 60_000,
        };
        let late = evaluate(&policy, 1, Some(&full), 179_999_000);
        assert!(!late.fits);
        assert_eq!(late.denied.retry_after_ms, 1);
        let next = evaluate(&policy, 1, Some(&full), 180_000_000);
        assert!(next.fits);
        assert_eq!(next.admitted.remaining, 2);
        assert_eq!(next.admitted.reset_after_ms, 60_000);
    }
}
