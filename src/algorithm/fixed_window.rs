//! Fixed window: at most `limit` units of cost in each window aligned to the Unix epoch.
//!
//! The reference for `lua/fixed_window.lua`. A window starts at a multiple of the window length
//! since the epoch. A denied request consumes nothing, so a count never exceeds its limit.

use crate::quota::Policy;

/// What a store keeps per caller and policy: the count and the window it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    /// Cost consumed in the window.
    pub count: u64,
    /// When the window began, in Unix milliseconds.
    pub window_start: u64,
}

/// One policy's view of one request, before the all-or-nothing commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// Whether this request's cost fits in what is left of the window.
    pub fits: bool,
    /// The count of the current window before this request.
    pub count: u64,
    /// When the current window began, in Unix milliseconds.
    pub window_start: u64,
    /// Milliseconds from now until the current window ends.
    pub reset_after_ms: u64,
}

/// Evaluates one request of `policy` at `now_ms` against what was `stored`.
pub fn evaluate(stored: Option<Counter>, policy: &Policy, now_ms: u64) -> Evaluation {
    let window_ms = policy.window().as_millis();
    let window_start = now_ms - now_ms % window_ms;
    let count = stored
        .filter(|c| c.window_start == window_start)
        .map_or(0, |c| c.count);
    Evaluation {
        fits: count + policy.cost() <= policy.limit(),
        count,
        window_start,
        reset_after_ms: window_start + window_ms - now_ms,
    }
}

impl Evaluation {
    /// The counter after consuming `cost`, to store with a TTL of `reset_after_ms`.
    pub fn consume(&self, cost: u64) -> Counter {
        Counter {
            count: self.count + cost,
            window_start: self.window_start,
        }
    }

    /// Milliseconds until this policy would admit the request: zero when it fits now.
    pub fn retry_after_ms(&self) -> u64 {
        if self.fits {
            0
        } else {
            self.reset_after_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{Algorithm, PolicyName, Window};
    use std::num::NonZeroU64;

    fn per_minute(limit: u64) -> Policy {
        Policy::new(
            PolicyName::new("per_minute").unwrap(),
            Algorithm::FixedWindow,
            NonZeroU64::new(limit).unwrap(),
            Window::from_millis(60_000).unwrap(),
        )
        .unwrap()
    }

    /// Windows align to the epoch, so a count from the previous minute does not carry over.
    #[test]
    fn windows_align_to_the_epoch() {
        let policy = per_minute(3);
        let full = Counter {
            count: 3,
            window_start: 120_000,
        };
        let late = evaluate(Some(full), &policy, 179_999);
        assert!(!late.fits);
        assert_eq!((late.reset_after_ms, late.retry_after_ms()), (1, 1));
        let next = evaluate(Some(full), &policy, 180_000);
        assert!(next.fits);
        assert_eq!(
            (next.count, next.window_start, next.reset_after_ms),
            (0, 180_000, 60_000)
        );
    }
}
