//! tollgate behind Redis Sentinel: a primary, a replica, three sentinels.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::sentinel::SentinelSetup;
use support::{admitted_of, TestApp};
use tokio::task::JoinSet;

/// A service on the sentinels' primary; failures answer 503.
async fn service(setup: &SentinelSetup, limit: u64) -> TestApp {
    TestApp::with_toml(&format!(
        r#"
[redis]
url = "{}"
on_error = "deny"
timeout = "5s"

[[policies]]
name = "per_user"
limit = {limit}
window = "{}"
"#,
        setup.url(),
        support::NO_BOUNDARY
    ))
    .await
}

/// Through a sentinel failover during steady traffic, tollgate follows the new primary: at most
/// the requests inside the failover window fail, and limiting is exact right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed() {
    let setup = SentinelSetup::start().await;
    let app = Arc::new(service(&setup, 1_000_000).await);
    let client = reqwest::Client::new();
    assert_eq!(admitted_of(&app, &client, "warm", 3).await, 3);

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut traffic = JoinSet::new();
    for worker in 0..4 {
        let (app, client, stop) = (app.clone(), client.clone(), stop.clone());
        let (sent, failed) = (sent.clone(), failed.clone());
        traffic.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let response = app
                    .get_user(&client, &format!("w{worker}-{}", n % 20))
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                if response.status() != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old_primary = setup.primary_port().await;
    setup.failover().await;
    assert_ne!(setup.primary_port().await, old_primary);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    while traffic.join_next().await.is_some() {}
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 0);
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across the failover"
    );

    let fresh = service(&setup, 3).await;
    for user in 0..10 {
        let admitted = admitted_of(&fresh, &client, &format!("after-{user}"), 4).await;
        assert_eq!(admitted, 3, "after-{user}");
    }
}
