//! What `/readyz` and the error metrics say when Redis cannot take a decision's write: out of
//! memory, a read-only replica, an open breaker, a refused connection.

mod support;

use std::time::{Duration, Instant};

use support::{RedisServer, TestApp};

/// A service on `redis` with `extra` TOML inside `[redis]`, one policy per user, and
/// `on_error = "deny"` unless `extra` says otherwise.
async fn app(redis: &RedisServer, extra: &str) -> TestApp {
    let on_error = if extra.contains("on_error") {
        ""
    } else {
        "on_error = \"deny\"\n"
    };
    TestApp::with_toml(&format!(
        "[redis]\nurl = \"{}\"\n{on_error}{extra}\n\n[[policies]]\nname = \"per_user\"\nlimit = 100\nwindow = \"{}\"\n",
        redis.url(),
        support::NO_BOUNDARY
    ))
    .await
}

/// `GET /readyz`: its status and its JSON body.
async fn readyz(app: &TestApp) -> (u16, serde_json::Value) {
    let response = reqwest::get(app.url("/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A Redis at `maxmemory` under `noeviction` refuses every write: `/readyz` answers 503 naming
/// OOM (decisions fail alike), and 200 again once there is room; the probe leaves no key.
#[tokio::test]
async fn readyz_is_503_when_redis_is_out_of_memory() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]).await;
    let app = app(&redis, "").await;
    let client = reqwest::Client::new();
    assert_eq!(readyz(&app).await.0, 200);
    assert_eq!(app.get_user(&client, "ann").await.status(), 200);

    // 2 MB of data, then a limit 512 KB below what Redis uses: full by the data alone, not by
    // a passing client's buffers, which come and go.
    let filler = "x".repeat(64 * 1024);
    let fillers = 32;
    for n in 0..fillers {
        let key = format!("filler:{n}");
        redis
            .command(&["SET", &key, &filler, "PX", "600000"])
            .await
            .unwrap();
    }
    let info = redis.command(&["INFO", "memory"]).await.unwrap();
    let used: u64 = info
        .as_string()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:")?.trim().parse().ok())
        .expect("INFO memory names used_memory");
    let limit = (used - 512 * 1024).to_string();
    redis
        .command(&["CONFIG", "SET", "maxmemory", &limit])
        .await
        .unwrap();
    let refused = redis.command(&["SET", "one:more", "1", "PX", "1000"]).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("OOM")),
        "{refused:?}"
    );

    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("OOM"), "{reason}");
    assert_eq!(app.get_user(&client, "bob").await.status(), 503);
    let refused = r#"tollgate_store_errors_total{kind="redis"}"#;
    assert_eq!(app.metric(refused).await, 1.0, "the decision failed loudly");

    redis
        .command(&["CONFIG", "SET", "maxmemory", "0"])
        .await
        .unwrap();
    assert_eq!(readyz(&app).await.0, 200);
    for n in 0..fillers {
        redis
            .command(&["DEL", &format!("filler:{n}")])
            .await
            .unwrap();
    }
    redis.assert_every_key_has_ttl().await;
}

/// A read-only replica refuses every write: `/readyz` answers 503 naming READONLY, and 200 again
/// once it is a primary.
#[tokio::test]
async fn readyz_is_503_on_a_read_only_replica() {
    let primary = RedisServer::start().await;
    let replica = RedisServer::start().await;
    let app = app(&replica, "").await;
    let client = reqwest::Client::new();
    assert_eq!(readyz(&app).await.0, 200);

    replica
        .command(&["CONFIG", "SET", "replica-read-only", "yes"])
        .await
        .unwrap();
    let port = primary.port().to_string();
    replica
        .command(&["REPLICAOF", "127.0.0.1", &port])
        .await
        .unwrap();
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("READONLY"), "{reason}");
    assert_eq!(app.get_user(&client, "ann").await.status(), 503);

    replica.command(&["REPLICAOF", "NO", "ONE"]).await.unwrap();
    assert_eq!(readyz(&app).await.0, 200);
    replica.assert_every_key_has_ttl().await;
}

/// While the breaker is open `/readyz` answers 503 naming it, even with Redis back; once the
/// cool-down is over, `/readyz` is the breaker's probe and closes it, with no request sent.
#[tokio::test]
async fn readyz_is_503_while_the_breaker_is_open() {
    let mut redis = RedisServer::start().await;
    let extra = "on_error = \"allow\"\nbreaker_failures = 2\nbreaker_cool_down = \"3s\"";
    let app = app(&redis, extra).await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "ann").await.status(), 200);
    redis.stop();
    for _ in 0..2 {
        assert_eq!(app.get_user(&client, "ann").await.status(), 200);
    }
    assert_eq!(
        app.metric(r#"tollgate_breaker_state{state="open"}"#).await,
        1.0
    );
    redis.restart().await;

    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["breaker"], "open", "{body}");
    assert_eq!(
        body["reason"],
        "the circuit breaker is open: redis.on_error decides without asking the store"
    );

    let started = Instant::now();
    loop {
        let (status, body) = readyz(&app).await;
        if status == 200 {
            assert_eq!(body["breaker"], "closed", "{body}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not ready 10 s after Redis came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.assert_every_key_has_ttl().await;
}

/// A decision that fails because Redis refuses connections is counted as
/// `kind="connection"`, not as a timeout, although the client queued it until its deadline.
#[tokio::test]
async fn a_refused_connection_is_counted_as_a_connection_error() {
    let mut redis = RedisServer::start().await;
    let app = app(&redis, "on_error = \"allow\"\nbreaker_failures = 10").await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "ann").await.status(), 200);
    redis.stop();
    // The client has seen the refusal once `/readyz` names it.
    let started = Instant::now();
    loop {
        let (_, body) = readyz(&app).await;
        if body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no refusal seen: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        assert_eq!(app.get_user(&client, "ann").await.status(), 200);
    }
    let kind = |kind: &str| format!("tollgate_store_errors_total{{kind=\"{kind}\"}}");
    assert_eq!(app.metric(&kind("connection")).await, 3.0);
    assert_eq!(app.metric(&kind("timeout")).await, 0.0);
}
