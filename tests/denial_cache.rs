//! The denial cache: a hot caller's denials cost no Redis command until its retry time.

mod support;

use std::time::{Duration, Instant};

use support::{header, RedisServer, TestApp};

async fn app(redis: &RedisServer, limit: u64, window: &str, cache: bool) -> TestApp {
    let toml = support::redis_toml(redis, limit, window, "deny");
    TestApp::with_toml(&format!("denial_cache = {cache}\n{toml}")).await
}

/// Once Redis has denied a caller, its further requests are denied with zero Redis commands,
/// with the same 429 and headers; without the cache each costs an EVALSHA.
#[tokio::test]
async fn cached_denials_cost_no_redis_command() {
    let redis = RedisServer::start().await;
    let client = reqwest::Client::new();
    for (cache, expected_calls) in [(true, 0), (false, 50)] {
        let app = app(&redis, 2, support::NO_BOUNDARY, cache).await;
        let user = format!("hot-{cache}");
        for _ in 0..3 {
            app.get_user(&client, &user).await;
        }
        let before = redis.evalsha_calls().await;
        for _ in 0..50 {
            let denied = app.get_user(&client, &user).await;
            assert_eq!(denied.status(), 429);
            assert_eq!(header(&denied, "x-ratelimit-remaining"), "0");
            assert!(header(&denied, "ratelimit").starts_with("\"per_minute\";r=0;t="));
            assert!(header(&denied, "retry-after").parse::<u64>().unwrap() >= 1);
        }
        let calls = redis.evalsha_calls().await - before;
        assert_eq!(calls, expected_calls, "denial_cache = {cache}");
    }
    redis.assert_every_key_has_ttl().await;
}

/// A cached denial's Retry-After counts down, and the caller is admitted again as soon as the
/// window turns: the cache never outlives the store's retry time.
#[tokio::test]
async fn the_caller_is_admitted_right_after_the_reset() {
    let redis = RedisServer::start().await;
    let app = app(&redis, 1, "2s", true).await;
    let client = reqwest::Client::new();
    // Start just after a window turns, so the whole test fits in one window and the next.
    let deadline = Instant::now() + Duration::from_secs(5);
    let started = loop {
        let first = app.get_user(&client, "edge").await;
        if first.status() == 200 && header(&first, "x-ratelimit-reset") == "2" {
            break Instant::now();
        }
        assert!(started_ok(&first), "unexpected {}", first.status());
        assert!(Instant::now() < deadline, "no fresh window in 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let denied = app.get_user(&client, "edge").await;
    assert_eq!(denied.status(), 429);
    let wait: u64 = header(&denied, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&wait));
    // Poll until admitted: it must happen once the window ends, within a short slack.
    loop {
        let response = app.get_user(&client, "edge").await;
        if response.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still denied after the window"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "admitted too early"
    );
}

fn started_ok(response: &reqwest::Response) -> bool {
    matches!(response.status().as_u16(), 200 | 429)
}

/// A changed limit takes effect at once: an instance started with a higher limit admits a
/// caller whom the old instance still denies from its cache, counting on from Redis's count.
#[tokio::test]
async fn a_changed_limit_takes_effect_at_once() {
    let redis = RedisServer::start().await;
    let client = reqwest::Client::new();
    let old = app(&redis, 2, support::NO_BOUNDARY, true).await;
    for _ in 0..2 {
        assert_eq!(old.get_user(&client, "grown").await.status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(old.get_user(&client, "grown").await.status(), 429);
    }
    let before = redis.evalsha_calls().await;
    let raised = app(&redis, 5, support::NO_BOUNDARY, true).await;
    let admitted = raised.get_user(&client, "grown").await;
    assert_eq!(admitted.status(), 200);
    assert_eq!(header(&admitted, "x-ratelimit-remaining"), "2");
    assert_eq!(redis.evalsha_calls().await - before, 1);
    // The old instance's cached denial stands under its own, unchanged limit.
    assert_eq!(old.get_user(&client, "grown").await.status(), 429);
    assert_eq!(redis.evalsha_calls().await - before, 1);
    redis.assert_every_key_has_ttl().await;
}

/// A caller whose name is too long for the cache's key bound is still denied, by Redis each
/// time: long names cannot inflate the cache, and limiting does not depend on it.
#[tokio::test]
async fn a_caller_with_a_very_long_name_is_denied_by_redis_each_time() {
    let redis = RedisServer::start().await;
    let client = reqwest::Client::new();
    let app = app(&redis, 2, support::NO_BOUNDARY, true).await;
    // A thousand bytes: past the bound (512), far below any header size limit.
    let long = "x".repeat(1_000);
    for _ in 0..2 {
        assert_eq!(app.get_user(&client, &long).await.status(), 200);
    }
    let before = redis.evalsha_calls().await;
    for _ in 0..5 {
        assert_eq!(app.get_user(&client, &long).await.status(), 429);
    }
    assert_eq!(redis.evalsha_calls().await - before, 5);
    redis.assert_every_key_has_ttl().await;
}
