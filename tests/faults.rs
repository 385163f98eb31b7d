//! Redis failures as callers see them: NOSCRIPT, outages, restarts, stalls.

mod support;

use std::time::{Duration, Instant};

use fred::prelude::*;
use support::{header, RedisServer, TestApp};

/// Polls `GET /user` as `user` until the answer carries rate-limit headers, i.e. Redis decided
/// again; returns how long that took, or panics after `limit`: the client reconnects every
/// 100 ms, so 5 s fails only a store that never reconnects, not a slow machine.
async fn until_redis_decides(app: &TestApp, client: &reqwest::Client, user: &str) -> Duration {
    let started = Instant::now();
    let limit = Duration::from_secs(5);
    loop {
        let response = app.get_user(client, user).await;
        assert!(!response.status().is_server_error() || response.status() == 503);
        if response.headers().contains_key("ratelimit") {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "Redis still not deciding after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After SCRIPT FLUSH between requests the script is reloaded, decisions stay exact, and no 5xx
/// ever appears.
#[tokio::test]
async fn script_flush_between_requests_is_invisible() {
    let redis = RedisServer::start().await;
    // Without the denial cache, so that every request goes to Redis.
    let toml = support::redis_toml(&redis, 5, support::NO_BOUNDARY, "deny");
    let app = TestApp::with_toml(&format!("denial_cache = false\n{toml}")).await;
    let conn = redis.client().await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let _: () = conn.script_flush(false).await.unwrap();
        statuses.push(app.get_user(&client, "flushed").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let reloads = app.metric("tollgate_store_script_reloads_total").await;
    assert_eq!(reloads, 8.0, "every flush cost one reload");
    let calls = app.metric("tollgate_store_calls_total").await;
    assert_eq!(
        calls, 16.0,
        "each decision's EVALSHA was refused once, then sent again"
    );
    redis.assert_every_key_has_ttl().await;
}

/// Under `on_error = "allow"`, a stopped Redis lets requests pass and `/readyz` says 503; after a
/// restart on the same port, limiting resumes by itself, without restarting tollgate.
#[tokio::test]
async fn redis_restart_under_allow() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::with_toml(&support::redis_toml(
        &redis,
        3,
        support::NO_BOUNDARY,
        "allow",
    ))
    .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "ann").await.status(), 200);

    redis.stop();
    for _ in 0..5 {
        let response = app.get_user(&client, "ann").await;
        assert_eq!(response.status(), 200, "allow lets requests pass");
        assert!(!response.headers().contains_key("ratelimit"));
    }
    assert_readyz_unavailable(&app, &client).await;

    redis.restart().await;
    until_redis_decides(&app, &client, "carl").await;
    assert_limit_exact(&app, &client, "dora", 3).await;
    assert_eq!(
        client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    redis.assert_every_key_has_ttl().await;
}

/// Under `on_error = "deny"`, a stopped Redis turns requests into 503 with a JSON reason and
/// `Retry-After: 1`; after a restart, limiting resumes by itself.
#[tokio::test]
async fn redis_restart_under_deny() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::with_toml(&support::redis_toml(
        &redis,
        3,
        support::NO_BOUNDARY,
        "deny",
    ))
    .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "ann").await.status(), 200);

    redis.stop();
    for _ in 0..5 {
        let response = app.get_user(&client, "ann").await;
        assert_eq!(response.status(), 503);
        assert_eq!(header(&response, "retry-after"), "1");
        assert_eq!(header(&response, "content-type"), "application/json");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().contains("unavailable"));
    }
    let anonymous = client.get(app.url("/user")).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        200,
        "requests without a caller need no store"
    );
    assert_readyz_unavailable(&app, &client).await;

    redis.restart().await;
    until_redis_decides(&app, &client, "carl").await;
    assert_limit_exact(&app, &client, "dora", 3).await;
    redis.assert_every_key_has_ttl().await;
}

/// A Redis that is down when tollgate starts does not stop it from serving, and decisions begin
/// once Redis comes up.
#[tokio::test]
async fn redis_down_at_startup() {
    let mut redis = RedisServer::not_started();
    let app = TestApp::with_toml(&support::redis_toml(
        &redis,
        2,
        support::NO_BOUNDARY,
        "allow",
    ))
    .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "early").await.status(), 200);
    assert_readyz_unavailable(&app, &client).await;

    redis.restart().await;
    until_redis_decides(&app, &client, "late").await;
    assert_limit_exact(&app, &client, "later", 2).await;
    redis.assert_every_key_has_ttl().await;
}

/// A stalled Redis (CLIENT PAUSE) holds no request much past `redis.timeout`.
#[tokio::test]
async fn stalled_redis_is_cut_off_at_the_deadline() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_toml(&support::redis_toml(
        &redis,
        100,
        support::NO_BOUNDARY,
        "allow",
    ))
    .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "warm").await.status(), 200);

    let conn = redis.client().await;
    let _: () = conn
        .custom(
            fred::types::CustomCommand::new_static("CLIENT", None, false),
            vec!["PAUSE", "2000", "ALL"],
        )
        .await
        .unwrap();
    let started = Instant::now();
    let response = app.get_user(&client, "stalled").await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 200, "allow lets the request pass");
    assert!(!response.headers().contains_key("ratelimit"));
    // The pause lasts 2 s and the deadline is 100 ms: under 1.5 s shows the deadline ended the
    // wait, with room for a loaded debug build on two cores.
    assert!(waited < Duration::from_millis(1_500), "held for {waited:?}");

    let _: () = conn
        .custom(
            fred::types::CustomCommand::new_static("CLIENT", None, false),
            vec!["UNPAUSE"],
        )
        .await
        .unwrap();
    redis.assert_every_key_has_ttl().await;
}

async fn assert_readyz_unavailable(app: &TestApp, client: &reqwest::Client) {
    let ready = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let text = ready.text().await.unwrap();
    assert!(!text.contains('\n'), "one line: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(body["reason"].is_string(), "{body}");
}

/// `user` is admitted exactly `limit` times, then denied.
async fn assert_limit_exact(app: &TestApp, client: &reqwest::Client, user: &str, limit: usize) {
    let mut statuses = Vec::new();
    for _ in 0..=limit {
        statuses.push(app.get_user(client, user).await.status().as_u16());
    }
    let mut expected = vec![200; limit];
    expected.push(429);
    assert_eq!(statuses, expected, "{user}");
}
