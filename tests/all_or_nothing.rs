//! End to end over TCP, all-or-nothing across a request's policies: each consumes only what was
//! admitted, a denial by one is refunded by the others across hash tags (checked in Redis), and
//! a denied request creates no key.
//!
//! No window boundary falls inside a test: fixed and sliding windows are [`NO_BOUNDARY`] long,
//! and token buckets refill far less than one token during a test.

#[macro_use]
mod support;

use support::policies::{consumed, key, key_of, no_boundary_secs, quotas, remaining, set};
use support::{admitted_of, Backend, RedisServer, TestApp, NO_BOUNDARY};

/// 200 concurrent requests against one user's limits of 50 and 30: each consumed what was admitted.
async fn two_policies_consume_only_what_was_admitted(store: &Backend, algorithm: &str) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "wide"
algorithm = "{algorithm}"
limit = 50
window = "{NO_BOUNDARY}"
[[policies]]
name = "narrow"
algorithm = "{algorithm}"
limit = 30
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let admitted = admitted_of(&app, &reqwest::Client::new(), "pair", 200).await as u64;
    assert_eq!(admitted, 30);

    let client = reqwest::Client::new();
    let after = app.get_user(&client, "pair").await;
    assert_eq!(after.status(), 429);
    assert_eq!(remaining(&after), quotas(&[("wide", 20), ("narrow", 0)]));
    if let Some(redis) = store.server() {
        let window_ms = no_boundary_secs() * 1000;
        let wide = consumed(redis, &key_of("pair", "wide"), algorithm, 50, window_ms).await;
        let narrow = consumed(redis, &key_of("pair", "narrow"), algorithm, 30, window_ms).await;
        assert_eq!((wide, narrow), (admitted, admitted));
    }
}
for_each_algorithm!(two_policies_consume_only_what_was_admitted);

/// Across hash tags, every global denial is refunded per user: each count equals what was admitted.
async fn a_global_denial_is_refunded_per_user(store: &Backend, algorithm: &str) {
    // Without the denial cache: a cached denial repeats the headers of the store's
    // denial it copies, which, across hash tags, may have seen a concurrent request's cost not
    // yet refunded. The request after the burst must ask the store.
    let app = store
        .app(&format!(
            r#"
denial_cache = false
[[policies]]
name = "mine"
algorithm = "{algorithm}"
limit = 50
window = "{NO_BOUNDARY}"
by = "user"
[[policies]]
name = "everyone"
algorithm = "{algorithm}"
limit = 30
window = "{NO_BOUNDARY}"
by = "global"
"#
        ))
        .await;
    let admitted = admitted_of(&app, &reqwest::Client::new(), "solo", 200).await as u64;
    assert_eq!(admitted, 30);

    let client = reqwest::Client::new();
    let after = app.get_user(&client, "solo").await;
    assert_eq!(after.status(), 429);
    assert_eq!(remaining(&after), quotas(&[("mine", 20), ("everyone", 0)]));
    if let Some(redis) = store.server() {
        let window_ms = no_boundary_secs() * 1000;
        let mine_key = key_of("solo", "mine");
        let global_key = key("global", "everyone");
        assert_eq!(
            store.keys().await,
            set(&[mine_key.clone(), global_key.clone()])
        );
        let mine = consumed(redis, &mine_key, algorithm, 50, window_ms).await;
        let everyone = consumed(redis, &global_key, algorithm, 30, window_ms).await;
        assert_eq!((mine, everyone), (admitted, admitted));
    }
}
for_each_algorithm!(a_global_denial_is_refunded_per_user);

/// Across hash tags, a per-user denial decided after a global policy is refunded globally.
async fn a_user_denial_is_refunded_globally(store: &Backend, algorithm: &str) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "everyone"
algorithm = "{algorithm}"
limit = 10
window = "{NO_BOUNDARY}"
by = "global"
[[policies]]
name = "mine"
algorithm = "{algorithm}"
limit = 2
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        assert_eq!(app.get_user(&client, "ann").await.status(), 200);
    }
    for _ in 0..5 {
        let denied = app.get_user(&client, "ann").await;
        assert_eq!(denied.status(), 429);
        assert_eq!(remaining(&denied), quotas(&[("everyone", 8), ("mine", 0)]));
    }
    let bob = app.get_user(&client, "bob").await;
    assert_eq!(bob.status(), 200);
    assert_eq!(remaining(&bob), quotas(&[("everyone", 7), ("mine", 1)]));
    if let Some(redis) = store.server() {
        let window_ms = no_boundary_secs() * 1000;
        let everyone = consumed(redis, &key("global", "everyone"), algorithm, 10, window_ms).await;
        assert_eq!(everyone, 3);
    }
}
for_each_algorithm!(a_user_denial_is_refunded_globally);

/// On a single Redis, a request's policies are decided in one EVALSHA whatever they are keyed
/// by, so 100 fresh users from an address over its limit get 100 429s, cost 100 calls, and
/// leave no key behind: the key count does not grow.
#[tokio::test]
async fn denied_requests_create_no_key() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_toml(&format!(
        "{}\n[redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"10s\"\n",
        support::user_then_address(2),
        redis.url()
    ))
    .await;
    let client = reqwest::Client::new();
    let before = redis.evalsha_calls().await;
    for user in ["first", "second"] {
        assert_eq!(app.get_user(&client, user).await.status(), 200);
    }
    let admitting = redis.evalsha_calls().await - before;
    let keys = redis.keys().await.len();
    assert_eq!(keys, 2 * 3 + 1, "three per user, one for the address");

    let before = redis.evalsha_calls().await;
    for n in 0..100 {
        let response = app.get_user(&client, &format!("fresh-{n}")).await;
        assert_eq!(response.status(), 429, "fresh-{n}");
    }
    let denying = redis.evalsha_calls().await - before;
    assert_eq!(
        redis.keys().await.len(),
        keys,
        "denied requests created keys"
    );
    assert_eq!((admitting, denying), (2, 100), "one call a request");
    redis.assert_every_key_has_ttl().await;
}
