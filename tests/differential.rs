//! Differential tests: the Lua scripts against the Rust reference, for each algorithm, on random
//! sequences of (time, caller, cost). Both must give identical decisions, remaining counts,
//! resets and retry-afters, with shadow policies among the others too.
//!
//! Failing inputs are kept in `tests/proptest-regressions/` and replayed first on every run.

mod support;

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use support::RedisServer;
use tollgate::key::{CallerTag, KeyBuilder};
use tollgate::store::{Check, Clock, MemoryStore, RedisStore, Store};
use tollgate::{Algorithm, Policy, PolicyName, Window};

/// 2026-11-27T18:00:20.123Z, in the middle of a minute.
const T0_MS: u64 = 1_795_802_420_123;

/// One policy's shape, drawn at random.
#[derive(Clone, Debug)]
struct Shape {
    limit: u64,
    window_s: u64,
    burst: Option<u64>,
}

/// One request: how long after the previous one, who, how heavy, and which policies apply.
#[derive(Clone, Debug)]
struct Step {
    after_ms: u64,
    caller: u8,
    cost: u64,
    policies: u8,
    /// Sometimes a cost only Envoy can ask: 0 (check only) or one above the capacity.
    odd_cost: OddCost,
}

#[derive(Clone, Copy, Debug)]
enum OddCost {
    None,
    Zero,
    AboveCapacity,
}

fn shape() -> impl Strategy<Value = Shape> {
    (1..=20u64, 1..=90u64, proptest::option::of(1..=30u64)).prop_map(|(limit, window_s, burst)| {
        Shape {
            limit,
            window_s,
            burst,
        }
    })
}

fn step() -> impl Strategy<Value = Step> {
    let after_ms = prop_oneof![
        Just(0u64),
        Just(1),
        0..200u64,
        200..5_000u64,
        5_000..120_000u64,
    ];
    let odd_cost = prop_oneof![
        8 => Just(OddCost::None),
        1 => Just(OddCost::Zero),
        1 => Just(OddCost::AboveCapacity),
    ];
    (after_ms, 0..3u8, 1..=4u64, 1..8u8, odd_cost).prop_map(
        |(after_ms, caller, cost, policies, odd_cost)| Step {
            after_ms,
            caller,
            cost,
            policies,
            odd_cost,
        },
    )
}

fn policy(name: &str, algorithm: Algorithm, shape: &Shape, cost: u64, shadow: bool) -> Arc<Policy> {
    let mut policy = Policy::new(
        PolicyName::new(name).unwrap(),
        algorithm,
        NonZeroU64::new(shape.limit).unwrap(),
        Window::from_millis(shape.window_s * 1000).unwrap(),
    )
    .unwrap();
    if let (Algorithm::TokenBucket, Some(burst)) = (algorithm, shape.burst) {
        policy = policy.with_burst(NonZeroU64::new(burst).unwrap()).unwrap();
    }
    // A cost the policy can hold: a heavier one is refused at configuration time.
    let cost = 1 + (cost - 1) % policy.capacity();
    let policy = policy.with_cost(NonZeroU64::new(cost).unwrap()).unwrap();
    Arc::new(policy.with_shadow(shadow))
}

