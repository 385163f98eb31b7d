//! End to end over TCP, the policies: each algorithm's exact admitted count under
//! concurrency, the headers with several policies, all-or-nothing across policies (checked in
//! Redis), routes, costs, `by`, the client address behind trusted proxies, `identity.on_missing`
//! and `identity.hash_key`.
//!
//! No window boundary falls inside a test: fixed and sliding windows are [`NO_BOUNDARY`] long,
//! and token buckets refill far less than one token during a test.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use fred::prelude::KeysInterface;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use support::{admitted_of, header, Backend, RedisServer, TestApp, NO_BOUNDARY};

/// Runs one scenario for each algorithm, against the memory store and against Redis.
macro_rules! for_each_algorithm {
    ($test:ident) => {
        mod $test {
            for_each_algorithm!(@one $test, fixed_window);
            for_each_algorithm!(@one $test, sliding_window);
            for_each_algorithm!(@one $test, token_bucket);
        }
    };
    (@one $test:ident, $algorithm:ident) => {
        mod $algorithm {
            #[doc = concat!("`", stringify!($test), "`: ", stringify!($algorithm), ", in memory.")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let store = super::super::Backend::Memory;
                super::super::$test(&store, stringify!($algorithm)).await;
                store.finish().await;
            }

            #[doc = concat!("`", stringify!($test), "`: ", stringify!($algorithm), ", in Redis.")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let store = super::super::Backend::redis().await;
                super::super::$test(&store, stringify!($algorithm)).await;
                store.finish().await;
            }
        }
    };
}

/// [`NO_BOUNDARY`] in seconds, as `RateLimit-Policy` advertises it.
fn no_boundary_secs() -> u64 {
    let days: u64 = NO_BOUNDARY
        .strip_suffix('d')
        .and_then(|d| d.parse().ok())
        .expect("NO_BOUNDARY is a number of days");
    days * 86_400
}

/// The Unix time in milliseconds (Redis runs on this machine's clock).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `GET /user` with `headers` (name, value) added.
async fn get(
    app: &TestApp,
    client: &reqwest::Client,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client.get(app.url("/user"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the service answers")
}

/// The status of `GET /user` with `X-Forwarded-For: xff` and no identity header.
async fn status_from(app: &TestApp, client: &reqwest::Client, xff: &str) -> u16 {
    get(app, client, &[("x-forwarded-for", xff)])
        .await
        .status()
        .as_u16()
}

/// The items of the `RateLimit` header, in order: each policy's name, `r` and `t`.
fn quota_items(response: &reqwest::Response) -> Vec<(String, u64, u64)> {
    let value = header(response, "ratelimit");
    value
        .split(", ")
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap().trim_matches('"').to_owned();
            let (mut r, mut t) = (None, None);
            for param in parts {
                match param.split_once('=') {
                    Some(("r", v)) => r = v.parse().ok(),
                    Some(("t", v)) => t = v.parse().ok(),
                    _ => panic!("unexpected parameter {param:?} in RateLimit: {value}"),
                }
            }
            let missing = || panic!("RateLimit item {item:?} lacks r or t");
            (name, r.unwrap_or_else(missing), t.unwrap_or_else(missing))
        })
        .collect()
}

/// Each policy's name and remaining quota (`r`), from the `RateLimit` header, in order.
fn remaining(response: &reqwest::Response) -> Vec<(String, u64)> {
    quota_items(response)
        .into_iter()
        .map(|(name, r, _)| (name, r))
        .collect()
}

/// The expected [`remaining`] for `pairs`.
fn quotas(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(n, r)| (n.to_string(), *r)).collect()
}

/// A policy's `t` (seconds until its quota is whole again) in the `RateLimit` header.
fn reset_of(response: &reqwest::Response, policy: &str) -> u64 {
    quota_items(response)
        .into_iter()
        .find(|(name, _, _)| name == policy)
        .unwrap_or_else(|| panic!("no RateLimit item for {policy}"))
        .2
}

