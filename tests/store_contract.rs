//! The store contract, with explicit times: the Lua script and the Rust reference agree, and both
//! keep the rules every decision depends on.

mod support;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::KeysInterface;
use support::policies::script;
use support::RedisServer;
use tollgate::key::{CallerTag, KeyBuilder};
use tollgate::store::{Check, Clock, RedisStore, Store};
use tollgate::{Algorithm, Policy, PolicyName, Window};

/// A Unix time in the middle of a minute: 2026-11-27T18:00:20.123Z.
const T0: u64 = 1_795_802_420_123;

fn policy(name: &str, limit: u64, window_ms: u64, cost: u64) -> Arc<Policy> {
    of(Algorithm::FixedWindow, name, limit, window_ms, cost)
}

fn of(algorithm: Algorithm, name: &str, limit: u64, window_ms: u64, cost: u64) -> Arc<Policy> {
    let policy = Policy::new(
        PolicyName::new(name).unwrap(),
        algorithm,
        NonZeroU64::new(limit).unwrap(),
        Window::from_millis(window_ms).unwrap(),
    )
    .unwrap()
    .with_cost(NonZeroU64::new(cost).unwrap())
    .unwrap();
    Arc::new(policy)
}

fn checks(caller: &str, policies: &[Arc<Policy>]) -> Vec<Check> {
    let keys = KeyBuilder::new("tollgate");
    let tag = CallerTag::of(caller.as_bytes());
    policies
        .iter()
        .map(|p| Check::new(keys.key(&tag, p.name()), p.clone()))
        .collect()
}

async fn redis_store(server: &RedisServer) -> RedisStore {
    let config = fred::prelude::Config::from_url(&server.url()).unwrap();
    RedisStore::connect(config, Duration::from_secs(5))
        .await
        .unwrap()
}

/// Runs one contract test against the memory store and against Redis.
macro_rules! contract_on_both_stores {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn memory() {
                super::$test(&tollgate::store::MemoryStore::new()).await;
            }

            #[tokio::test]
            async fn redis() {
                let server = super::RedisServer::start().await;
                super::$test(&super::redis_store(&server).await).await;
                server.assert_every_key_has_ttl().await;
            }
        }
    };
}

/// The window turns over: a request sent `retry_after` after a denial is admitted.
async fn window_turns_over_after_retry_after(store: &dyn Store) {
    let per_minute = checks("joe", &[policy("per_minute", 3, 60_000, 1)]);
    for remaining in [2, 1, 0] {
        let decision = store.decide(&per_minute, Clock::At(T0)).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.policies[0].remaining, remaining);
    }
    let denied = store.decide(&per_minute, Clock::At(T0)).await.unwrap();
    assert!(!denied.allowed);
    let retry_after = denied.retry_after();
    assert_eq!(retry_after, Duration::from_millis(60_000 - T0 % 60_000));
    assert_eq!(denied.policies[0].reset_after, retry_after);

    let just_before = T0 + retry_after.as_millis() as u64 - 1;
    let still_denied = store
        .decide(&per_minute, Clock::At(just_before))
        .await
        .unwrap();
    assert!(!still_denied.allowed);
    assert_eq!(still_denied.retry_after(), Duration::from_millis(1));

    let after = T0 + retry_after.as_millis() as u64;
    let admitted = store.decide(&per_minute, Clock::At(after)).await.unwrap();
    assert!(admitted.allowed);
    assert_eq!(admitted.policies[0].remaining, 2);
    assert_eq!(
        admitted.policies[0].reset_after,
        Duration::from_millis(60_000)
    );
}
contract_on_both_stores!(window_turns_over_after_retry_after);

