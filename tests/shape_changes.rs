//! A policy whose name stays while its window, limit or algorithm changes (a configuration
//! reload) never misreads what the old one left in the store: each stored value is read only
//! under the shape that wrote it, and a raised limit admits at once, a lowered one denies at
//! once. On both stores, with explicit times; on Redis, each key's TTL is the new shape's.

mod support;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::KeysInterface;
use support::RedisServer;
use tollgate::key::{CallerTag, KeyBuilder};
use tollgate::store::{Check, Clock, RedisStore, Store};
use tollgate::{Algorithm, Policy, PolicyName, Window};

/// 2026-11-27T18:00:20.123Z: 20 seconds into an hour, so in the hour's first minute.
const T0: u64 = 1_795_802_420_123;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;

/// Under an explicit time the script gives every TTL a minute more (see lua/decide.lua).
const GRACE_MS: i64 = 60_000;

fn of(algorithm: Algorithm, limit: u64, window_ms: u64) -> Arc<Policy> {
    let policy = Policy::new(
        PolicyName::new("reloaded").unwrap(),
        algorithm,
        NonZeroU64::new(limit).unwrap(),
        Window::from_millis(window_ms).unwrap(),
    )
    .unwrap();
    Arc::new(policy)
}

/// One check of `policy` for `caller`: every policy here has the same name, so the same key.
fn check(caller: &str, policy: &Arc<Policy>) -> Vec<Check> {
    let tag = CallerTag::of(caller.as_bytes());
    let key = KeyBuilder::new("tollgate").key(&tag, policy.name());
    vec![Check::new(key, policy.clone())]
}

async fn redis_store(server: &RedisServer) -> RedisStore {
    let config = fred::prelude::Config::from_url(&server.url()).unwrap();
    RedisStore::connect(config, Duration::from_secs(5))
        .await
        .unwrap()
}

/// Runs one test, `async fn test(store: &dyn Store, redis: Option<&RedisServer>)`, against the
/// memory store and against Redis; the Redis run also checks what the keys hold.
macro_rules! on_both_stores {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn memory() {
                super::$test(&tollgate::store::MemoryStore::new(), None).await;
            }

            #[tokio::test]
            async fn redis() {
                let server = super::RedisServer::start().await;
                super::$test(&super::redis_store(&server).await, Some(&server)).await;
                server.assert_every_key_has_ttl().await;
            }
        }
    };
}

/// `n` decisions of `checks` at `at`: whether each was admitted, and the last one's remaining.
async fn spend(store: &dyn Store, checks: &[Check], at: u64, n: usize) -> (Vec<bool>, u64) {
    let mut admitted = Vec::new();
    let mut remaining = 0;
    for _ in 0..n {
        let decision = store.decide(checks, Clock::At(at)).await.unwrap();
        admitted.push(decision.allowed);
        remaining = decision.policies[0].remaining;
    }
    (admitted, remaining)
}

/// On Redis, the PTTL and the value of `checks`' key.
async fn stored(redis: &RedisServer, checks: &[Check]) -> (i64, String) {
    let conn = redis.client().await;
    let pttl: i64 = conn.pttl(&checks[0].key).await.unwrap();
    let value: Option<String> = conn.get(&checks[0].key).await.unwrap();
    (pttl, value.expect("the key exists"))
}

/// Asserts that a PTTL read just after a write is the TTL the write set: `set_ms` less the
/// few milliseconds since.
fn assert_about(pttl: i64, set_ms: i64) {
    assert!(
        pttl <= set_ms && pttl > set_ms - 5_000,
        "PTTL {pttl}, not about {set_ms}"
    );
}

/// A fixed window lengthened from a minute to an hour in the hour's first minute, when both
/// windows start at the same instant: the minute's count is not read as the hour's, and the key
/// expires with the hour, not the minute. And shortened back: the hour's count is not the
/// minute's, and the key expires with the minute.
async fn a_fixed_window_changed_in_length_starts_afresh(
    store: &dyn Store,
    redis: Option<&RedisServer>,
) {
    assert_eq!(
        T0 % HOUR,
        T0 % MINUTE,
        "the minute and the hour start together"
    );
    let minute = check("fixed", &of(Algorithm::FixedWindow, 5, MINUTE));
    let hour = check("fixed", &of(Algorithm::FixedWindow, 5, HOUR));
    assert!(
        !spend(store, &minute, T0, 6).await.0[5],
        "the minute is spent"
    );
    assert_eq!(spend(store, &hour, T0 + 1, 1).await, (vec![true], 4));
    if let Some(redis) = redis {
        let (pttl, value) = stored(redis, &hour).await;
        let until_the_hour_ends = (HOUR - T0 % HOUR - 1) as i64 + GRACE_MS;
        assert_about(pttl, until_the_hour_ends);
        assert_eq!(value, format!("1:{}:{HOUR}", T0 - T0 % HOUR));
    }
    // The hour counts on from there, to its limit.
    let (admitted, remaining) = spend(store, &hour, T0 + 2, 5).await;
    assert_eq!(
        (admitted, remaining),
        (vec![true, true, true, true, false], 0)
    );

    // Shortened: the hour's 5 are not the minute's.
    assert_eq!(spend(store, &minute, T0 + 3, 1).await, (vec![true], 4));
    if let Some(redis) = redis {
        let (pttl, value) = stored(redis, &minute).await;
        assert!(
            pttl <= (MINUTE as i64) + GRACE_MS,
            "PTTL {pttl}: not the hour's"
        );
        assert_eq!(value, format!("1:{}:{MINUTE}", T0 - T0 % MINUTE));
    }
}
on_both_stores!(a_fixed_window_changed_in_length_starts_afresh);

