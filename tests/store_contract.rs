//! The store contract, with explicit times: the Lua script and the Rust reference agree, and both
//! keep the rules every decision depends on.

mod support;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use support::RedisServer;
use tollgate::key::{CallerTag, KeyBuilder};
use tollgate::store::{Check, Clock, MemoryStore, RedisStore, Store};
use tollgate::{Algorithm, Policy, PolicyName, Window};

/// A Unix time in the middle of a minute: 2026-11-27T18:00:20.123Z.
const T0: u64 = 1_795_802_420_123;

fn policy(name: &str, limit: u64, window_ms: u64, cost: u64) -> Arc<Policy> {
    let policy = Policy::new(
        PolicyName::new(name).unwrap(),
        Algorithm::FixedWindow,
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
        .map(|p| Check {
            key: keys.key(&tag, p.name()),
            policy: p.clone(),
        })
        .collect()
}

async fn redis_store(server: &RedisServer) -> RedisStore {
    let config = fred::prelude::Config::from_url(&server.url()).unwrap();
    RedisStore::connect(config, Duration::from_secs(5))
        .await
        .unwrap()
}

/// Runs one contract test against the memory store and against Redis.
macro_rules! on_both_stores {
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
on_both_stores!(window_turns_over_after_retry_after);

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
on_both_stores!(denials_consume_nothing);

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
on_both_stores!(policies_are_all_or_nothing);

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
on_both_stores!(a_lowered_limit_denies_callers_over_it);

async fn remaining_after(store: &dyn Store, checks: &[Check], at: u64) -> (bool, u64) {
    let decision = store.decide(checks, Clock::At(at)).await.unwrap();
    (decision.allowed, decision.policies[0].remaining)
}

/// The Lua script and the Rust reference give identical decisions for the same random sequences
/// of (time, caller, cost), across window boundaries.
#[tokio::test]
async fn lua_script_matches_the_rust_reference() {
    let server = RedisServer::start().await;
    let redis = redis_store(&server).await;
    let memory = MemoryStore::new();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for sequence in 0..20 {
        let policies = [
            policy("fast", 1 + rng.below(5), 100 + rng.below(2_000), 1),
            policy("slow", 5 + rng.below(20), 10_000 + rng.below(50_000), 1),
            policy(
                "heavy",
                4 + rng.below(6),
                1_000 + rng.below(5_000),
                1 + rng.below(3),
            ),
        ];
        let mut now = T0 + rng.below(1_000_000);
        for step in 0..200 {
            now += [0, 1, 7, 50, 400, 3_000][rng.below(6) as usize];
            let caller = format!("seq{sequence}-caller{}", rng.below(3));
            let chosen: Vec<_> = policies
                .iter()
                .filter(|_| rng.below(3) > 0)
                .cloned()
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let checks = checks(&caller, &chosen);
            let from_lua = redis.decide(&checks, Clock::At(now)).await.unwrap();
            let from_rust = memory.decide(&checks, Clock::At(now)).await.unwrap();
            assert_eq!(
                from_lua, from_rust,
                "sequence {sequence}, step {step}, caller {caller}, t={now}"
            );
        }
    }
    server.assert_every_key_has_ttl().await;
}

/// Every key the script writes has a TTL in (0, window], set in the same call.
#[tokio::test]
async fn every_write_sets_a_ttl_within_the_window() {
    let server = RedisServer::start().await;
    let redis = redis_store(&server).await;
    let conn = server.client().await;
    let per_second = policy("per_second", 100, 1_000, 1);
    let checks = checks("ttl", &[per_second]);
    for _ in 0..20 {
        redis.decide(&checks, Clock::Store).await.unwrap();
        let pttl: i64 = fred::prelude::KeysInterface::pttl(&conn, &checks[0].key)
            .await
            .unwrap();
        assert!(pttl > 0 && pttl <= 1_000, "PTTL {pttl}");
    }
    server.assert_every_key_has_ttl().await;
}

/// A small deterministic generator, so a failing sequence replays exactly.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
