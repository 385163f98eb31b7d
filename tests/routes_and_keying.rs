//! End to end over TCP, which requests a policy counts and in which bucket: its routes, and
//! `by` (`ip`, `global`, `["user", "route"]`).
//!
//! No window boundary falls inside a test: fixed and sliding windows are [`NO_BOUNDARY`] long,
//! and token buckets refill far less than one token during a test.

#[macro_use]
mod support;

use support::policies::{
    address_key, assert_unlimited, get, key, key_of, no_boundary_secs, quotas, remaining,
    route_rest, sha256_hex,
};
use support::{header, Backend, NO_BOUNDARY};

/// Policies whose routes match GET /user apply to it; others are neither listed nor counted.
async fn policies_apply_only_to_matching_routes(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "on_user"
limit = 2
window = "{NO_BOUNDARY}"
routes = ["GET /user"]
[[policies]]
name = "elsewhere"
limit = 1
window = "{NO_BOUNDARY}"
routes = ["/api/*", "POST /user", "GET /user/*", "/users"]
[[policies]]
name = "prefixed"
limit = 50
window = "{NO_BOUNDARY}"
routes = ["GET /*"]
[[policies]]
name = "everywhere"
limit = 100
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    let w = no_boundary_secs();
    let first = app.get_user(&client, "eve").await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "ratelimit-policy"),
        format!("\"on_user\";q=2;w={w}, \"prefixed\";q=50;w={w}, \"everywhere\";q=100;w={w}")
    );
    // "elsewhere" would deny this second request if it applied.
    let second = app.get_user(&client, "eve").await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        remaining(&second),
        quotas(&[("on_user", 0), ("prefixed", 48), ("everywhere", 98)])
    );
    let denied = app.get_user(&client, "eve").await;
    assert_eq!(denied.status(), 429);
    assert_eq!(header(&denied, "x-ratelimit-limit"), "2");
    let keys = ["on_user", "prefixed", "everywhere"].map(|p| key_of("eve", p));
    store.assert_keys(&keys).await;
}
on_both_stores!(policies_apply_only_to_matching_routes);

/// `by = "ip"`: every caller from one address shares a bucket, named or anonymous.
async fn by_ip_shares_a_bucket_across_users(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "per_ip"
limit = 2
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "a").await.status(), 200);
    assert_eq!(app.get_user(&client, "b").await.status(), 200);
    let denied = app.get_user(&client, "c").await;
    assert_eq!(denied.status(), 429);
    assert_eq!(remaining(&denied), quotas(&[("per_ip", 0)]));
    assert_eq!(get(&app, &client, &[]).await.status(), 429);
    store
        .assert_keys(&[address_key("127.0.0.1", "per_ip")])
        .await;
}
on_both_stores!(by_ip_shares_a_bucket_across_users);

/// `by = "global"`: everyone shares one bucket, named or anonymous.
async fn by_global_shares_one_bucket(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "everyone"
limit = 2
window = "{NO_BOUNDARY}"
by = "global"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "a").await.status(), 200);
    assert_eq!(get(&app, &client, &[]).await.status(), 200);
    let denied = app.get_user(&client, "c").await;
    assert_eq!(denied.status(), 429);
    assert_eq!(remaining(&denied), quotas(&[("everyone", 0)]));
    store.assert_keys(&[key("global", "everyone")]).await;
}
on_both_stores!(by_global_shares_one_bucket);

/// `by = ["user", "route"]`: one bucket per user and route, keyed under the user's hash tag.
async fn by_user_and_route_keys_each_user_per_route(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "per_route"
limit = 1
window = "{NO_BOUNDARY}"
by = ["user", "route"]
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "ann").await.status(), 200);
    assert_eq!(app.get_user(&client, "ann").await.status(), 429);
    assert_eq!(app.get_user(&client, "bob").await.status(), 200);
    for _ in 0..3 {
        let anonymous = get(&app, &client, &[]).await;
        assert_eq!(anonymous.status(), 200);
        assert_unlimited(&anonymous);
    }
    if store.server().is_some() {
        let narrowed = |user: &str| {
            let route = sha256_hex(&route_rest("/user"));
            format!("{}:{}", key_of(user, "per_route"), &route[..16])
        };
        store.assert_keys(&[narrowed("ann"), narrowed("bob")]).await;
    }
}
on_both_stores!(by_user_and_route_keys_each_user_per_route);

/// `by = "header:x-api-key"`: each API key has its own bucket, named like a user's (the key's
/// hash is its hash tag); a request without the header is not counted by that policy.
async fn a_header_names_the_bucket(store: &Backend) {
    let app = store
        .app(&format!(
            "[[policies]]\nname = \"per_key\"\nlimit = 2\nwindow = \"{NO_BOUNDARY}\"\nby = \"header:x-api-key\"\n"
        ))
        .await;
    let client = reqwest::Client::new();
    let with_key = |key: &'static str| [("x-api-key", key)];
    for left in [1, 0] {
        let response = get(&app, &client, &with_key("k-1")).await;
        assert_eq!(remaining(&response), quotas(&[("per_key", left)]));
    }
    assert_eq!(get(&app, &client, &with_key("k-1")).await.status(), 429);
    // The user does not matter, the key does.
    let other = get(&app, &client, &[("x-api-key", "k-2"), ("x-user", "joe")]).await;
    assert_eq!(remaining(&other), quotas(&[("per_key", 1)]));
    assert_unlimited(&get(&app, &client, &[("x-user", "joe")]).await);
    if let Some(redis) = store.server() {
        let mut keys = redis.keys().await;
        keys.sort();
        let mut expected = vec![
            key(&sha256_hex(b"k-1"), "per_key"),
            key(&sha256_hex(b"k-2"), "per_key"),
        ];
        expected.sort();
        assert_eq!(keys, expected);
    }
}
on_both_stores!(a_header_names_the_bucket);

/// `when`: a policy applies only when each named header has its value, so a `free` plan and a
/// `pro` plan get different limits from one configuration; a request on neither plan is counted
/// by neither.
async fn when_picks_the_policy_by_header(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "free"
limit = 1
window = "{NO_BOUNDARY}"
when = {{ "x-plan" = "free" }}
[[policies]]
name = "pro"
limit = 3
window = "{NO_BOUNDARY}"
when = {{ "x-plan" = "pro" }}
"#
        ))
        .await;
    let client = reqwest::Client::new();
    let on = |user: &'static str, plan: &'static str| [("x-user", user), ("x-plan", plan)];
    assert_eq!(
        remaining(&get(&app, &client, &on("ann", "free")).await),
        quotas(&[("free", 0)])
    );
    assert_eq!(get(&app, &client, &on("ann", "free")).await.status(), 429);
    for left in [2, 1, 0] {
        let response = get(&app, &client, &on("bob", "pro")).await;
        assert_eq!(remaining(&response), quotas(&[("pro", left)]));
    }
    assert_unlimited(&get(&app, &client, &on("cid", "enterprise")).await);
    assert_unlimited(&get(&app, &client, &[("x-user", "cid")]).await);
}
on_both_stores!(when_picks_the_policy_by_header);