/// A header parsed as a number.
fn number(response: &reqwest::Response, name: &str) -> u64 {
    header(response, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

/// Asserts that `response` carries no rate-limit header: no policy applied to it.
fn assert_unlimited(response: &reqwest::Response) {
    for name in ["ratelimit-policy", "ratelimit", "x-ratelimit-limit"] {
        assert!(
            response.headers().get(name).is_none(),
            "unexpected {name}: {:?}",
            response.headers().get(name)
        );
    }
}

/// Lowercase hex SHA-256, computed here rather than by tollgate.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Lowercase hex HMAC-SHA256 of `message` under `key`, computed here rather than by tollgate.
fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `tollgate:{<tag>}:<policy>`, the documented key scheme.
fn key(tag: &str, policy: &str) -> String {
    format!("tollgate:{{{tag}}}:{policy}")
}

/// The key of a user named `name` without a hash key.
fn key_of(name: &str, policy: &str) -> String {
    key(&sha256_hex(name.as_bytes()), policy)
}

/// The key of a client address (`127.0.0.1`, `2001:db8::/64`), named `\0ip:<address>` so that
/// no user name (a header value cannot hold a NUL byte) can share its bucket.
fn address_key(address: &str, policy: &str) -> String {
    key(&sha256_hex(format!("\0ip:{address}").as_bytes()), policy)
}

/// The set of `keys`, to compare with [`Store::keys`].
fn set(keys: &[String]) -> Option<BTreeSet<String>> {
    Some(keys.iter().cloned().collect())
}

/// The length-prefixed route that narrows a key of a policy keyed `by = ["user", "route"]`.
fn route_rest(route: &str) -> Vec<u8> {
    let mut rest = (route.len() as u64).to_be_bytes().to_vec();
    rest.extend_from_slice(route.as_bytes());
    rest
}

/// How much quota a Redis key says was consumed, read the way each algorithm stores it; 0 for
/// a key that does not exist.
async fn consumed(
    redis: &RedisServer,
    key: &str,
    algorithm: &str,
    limit: u64,
    window_ms: u64,
) -> u64 {
    let value: Option<String> = redis.client().await.get(key).await.unwrap();
    let Some(value) = value else { return 0 };
    match algorithm {
        // "<count>:<window_start_ms>"
        "fixed_window" => value.split(':').next().unwrap().parse().unwrap(),
        // "<curr>:<prev>:<window_start_ms>"; nothing came before a NO_BOUNDARY window.
        "sliding_window" => {
            let parts: Vec<&str> = value.split(':').collect();
            assert_eq!(parts.len(), 3, "{key} holds {value}");
            assert_eq!(parts[1], "0", "{key} holds {value}");
            parts[0].parse().unwrap()
        }
        // "<tat_us>": the bucket is full again at the TAT, so the tokens spent are how many
        // emission intervals it lies ahead of now (less than one interval has elapsed since).
        "token_bucket" => {
            let tat: u64 = value.parse().unwrap();
            let emission_us = (window_ms * 1000).div_ceil(limit);
            tat.saturating_sub(now_ms() * 1000).div_ceil(emission_us)
        }
        other => panic!("unknown algorithm {other}"),
    }
}

/// 100 concurrent requests from one user against a limit of 20 admit exactly 20, and consume 20.
async fn concurrent_burst_admits_exactly_the_limit(store: &Backend, algorithm: &str) {
    // A NO_BOUNDARY window puts no window boundary inside the test; for token_bucket it means
    // one token per 30000d / 20 = 1500 days, so refill during the test is far below one token.
    let app = store
        .app(&format!(
            r#"
[[limits]]
name = "burst"
algorithm = "{algorithm}"
limit = 20
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    assert_eq!(
        admitted_of(&app, &reqwest::Client::new(), "crowd", 100).await,
        20
    );

    let client = reqwest::Client::new();
    let after = app.get_user(&client, "crowd").await;
    assert_eq!(after.status(), 429);
    assert_eq!(remaining(&after), quotas(&[("burst", 0)]));
    if let Some(redis) = store.server() {
        let key = key_of("crowd", "burst");
        assert_eq!(store.keys().await, set(std::slice::from_ref(&key)));
        let window_ms = no_boundary_secs() * 1000;
        assert_eq!(consumed(redis, &key, algorithm, 20, window_ms).await, 20);
    }
}
for_each_algorithm!(concurrent_burst_admits_exactly_the_limit);

/// 200 concurrent requests against one user's limits of 50 and 30: each consumed what was admitted.
async fn two_policies_consume_only_what_was_admitted(store: &Backend, algorithm: &str) {
    let app = store
        .app(&format!(
            r#"
[[limits]]
name = "wide"
algorithm = "{algorithm}"
limit = 50
window = "{NO_BOUNDARY}"
[[limits]]
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
    // Without the local over-limit cache: a cached denial repeats the headers of the store's
    // denial it copies, which, across hash tags, may have seen a concurrent request's cost not
    // yet refunded. The request after the burst must ask the store.
    let app = store
        .app(&format!(
            r#"
local_cache = false
[[limits]]
name = "mine"
algorithm = "{algorithm}"
limit = 50
window = "{NO_BOUNDARY}"
by = "user"
[[limits]]
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
[[limits]]
name = "everyone"
algorithm = "{algorithm}"
limit = 10
window = "{NO_BOUNDARY}"
by = "global"
[[limits]]
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

/// RateLimit(-Policy) list every policy in configuration order; X-RateLimit-* the smallest share.
async fn several_policies_are_listed_in_configuration_order(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[limits]]
name = "zeta"
algorithm = "fixed_window"
limit = 5
window = "{NO_BOUNDARY}"
[[limits]]
name = "alpha"
algorithm = "sliding_window"
limit = 20
cost = 10
window = "{NO_BOUNDARY}"
[[limits]]
name = "mid"
algorithm = "token_bucket"
limit = 6
window = "6h"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    let w = no_boundary_secs();
    let policies = format!("\"zeta\";q=5;w={w}, \"alpha\";q=20;w={w}, \"mid\";q=6;w=21600");

    let first = app.get_user(&client, "ann").await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "ratelimit-policy"), policies);
    // zeta has the fewest units left (4), alpha the smallest share (10 of 20).
    assert_eq!(
        remaining(&first),
        quotas(&[("zeta", 4), ("alpha", 10), ("mid", 5)])
    );
    assert_eq!(header(&first, "x-ratelimit-limit"), "20");
    assert_eq!(header(&first, "x-ratelimit-remaining"), "10");
    assert_eq!(
        number(&first, "x-ratelimit-reset"),
        reset_of(&first, "alpha")
    );
    // One token of a 6-per-6h bucket refills in exactly an hour.
    assert_eq!(reset_of(&first, "mid"), 3600);
    // The fixed window ends NO_BOUNDARY after the epoch.
    let zeta_reset = reset_of(&first, "zeta");
    let expected = w - now_ms() / 1000;
    assert!(
        zeta_reset.abs_diff(expected) <= 2,
        "zeta t={zeta_reset}, expected about {expected}"
    );
    assert!(first.headers().get("retry-after").is_none());

    let second = app.get_user(&client, "ann").await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        remaining(&second),
        quotas(&[("zeta", 3), ("alpha", 0), ("mid", 4)])
    );
    assert_eq!(header(&second, "x-ratelimit-remaining"), "0");

    let denied = app.get_user(&client, "ann").await;
    assert_eq!(denied.status(), 429);
    assert_eq!(header(&denied, "ratelimit-policy"), policies);
    assert_eq!(
        remaining(&denied),
        quotas(&[("zeta", 3), ("alpha", 0), ("mid", 4)])
    );
    assert_eq!(header(&denied, "x-ratelimit-limit"), "20");
    assert_eq!(header(&denied, "x-rate-limit"), "20");
    // alpha alone denies: its window's 20 weigh fully until it ends, then half of them (10, its
    // cost's worth) must slide out: Retry-After is 1.5 windows after the epoch, from now.
    let retry_after = number(&denied, "retry-after");
    let expected = w * 3 / 2 - now_ms() / 1000;
    assert!(
        retry_after.abs_diff(expected) <= 2,
        "Retry-After {retry_after}, expected about {expected}"
    );
}
on_both_stores!(several_policies_are_listed_in_configuration_order);

/// Retry-After is the longest wait among the denying policies, not the first's nor an admitter's.
async fn retry_after_is_the_longest_wait_among_deniers(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[limits]]
name = "hourly"
algorithm = "token_bucket"
limit = 1
window = "1h"
[[limits]]
name = "forever"
algorithm = "fixed_window"
limit = 3
cost = 3
window = "{NO_BOUNDARY}"
[[limits]]
name = "open"
algorithm = "sliding_window"
limit = 100
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "bea").await.status(), 200);

    let denied = app.get_user(&client, "bea").await;
    assert_eq!(denied.status(), 429);
    assert_eq!(
        remaining(&denied),
        quotas(&[("hourly", 0), ("forever", 0), ("open", 99)])
    );
    let retry_after = number(&denied, "retry-after");
    // hourly waits at most an hour for its token; forever waits until its window ends, which
    // is its reset; open admits, though everything it counted weighs even longer.
    assert!(
        retry_after > 3600,
        "Retry-After {retry_after} is hourly's wait"
    );
    assert_eq!(retry_after, reset_of(&denied, "forever"));
    assert!(reset_of(&denied, "open") > retry_after);
    // Both deniers have nothing left; the documented tie-break is the later reset: forever.
    assert_eq!(header(&denied, "x-ratelimit-limit"), "3");
    assert_eq!(header(&denied, "x-rate-limit"), "3");
    assert_eq!(number(&denied, "x-ratelimit-reset"), retry_after);
}
on_both_stores!(retry_after_is_the_longest_wait_among_deniers);

/// X-RateLimit-* describe the denying policy even when an admitting one has a smaller share left.
async fn a_denying_policy_outranks_a_tighter_admitting_one(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[limits]]
name = "mine"
limit = 10
cost = 4
window = "{NO_BOUNDARY}"
[[limits]]
name = "shared"
limit = 20
window = "{NO_BOUNDARY}"
by = "global"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        assert_eq!(app.get_user(&client, "cat").await.status(), 200);
    }
    for other in 0..15 {
        let response = app.get_user(&client, &format!("other-{other}")).await;
        assert_eq!(response.status(), 200);
    }
    // cat's "mine" has 2 of 10 left and needs 4; "shared" has 3 of 20 left and would admit.
    let denied = app.get_user(&client, "cat").await;
    assert_eq!(denied.status(), 429);
    assert_eq!(remaining(&denied), quotas(&[("mine", 2), ("shared", 3)]));
    assert_eq!(header(&denied, "x-ratelimit-limit"), "10");
    assert_eq!(header(&denied, "x-ratelimit-remaining"), "2");
    assert_eq!(header(&denied, "x-rate-limit"), "10");
    assert_eq!(number(&denied, "retry-after"), reset_of(&denied, "mine"));

    let next = app.get_user(&client, "dan").await;
    assert_eq!(next.status(), 200);
    assert_eq!(remaining(&next), quotas(&[("mine", 6), ("shared", 2)]));
}
on_both_stores!(a_denying_policy_outranks_a_tighter_admitting_one);