/// Runs random sequences through Redis and memory with `algorithms` as the three policies. With
/// `global_third`, the third policy is keyed `global`: a second hash tag. Memory decides all at
/// once, and so does a single Redis, unless `split`: then Redis decides as on a cluster, the
/// second hash tag in a second call that refunds the first on a denial. With `shadows`, each
/// policy whose shape has an odd window is a shadow policy: drawn from the shapes, so the
/// strategy, and with it what the kept regression seeds replay, is the same either way. With
/// `reloads`, a step that comes an odd number of milliseconds after the previous one decides
/// policy i under the next policy's algorithm and shape, keeping its name and so its key: a
/// configuration reload and back, with the same strategy again.
fn lua_matches_rust(
    algorithms: [Algorithm; 3],
    global_third: bool,
    split: bool,
    shadows: bool,
    reloads: bool,
    regressions: &'static str,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(RedisServer::start());
    let redis = runtime.block_on(async {
        let config = fred::prelude::Config::from_url(&server.url()).unwrap();
        let store = RedisStore::connect(config, Duration::from_secs(5))
            .await
            .unwrap();
        if split {
            store.split_by_hash_tag()
        } else {
            store
        }
    });
    let cases = AtomicU64::new(0);
    let keys = KeyBuilder::new("tollgate");
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..Config::default()
    });
    let strategy = (
        [shape(), shape(), shape()],
        proptest::collection::vec(step(), 1..120),
    );
    let result = runner.run(&strategy, |(shapes, steps)| {
        // Each case gets its own callers, so cases sharing the server never meet.
        let case = cases.fetch_add(1, Ordering::Relaxed);
        let memory = MemoryStore::new();
        runtime.block_on(async {
            let mut now = T0_MS;
            for (n, step) in steps.iter().enumerate() {
                now += step.after_ms;
                let tag = CallerTag::of(format!("case{case}-caller{}", step.caller).as_bytes());
                let checks: Vec<Check> = (0..3)
                    .filter(|i| step.policies & (1 << i) != 0)
                    .map(|i| {
                        let name = format!("p{i}");
                        let shadow = shadows && shapes[i].window_s % 2 == 1;
                        let reloaded = reloads && step.after_ms % 2 == 1;
                        let j = if reloaded { (i + 1) % 3 } else { i };
                        let policy = policy(&name, algorithms[j], &shapes[j], step.cost, shadow);
                        // Another hash tag, shared by the case's callers as `global` would
                        // be, yet unique to the case as the server is shared.
                        let tag = if global_third && i == 2 {
                            CallerTag::of(format!("everyone-in-case{case}").as_bytes())
                        } else {
                            tag.clone()
                        };
                        let mut check = Check::new(keys.key(&tag, policy.name()), policy);
                        check.cost = match step.odd_cost {
                            OddCost::None => check.cost,
                            OddCost::Zero => 0,
                            OddCost::AboveCapacity => check.policy.capacity() + 1,
                        };
                        check
                    })
                    .collect();
                let from_lua = redis.decide(&checks, Clock::At(now)).await.unwrap();
                let from_rust = memory.decide(&checks, Clock::At(now)).await.unwrap();
                prop_assert_eq!(from_lua, from_rust, "step {} at t={}", n, now);
            }
            Ok(())
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    runtime.block_on(server.assert_every_key_has_ttl());
}

/// fixed_window: Lua and Rust agree on every decision.
#[test]
fn fixed_window_lua_matches_rust() {
    lua_matches_rust(
        [Algorithm::FixedWindow; 3],
        false,
        false,
        false,
        false,
        "tests/proptest-regressions/fixed_window.txt",
    );
}

/// sliding_window: Lua and Rust agree on every decision, to the unit and the millisecond.
#[test]
fn sliding_window_lua_matches_rust() {
    lua_matches_rust(
        [Algorithm::SlidingWindow; 3],
        false,
        false,
        false,
        false,
        "tests/proptest-regressions/sliding_window.txt",
    );
}

/// token_bucket: Lua and Rust agree on every decision, including exact retry-afters.
#[test]
fn token_bucket_lua_matches_rust() {
    lua_matches_rust(
        [Algorithm::TokenBucket; 3],
        false,
        false,
        false,
        false,
        "tests/proptest-regressions/token_bucket.txt",
    );
}

/// Mixed algorithms in one call: Lua and Rust agree, all-or-nothing across algorithms.
#[test]
fn mixed_algorithms_lua_matches_rust() {
    lua_matches_rust(
        Algorithm::ALL,
        false,
        false,
        false,
        false,
        "tests/proptest-regressions/mixed.txt",
    );
}

/// Two hash tags in one call, as on a single Redis: Lua and Rust agree.
#[test]
fn hash_tags_in_one_call_match_rust() {
    lua_matches_rust(
        Algorithm::ALL,
        true,
        false,
        false,
        false,
        "tests/proptest-regressions/hash_tags_in_one_call.txt",
    );
}

/// Two hash tags split as on a cluster: Redis's ordered calls and refunds decide exactly as
/// memory's single step, and leave no key that only denials touched.
#[test]
fn refunds_across_hash_tags_match_rust() {
    lua_matches_rust(
        Algorithm::ALL,
        true,
        true,
        false,
        false,
        "tests/proptest-regressions/hash_tags.txt",
    );
}

/// Shadow policies among mixed algorithms in one call: Lua and Rust agree on what each shadow
/// policy would have denied, and consume alike.
#[test]
fn shadow_policies_lua_matches_rust() {
    lua_matches_rust(
        Algorithm::ALL,
        true,
        false,
        true,
        false,
        "tests/proptest-regressions/shadow.txt",
    );
}

/// Shadow policies split by hash tag as on a cluster: a call denied only by shadow policies is
/// admitted, and refunds give back only what was consumed, exactly as memory's single step.
#[test]
fn shadow_policies_across_hash_tags_match_rust() {
    lua_matches_rust(
        Algorithm::ALL,
        true,
        true,
        true,
        false,
        "tests/proptest-regressions/shadow_hash_tags.txt",
    );
}

/// Each algorithm, its limit, window and burst changing back and forth under the same name:
/// Lua and Rust read, translate and ignore the stored values alike.
#[test]
fn shape_changes_lua_matches_rust() {
    for (algorithm, regressions) in [
        (
            Algorithm::FixedWindow,
            "tests/proptest-regressions/fixed_window_shape_changes.txt",
        ),
        (
            Algorithm::SlidingWindow,
            "tests/proptest-regressions/sliding_window_shape_changes.txt",
        ),
        (
            Algorithm::TokenBucket,
            "tests/proptest-regressions/token_bucket_shape_changes.txt",
        ),
    ] {
        lua_matches_rust([algorithm; 3], false, false, false, true, regressions);
    }
}

/// Algorithms changing back and forth under the same name, with their shapes: Lua and Rust
/// start afresh alike. In one call only: split by hash tag as on a cluster, a refund after a
/// later tag's denial cannot bring back a value of another shape that the earlier call
/// replaced, so Redis keeps the new shape where memory, deciding in one step, kept the old. The
/// two then differ only if the shape changes back, or in a token bucket's pace until its next
/// admission (docs/design.md, "A policy changed under the same name").
#[test]
fn algorithm_changes_lua_matches_rust() {
    lua_matches_rust(
        Algorithm::ALL,
        true,
        false,
        false,
        true,
        "tests/proptest-regressions/algorithm_changes.txt",
    );
}
