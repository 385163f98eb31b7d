//! The memory store's bound, through the service: `memory.max_callers` caps the store and the
//! local fallback alike, a new caller at the cap is denied untracked while a tracked one keeps
//! exactly its limit, and the metrics count both.

mod support;

use support::{header, RedisServer, TestApp};

/// One policy of 5 per window, on a window no test run can cross.
fn policy() -> String {
    format!(
        "[[policies]]\nname = \"per_user\"\nlimit = 5\nwindow = \"{}\"\n",
        support::NO_BOUNDARY
    )
}

/// `GET /user` as `user` until `n` requests have been made; how many were admitted.
async fn admitted(app: &TestApp, client: &reqwest::Client, user: &str, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        match app.get_user(client, user).await.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    admitted
}

/// At `memory.max_callers`, a new caller gets 429 with `Retry-After: 1` and nothing remaining,
/// a caller already tracked still gets exactly its limit, and the metrics show the entries held
/// and the refusals.
#[tokio::test]
async fn at_the_cap_newcomers_are_denied_and_tracked_callers_keep_their_limit() {
    let app = TestApp::with_toml(&format!("[memory]\nmax_callers = 3\n{}", policy())).await;
    let client = reqwest::Client::new();
    for user in ["joe", "ann", "bob"] {
        assert_eq!(app.get_user(&client, user).await.status(), 200, "{user}");
    }
    for newcomer in ["eve", "max"] {
        let refused = app.get_user(&client, newcomer).await;
        assert_eq!(refused.status(), 429, "{newcomer}");
        assert_eq!(header(&refused, "retry-after"), "1");
        assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    }
    assert_eq!(
        admitted(&app, &client, "joe", 10).await,
        4,
        "joe's other four"
    );
    assert_eq!(admitted(&app, &client, "ann", 2).await, 2);
    assert_eq!(app.metric("tollgate_memory_entries").await, 3.0);
    assert_eq!(app.metric("tollgate_memory_full_total").await, 2.0);
}

/// Under `on_error = "local"`, the fallback's memory is capped by the same key, and counted.
#[tokio::test]
async fn the_local_fallback_is_capped_too() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::with_toml(&format!(
        "[memory]\nmax_callers = 2\n[redis]\nurl = \"{}\"\non_error = \"local\"\n{}",
        redis.url(),
        policy()
    ))
    .await;
    let client = reqwest::Client::new();
    redis.stop();
    for user in ["joe", "ann"] {
        let response = app.get_user(&client, user).await;
        assert_eq!(response.status(), 200, "{user}");
        assert_eq!(header(&response, "x-ratelimit-degraded"), "local");
    }
    let refused = app.get_user(&client, "eve").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-ratelimit-degraded"), "local");
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(app.metric("tollgate_memory_entries").await, 2.0);
    assert_eq!(app.metric("tollgate_memory_full_total").await, 1.0);
}

/// With the default cap and no flood, nothing is refused and the gauge follows the callers.
#[tokio::test]
async fn below_the_cap_every_caller_is_tracked() {
    let app = TestApp::with_toml(&policy()).await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let user = format!("user-{i}");
        assert_eq!(app.get_user(&client, &user).await.status(), 200);
    }
    assert_eq!(app.metric("tollgate_memory_entries").await, 20.0);
    assert_eq!(app.metric("tollgate_memory_full_total").await, 0.0);
}