/// Policies whose routes match GET /user apply to it; others are neither listed nor counted.
async fn policies_apply_only_to_matching_routes(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[limits]]
name = "on_user"
limit = 2
window = "{NO_BOUNDARY}"
routes = ["GET /user"]
[[limits]]
name = "elsewhere"
limit = 1
window = "{NO_BOUNDARY}"
routes = ["/api/*", "POST /user", "GET /user/*", "/users"]
[[limits]]
name = "prefixed"
limit = 50
window = "{NO_BOUNDARY}"
routes = ["GET /*"]
[[limits]]
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
    if store.server().is_some() {
        assert_eq!(store.keys().await, set(&keys));
    }
}
on_both_stores!(policies_apply_only_to_matching_routes);

/// `cost = 3` with `limit = 10` admits 3 requests then denies, in every algorithm.
async fn a_cost_spends_that_much_quota(store: &Backend) {
    let mut toml = String::new();
    for algorithm in ["fixed_window", "sliding_window", "token_bucket"] {
        // token_bucket over NO_BOUNDARY refills one token per 3000 days: none during the test.
        toml += &format!(
            r#"
[[limits]]
name = "{algorithm}"
algorithm = "{algorithm}"
limit = 10
cost = 3
window = "{NO_BOUNDARY}"
"#
        );
    }
    let app = store.app(&toml).await;
    let client = reqwest::Client::new();
    let left = |r| {
        quotas(&[
            ("fixed_window", r),
            ("sliding_window", r),
            ("token_bucket", r),
        ])
    };
    for r in [7, 4, 1] {
        let response = app.get_user(&client, "fay").await;
        assert_eq!(response.status(), 200);
        assert_eq!(remaining(&response), left(r));
    }
    let denied = app.get_user(&client, "fay").await;
    assert_eq!(denied.status(), 429);
    assert_eq!(remaining(&denied), left(1));
    assert_eq!(header(&denied, "x-ratelimit-remaining"), "1");
}
on_both_stores!(a_cost_spends_that_much_quota);

