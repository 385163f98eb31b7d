//! `tollgate reset`: a caller's counts deleted in a real Redis, and every running instance's
//! cached denials forgotten within a second; one policy alone; the binary's refusals.

mod support;

use support::config::{text, Dir};
use support::{settings, until_not_refused, RedisServer, TestApp, NO_BOUNDARY};
use tollgate::command::CommandError;
use tollgate::inspect::inspect;
use tollgate::reset::{reset, WATCH_EVERY};

/// 3 per user in a fixed window, and a token bucket of 10.
fn toml(redis: &RedisServer) -> String {
    format!(
        r#"
[redis]
url = "{url}"
timeout = "2s"

[[policies]]
name = "per_user"
limit = 3
window = "{NO_BOUNDARY}"

[[policies]]
name = "bucket"
algorithm = "token_bucket"
limit = 10
window = "{NO_BOUNDARY}"
"#,
        url = redis.url()
    )
}

/// What each policy has left for `user`, in order, as `tollgate inspect` reads it.
async fn remaining(settings: &tollgate::Settings, user: &str) -> Vec<u64> {
    let report = inspect(settings, user, None, None).await.unwrap();
    report.standings.iter().map(|(_, s)| s.remaining).collect()
}

/// The statuses of `n` requests from `user` to `app`.
async fn statuses(app: &TestApp, client: &reqwest::Client, user: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(app.get_user(client, user).await.status().as_u16());
    }
    statuses
}

/// Two instances share a Redis, and each has joe's denial cached. After a reset, each admits
/// joe again within a second and a half (the watch reads the marker twice a second), then
/// exactly his limit, as a fresh caller; every key, the marker included, has a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_reaches_every_instance_within_a_second() {
    let redis = RedisServer::start().await;
    let toml = toml(&redis);
    let apps = [
        TestApp::with_toml(&toml).await,
        TestApp::with_toml(&toml).await,
    ];
    let client = reqwest::Client::new();
    assert_eq!(
        statuses(&apps[0], &client, "joe", 4).await,
        [200, 200, 200, 429]
    );
    for app in &apps {
        assert_eq!(statuses(app, &client, "joe", 2).await, [429, 429]);
        assert!(app.metric("tollgate_cached_denials_total").await >= 1.0);
    }
    let report = reset(&settings(&toml), "joe", None, None, None)
        .await
        .unwrap();
    let reset_policies: Vec<(&str, bool)> = report
        .reset
        .iter()
        .map(|(policy, _, deleted)| (policy.as_str(), *deleted))
        .collect();
    assert_eq!(reset_policies, [("per_user", true), ("bucket", true)]);
    for app in &apps {
        let joe = || async { app.get_user(&client, "joe").await.status().as_u16() };
        until_not_refused(WATCH_EVERY * 3, joe).await;
    }
    // Each instance admitted one request above; one more, then the limit holds again.
    assert_eq!(statuses(&apps[0], &client, "joe", 2).await, [200, 429]);
    redis.assert_every_key_has_ttl().await;
}

/// `--policy` resets that policy's count alone; a name no policy has is refused, naming the
/// policies, and nothing is reset.
#[tokio::test]
async fn one_policy_alone() {
    let redis = RedisServer::start().await;
    let toml = toml(&redis);
    let app = TestApp::with_toml(&toml).await;
    let client = reqwest::Client::new();
    assert_eq!(
        statuses(&app, &client, "joe", 4).await,
        [200, 200, 200, 429]
    );
    let settings = settings(&toml);
    let error = reset(&settings, "joe", None, None, Some("per_usr"))
        .await
        .unwrap_err();
    assert!(matches!(error, CommandError::NoSuchPolicy(..)), "{error}");
    assert!(error.to_string().contains("per_user, bucket"), "{error}");
    let report = reset(&settings, "joe", None, None, Some("per_user"))
        .await
        .unwrap();
    assert_eq!(report.reset.len(), 1);
    let remaining = remaining(&settings, "joe").await;
    assert_eq!(remaining, [3, 7], "the bucket kept what joe spent");
    // A caller with nothing counted is reset all the same, and says so.
    let report = reset(&settings, "ann", None, None, None).await.unwrap();
    assert!(report.reset.iter().all(|(_, _, deleted)| !deleted));
    assert!(report
        .to_string()
        .contains("per_user: had nothing to reset"));
}

