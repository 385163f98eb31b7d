//! Atomicity under concurrency, over real HTTP against a real Redis.

mod support;

use std::sync::Arc;

use fred::prelude::{ClientLike, KeysInterface};
use support::{admitted_of, RedisServer, TestApp};
use tokio::task::JoinSet;

/// 200 concurrent requests from one user against a limit of 50 admit exactly 50, and the key
/// then holds 50 with a TTL in (0, window].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_admit_exactly_the_limit() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_toml(&support::redis_toml_with_timeout(
        &redis,
        50,
        support::NO_BOUNDARY,
        "deny",
        "10s",
    ))
    .await;
    let client = reqwest::Client::new();

    assert_eq!(admitted_of(&app, &client, "crowd", 200).await, 50);

    let keys = redis.keys().await;
    assert_eq!(keys.len(), 1);
    let conn = redis.client().await;
    let value: String = conn.get(&keys[0]).await.unwrap();
    assert!(value.starts_with("50:"), "the key holds {value}");
    let pttl: i64 = conn.pttl(&keys[0]).await.unwrap();
    assert!(pttl > 0 && pttl <= 30_000 * 86_400_000, "PTTL {pttl}");
    redis.assert_every_key_has_ttl().await;
}

/// With `redis.connections = 4`, the service opens four connections and decisions spread over
/// them stay exact: 200 concurrent requests against a limit of 50 admit exactly 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_connections_admit_exactly_the_limit() {
    let redis = RedisServer::start().await;
    let conn = redis.client().await;
    let clients = || async {
        let list: String = conn
            .custom(
                fred::types::CustomCommand::new_static("CLIENT", None, false),
                vec!["LIST"],
            )
            .await
            .unwrap();
        list.lines().count()
    };
    let before = clients().await;
    let toml = support::redis_toml_with_timeout(&redis, 50, support::NO_BOUNDARY, "deny", "10s")
        .replacen("[redis]\n", "[redis]\nconnections = 4\n", 1);
    assert!(toml.contains("connections = 4"), "{toml}");
    let app = TestApp::with_toml(&toml).await;

    assert_eq!(clients().await - before, 4);
    assert_eq!(
        admitted_of(&app, &reqwest::Client::new(), "crowd", 200).await,
        50
    );
    redis.assert_every_key_has_ttl().await;
}

/// 1,000 users each sending limit+1 requests at once are each admitted exactly `limit` times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_each_get_exactly_their_limit() {
    const USERS: usize = 1_000;
    const LIMIT: usize = 3;
    let redis = RedisServer::start().await;
    let app = Arc::new(
        TestApp::with_toml(&support::redis_toml_with_timeout(
            &redis,
            3,
            support::NO_BOUNDARY,
            "deny",
            "10s",
        ))
        .await,
    );
    let client = reqwest::Client::new();

    let mut users = JoinSet::new();
    for user in 0..USERS {
        let (app, client) = (app.clone(), client.clone());
        users.spawn(async move {
            let admitted = admitted_of(&app, &client, &format!("user-{user}"), LIMIT + 1).await;
            (user, admitted)
        });
    }
    while let Some(result) = users.join_next().await {
        let (user, admitted) = result.unwrap();
        assert_eq!(admitted, LIMIT, "user-{user} was admitted {admitted} times");
    }
    assert_eq!(redis.keys().await.len(), USERS);
    redis.assert_every_key_has_ttl().await;
}

/// Two services sharing one Redis share the limit: their admitted total equals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_limit() {
    let redis = RedisServer::start().await;
    let toml = support::redis_toml_with_timeout(&redis, 10, support::NO_BOUNDARY, "deny", "10s");
    let (a, b) = (
        TestApp::with_toml(&toml).await,
        TestApp::with_toml(&toml).await,
    );
    let client = reqwest::Client::new();

    let (from_a, from_b) = tokio::join!(
        admitted_of(&a, &client, "shared", 15),
        admitted_of(&b, &client, "shared", 15)
    );
    assert_eq!(
        from_a + from_b,
        10,
        "a admitted {from_a}, b admitted {from_b}"
    );
    redis.assert_every_key_has_ttl().await;
}