/// `by = "ip"`: every caller from one address shares a bucket, named or anonymous.
async fn by_ip_shares_a_bucket_across_users(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[limits]]
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
    if store.server().is_some() {
        assert_eq!(
            store.keys().await,
            set(&[address_key("127.0.0.1", "per_ip")])
        );
    }
}
on_both_stores!(by_ip_shares_a_bucket_across_users);

/// `by = "global"`: everyone shares one bucket, named or anonymous.
async fn by_global_shares_one_bucket(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[limits]]
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
    if store.server().is_some() {
        assert_eq!(store.keys().await, set(&[key("global", "everyone")]));
    }
}
on_both_stores!(by_global_shares_one_bucket);

/// `by = ["user", "route"]`: one bucket per user and route, keyed under the user's hash tag.
async fn by_user_and_route_keys_each_user_per_route(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[limits]]
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
        assert_eq!(store.keys().await, set(&[narrowed("ann"), narrowed("bob")]));
    }
}
on_both_stores!(by_user_and_route_keys_each_user_per_route);

/// From a trusted peer, forwarding headers are read from the right: spoofed left entries are moot.
async fn trusted_chains_are_read_from_the_right(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
[[limits]]
name = "per_ip"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(status_from(&app, &client, "198.51.100.1").await, 200);
    assert_eq!(status_from(&app, &client, "198.51.100.2").await, 200);
    assert_eq!(status_from(&app, &client, "198.51.100.1").await, 429);
    // The client is 198.51.100.7 whatever it claims to its left.
    let chain = status_from(&app, &client, "6.6.6.6, 198.51.100.7").await;
    assert_eq!(chain, 200);
    for spoofed in [
        "7.7.7.7, 198.51.100.7",
        "198.51.100.9, 198.51.100.7",
        "198.51.100.7",
    ] {
        let status = status_from(&app, &client, spoofed).await;
        assert_eq!(status, 429, "X-Forwarded-For: {spoofed}");
    }
    // A trusted hop on the right is skipped.
    let via_proxy = status_from(&app, &client, "8.8.8.8, 198.51.100.7, 10.1.1.1").await;
    assert_eq!(via_proxy, 429);
    // Only X-Forwarded-For is read by default: a client-written Forwarded naming the exhausted
    // 198.51.100.1 changes nothing, and the proxy-appended 198.51.100.3 is the client.
    let forwarded = get(
        &app,
        &client,
        &[
            ("forwarded", "for=\"198.51.100.1\""),
            ("x-forwarded-for", "198.51.100.3"),
        ],
    )
    .await;
    assert_eq!(forwarded.status(), 200);
    // Without forwarding headers the client is the peer itself.
    assert_eq!(get(&app, &client, &[]).await.status(), 200);
    if store.server().is_some() {
        let keys = [
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.3",
            "198.51.100.7",
            "127.0.0.1",
        ]
        .map(|ip| address_key(ip, "per_ip"));
        assert_eq!(store.keys().await, set(&keys));
    }
}
on_both_stores!(trusted_chains_are_read_from_the_right);