/// The binary prints what it did; over the memory store it refuses and exits 2.
#[tokio::test]
async fn the_binary_says_what_it_did() {
    let redis = RedisServer::start().await;
    let dir = Dir::new().file("tollgate.toml", &toml(&redis));
    let output = dir.run(&["reset", "joe"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with("per_user: had nothing to reset (tollgate:{"),
        "{stdout}"
    );
    assert!(stdout.ends_with("running instances forget their cached denials within a second\n"));
    let output = dir.run(&["reset", "joe", "--policy", "nope"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));

    let memory = Dir::new().file(
        "tollgate.toml",
        "[[policies]]\nname = \"p\"\nlimit = 3\nwindow = \"1m\"\n",
    );
    let output = memory.run(&["reset", "joe"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("set redis.url"));
}

/// Resetting one caller leaves what everyone shares alone: a policy keyed by `global` counts
/// every caller in one bucket, which is no one caller's to give back.
#[tokio::test]
async fn a_reset_leaves_the_global_count_alone() {
    let redis = RedisServer::start().await;
    let toml = format!(
        r#"
[redis]
url = "{url}"
timeout = "2s"

[[policies]]
name = "everyone"
limit = 5
window = "{NO_BOUNDARY}"
by = "global"
"#,
        url = redis.url()
    );
    let app = TestApp::with_toml(&toml).await;
    let client = reqwest::Client::new();
    assert_eq!(statuses(&app, &client, "ann", 4).await, [200; 4]);
    assert_eq!(statuses(&app, &client, "joe", 1).await, [200]);
    let settings = settings(&toml);
    // The one policy is everyone's, so there is nothing of joe's own to reset: said, not done.
    let error = reset(&settings, "joe", None, None, None).await.unwrap_err();
    assert!(
        matches!(&error, CommandError::NothingKeyed(why) if why.contains("everyone is shared by every caller")),
        "{error}"
    );
    let remaining = remaining(&settings, "ann").await;
    assert_eq!(
        remaining,
        [0],
        "ann's four and joe's one still count for everyone"
    );
}

/// A reset made before an instance's first successful read of the marker still reaches it:
/// the instance may already hold denials then (its first read failed, here because the marker
/// has the wrong type, as it fails while Redis is slow or not yet up at startup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_reaches_an_instance_whose_first_read_failed() {
    let redis = RedisServer::start().await;
    let toml = toml(&redis);
    // The first reads fail: GET of a hash is refused.
    redis
        .command(&["HSET", "tollgate:resets", "f", "v"])
        .await
        .unwrap();
    let app = TestApp::with_toml(&toml).await;
    let client = reqwest::Client::new();
    assert_eq!(
        statuses(&app, &client, "joe", 4).await,
        [200, 200, 200, 429]
    );
    assert_eq!(statuses(&app, &client, "joe", 1).await, [429]);
    assert!(app.metric("tollgate_cached_denials_total").await >= 1.0);
    // Let the watch fail at least once more, then reset (its SET replaces the hash).
    tokio::time::sleep(WATCH_EVERY * 2).await;
    reset(&settings(&toml), "joe", None, None, None)
        .await
        .unwrap();
    let joe = || async { app.get_user(&client, "joe").await.status().as_u16() };
    until_not_refused(WATCH_EVERY * 4, joe).await;
}

/// `--policy` naming a policy keyed by address, without `--ip`, resets nothing: the command
/// must not report success (nor tell every instance to drop its cache) for it.
#[tokio::test]
async fn one_policy_that_cannot_be_keyed_is_a_failure() {
    let redis = RedisServer::start().await;
    let dir = Dir::new().file(
        "tollgate.toml",
        &format!(
            "{}\n[[policies]]\nname = \"per_ip\"\nlimit = 5\nwindow = \"1m\"\nby = \"ip\"\n",
            toml(&redis)
        ),
    );
    let output = dir.run(&["reset", "joe", "--policy", "per_ip"], &[]);
    assert!(
        text(&output.stderr).contains("per_ip"),
        "{}",
        text(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "nothing was reset, yet: {}",
        text(&output.stdout)
    );
}

/// A program that embeds the layer over `setup::limiter`, as docs/configuration.md shows, is a
/// running instance too: a reset reaches its cached denials within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_reaches_a_limiter_built_by_setup() {
    use axum::routing::get;
    use std::sync::Arc;
    let redis = RedisServer::start().await;
    let toml = toml(&redis);
    let settings = settings(&toml);
    let limiter = tollgate::setup::limiter(&settings).await.unwrap();
    let layer =
        tollgate::RateLimitLayer::new(Arc::new(limiter)).identity(settings.identity.clone());
    let app: axum::Router =
        axum::Router::new().route("/user", get(|| async { "hello" }).route_layer(layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/user", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::new();
    let status = || async {
        let answer = client.get(&url).header("x-user", "joe").send().await;
        answer.unwrap().status().as_u16()
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(status().await);
    }
    assert_eq!(seen, [200, 200, 200, 429, 429]);
    reset(&settings, "joe", None, None, None).await.unwrap();
    until_not_refused(WATCH_EVERY * 4, status).await;
}
