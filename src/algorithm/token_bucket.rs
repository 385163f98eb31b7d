//! Token bucket as GCRA: one stored theoretical arrival time (TAT).
//!
//! The reference for `lua/token_bucket.lua`. The bucket holds `burst` tokens (default `limit`)
//! and refills one every `emission_us` = ⌈window / limit⌉ µs, so it never refills faster than
//! `limit` per `window`. A request spending `cost` tokens moves the TAT `cost × emission_us`
//! later; it fits when the TAT stays at most `burst × emission_us` ahead of now. In any interval
//! of length d it admits at most `burst + d / emission_us` tokens.
//!
//! A TAT ahead of now stands for `(tat − now) / emission_us` spent tokens, so one stored under
//! another emission interval (a limit or window changed under the same policy name) is
//! translated: its spent tokens, a partly refilled one counted whole (never more quota than
//! the old state left), become as many of this policy's intervals, at most [`MAX_DEBT_US`]. A
//! raised limit admits at once, a lowered one denies at once. The translation is stored by the
//! next admitted request, which writes the TAT in this policy's interval; until then (a denial
//! writes nothing) the stored TAT keeps refilling at the old interval's pace, and is translated
//! again at each request, so a denied request's `retry_after` and `reset_after` are reckoned on
//! that pace, exactly. The capacity needs no translation: the TAT is the time until full,
//! whatever the bucket holds.

use crate::algorithm::{Evaluation, Outcome, State};
use crate::policy::{Policy, MAX_WINDOW_MS};

/// The furthest ahead of now a translated TAT may lie: the longest any bucket takes to refill,
/// below 2^53, so that Lua's doubles compute it exactly (`MAX_DEBT_US` in
/// `lua/token_bucket.lua`).
pub const MAX_DEBT_US: u64 = MAX_WINDOW_MS * 1000;

/// Evaluates one request of `policy` at `now_us` against what was `stored`.
pub fn evaluate(policy: &Policy, cost: u64, stored: Option<&State>, now_us: u64) -> Evaluation {
    let (emission, capacity) = (policy.emission_us(), policy.capacity_us());
    // `old`: how far ahead a TAT counted in another interval lies, and that interval.
    let (tat, old) = match stored {
        Some(&State::TokenBucket { tat_us, .. }) if tat_us <= now_us => (now_us, None),
        Some(&State::TokenBucket {
            tat_us,
            emission_us,
        }) if emission_us == emission => (tat_us, None),
        Some(&State::TokenBucket {
            tat_us,
            emission_us,
        }) => {
            let ahead = tat_us - now_us;
            let tat = now_us + translated(ahead, emission_us, emission);
            (tat, Some((ahead, emission_us)))
        }
        _ => (now_us, None),
    };
    let new_tat = tat + cost * emission;
    let fits = new_tat - now_us <= capacity;
    let retry_after_ms = if fits {
        0
    } else {
        match old {
            // The old TAT refills at its own pace: the cost fits once at most `room` of its
            // tokens are spent, `ahead - room × from` µs from now (room < spent: no overflow).
            Some((ahead, from)) if cost * emission <= capacity => {
                let room = (capacity - cost * emission) / emission;
                (ahead - room * from).div_ceil(1000)
            }
            _ => (new_tat - now_us - capacity).div_ceil(1000),
        }
    };
    let outcome = |tat: u64, full_in_us: u64| Outcome {
        remaining: capacity.saturating_sub(tat - now_us) / emission,
        reset_after_ms: full_in_us.div_ceil(1000),
        retry_after_ms,
    };
    // Unwritten, an old TAT is full again when it says.
    let full_in_us = old.map_or(tat - now_us, |(ahead, _)| ahead);
    Evaluation {
        fits,
        next: State::TokenBucket {
            tat_us: new_tat,
            emission_us: emission,
        },
        ttl_ms: (new_tat - now_us).div_ceil(1000),
        // A check that costs 0 writes nothing, so an old TAT stays as it is.
        admitted: outcome(
            new_tat,
            if cost > 0 {
                new_tat - now_us
            } else {
                full_in_us
            },
        ),
        denied: outcome(tat, full_in_us),
    }
}

/// How far ahead a TAT `ahead_us` ahead in intervals of `from` µs lies in intervals of `to`: the
/// same spent tokens, a partly refilled one counted whole, at most [`MAX_DEBT_US`].
fn translated(ahead_us: u64, from: u64, to: u64) -> u64 {
    let spent = ahead_us.div_ceil(from.max(1));
    (u128::from(spent) * u128::from(to)).min(u128::from(MAX_DEBT_US)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Lua script cuts a translated TAT at the same bound as this reference.
    #[test]
    fn the_lua_script_has_the_same_bound() {
        let lua = include_str!("../../lua/token_bucket.lua");
        let line = format!("local MAX_DEBT_US = {MAX_DEBT_US}\n");
        assert!(lua.contains(&line), "lua/token_bucket.lua lacks {line:?}");
    }

    fn bucket(limit: u64) -> Policy {
        Policy::new(
            crate::policy::PolicyName::new("bucket").unwrap(),
            crate::policy::Algorithm::TokenBucket,
            std::num::NonZeroU64::new(limit).unwrap(),
            crate::policy::Window::from_millis(60_000).unwrap(),
        )
        .unwrap()
    }

    /// A TAT stored under another emission interval keeps its spent tokens, a partly refilled
    /// one counted whole: 9.5 tokens ahead at 10 a minute are 10 at 100 a minute, 90 remain.
    #[test]
    fn another_interval_is_translated_into_the_same_spent_tokens() {
        let now = 1_000_000_000;
        let stored = State::TokenBucket {
            tat_us: now + 57_000_000,
            emission_us: 6_000_000,
        };
        let raised = evaluate(&bucket(100), 1, Some(&stored), now);
        assert!(raised.fits);
        assert_eq!(raised.denied.remaining, 90);
        assert_eq!(
            raised.denied.reset_after_ms, 57_000,
            "unwritten, it refills at 10 a minute"
        );
        assert_eq!(raised.admitted.reset_after_ms, 6_600);
        assert_eq!(
            raised.next,
            State::TokenBucket {
                tat_us: now + 6_600_000,
                emission_us: 600_000,
            }
        );
        // In the past, whatever its interval, a TAT means a full bucket.
        let old = State::TokenBucket {
            tat_us: now - 1,
            emission_us: 6_000_000,
        };
        assert_eq!(
            evaluate(&bucket(100), 1, Some(&old), now).denied.remaining,
            100
        );
        // Cut at MAX_DEBT_US, where the product would pass it.
        assert_eq!(translated(10, 1, u64::MAX), MAX_DEBT_US);
    }
}