/// With `forwarded_header = "forwarded"`, RFC 7239 `Forwarded` is read from the right and
/// X-Forwarded-For is ignored.
async fn forwarded_header_is_configurable(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1"]
forwarded_header = "forwarded"
[[limits]]
name = "per_ip"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    let first = get(
        &app,
        &client,
        &[
            ("forwarded", "for=6.6.6.6, for=\"[2001:db8:1:2::9]:443\""),
            ("x-forwarded-for", "198.51.100.1"),
        ],
    )
    .await;
    assert_eq!(first.status(), 200);
    let same = get(
        &app,
        &client,
        &[
            ("forwarded", "for=7.7.7.7, for=\"[2001:db8:1:2::1]\""),
            ("x-forwarded-for", "198.51.100.2"),
        ],
    )
    .await;
    assert_eq!(
        same.status(),
        429,
        "the same /64, whatever X-Forwarded-For says"
    );
    if store.server().is_some() {
        assert_eq!(
            store.keys().await,
            set(&[address_key("2001:db8:1:2::/64", "per_ip")])
        );
    }
}
on_both_stores!(forwarded_header_is_configurable);

/// From an untrusted peer, X-Forwarded-For is ignored: spoofing it mints no new bucket.
async fn untrusted_peers_cannot_spoof_forwarded_for(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["10.0.0.0/8"]
[[limits]]
name = "per_ip"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(status_from(&app, &client, "198.51.100.1").await, 200);
    for spoofed in ["198.51.100.2", "10.1.1.1", "6.6.6.6, 198.51.100.3"] {
        let status = status_from(&app, &client, spoofed).await;
        assert_eq!(status, 429, "X-Forwarded-For: {spoofed}");
    }
    assert_eq!(get(&app, &client, &[]).await.status(), 429);
    if store.server().is_some() {
        assert_eq!(
            store.keys().await,
            set(&[address_key("127.0.0.1", "per_ip")])
        );
    }
}
on_both_stores!(untrusted_peers_cannot_spoof_forwarded_for);

