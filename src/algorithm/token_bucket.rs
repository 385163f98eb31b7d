//! Token bucket as GCRA: one stored theoretical arrival time (TAT).
//!
//! The reference for `lua/token_bucket.lua`. The bucket holds `burst` tokens (default `limit`)
//! and refills one every `emission_us` = ⌈window / limit⌉ µs, so it never refills faster than
//! `limit` per `window`. A request spending `cost` tokens moves the TAT `cost × emission_us`
//! later; it fits when the TAT stays at most `burst × emission_us` ahead of now. In any interval
//! of length d it admits at most `burst + d / emission_us` tokens.

use crate::algorithm::{Evaluation, Outcome, State};
use crate::policy::Policy;

/// Evaluates one request of `policy` at `now_us` against what was `stored`.
pub fn evaluate(policy: &Policy, cost: u64, stored: Option<&State>, now_us: u64) -> Evaluation {
    let (emission, capacity) = (policy.emission_us(), policy.capacity_us());
    let tat = match stored {
        Some(&State::TokenBucket { tat_us }) => tat_us.max(now_us),
        _ => now_us,
    };
    let new_tat = tat + cost * emission;
    let fits = new_tat - now_us <= capacity;
    let retry_after_ms = if fits {
        0
    } else {
        (new_tat - now_us - capacity).div_ceil(1000)
    };
    let outcome = |tat: u64| Outcome {
        remaining: capacity.saturating_sub(tat - now_us) / emission,
        reset_after_ms: (tat - now_us).div_ceil(1000),
        retry_after_ms,
    };
    Evaluation {
        fits,
        next: State::TokenBucket { tat_us: new_tat },
        ttl_ms: (new_tat - now_us).div_ceil(1000),
        admitted: outcome(new_tat),
        denied: outcome(tat),
    }
}