/// Denied requests consume nothing: a counter never exceeds its limit.
async fn denials_consume_nothing(store: &dyn Store) {
    let heavy = checks("ann", &[policy("heavy", 5, 60_000, 2)]);
    assert_eq!(remaining_after(store, &heavy, T0).await, (true, 3));
    assert_eq!(remaining_after(store, &heavy, T0).await, (true, 1));
    for _ in 0..10 {
        assert_eq!(remaining_after(store, &heavy, T0).await, (false, 1));
    }
    let light = checks("ann", &[policy("heavy", 5, 60_000, 1)]);
    assert_eq!(remaining_after(store, &light, T0).await, (true, 0));
}
contract_on_both_stores!(denials_consume_nothing);

/// A check that costs 0 (Envoy's check-only descriptor) reports each algorithm's state and
/// changes nothing: it spends nothing, and on a caller never seen it leaves no key behind (the
/// Redis run's end checks that every key left has a TTL; this one checks there is none).
async fn a_check_that_costs_nothing_changes_nothing(store: &dyn Store) {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ] {
        let name = format!("free_{}", algorithm.as_str());
        let free = |caller: &str| {
            let mut checks = checks(caller, &[of(algorithm, &name, 3, 60_000, 1)]);
            checks[0].cost = 0;
            checks
        };
        let paid = checks("ann", &[of(algorithm, &name, 3, 60_000, 1)]);
        for _ in 0..3 {
            assert_eq!(
                remaining_after(store, &free("new"), T0).await,
                (true, 3),
                "{name}"
            );
        }
        assert_eq!(remaining_after(store, &paid, T0).await, (true, 2), "{name}");
        assert_eq!(
            remaining_after(store, &free("ann"), T0).await,
            (true, 2),
            "{name}"
        );
        assert_eq!(remaining_after(store, &paid, T0).await, (true, 1), "{name}");
        // Beside a policy that spends, in one call, the free one still spends nothing.
        let bob = format!("bob_{name}");
        let mixed = [free(&bob), checks(&bob, &[policy("paid", 3, 60_000, 1)])].concat();
        let decision = store.decide(&mixed, Clock::At(T0)).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.policies[0].remaining, 3, "{name}");
        assert_eq!(decision.policies[1].remaining, 2, "{name}");
    }
}
contract_on_both_stores!(a_check_that_costs_nothing_changes_nothing);

/// On Redis, a check that costs 0 writes no key for a caller never seen.
#[tokio::test]
async fn a_check_that_costs_nothing_writes_no_key() {
    let server = RedisServer::start().await;
    let redis = redis_store(&server).await;
    let mut free = checks("new", &[policy("free", 3, 60_000, 1)]);
    free[0].cost = 0;
    let two = [
        free.clone(),
        checks("other", &[policy("free", 3, 60_000, 1)]),
    ]
    .concat();
    for checks in [&free, &two] {
        redis.decide(checks, Clock::At(T0)).await.unwrap();
    }
    let keys = server.keys().await;
    assert_eq!(keys.len(), 1, "only the paid check's key: {keys:?}");
    assert!(!keys.contains(&free[0].key));
}

/// Several policies are decided all-or-nothing: a denial by one consumes nothing in the others.
async fn policies_are_all_or_nothing(store: &dyn Store) {
    let both = checks(
        "bob",
        &[
            policy("per_second", 2, 1_000, 1),
            policy("per_minute", 5, 60_000, 1),
        ],
    );
    let t = T0 - T0 % 60_000 + 1_500;
    for _ in 0..2 {
        assert!(store.decide(&both, Clock::At(t)).await.unwrap().allowed);
    }
    for _ in 0..5 {
        let denied = store.decide(&both, Clock::At(t)).await.unwrap();
        assert!(!denied.allowed);
        assert!(!denied.policies[0].allowed);
        assert!(denied.policies[1].allowed, "per_minute alone would admit");
        assert_eq!(
            denied.policies[1].remaining, 3,
            "per_minute was not consumed"
        );
        assert_eq!(denied.retry_after(), Duration::from_millis(500));
    }
    let next_second = store.decide(&both, Clock::At(t + 500)).await.unwrap();
    assert!(next_second.allowed);
    assert_eq!(next_second.policies[0].remaining, 1);
    assert_eq!(next_second.policies[1].remaining, 2);
}
contract_on_both_stores!(policies_are_all_or_nothing);