/// A sliding window lengthened from a minute to an hour in the hour's first minute: the
/// minute's counts are not read as the hour's, and the key expires with the hour's next window.
/// Shortened back, the hour's counts are not the minute's either.
async fn a_sliding_window_changed_in_length_starts_afresh(
    store: &dyn Store,
    redis: Option<&RedisServer>,
) {
    let minute = check("sliding", &of(Algorithm::SlidingWindow, 5, MINUTE));
    let hour = check("sliding", &of(Algorithm::SlidingWindow, 5, HOUR));
    assert!(
        !spend(store, &minute, T0, 6).await.0[5],
        "the minute is spent"
    );
    assert_eq!(spend(store, &hour, T0 + 1, 1).await, (vec![true], 4));
    if let Some(redis) = redis {
        let (pttl, value) = stored(redis, &hour).await;
        // To the end of the next hour: the last moment this hour's count weighs.
        let until_the_next_hour_ends = (2 * HOUR - (T0 + 1) % HOUR) as i64 + GRACE_MS;
        assert_about(pttl, until_the_next_hour_ends);
        assert_eq!(value, format!("1:0:{}:{HOUR}", T0 - T0 % HOUR));
    }
    assert_eq!(spend(store, &minute, T0 + 2, 1).await, (vec![true], 4));
    if let Some(redis) = redis {
        let (pttl, value) = stored(redis, &minute).await;
        assert!(
            pttl <= 2 * MINUTE as i64 + GRACE_MS,
            "PTTL {pttl}: not the hour's"
        );
        assert_eq!(value, format!("1:0:{}:{MINUTE}", T0 - T0 % MINUTE));
    }
}
on_both_stores!(a_sliding_window_changed_in_length_starts_afresh);

/// A sliding window's count is read as the previous window's only under the same window
/// length: a 10 s window's full count, whose start is exactly one 20 s window before now, does
/// not weigh on a 20 s window, nor a 20 s window's on a 10 s window one 10 s window later.
async fn a_sliding_window_reads_no_previous_window_of_another_length(
    store: &dyn Store,
    _redis: Option<&RedisServer>,
) {
    let ten = check("prev", &of(Algorithm::SlidingWindow, 4, 10_000));
    let twenty = check("prev", &of(Algorithm::SlidingWindow, 4, 20_000));
    // A start that both lengths share: 40 s into some minute.
    let start = T0 - T0 % MINUTE + 40_000;
    assert_eq!(spend(store, &ten, start, 4).await, (vec![true; 4], 0));
    // 20 s later, the 20 s window starting then has the 10 s window's start as its previous one.
    assert_eq!(
        spend(store, &twenty, start + 20_000, 1).await,
        (vec![true], 3)
    );

    let twenty = check("prev2", &of(Algorithm::SlidingWindow, 4, 20_000));
    let ten = check("prev2", &of(Algorithm::SlidingWindow, 4, 10_000));
    assert_eq!(spend(store, &twenty, start, 4).await, (vec![true; 4], 0));
    // 10 s later, the 10 s window starting then has the 20 s window's start as its previous one.
    assert_eq!(spend(store, &ten, start + 10_000, 1).await, (vec![true], 3));
}
on_both_stores!(a_sliding_window_reads_no_previous_window_of_another_length);

