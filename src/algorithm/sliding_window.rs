//! Sliding-window counter: the previous window's count, weighted by how much of it the sliding
//! window still overlaps, plus the current window's count.
//!
//! The reference for `lua/sliding_window.lua`. At `elapsed` ms into the current window a request
//! fits when `prev × (window − elapsed) + (curr + cost) × window ≤ limit × window`: integers only.
//!
//! The bound it keeps: in any interval of one window length ending at time t, `elapsed` ms into
//! its window, at most `limit + prev × elapsed / window ≤ limit × (1 + elapsed / window)` units
//! are admitted, where `elapsed / window` is the share of the interval that lies in the current
//! window. A fixed window allows up to 2 × limit across a boundary; this never reaches it.
//!
//! Counts are read only under the window length they were counted in; the limit is not part
//! of it, so a raised limit admits at once and a lowered one denies at once.

use crate::algorithm::{Evaluation, Outcome, State};
use crate::policy::Policy;

/// Evaluates one request of `policy` at `now_us` against what was `stored`.
pub fn evaluate(policy: &Policy, cost: u64, stored: Option<&State>, now_us: u64) -> Evaluation {
    let (limit, w) = (policy.limit(), policy.window().as_millis());
    let now = now_us / 1000;
    let window_start = now - now % w;
    let elapsed = now - window_start;
    let overlap = w - elapsed;
    let (curr, prev) = match stored {
        Some(&State::SlidingWindow {
            curr,
            prev,
            window_start: start,
            window_ms,
        }) if window_ms == w && start == window_start => (curr, prev),
        Some(&State::SlidingWindow {
            curr,
            window_start: start,
            window_ms,
            ..
        }) if window_ms == w && start + w == window_start => (0, curr),
        _ => (0, 0),
    };
    // Products are bounded by the configuration (limit × window ≤ 2^51); u128 for certainty.
    let (l, c, p, wd, o) = (
        limit as u128,
        cost as u128,
        prev as u128,
        w as u128,
        overlap as u128,
    );
    let fits = p * o + (curr as u128 + c) * wd <= l * wd;
    let retry_after_ms = if fits {
        0
    } else {
        retry_after(curr, prev, elapsed, limit, cost, w)
    };
    let outcome = |curr: u64| {
        let used = p * o + curr as u128 * wd;
        Outcome {
            remaining: (l * wd).saturating_sub(used).div_euclid(wd) as u64,
            reset_after_ms: if curr > 0 {
                w + overlap
            } else if prev > 0 {
                overlap
            } else {
                0
            },
            retry_after_ms,
        }
    };
    Evaluation {
        fits,
        next: State::SlidingWindow {
            curr: curr + cost,
            prev,
            window_start,
            window_ms: w,
        },
        ttl_ms: w + overlap,
        admitted: outcome(curr + cost),
        denied: outcome(curr),
    }
}

/// The first millisecond from now at which the request would fit.
fn retry_after(curr: u64, prev: u64, elapsed: u64, limit: u64, cost: u64, w: u64) -> u64 {
    let (w128, limit, cost) = (w as u128, limit as u128, cost as u128);
    if curr as u128 + cost <= limit && prev > 0 {
        // Later in this window the previous count weighs less.
        let need = w - ((limit - curr as u128 - cost) * w128 / prev as u128) as u64;
        if need < w {
            return need - elapsed;
        }
    }
    // In the next window the current count becomes the previous one; `need` = w is the window
    // after next, where nothing weighs.
    // A cost above the limit (only Envoy can ask one) never fits: its wait is that of a cost
    // of exactly the limit.
    let need = if curr > 0 {
        w - (limit.saturating_sub(cost) * w128 / curr as u128).min(w128) as u64
    } else {
        0
    };
    (w - elapsed) + need
}