/// A limit lowered mid-window denies a caller already over it, with nothing remaining, rather
/// than failing: counts above the limit are possible after a configuration change.
async fn a_lowered_limit_denies_callers_over_it(store: &dyn Store) {
    let five = checks("cut", &[policy("hourly", 5, 3_600_000, 1)]);
    for _ in 0..5 {
        assert!(store.decide(&five, Clock::At(T0)).await.unwrap().allowed);
    }
    let three = checks("cut", &[policy("hourly", 3, 3_600_000, 1)]);
    let denied = store.decide(&three, Clock::At(T0)).await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.policies[0].remaining, 0);
    assert_eq!(
        denied.retry_after(),
        Duration::from_millis(3_600_000 - T0 % 3_600_000)
    );
}
contract_on_both_stores!(a_lowered_limit_denies_callers_over_it);

/// A token bucket's Retry-After is exact to the millisecond: denied 1 ms before the next token,
/// admitted on it.
async fn token_bucket_retry_after_is_exact(store: &dyn Store) {
    let bucket = checks("tb", &[of(Algorithm::TokenBucket, "tb", 2, 1_000, 1)]);
    assert_eq!(remaining_after(store, &bucket, T0).await, (true, 1));
    assert_eq!(remaining_after(store, &bucket, T0).await, (true, 0));
    let denied = store.decide(&bucket, Clock::At(T0)).await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after(), Duration::from_millis(500));
    assert_eq!(denied.policies[0].reset_after, Duration::from_millis(1_000));
    let early = store.decide(&bucket, Clock::At(T0 + 499)).await.unwrap();
    assert_eq!(early.retry_after(), Duration::from_millis(1));
    assert_eq!(remaining_after(store, &bucket, T0 + 500).await, (true, 0));
}
contract_on_both_stores!(token_bucket_retry_after_is_exact);

/// A sliding window weighs the previous window: a full previous window denies at the start of
/// the next, and admits again once enough of it has slid out.
async fn sliding_window_weighs_the_previous_window(store: &dyn Store) {
    let sliding = checks("sw", &[of(Algorithm::SlidingWindow, "sw", 10, 10_000, 1)]);
    let window_start = T0 - T0 % 10_000;
    let late = window_start + 9_999;
    for _ in 0..10 {
        assert!(
            store
                .decide(&sliding, Clock::At(late))
                .await
                .unwrap()
                .allowed
        );
    }
    let next = store.decide(&sliding, Clock::At(late + 1)).await.unwrap();
    assert!(!next.allowed, "a fixed window would admit here");
    // 10 × (10000 − e)/10000 + 1 ≤ 10 first holds at e = 1000.
    assert_eq!(next.retry_after(), Duration::from_millis(1_000));
    assert_eq!(
        remaining_after(store, &sliding, late + 1_001).await,
        (true, 0)
    );
}
contract_on_both_stores!(sliding_window_weighs_the_previous_window);

/// Policies of different algorithms are all-or-nothing in one call: the denial of one leaves
/// the others' counts as they were.
async fn mixed_algorithms_are_all_or_nothing(store: &dyn Store) {
    let mixed = checks(
        "mix",
        &[
            of(Algorithm::FixedWindow, "fixed", 5, 60_000, 1),
            of(Algorithm::SlidingWindow, "sliding", 4, 60_000, 1),
            of(Algorithm::TokenBucket, "bucket", 2, 60_000, 1),
        ],
    );
    for _ in 0..2 {
        assert!(store.decide(&mixed, Clock::At(T0)).await.unwrap().allowed);
    }
    for _ in 0..3 {
        let denied = store.decide(&mixed, Clock::At(T0)).await.unwrap();
        assert!(!denied.allowed);
        let remaining: Vec<u64> = denied.policies.iter().map(|p| p.remaining).collect();
        assert_eq!(
            remaining,
            [3, 2, 0],
            "only the bucket is empty; nothing was consumed"
        );
    }
}
contract_on_both_stores!(mixed_algorithms_are_all_or_nothing);