/// A policy whose algorithm changes under the same name starts afresh, for each pair of
/// algorithms: no algorithm reads another's value, and on Redis the key gets the new
/// algorithm's TTL (the old ones here run for an hour, the new ones for a minute).
async fn an_algorithm_changed_starts_afresh(store: &dyn Store, redis: Option<&RedisServer>) {
    for old in Algorithm::ALL {
        for new in Algorithm::ALL.into_iter().filter(|&new| new != old) {
            let caller = format!("{}-then-{}", old.as_str(), new.as_str());
            let before = check(&caller, &of(old, 3, HOUR));
            let after = check(&caller, &of(new, 3, MINUTE));
            let (admitted, _) = spend(store, &before, T0, 4).await;
            assert_eq!(admitted, [true, true, true, false], "{caller}");
            let (admitted, remaining) = spend(store, &after, T0 + 1, 1).await;
            assert_eq!((admitted, remaining), (vec![true], 2), "{caller}");
            if let Some(redis) = redis {
                let (pttl, _) = stored(redis, &after).await;
                // The longest new TTL, a sliding window's next minute; the old ones ran an hour.
                assert!(
                    pttl <= 2 * MINUTE as i64 + GRACE_MS,
                    "{caller}: PTTL {pttl}"
                );
            }
        }
    }
}
on_both_stores!(an_algorithm_changed_starts_afresh);

/// A window's limit is not part of its shape: raised, the count is kept and the caller is
/// admitted at once; lowered below the count, it is denied at once with nothing remaining.
async fn a_windows_limit_changed_keeps_its_count(store: &dyn Store, _redis: Option<&RedisServer>) {
    for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
        let name = algorithm.as_str();
        let three = check(&format!("{name}-up"), &of(algorithm, 3, MINUTE));
        let five = check(&format!("{name}-up"), &of(algorithm, 5, MINUTE));
        assert!(!spend(store, &three, T0, 4).await.0[3], "{name}");
        let (admitted, remaining) = spend(store, &five, T0, 3).await;
        assert_eq!(
            (admitted, remaining),
            (vec![true, true, false], 0),
            "{name}"
        );

        let five = check(&format!("{name}-down"), &of(algorithm, 5, MINUTE));
        let two = check(&format!("{name}-down"), &of(algorithm, 2, MINUTE));
        assert_eq!(
            spend(store, &five, T0, 3).await,
            (vec![true; 3], 2),
            "{name}"
        );
        let denied = store.decide(&two, Clock::At(T0)).await.unwrap();
        assert!(!denied.allowed, "{name}");
        assert_eq!(denied.policies[0].remaining, 0, "{name}");
    }
}
on_both_stores!(a_windows_limit_changed_keeps_its_count);

/// A token bucket exhausted at 10 a minute, its limit raised to 100 a minute, admits at once,
/// with the 10 tokens still spent: 89 remain after the request. Lowered from 100 to 10 a minute
/// after 50 were spent, it denies at once, with nothing remaining. Until a request is admitted
/// the stored tokens refill at the old pace, one each 0.6 s: a token fits once 9 are left
/// spent, 24.6 s later, exactly, and the bucket is full after 30 s.
async fn a_token_buckets_limit_changed_keeps_its_spent_tokens(
    store: &dyn Store,
    redis: Option<&RedisServer>,
) {
    let ten = check("raised", &of(Algorithm::TokenBucket, 10, MINUTE));
    let hundred = check("raised", &of(Algorithm::TokenBucket, 100, MINUTE));
    let (admitted, _) = spend(store, &ten, T0, 11).await;
    assert_eq!(admitted.iter().filter(|&&a| a).count(), 10);
    assert!(!admitted[10], "exhausted");
    let raised = store.decide(&hundred, Clock::At(T0)).await.unwrap();
    assert!(raised.allowed, "admitted at once");
    assert_eq!(raised.policies[0].remaining, 89);
    if let Some(redis) = redis {
        let (_, value) = stored(redis, &hundred).await;
        // 11 tokens of 600,000 µs ahead of now.
        assert_eq!(value, format!("{}:600000", T0 * 1000 + 11 * 600_000));
    }

    let hundred = check("lowered", &of(Algorithm::TokenBucket, 100, MINUTE));
    let ten = check("lowered", &of(Algorithm::TokenBucket, 10, MINUTE));
    assert_eq!(spend(store, &hundred, T0, 50).await, (vec![true; 50], 50));
    let lowered = store.decide(&ten, Clock::At(T0)).await.unwrap();
    assert!(!lowered.allowed, "denied at once");
    assert_eq!(lowered.policies[0].remaining, 0);
    assert_eq!(lowered.retry_after(), Duration::from_millis(24_600));
    assert_eq!(lowered.policies[0].reset_after, Duration::from_secs(30));
    let early = store.decide(&ten, Clock::At(T0 + 24_599)).await.unwrap();
    assert_eq!(early.retry_after(), Duration::from_millis(1));
    let admitted = store.decide(&ten, Clock::At(T0 + 24_600)).await.unwrap();
    assert!(admitted.allowed, "admitted when it said");
    assert_eq!(admitted.policies[0].remaining, 0);
    // Written, the 10 tokens spent now refill at the new pace: 60 s until full.
    assert_eq!(admitted.policies[0].reset_after, Duration::from_secs(60));
}
on_both_stores!(a_token_buckets_limit_changed_keeps_its_spent_tokens);

