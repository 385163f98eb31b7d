//! End to end over TCP, the headers of a request that several policies apply to: every policy
//! listed in configuration order, the longest wait in `Retry-After`, and a denying policy
//! described by `X-RateLimit-*`.
//!
//! No window boundary falls inside a test: fixed and sliding windows are [`NO_BOUNDARY`] long,
//! and token buckets refill far less than one token during a test.

#[macro_use]
mod support;

use support::policies::{no_boundary_secs, now_ms, quota_items, quotas, remaining};
use support::{header, Backend, NO_BOUNDARY};

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

/// RateLimit(-Policy) list every policy in configuration order; X-RateLimit-* the smallest share.
async fn several_policies_are_listed_in_configuration_order(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "zeta"
algorithm = "fixed_window"
limit = 5
window = "{NO_BOUNDARY}"
[[policies]]
name = "alpha"
algorithm = "sliding_window"
limit = 20
cost = 10
window = "{NO_BOUNDARY}"
[[policies]]
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
[[policies]]
name = "hourly"
algorithm = "token_bucket"
limit = 1
window = "1h"
[[policies]]
name = "forever"
algorithm = "fixed_window"
limit = 3
cost = 3
window = "{NO_BOUNDARY}"
[[policies]]
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
[[policies]]
name = "mine"
limit = 10
cost = 4
window = "{NO_BOUNDARY}"
[[policies]]
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