/// In Redis, a denial leaves every other policy's value byte for byte as it was.
#[tokio::test]
async fn a_denial_leaves_redis_values_unchanged() {
    let server = RedisServer::start().await;
    let redis = redis_store(&server).await;
    let conn = server.client().await;
    let mixed = checks(
        "values",
        &[
            of(Algorithm::FixedWindow, "fixed", 5, 60_000, 1),
            of(Algorithm::SlidingWindow, "sliding", 4, 60_000, 1),
            of(Algorithm::TokenBucket, "bucket", 2, 60_000, 1),
        ],
    );
    for _ in 0..2 {
        assert!(redis.decide(&mixed, Clock::Store).await.unwrap().allowed);
    }
    let values = || async {
        let mut values = Vec::new();
        for check in &mixed {
            let value: Option<String> = conn.get(&check.key).await.unwrap();
            values.push(value.expect("every key exists"));
        }
        values
    };
    let before = values().await;
    assert!(!redis.decide(&mixed, Clock::Store).await.unwrap().allowed);
    assert_eq!(values().await, before);
    server.assert_every_key_has_ttl().await;
}

/// Policies keyed by different hash tags (a caller's and a global one) deny without a trace.
/// On a single Redis one call decides them all, so a denial writes nothing. Split by hash tag,
/// as on a cluster, the second call's denial gives back what the first consumed, and a count
/// brought back to nothing is deleted: a caller seen only on denials has no key.
#[tokio::test]
async fn a_denial_across_hash_tags_leaves_nothing_behind() {
    for split in [false, true] {
        let server = RedisServer::start().await;
        let redis = redis_store(&server).await;
        let redis = if split {
            redis.split_by_hash_tag()
        } else {
            redis
        };
        let conn = server.client().await;
        for algorithm in Algorithm::ALL {
            let name = algorithm.as_str();
            let per_user = of(algorithm, &format!("{name}-user"), 5, 60_000, 1);
            let global = of(algorithm, &format!("{name}-all"), 2, 60_000, 1);
            let of_user = |user: &str| {
                [
                    Check::new(format!("tollgate:{{{user}}}:{name}-user"), per_user.clone()),
                    Check::new(format!("tollgate:{{global}}:{name}-all"), global.clone()),
                ]
            };
            let both = of_user("joe");
            for _ in 0..2 {
                assert!(
                    redis.decide(&both, Clock::Store).await.unwrap().allowed,
                    "{name}"
                );
            }
            let before: Option<String> = conn.get(&both[0].key).await.unwrap();
            let calls = server.evalsha_calls().await;
            let denied = redis.decide(&both, Clock::Store).await.unwrap();
            let calls = server.evalsha_calls().await - calls;
            // Split: the user's call, the global one that denies, the user's refund.
            assert_eq!(calls, if split { 3 } else { 1 }, "{name}");
            assert!(!denied.allowed, "{name}");
            assert_eq!(
                denied.policies[0].remaining, 3,
                "{name}: the user policy was not charged"
            );
            assert!(!denied.policies[1].allowed, "{name}");
            if algorithm != Algorithm::TokenBucket {
                // Counts come back exactly; a bucket's TAT is moved back by the refund, and time
                // has passed, so only its reported remainder is compared.
                let after: Option<String> = conn.get(&both[0].key).await.unwrap();
                assert_eq!(after, before, "{name}");
            }
            let newcomer = of_user("ann");
            assert!(!redis.decide(&newcomer, Clock::Store).await.unwrap().allowed);
            let left: Option<String> = conn.get(&newcomer[0].key).await.unwrap();
            assert_eq!(left, None, "{name}, split: {split}: the denial left a key");
        }
        server.assert_every_key_has_ttl().await;
    }
}

async fn remaining_after(store: &dyn Store, checks: &[Check], at: u64) -> (bool, u64) {
    let decision = store.decide(checks, Clock::At(at)).await.unwrap();
    (decision.allowed, decision.policies[0].remaining)
}