/// A partly refilled token counts as spent when the interval changes, never as given back:
/// 9.5 tokens ahead at 10 a minute are 10 at 100 a minute.
async fn a_partly_refilled_token_is_translated_whole(
    store: &dyn Store,
    _redis: Option<&RedisServer>,
) {
    let ten = check("partly", &of(Algorithm::TokenBucket, 10, MINUTE));
    let hundred = check("partly", &of(Algorithm::TokenBucket, 100, MINUTE));
    assert_eq!(spend(store, &ten, T0, 10).await, (vec![true; 10], 0));
    // 3 s later half a token has refilled: 9.5 are spent, so 0 remain whole at 10 a minute.
    let still = store.decide(&ten, Clock::At(T0 + 3_000)).await.unwrap();
    assert!(!still.allowed);
    let raised = store.decide(&hundred, Clock::At(T0 + 3_000)).await.unwrap();
    assert!(raised.allowed);
    assert_eq!(raised.policies[0].remaining, 89, "10 spent, then this one");
}
on_both_stores!(a_partly_refilled_token_is_translated_whole);

/// Values written in the format before shapes were stored are not read after an upgrade: each
/// algorithm starts afresh, and its write sets a fresh TTL.
#[tokio::test]
async fn values_of_the_previous_format_are_not_read() {
    let server = RedisServer::start().await;
    let redis = redis_store(&server).await;
    let conn = server.client().await;
    let start = T0 - T0 % MINUTE;
    for (algorithm, old) in [
        (Algorithm::FixedWindow, format!("3:{start}")),
        (Algorithm::SlidingWindow, format!("3:3:{start}")),
        (Algorithm::TokenBucket, format!("{}", (T0 + MINUTE) * 1000)),
    ] {
        let name = algorithm.as_str();
        let checks = check(&format!("old-{name}"), &of(algorithm, 3, MINUTE));
        let _: () = conn
            .set(
                &checks[0].key,
                old,
                Some(fred::types::Expiration::PX(HOUR as i64)),
                None,
                false,
            )
            .await
            .unwrap();
        assert_eq!(
            spend(&redis, &checks, T0, 1).await,
            (vec![true], 2),
            "{name}"
        );
        let (pttl, _) = stored(&server, &checks).await;
        assert!(pttl <= 2 * MINUTE as i64 + GRACE_MS, "{name}: PTTL {pttl}");
    }
    server.assert_every_key_has_ttl().await;
}

/// Runs the decide script directly in `mode` for one key at `now_ms`, as RedisStore would, and
/// returns its reply.
async fn script(
    conn: &fred::prelude::Client,
    key: &str,
    now_ms: u64,
    mode: &str,
    policy: &Policy,
    receipt: i64,
) -> Vec<i64> {
    support::policies::script(conn, key, now_ms * 1000, mode, policy, receipt as u64).await
}

/// A refund whose receipt is from another shape gives nothing back: the value written since
/// under the new shape holds none of the refunded cost, though for the windows its start is the
/// receipt's.
#[tokio::test]
async fn a_refund_across_a_shape_change_does_nothing() {
    let server = RedisServer::start().await;
    let conn = server.client().await;
    for (old, new) in [
        (
            of(Algorithm::FixedWindow, 5, MINUTE),
            of(Algorithm::FixedWindow, 5, HOUR),
        ),
        (
            of(Algorithm::SlidingWindow, 5, MINUTE),
            of(Algorithm::SlidingWindow, 5, HOUR),
        ),
        (
            of(Algorithm::TokenBucket, 10, MINUTE),
            of(Algorithm::TokenBucket, 100, MINUTE),
        ),
    ] {
        let key = old.algorithm().as_str();
        let decided = script(&conn, key, T0, "decide", &old, 0).await;
        assert_eq!(decided[0], 1, "{key}");
        for _ in 0..2 {
            assert_eq!(
                script(&conn, key, T0, "decide", &new, 0).await[0],
                1,
                "{key}"
            );
        }
        let before: String = conn.get(key).await.unwrap();
        script(&conn, key, T0, "refund", &old, decided[4]).await;
        let after: String = conn.get(key).await.unwrap();
        assert_eq!(after, before, "{key}: the refund gave nothing back");
        // The same refund under the new shape does give back.
        let receipt = script(&conn, key, T0, "decide", &new, 0).await[4];
        script(&conn, key, T0, "refund", &new, receipt).await;
        let refunded: String = conn.get(key).await.unwrap();
        assert_eq!(
            refunded, before,
            "{key}: the new shape's refund gave its cost back"
        );
    }
    server.assert_every_key_has_ttl().await;
}
