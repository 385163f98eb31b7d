//! End to end over TCP, shadow policies (`shadow = true`): decided and counted as usual, yet they
//! never deny a request, never show in a rate-limit header, never fill the denial cache, and
//! `tollgate_shadow_denials_total` says what each would have denied.
//!
//! No window boundary falls inside a test: fixed and sliding windows are [`NO_BOUNDARY`] long,
//! and token buckets refill far less than one token during a test.

#[macro_use]
mod support;

use support::policies::{consumed, key_of, no_boundary_secs, quotas, remaining};
use support::{header, Backend, NO_BOUNDARY};

/// Every header a policy can show in, which a shadow policy must never be named or cited in.
const RATE_LIMIT_HEADERS: [&str; 7] = [
    "ratelimit-policy",
    "ratelimit",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
    "x-rate-limit",
];

/// A shadow policy of 1 beside a real one of 5: five requests pass, the headers cite the real
/// policy alone, the shadow counts four would-be denials; the sixth is denied by the real policy
/// and consumes nothing, in the shadow policy either.
async fn a_shadow_policy_never_denies(store: &Backend, algorithm: &str) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "real"
algorithm = "{algorithm}"
limit = 5
window = "{NO_BOUNDARY}"
[[policies]]
name = "trial"
algorithm = "{algorithm}"
limit = 1
window = "{NO_BOUNDARY}"
shadow = true
"#
        ))
        .await;
    let client = reqwest::Client::new();
    let w = no_boundary_secs();
    let would_deny = r#"tollgate_shadow_denials_total{policy="trial"}"#;
    for left in (0..5).rev() {
        let response = app.get_user(&client, "ann").await;
        assert_eq!(response.status(), 200, "{algorithm}");
        assert_eq!(
            header(&response, "ratelimit-policy"),
            format!("\"real\";q=5;w={w}")
        );
        assert_eq!(remaining(&response), quotas(&[("real", left)]));
        assert_eq!(header(&response, "x-ratelimit-limit"), "5");
        assert_eq!(header(&response, "x-ratelimit-remaining"), left.to_string());
        assert!(response.headers().get("retry-after").is_none());
    }
    assert_eq!(app.metric(would_deny).await, 4.0, "{algorithm}");

    let denied = app.get_user(&client, "ann").await;
    assert_eq!(denied.status(), 429);
    assert_eq!(remaining(&denied), quotas(&[("real", 0)]));
    for name in RATE_LIMIT_HEADERS {
        let value = header(&denied, name);
        assert!(!value.contains("trial"), "{name}: {value}");
    }
    assert_eq!(header(&denied, "x-rate-limit"), "5");
    assert_eq!(
        app.metric(would_deny).await,
        4.0,
        "a real denial is not the shadow's"
    );
    let caused = |policy: &str| format!("tollgate_denials_total{{policy=\"{policy}\"}}");
    assert_eq!(app.metric(&caused("real")).await, 1.0);
    assert_eq!(app.metric(&caused("trial")).await, 0.0);

    if let Some(redis) = store.server() {
        let window_ms = no_boundary_secs() * 1000;
        let real = consumed(redis, &key_of("ann", "real"), algorithm, 5, window_ms).await;
        let trial = consumed(redis, &key_of("ann", "trial"), algorithm, 1, window_ms).await;
        assert_eq!((real, trial), (5, 1), "{algorithm}: consumed in Redis");
    }
}
for_each_algorithm!(a_shadow_policy_never_denies);

/// With only a shadow policy, a caller far over it is never denied, never cached as denied, and
/// its responses carry no rate-limit header.
async fn shadow_alone_shows_nothing_and_caches_nothing(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
denial_cache = true
[[policies]]
name = "trial"
limit = 1
window = "{NO_BOUNDARY}"
shadow = true
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let response = app.get_user(&client, "bob").await;
        assert_eq!(response.status(), 200);
        for name in RATE_LIMIT_HEADERS {
            assert!(response.headers().get(name).is_none(), "{name}");
        }
    }
    let would_deny = r#"tollgate_shadow_denials_total{policy="trial"}"#;
    assert_eq!(app.metric(would_deny).await, 3.0);
    assert_eq!(app.metric("tollgate_cached_denials_total").await, 0.0);
    assert_eq!(
        app.metric(r#"tollgate_decisions_total{policy="trial",outcome="denied"}"#)
            .await,
        0.0
    );
}
on_both_stores!(shadow_alone_shows_nothing_and_caches_nothing);