/// On Redis's own clock, every key the script writes has a TTL set in the same call, no longer
/// than its state matters: a fixed window's end, a sliding window's next end, a full bucket.
#[tokio::test]
async fn every_write_sets_a_ttl_as_long_as_the_state_matters() {
    let server = RedisServer::start().await;
    let redis = redis_store(&server).await;
    let conn = server.client().await;
    for (algorithm, longest_ms) in [
        (Algorithm::FixedWindow, 1_000),
        (Algorithm::SlidingWindow, 2_000),
        (Algorithm::TokenBucket, 1_000),
    ] {
        let checks = checks("ttl", &[of(algorithm, algorithm.as_str(), 100, 1_000, 1)]);
        for _ in 0..20 {
            redis.decide(&checks, Clock::Store).await.unwrap();
            let pttl: i64 = conn.pttl(&checks[0].key).await.unwrap();
            assert!(
                pttl > 0 && pttl <= longest_ms,
                "{}: PTTL {pttl}",
                algorithm.as_str()
            );
        }
    }
    server.assert_every_key_has_ttl().await;
}

/// A token-bucket refund gives back only what is still outstanding of the refunded request's
/// tokens, never a later request's.
#[tokio::test]
async fn token_bucket_refunds_only_outstanding_tokens() {
    let server = RedisServer::start().await;
    let conn = server.client().await;
    let policy = of(Algorithm::TokenBucket, "tb", 1000, 1_000, 1);
    let t0 = T0 * 1000;
    // A at t0 (bucket full): TAT t0+1000. B at t0+1500: its own token, TAT t0+2500.
    let a = script(&conn, "tb", t0, "decide", &policy, 0).await;
    let b = script(&conn, "tb", t0 + 1_500, "decide", &policy, 0).await;
    assert_eq!((a[0], b[0]), (1, 1));
    assert_eq!(a[4] as u64, t0 + 1_000, "A's receipt is its TAT");
    // Refunding A at t0+1600: A's token refilled at t0+1000, so nothing is outstanding.
    let refunded = script(&conn, "tb", t0 + 1_600, "refund", &policy, a[4] as u64).await;
    assert_eq!(refunded[1], 999, "B's token is still spent");
    server.assert_every_key_has_ttl().await;
}

/// A token-bucket refund made while the refunded tokens are partly refilled moves the stored
/// TAT back by exactly the part still outstanding, to the microsecond.
#[tokio::test]
async fn token_bucket_refunds_the_outstanding_part_exactly() {
    let server = RedisServer::start().await;
    let conn = server.client().await;
    let three = of(Algorithm::TokenBucket, "tb", 1000, 1_000, 3);
    let one = of(Algorithm::TokenBucket, "tb", 1000, 1_000, 1);
    let t0 = T0 * 1000;
    // A spends 3 tokens at t0 (TAT t0+3000), B one more at t0+500 (TAT t0+4000).
    let a = script(&conn, "tb", t0, "decide", &three, 0).await;
    let b = script(&conn, "tb", t0 + 500, "decide", &one, 0).await;
    assert_eq!((a[0], b[0]), (1, 1));
    assert_eq!(a[4] as u64, t0 + 3_000, "A's receipt is its TAT");
    // At t0+1234, 1,234 µs of A's 3,000 have refilled: 1,766 are given back.
    script(&conn, "tb", t0 + 1_234, "refund", &three, a[4] as u64).await;
    let tat: String = conn.get("tb").await.unwrap();
    // "<tat_us>:<emission_us>"
    assert_eq!(tat, format!("{}:1000", t0 + 4_000 - 1_766));
    // Spent from a bucket that was not full (C before it), none of A's 3,000 µs have refilled
    // by t0+100: all of them, and no more, are given back.
    script(&conn, "tb2", t0, "decide", &one, 0).await;
    let a = script(&conn, "tb2", t0, "decide", &three, 0).await;
    assert_eq!(a[4] as u64, t0 + 4_000);
    script(&conn, "tb2", t0 + 100, "refund", &three, a[4] as u64).await;
    let tat: String = conn.get("tb2").await.unwrap();
    assert_eq!(
        tat,
        format!("{}:1000", t0 + 1_000),
        "C's token is still spent"
    );
    server.assert_every_key_has_ttl().await;
}

