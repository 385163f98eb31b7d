//! The bound each algorithm promises, as property tests on the Rust reference (which the
//! differential tests hold the Lua scripts to).

use std::num::NonZeroU64;
use std::sync::Arc;

use proptest::prelude::*;
use tollgate::store::{Check, Clock, MemoryStore, Store};
use tollgate::{Algorithm, Policy, PolicyName, Window};

const T0_MS: u64 = 1_795_802_420_123;

fn policy(algorithm: Algorithm, limit: u64, window_ms: u64, burst: Option<u64>) -> Arc<Policy> {
    let mut policy = Policy::new(
        PolicyName::new("p").unwrap(),
        algorithm,
        NonZeroU64::new(limit).unwrap(),
        Window::from_millis(window_ms).unwrap(),
    )
    .unwrap();
    if let Some(burst) = burst {
        policy = policy.with_burst(NonZeroU64::new(burst).unwrap()).unwrap();
    }
    Arc::new(policy)
}

/// Sends one request after each gap in `gaps_ms` and returns the admitted
/// times in Unix milliseconds.
fn admitted(policy: &Arc<Policy>, gaps_ms: &[u64]) -> Vec<u64> {
    let store = MemoryStore::new();
    let check = [Check::new("k".into(), policy.clone())];
    let mut now = T0_MS;
    let mut admitted = Vec::new();
    for gap in gaps_ms {
        now += gap;
        let decision = futures_ready(store.decide(&check, Clock::At(now)));
        if decision.allowed {
            admitted.push(now);
        }
    }
    admitted
}

/// The memory store answers at once: its future is ready on first poll.
fn futures_ready<T>(future: tollgate::store::StoreFuture<'_, T>) -> T {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut future = future;
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(result) => result.unwrap(),
        std::task::Poll::Pending => panic!("the memory store never waits"),
    }
}

fn gaps() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(prop_oneof![Just(0u64), 0..50u64, 50..3_000u64], 1..400)
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/proptest-regressions/invariants.txt",
            ),
        )),
        ..ProptestConfig::default()
    })]

    /// fixed_window never admits more than `limit` in one window.
    #[test]
    fn fixed_window_admits_at_most_limit_per_window(
        limit in 1..30u64, window_s in 1..20u64, gaps in gaps()
    ) {
        let w = window_s * 1000;
        let times = admitted(&policy(Algorithm::FixedWindow, limit, w, None), &gaps);
        let mut per_window = std::collections::HashMap::<u64, u64>::new();
        for t in times {
            *per_window.entry(t / w).or_default() += 1;
        }
        for (window, count) in per_window {
            prop_assert!(count <= limit, "window {} admitted {}", window, count);
        }
    }

    /// sliding_window admits at most limit × (1 + elapsed/window) in any interval of one window
    /// ending at an admission `elapsed` ms into its window; never 2 × limit.
    #[test]
    fn sliding_window_admits_at_most_the_weighted_bound(
        limit in 1..30u64, window_s in 1..20u64, gaps in gaps()
    ) {
        let w = window_s * 1000;
        let times = admitted(&policy(Algorithm::SlidingWindow, limit, w, None), &gaps);
        for (i, &t) in times.iter().enumerate() {
            let in_interval = times[..=i].iter().filter(|&&s| s + w > t).count() as u64;
            let elapsed = t % w;
            prop_assert!(
                in_interval * w <= limit * (w + elapsed),
                "{} admitted in the window ending at {} ({} ms into its window), limit {}",
                in_interval, t, elapsed, limit
            );
        }
    }

    /// token_bucket never admits more than burst + rate × elapsed in any interval.
    #[test]
    fn token_bucket_admits_at_most_burst_plus_rate(
        limit in 1..30u64, window_s in 1..20u64, burst in proptest::option::of(1..40u64),
        gaps in gaps()
    ) {
        let policy = policy(Algorithm::TokenBucket, limit, window_s * 1000, burst);
        let times = admitted(&policy, &gaps);
        let capacity = policy.capacity();
        for (i, &start) in times.iter().enumerate() {
            for (j, &end) in times.iter().enumerate().skip(i) {
                let count = (j - i + 1) as u64;
                // Tokens earned over [start, end], at ⌈window / limit⌉ µs each.
                let earned = (end - start) * 1000 / policy.emission_us();
                prop_assert!(
                    count <= capacity + earned,
                    "{} admitted in [{}, {}]: burst {} + earned {}",
                    count, start, end, capacity, earned
                );
            }
        }
    }
}
