//! End to end over TCP, each algorithm's exact admitted count: a concurrent burst admits the
//! limit and consumes it in Redis, and a policy's `cost` spends that much quota.
//!
//! No window boundary falls inside a test: fixed and sliding windows are [`NO_BOUNDARY`] long,
//! and token buckets refill far less than one token during a test.

#[macro_use]
mod support;

use support::policies::{consumed, key_of, no_boundary_secs, quotas, remaining, set};
use support::{admitted_of, header, Backend, NO_BOUNDARY};

/// 100 concurrent requests from one user against a limit of 20 admit exactly 20, and consume 20.
async fn concurrent_burst_admits_exactly_the_limit(store: &Backend, algorithm: &str) {
    // A NO_BOUNDARY window puts no window boundary inside the test; for token_bucket it means
    // one token per 30000d / 20 = 1500 days, so refill during the test is far below one token.
    let app = store
        .app(&format!(
            r#"
[[policies]]
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

/// `cost = 3` with `limit = 10` admits 3 requests then denies, in every algorithm.
async fn a_cost_spends_that_much_quota(store: &Backend) {
    let mut toml = String::new();
    for algorithm in ["fixed_window", "sliding_window", "token_bucket"] {
        // token_bucket over NO_BOUNDARY refills one token per 3000 days: none during the test.
        toml += &format!(
            r#"
[[policies]]
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