/// A sliding-window refund after another request moved the key to the next window comes off
/// the previous count, where the refunded cost now sits.
#[tokio::test]
async fn sliding_window_refund_follows_the_window_turn() {
    let server = RedisServer::start().await;
    let conn = server.client().await;
    let policy = of(Algorithm::SlidingWindow, "sw", 10, 1_000, 1);
    let start = (T0 - T0 % 1_000) * 1000;
    let a = script(&conn, "sw", start + 900_000, "decide", &policy, 0).await;
    let b = script(&conn, "sw", start + 1_100_000, "decide", &policy, 0).await;
    assert_eq!((a[0], b[0]), (1, 1));
    let value: String = conn.get("sw").await.unwrap();
    assert!(value.starts_with("1:1:"), "B sees A in prev: {value}");
    script(
        &conn,
        "sw",
        start + 1_100_000,
        "refund",
        &policy,
        a[4] as u64,
    )
    .await;
    let value: String = conn.get("sw").await.unwrap();
    assert!(value.starts_with("1:0:"), "A's cost left prev: {value}");
    server.assert_every_key_has_ttl().await;
}

/// `policy` in shadow mode.
fn shadow(policy: Arc<Policy>) -> Arc<Policy> {
    Arc::new(Policy::clone(&policy).with_shadow(true))
}

/// A shadow policy decides nothing: one that does not fit admits all the same and consumes
/// nothing, the real policy beside it consumes as if it were absent, and a real denial consumes
/// nothing anywhere, the shadow policy included.
async fn shadow_policies_report_but_never_deny(store: &dyn Store) {
    let both = checks(
        "sam",
        &[
            policy("real", 3, 60_000, 1),
            shadow(policy("trial", 2, 60_000, 1)),
        ],
    );
    for left in [1, 0] {
        let decision = store.decide(&both, Clock::At(T0)).await.unwrap();
        assert!(decision.allowed && decision.policies[1].allowed);
        assert_eq!(decision.policies[1].remaining, left);
    }
    let over = store.decide(&both, Clock::At(T0)).await.unwrap();
    assert!(over.allowed, "the shadow policy alone does not deny");
    assert!(!over.policies[1].allowed, "it says it would have denied");
    assert_eq!(over.policies[0].remaining, 0, "the real policy consumed");
    assert_eq!(
        over.retry_after(),
        Duration::ZERO,
        "no wait for an admission"
    );
    assert_eq!(over.tightest().unwrap().policy.name().as_str(), "real");
    assert_eq!(over.shadow_denials().count(), 1);

    let denied = store.decide(&both, Clock::At(T0)).await.unwrap();
    assert!(!denied.allowed && !denied.policies[0].allowed);
    assert_eq!(
        denied.retry_after(),
        denied.policies[0].retry_after,
        "Retry-After is the real policy's"
    );
    // The shadow's key, read by a roomier policy of its name: 2 consumed, then this probe's 1.
    let probe = checks("sam", &[policy("trial", 10, 60_000, 1)]);
    assert_eq!(remaining_after(store, &probe, T0).await, (true, 7));
    let real = checks("sam", &[policy("real", 10, 60_000, 1)]);
    assert_eq!(remaining_after(store, &real, T0).await, (true, 6));
}
contract_on_both_stores!(shadow_policies_report_but_never_deny);

