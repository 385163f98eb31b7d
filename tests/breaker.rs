//! The circuit breaker, the local failure mode and the metrics, against a Redis that stops.

mod support;

use support::{header, RedisServer, TestApp};

/// A service on `redis` with `extra` TOML inside `[redis]`, and one policy of `limit` per user.
async fn app(redis: &RedisServer, extra: &str, limit: u64) -> TestApp {
    TestApp::with_toml(&format!(
        r#"
[redis]
url = "{}"
{extra}

[[policies]]
name = "per_user"
limit = {limit}
window = "{}"
"#,
        redis.url(),
        support::NO_BOUNDARY
    ))
    .await
}

/// After `breaker_failures` failures the breaker opens: later requests are decided by the
/// failure mode without asking the store (its call count stops); once Redis is back, a probe
/// closes it and limiting resumes.
#[tokio::test]
async fn the_breaker_opens_skips_the_store_and_closes() {
    let mut redis = RedisServer::start().await;
    let app = app(
        &redis,
        "on_error = \"allow\"\nbreaker_failures = 3\nbreaker_cool_down = \"300ms\"",
        100,
    )
    .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "ann").await.status(), 200);
    redis.stop();
    for _ in 0..3 {
        assert_eq!(app.get_user(&client, "ann").await.status(), 200);
    }
    let opened = r#"tollgate_breaker_state{state="open"}"#;
    assert_eq!(app.metric(opened).await, 1.0);
    let calls = "tollgate_store_latency_seconds_count";
    let before = app.metric(calls).await;
    for _ in 0..20 {
        let response = app.get_user(&client, "ann").await;
        assert_eq!(response.status(), 200, "allow decides");
        assert!(response.headers().get("ratelimit").is_none());
    }
    assert!(
        app.metric(calls).await <= before + 1.0,
        "while open, the store is skipped (one probe at most)"
    );
    let ready = client.get(app.url("/readyz")).send().await.unwrap();
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_ne!(body["breaker"], "closed", "{body}");

    redis.restart().await;
    let started = std::time::Instant::now();
    loop {
        let response = app.get_user(&client, "bob").await;
        if response.headers().contains_key("ratelimit") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let closed = r#"tollgate_breaker_state{state="closed"}"#;
    assert_eq!(app.metric(closed).await, 1.0);
    let probes = r#"tollgate_breaker_transitions_total{to="half_open"}"#;
    assert!(app.metric(probes).await >= 1.0);
    redis.assert_every_key_has_ttl().await;
}

/// Under `on_error = "local"` a stopped Redis still limits, per instance, with the limit divided
/// by `local_divisor`, and the responses say they were decided locally.
#[tokio::test]
async fn local_mode_still_limits_while_redis_is_out() {
    let mut redis = RedisServer::start().await;
    let app = app(&redis, "on_error = \"local\"\nlocal_divisor = 3", 9).await;
    let client = reqwest::Client::new();
    redis.stop();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = app.get_user(&client, "lou").await;
        assert_eq!(header(&response, "x-ratelimit-degraded"), "local");
        assert_eq!(
            header(&response, "x-ratelimit-limit"),
            "3",
            "9 / 3 instances"
        );
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let local = r#"tollgate_degraded_total{on_error="local"}"#;
    assert_eq!(app.metric(local).await, 4.0);
}

/// `X-RateLimit-Degraded` goes where the quota headers go: under `headers = "denials"` on the
/// local decision's denial only, and under `headers = "retry_after"` nowhere.
#[tokio::test]
async fn the_degraded_mark_follows_the_header_mode() {
    let mut redis = RedisServer::start().await;
    let toml = |mode: &str| {
        format!(
            "headers = \"{mode}\"\n[redis]\nurl = \"{}\"\non_error = \"local\"\n\
             [[policies]]\nname = \"per_user\"\nlimit = 1\nwindow = \"{}\"\n",
            redis.url(),
            support::NO_BOUNDARY
        )
    };
    let denials = TestApp::with_toml(&toml("denials")).await;
    let retry_after = TestApp::with_toml(&toml("retry_after")).await;
    redis.stop();
    let client = reqwest::Client::new();
    for (app, marked) in [(&denials, [false, true]), (&retry_after, [false, false])] {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let response = app.get_user(&client, "lou").await;
            seen.push((
                response.status().as_u16(),
                response.headers().contains_key("x-ratelimit-degraded"),
            ));
        }
        assert_eq!(seen, [(200, marked[0]), (429, marked[1])]);
    }
}

/// Decisions are counted by policy and outcome, and no caller's name appears in the metrics.
#[tokio::test]
async fn metrics_count_decisions_without_naming_callers() {
    let redis = RedisServer::start().await;
    let app = app(&redis, "", 2).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        app.get_user(&client, "secret-user-7").await;
    }
    let allowed = r#"tollgate_decisions_total{policy="per_user",outcome="allowed"}"#;
    let denied = r#"tollgate_decisions_total{policy="per_user",outcome="denied"}"#;
    let caused = r#"tollgate_denials_total{policy="per_user"}"#;
    assert_eq!(app.metric(allowed).await, 2.0);
    assert_eq!(app.metric(denied).await, 1.0);
    assert_eq!(app.metric(caused).await, 1.0);
    assert_eq!(
        app.metric("tollgate_store_latency_seconds_count").await,
        3.0
    );
    assert!(!app.metrics().await.contains("secret-user-7"));
    let limited = client
        .get(app.url("/metrics"))
        .header("x-user", "secret-user-7")
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 200, "/metrics is not limited");
}