/// With trusted proxies set, the identity header from any other peer counts as missing.
async fn untrusted_peers_cannot_name_the_caller(store: &Backend) {
    let limits = format!(
        r#"
[[limits]]
name = "per_user"
limit = 5
window = "{NO_BOUNDARY}"
"#
    );
    let untrusted = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["10.0.0.0/8"]
on_missing = "deny"
{limits}
"#
        ))
        .await;
    let client = reqwest::Client::new();
    let refused = untrusted.get_user(&client, "joe").await;
    assert_eq!(refused.status(), 401);

    let trusted = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1"]
on_missing = "deny"
{limits}
"#
        ))
        .await;
    let counted = trusted.get_user(&client, "joe").await;
    assert_eq!(counted.status(), 200);
    assert_eq!(remaining(&counted), quotas(&[("per_user", 4)]));
    if store.server().is_some() {
        assert_eq!(store.keys().await, set(&[key_of("joe", "per_user")]));
    }
}
on_both_stores!(untrusted_peers_cannot_name_the_caller);

/// `/user` answers `null` for an identity header from an untrusted peer, as the limiter sees it.
async fn untrusted_identity_is_not_echoed(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["10.0.0.0/8"]
[[limits]]
name = "per_user"
limit = 1
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let response = app.get_user(&client, "joe").await;
        assert_eq!(response.status(), 200);
        assert_unlimited(&response);
        assert_eq!(response.text().await.unwrap(), "null");
    }
}
on_both_stores!(untrusted_identity_is_not_echoed);

/// IPv6 clients share a bucket per /64 (or per `identity.ipv6_prefix`), and no wider.
async fn ipv6_clients_share_a_bucket_per_prefix(store: &Backend) {
    let limits = format!(
        r#"
[[limits]]
name = "per_ip"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
    );
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1"]
{limits}
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(status_from(&app, &client, "2001:db8:1:2::1").await, 200);
    assert_eq!(status_from(&app, &client, "2001:db8:1:2::ffff").await, 429);
    assert_eq!(
        status_from(&app, &client, "2001:db8:1:2:abcd::7").await,
        429
    );
    assert_eq!(status_from(&app, &client, "2001:db8:1:3::1").await, 200);
    if store.server().is_some() {
        let keys = ["2001:db8:1:2::/64", "2001:db8:1:3::/64"].map(|net| address_key(net, "per_ip"));
        assert_eq!(store.keys().await, set(&keys));
    }

    let wide = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1"]
ipv6_prefix = 48
[[limits]]
name = "per_net"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    assert_eq!(status_from(&wide, &client, "2001:db8:1:2::1").await, 200);
    assert_eq!(status_from(&wide, &client, "2001:db8:1:3::1").await, 429);
    assert_eq!(status_from(&wide, &client, "2001:db8:2::1").await, 200);
}
on_both_stores!(ipv6_clients_share_a_bucket_per_prefix);