/// The script's contract for the shadow flag: a shadow policy that does not fit replies
/// allowed = 1 with its own wait and remainder, and writes nothing.
#[tokio::test]
async fn the_script_admits_past_a_shadow_policy_without_writing() {
    let server = RedisServer::start().await;
    let conn = server.client().await;
    for algorithm in Algorithm::ALL {
        let name = algorithm.as_str();
        let policy = shadow(of(algorithm, name, 1, 60_000, 1));
        let first = script(&conn, name, T0 * 1000, "decide", &policy, 0).await;
        assert_eq!((first[0], first[1], first[3]), (1, 0, 0), "{name}");
        let written: String = conn.get(name).await.unwrap();
        let over = script(&conn, name, T0 * 1000, "decide", &policy, 0).await;
        assert_eq!(over[0], 1, "{name}: admitted");
        assert_eq!(over[1], 0, "{name}: nothing remains");
        assert!(over[3] > 0, "{name}: it would have denied: {over:?}");
        let after: String = conn.get(name).await.unwrap();
        assert_eq!(after, written, "{name}: nothing written");
        let real = of(algorithm, name, 1, 60_000, 1);
        let denied = script(&conn, name, T0 * 1000, "decide", &real, 0).await;
        assert_eq!(denied[0], 0, "{name}: the same policy, not shadow, denies");
    }
    server.assert_every_key_has_ttl().await;
}

/// Split by hash tag, as on a cluster: a call denied only by a shadow policy is admitted, with
/// no refund; and a refund after a real denial gives back only what was consumed, never a
/// shadow policy's cost that it did not consume.
#[tokio::test]
async fn shadow_policies_across_hash_tags() {
    let server = RedisServer::start().await;
    let redis = redis_store(&server).await.split_by_hash_tag();
    let conn = server.client().await;
    for algorithm in Algorithm::ALL {
        let name = algorithm.as_str();
        let user = of(algorithm, &format!("{name}-user"), 5, 60_000, 1);
        let trial = shadow(of(algorithm, &format!("{name}-all"), 1, 60_000, 1));
        let real_then_shadow = [
            Check::new(format!("tollgate:{{joe}}:{name}-user"), user.clone()),
            Check::new(format!("tollgate:{{global}}:{name}-all"), trial.clone()),
        ];
        assert!(
            redis
                .decide(&real_then_shadow, Clock::Store)
                .await
                .unwrap()
                .allowed
        );
        let calls = server.evalsha_calls().await;
        let over = redis.decide(&real_then_shadow, Clock::Store).await.unwrap();
        assert_eq!(server.evalsha_calls().await - calls, 2, "{name}: no refund");
        assert!(over.allowed, "{name}: denied only by a shadow policy");
        assert!(!over.policies[1].allowed, "{name}");
        assert_eq!(
            over.policies[0].remaining, 3,
            "{name}: the user was charged"
        );

        // The shadow policy's call first, where it does not fit; the real one denies after it.
        let global = of(algorithm, &format!("{name}-cap"), 1, 60_000, 1);
        let shadow_then_real = [
            Check::new(format!("tollgate:{{ann}}:{name}-all"), trial.clone()),
            Check::new(format!("tollgate:{{ann}}:{name}-mine"), user.clone()),
            Check::new(format!("tollgate:{{global}}:{name}-cap"), global.clone()),
        ];
        assert!(
            redis
                .decide(&shadow_then_real, Clock::Store)
                .await
                .unwrap()
                .allowed
        );
        let trial_key = &shadow_then_real[0].key;
        let spent: Option<String> = conn.get(trial_key).await.unwrap();
        let calls = server.evalsha_calls().await;
        let denied = redis.decide(&shadow_then_real, Clock::Store).await.unwrap();
        // The first call, the second that denies, and the refund of `mine` alone.
        assert_eq!(server.evalsha_calls().await - calls, 3, "{name}");
        assert!(!denied.allowed, "{name}");
        assert_eq!(denied.policies[1].remaining, 4, "{name}: mine was refunded");
        let after: Option<String> = conn.get(trial_key).await.unwrap();
        assert_eq!(after, spent, "{name}: the shadow's count was not refunded");
    }
    server.assert_every_key_has_ttl().await;
}
