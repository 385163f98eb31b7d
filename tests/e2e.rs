//! End to end over TCP: the original example's behaviour, on both stores.

#[macro_use]
mod support;

use support::{clear_of_minute_boundary, header, Backend, RedisServer, TestApp};

/// The original's scenario: 200, 200, 200, then 429 with its body and every header.
async fn original_scenario(backend: &Backend) {
    let app = backend.app("").await;
    let client = reqwest::Client::new();
    clear_of_minute_boundary().await;
    for _ in 0..3 {
        let response = app.get_user(&client, "joe").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "\"joe\"");
    }
    let denied = app.get_user(&client, "joe").await;
    assert_eq!(denied.status(), 429);
    assert_eq!(header(&denied, "content-type"), "application/json");
    let retry_after: u64 = header(&denied, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header(&denied, "x-rate-limit"), "3");
    assert_eq!(
        header(&denied, "ratelimit-policy"),
        "\"per_minute\";q=3;w=60"
    );
    assert_eq!(
        header(&denied, "ratelimit"),
        format!("\"per_minute\";r=0;t={retry_after}")
    );
    assert_eq!(header(&denied, "x-ratelimit-limit"), "3");
    assert_eq!(header(&denied, "x-ratelimit-remaining"), "0");
    assert_eq!(
        header(&denied, "x-ratelimit-reset"),
        retry_after.to_string()
    );
    assert_eq!(
        denied.text().await.unwrap(),
        r#"{"detail":"User Rate Limit Exceeded"}"#
    );
}
on_both_stores!(original_scenario);

/// Admitted responses carry the headers, and the remaining quota counts down.
async fn admitted_headers_count_down(backend: &Backend) {
    let app = backend
        .app("[[policies]]\nname = \"per_minute\"\nlimit = 5\nwindow = \"1m\"\n")
        .await;
    let client = reqwest::Client::new();
    clear_of_minute_boundary().await;
    for remaining in (0..5).rev() {
        let response = app.get_user(&client, "ann").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "ratelimit-policy"),
            "\"per_minute\";q=5;w=60"
        );
        let quota = header(&response, "ratelimit");
        assert!(
            quota.starts_with(&format!("\"per_minute\";r={remaining};t=")),
            "RateLimit {quota} should have r={remaining}"
        );
        assert_eq!(header(&response, "x-ratelimit-limit"), "5");
        assert_eq!(
            header(&response, "x-ratelimit-remaining"),
            remaining.to_string()
        );
        let reset: u64 = header(&response, "x-ratelimit-reset").parse().unwrap();
        assert!((1..=60).contains(&reset), "X-RateLimit-Reset {reset}");
        assert!(response.headers().get("retry-after").is_none());
    }
}
on_both_stores!(admitted_headers_count_down);

/// The five headers every limited response carries under `headers = "all"`.
const QUOTA_HEADERS: [&str; 5] = [
    "ratelimit-policy",
    "ratelimit",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

/// The seven a denial carries under `headers = "all"`: the quota headers, then two more.
const DENIAL_HEADERS: [&str; 7] = [
    "ratelimit-policy",
    "ratelimit",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
    "x-rate-limit",
];

/// Which of the seven rate-limit headers `response` carries.
fn rate_limit_headers(response: &reqwest::Response) -> Vec<&'static str> {
    DENIAL_HEADERS
        .into_iter()
        .filter(|name| response.headers().contains_key(*name))
        .collect()
}

/// Under `headers = mode`, three admitted requests, a denial decided by the store, then one
/// served from the denial cache; the rate-limit headers of the last admitted response
/// and of each denial.
async fn headers_shown(backend: &Backend, mode: &str) -> [Vec<&'static str>; 3] {
    let app = backend.app(&format!("headers = \"{mode}\"\n")).await;
    let client = reqwest::Client::new();
    clear_of_minute_boundary().await;
    let mut shown = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..3 {
        let response = app.get_user(&client, "joe").await;
        assert_eq!(response.status(), 200);
        shown[0] = rate_limit_headers(&response);
    }
    for (n, cached) in [(1, 0.0), (2, 1.0)] {
        let response = app.get_user(&client, "joe").await;
        assert_eq!(response.status(), 429);
        shown[n] = rate_limit_headers(&response);
        let retry_after: u64 = header(&response, "retry-after").parse().unwrap();
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"detail":"User Rate Limit Exceeded"}"#
        );
        assert_eq!(app.metric("tollgate_cached_denials_total").await, cached);
    }
    shown
}

/// `headers = "denials"`: admitted responses carry no rate-limit header, denials carry all
/// seven, as the original example sent them only on its 429s.
async fn headers_on_denials_only(backend: &Backend) {
    let all = DENIAL_HEADERS.to_vec();
    assert_eq!(
        headers_shown(backend, "denials").await,
        [vec![], all.clone(), all]
    );
}
on_both_stores!(headers_on_denials_only);

/// `headers = "retry_after"`: no response tells the caller its quota; a denial says only when
/// to come back.
async fn headers_retry_after_only(backend: &Backend) {
    assert_eq!(
        headers_shown(backend, "retry_after").await,
        [vec![], vec!["retry-after"], vec!["retry-after"]]
    );
}
on_both_stores!(headers_retry_after_only);

