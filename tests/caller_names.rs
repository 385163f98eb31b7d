//! Odd caller names over real HTTP, on both stores: oversized, non-UTF-8, empty and blank
//! identity headers are hashed or treated as missing like any other name, and never break the
//! service.

#[macro_use]
mod support;

use axum::http::HeaderValue;
use tollgate::{KeyBuilder, PolicyName};

use support::{header, Backend, TestApp, NO_BOUNDARY};

/// The policy's limit in the bad-name tests.
const LIMIT: usize = 2;

/// One fixed-window policy, `per_minute`, of [`LIMIT`] per window, keyed by user.
fn limited_toml() -> String {
    format!("[[policies]]\nname = \"per_minute\"\nlimit = {LIMIT}\nwindow = \"{NO_BOUNDARY}\"\n")
}

/// The Redis key of a caller named by `name` under `per_minute`, as `tollgate key` prints it.
fn key_of(name: &[u8]) -> String {
    let keys = KeyBuilder::new("tollgate");
    keys.key(&keys.tag(name), &PolicyName::new("per_minute").unwrap())
}

/// `GET /user` with the identity header set to `name`, whatever its bytes.
async fn get_as(app: &TestApp, client: &reqwest::Client, name: &HeaderValue) -> reqwest::Response {
    client
        .get(app.url("/user"))
        .header("x-user", name.clone())
        .send()
        .await
        .expect("the service answers")
}

/// The service still answers `/healthz` with 200.
async fn assert_healthy(app: &TestApp, client: &reqwest::Client) {
    let health = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/healthz after bad names");
}

/// A 16 KiB name and a non-UTF-8 name (`\xff\xfejoe`) are hashed like any other name: limited
/// after `limit` requests, one key each of the normal length, echoed lossily by `/user`.
async fn oversized_and_non_utf8_names_are_hashed(backend: &Backend) {
    let app = backend.app(&limited_toml()).await;
    let client = reqwest::Client::new();
    let long = "a".repeat(16 * 1024);
    let names = [
        (HeaderValue::from_str(&long).unwrap(), long.clone()),
        (
            HeaderValue::from_bytes(b"\xff\xfejoe").unwrap(),
            "\u{FFFD}\u{FFFD}joe".to_owned(),
        ),
    ];
    for (name, echoed) in &names {
        let shown = &echoed[..echoed.len().min(12)];
        let before = backend.keys().await;
        for i in 0..LIMIT {
            let response = get_as(&app, &client, name).await;
            assert_eq!(response.status(), 200, "request {i} as {shown:?}…");
            assert!(response.headers().contains_key("ratelimit"), "{shown:?}…");
            assert_eq!(
                header(&response, "x-ratelimit-remaining"),
                (LIMIT - 1 - i).to_string(),
                "{shown:?}…"
            );
            let body: Option<String> = response.json().await.unwrap();
            assert_eq!(body.as_deref(), Some(echoed.as_str()), "/user echoes");
        }
        let denied = get_as(&app, &client, name).await;
        assert_eq!(denied.status(), 429, "request {LIMIT} as {shown:?}…");
        if let (Some(before), Some(after)) = (before, backend.keys().await) {
            let new: Vec<&String> = after.difference(&before).collect();
            assert_eq!(new, [&key_of(name.as_bytes())], "one key for {shown:?}…");
            assert_eq!(new[0].len(), key_of(b"joe").len(), "a bounded key length");
        }
    }
    assert_healthy(&app, &client).await;
}
on_both_stores!(oversized_and_non_utf8_names_are_hashed);

/// An empty name and an all-spaces name are treated as missing (HTTP strips the spaces, so the
/// value arrives empty): never limited, no RateLimit headers, no key, `/user` answers `null`.
async fn empty_and_blank_names_are_missing(backend: &Backend) {
    let app = backend.app(&limited_toml()).await;
    let client = reqwest::Client::new();
    for name in ["", "   "] {
        for i in 0..LIMIT + 2 {
            let response = get_as(&app, &client, &HeaderValue::from_static(name)).await;
            assert_eq!(response.status(), 200, "request {i} as {name:?}");
            for limited in ["ratelimit", "ratelimit-policy", "x-ratelimit-limit"] {
                assert!(
                    !response.headers().contains_key(limited),
                    "{name:?} got {limited}"
                );
            }
            let body: Option<String> = response.json().await.unwrap();
            assert_eq!(body, None, "/user as {name:?}");
        }
    }
    if let Some(keys) = backend.keys().await {
        assert!(keys.is_empty(), "keys for a missing name: {keys:?}");
    }
    assert_healthy(&app, &client).await;
}
on_both_stores!(empty_and_blank_names_are_missing);