/// `on_missing = "deny"`: a request that names nobody gets a 401 with a JSON reason, uncounted.
async fn on_missing_deny_refuses_anonymous_requests(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
on_missing = "deny"
[[limits]]
name = "per_user"
limit = 5
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for headers in [&[][..], &[("x-user", "")][..]] {
        let refused = get(&app, &client, headers).await;
        assert_eq!(refused.status(), 401, "headers {headers:?}");
        assert_eq!(header(&refused, "content-type"), "application/json");
        assert_unlimited(&refused);
        let body: serde_json::Value = refused.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "the 401 says why: {body}");
    }
    if store.server().is_some() {
        assert_eq!(store.keys().await, Some(BTreeSet::new()));
    }
    assert_eq!(app.get_user(&client, "joe").await.status(), 200);
}
on_both_stores!(on_missing_deny_refuses_anonymous_requests);

/// `on_missing = "ip"`: a request that names nobody is limited by its client address.
async fn on_missing_ip_limits_anonymous_requests_by_address(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
on_missing = "ip"
[[limits]]
name = "per_user"
limit = 2
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for r in [1, 0] {
        let response = get(&app, &client, &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(remaining(&response), quotas(&[("per_user", r)]));
    }
    assert_eq!(get(&app, &client, &[]).await.status(), 429);
    assert_eq!(app.get_user(&client, "joe").await.status(), 200);
    if store.server().is_some() {
        let keys = [
            address_key("127.0.0.1", "per_user"),
            key_of("joe", "per_user"),
        ];
        assert_eq!(store.keys().await, set(&keys));
    }
}
on_both_stores!(on_missing_ip_limits_anonymous_requests_by_address);

/// `on_missing = "allow"` (the default): a request naming nobody passes user policies uncounted.
async fn on_missing_allow_passes_anonymous_requests(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[limits]]
name = "per_user"
limit = 1
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = get(&app, &client, &[]).await;
        assert_eq!(response.status(), 200);
        assert_unlimited(&response);
    }
    if store.server().is_some() {
        assert_eq!(store.keys().await, Some(BTreeSet::new()));
    }

    let mixed = store
        .app(&format!(
            r#"
[[limits]]
name = "per_user_2"
limit = 1
window = "{NO_BOUNDARY}"
[[limits]]
name = "per_ip"
limit = 2
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    let first = get(&mixed, &client, &[]).await;
    assert_eq!(first.status(), 200);
    assert_eq!(remaining(&first), quotas(&[("per_ip", 1)]));
}
on_both_stores!(on_missing_allow_passes_anonymous_requests);

/// `identity.hash_key`: keys use hex(HMAC-SHA256(hash_key, name)), and `tollgate key` agrees.
#[tokio::test]
async fn hash_key_names_keys_by_hmac() {
    const SECRET: &str = "s3cret-key";
    let redis = RedisServer::start().await;
    let config = format!(
        r#"
[identity]
hash_key = "{SECRET}"
[[limits]]
name = "per_user"
limit = 5
window = "{NO_BOUNDARY}"
[[limits]]
name = "per_route"
limit = 5
window = "{NO_BOUNDARY}"
by = ["user", "route"]
[redis]
url = "{}"
"#,
        redis.url()
    );
    let app = TestApp::with_toml(&config).await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "joe").await.status(), 200);

    let tag = hmac_hex(SECRET.as_bytes(), b"joe");
    assert_ne!(tag, sha256_hex(b"joe"));
    let route = hmac_hex(SECRET.as_bytes(), &route_rest("/user"));
    let expected = [
        key(&tag, "per_user"),
        format!("{}:{}", key(&tag, "per_route"), &route[..16]),
    ];
    let written: BTreeSet<String> = redis.keys().await.into_iter().collect();
    assert_eq!(Some(written), set(&expected));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, &config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(&path)
        .args(["key", "joe", "--route", "/user"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{}\n{}\n", expected[0], expected[1])
    );
    redis.assert_every_key_has_ttl().await;
}