/// `headers = "all"`, the default, in the same scenario: the quota headers on every limited
/// response, and all seven on both denials, the cached one too.
async fn headers_on_every_limited_response(backend: &Backend) {
    let all = DENIAL_HEADERS.to_vec();
    assert_eq!(
        headers_shown(backend, "all").await,
        [QUOTA_HEADERS.to_vec(), all.clone(), all]
    );
}
on_both_stores!(headers_on_every_limited_response);

/// A request without the identity header, or with an empty one, is not limited.
async fn anonymous_requests_are_not_limited(backend: &Backend) {
    let app = backend.app("").await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let response = client.get(app.url("/user")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("ratelimit").is_none());
        assert_eq!(response.text().await.unwrap(), "null");
        let empty = app.get_user(&client, "").await;
        assert_eq!(empty.status(), 200);
        assert!(empty.headers().get("ratelimit").is_none());
        assert_eq!(
            empty.text().await.unwrap(),
            "null",
            "an empty name is nobody"
        );
    }
    if let Backend::Redis(server) = backend {
        assert_eq!(
            server.keys().await,
            Vec::<String>::new(),
            "no key is written"
        );
    }
}
on_both_stores!(anonymous_requests_are_not_limited);

/// Health endpoints are never limited, even for a caller who is.
async fn health_endpoints_are_not_limited(backend: &Backend) {
    let app = backend
        .app("[[policies]]\nname = \"tiny\"\nlimit = 1\nwindow = \"30000d\"\n")
        .await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "bob").await.status(), 200);
    assert_eq!(app.get_user(&client, "bob").await.status(), 429);
    for path in ["/healthz", "/readyz"] {
        for _ in 0..5 {
            let response = client
                .get(app.url(path))
                .header("x-user", "bob")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            assert!(response.headers().get("ratelimit").is_none(), "{path}");
        }
    }
}
on_both_stores!(health_endpoints_are_not_limited);

/// `identity.header` changes which header names the caller, and `/user` echoes that header.
async fn identity_header_is_configurable(backend: &Backend) {
    let app = backend
        .app("[identity]\nheader = \"x-api-key\"\n[[policies]]\nname = \"k\"\nlimit = 1\nwindow = \"30000d\"\n")
        .await;
    let client = reqwest::Client::new();
    let get = |key: &'static str| {
        client
            .get(app.url("/user"))
            .header("x-api-key", key)
            .header("x-user", "ignored")
            .send()
    };
    let first = get("k1").await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.text().await.unwrap(), "\"k1\"");
    assert_eq!(get("k1").await.unwrap().status(), 429);
    assert_eq!(get("k2").await.unwrap().status(), 200);
}
on_both_stores!(identity_header_is_configurable);

/// The Redis key is exactly `tollgate:{sha256 hex}:<policy>`, holds the count with its window,
/// and has a TTL.
#[tokio::test]
async fn redis_key_is_named_as_documented() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_toml(&support::redis_toml(&redis, 3, "1m", "allow")).await;
    let client = reqwest::Client::new();
    clear_of_minute_boundary().await;
    app.get_user(&client, "joe").await;
    app.get_user(&client, "joe").await;
    let key =
        "tollgate:{78675cc176081372c43abab3ea9fb70c74381eb02dc6e93fb6d44d161da6eeb3}:per_minute";
    assert_eq!(redis.keys().await, vec![key.to_string()]);
    let conn = redis.client().await;
    let value: String = fred::prelude::KeysInterface::get(&conn, key).await.unwrap();
    let [count, start, window_ms] = value.split(':').collect::<Vec<_>>()[..] else {
        panic!("{key} holds {value:?}, not count:start:window_ms");
    };
    assert_eq!(count, "2");
    assert_eq!(
        start.parse::<u64>().unwrap() % 60_000,
        0,
        "window start is minute-aligned"
    );
    assert_eq!(window_ms, "60000", "the window's length is stored with it");
    let pttl: i64 = fred::prelude::KeysInterface::pttl(&conn, key)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "PTTL {pttl}");
    redis.assert_every_key_has_ttl().await;
}

/// With `policies = []` nothing is limited and no rate-limit header is sent: the benchmark baseline.
async fn no_limits_means_no_limiting(backend: &Backend) {
    let app = backend.app("policies = []\n").await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let response = app.get_user(&client, "joe").await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("ratelimit-policy").is_none());
    }
    if let Backend::Redis(server) = backend {
        assert_eq!(server.keys().await, Vec::<String>::new());
    }
}
on_both_stores!(no_limits_means_no_limiting);

/// A 405 (`POST /user`) or a 404 spends no quota: only requests the service serves are counted.
async fn wrong_method_and_unknown_path_spend_nothing(backend: &Backend) {
    let app = backend.app("").await;
    let client = reqwest::Client::new();
    clear_of_minute_boundary().await;
    for _ in 0..3 {
        let post = client
            .post(app.url("/user"))
            .header("x-user", "eve")
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 405);
        let missing = client
            .get(app.url("/nope"))
            .header("x-user", "eve")
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }
    for _ in 0..3 {
        assert_eq!(app.get_user(&client, "eve").await.status(), 200);
    }
    assert_eq!(app.get_user(&client, "eve").await.status(), 429);
}
on_both_stores!(wrong_method_and_unknown_path_spend_nothing);
