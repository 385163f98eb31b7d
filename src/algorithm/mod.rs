//! The Rust reference semantics of each algorithm, one module each.
//!
//! The memory store runs these functions; the Lua scripts in `lua/` implement the same rules with
//! the same integer arithmetic and are tested against them, decision for decision.

pub mod fixed_window;
pub mod sliding_window;
pub mod token_bucket;

use crate::policy::{Algorithm, Policy};

/// What a store keeps per caller and policy (in Redis, the key's value).
///
/// Each value carries its shape, the parameters it was counted under, and is read only under
/// the same shape, so a policy whose window or limit changes under the same name (a reload)
/// never misreads what the old one left: the windows keep their window length, the bucket its
/// emission interval. Each algorithm's value has its own number of fields, so no algorithm
/// reads another's, and the values of the format before shapes were stored are not read either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// `"<count>:<window_start_ms>:<window_ms>"`.
    FixedWindow {
        /// Cost consumed in the window.
        count: u64,
        /// When the window began, in Unix milliseconds.
        window_start: u64,
        /// The window's length: a count of a window of another length is not this one's.
        window_ms: u64,
    },
    /// `"<curr>:<prev>:<window_start_ms>:<window_ms>"`.
    SlidingWindow {
        /// Cost consumed in the current window.
        curr: u64,
        /// Cost consumed in the window before it.
        prev: u64,
        /// When the current window began, in Unix milliseconds.
        window_start: u64,
        /// The windows' length: counts of windows of another length are not these.
        window_ms: u64,
    },
    /// `"<tat_us>:<emission_us>"`.
    TokenBucket {
        /// The theoretical arrival time: when the bucket is full again, in Unix microseconds.
        tat_us: u64,
        /// The emission interval the TAT was counted in, so that a TAT stored under another
        /// one is translated into the same spent tokens.
        emission_us: u64,
    },
}

/// What a policy reports about one request, whether or not it consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whole units of quota left.
    pub remaining: u64,
    /// Milliseconds until the quota is whole again.
    pub reset_after_ms: u64,
    /// Milliseconds until the request would fit; 0 when it fits now.
    pub retry_after_ms: u64,
}

/// One policy's view of one request, before the all-or-nothing commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// Whether this policy alone admits the request.
    pub fits: bool,
    /// The state to store if every policy admits.
    pub next: State,
    /// How long that state matters, the TTL of its key, in milliseconds (at least 1).
    pub ttl_ms: u64,
    /// The report when the request is admitted and consumes.
    pub admitted: Outcome,
    /// The report when the request is denied and nothing is consumed.
    pub denied: Outcome,
}

/// Evaluates one request of `policy` costing `cost` at `now_us` (Unix microseconds) against
/// what was stored.
pub fn evaluate(policy: &Policy, cost: u64, stored: Option<&State>, now_us: u64) -> Evaluation {
    match policy.algorithm() {
        Algorithm::FixedWindow => fixed_window::evaluate(policy, cost, stored, now_us),
        Algorithm::SlidingWindow => sliding_window::evaluate(policy, cost, stored, now_us),
        Algorithm::TokenBucket => token_bucket::evaluate(policy, cost, stored, now_us),
    }
}
