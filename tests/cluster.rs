//! tollgate on a real Redis Cluster: three primaries, three replicas.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::cluster::RedisCluster;
use support::{admitted_of, TestApp};
use tokio::task::JoinSet;

/// One cluster at a time: six nodes and a loaded service per test, several at once on two cores,
/// starve the failovers the tests time.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A service on `cluster`; failures answer 503, so none can pass for an admission.
async fn app(cluster: &RedisCluster, limit: u64, timeout: &str) -> TestApp {
    TestApp::with_toml(&format!(
        r#"
[redis]
url = "{}"
on_error = "deny"
timeout = "{timeout}"

[[policies]]
name = "per_user"
limit = {limit}
window = "{}"
"#,
        cluster.url(),
        support::NO_BOUNDARY
    ))
    .await
}

/// Many users, whose keys hash to every primary, are each admitted exactly `limit` times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_exact_across_slots() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start().await;
    let app = Arc::new(app(&cluster, 3, "10s").await);
    let client = reqwest::Client::new();
    let mut users = JoinSet::new();
    for user in 0..200 {
        let (app, client) = (app.clone(), client.clone());
        users.spawn(async move {
            (
                user,
                admitted_of(&app, &client, &format!("u{user}"), 4).await,
            )
        });
    }
    while let Some(result) = users.join_next().await {
        let (user, admitted) = result.unwrap();
        assert_eq!(admitted, 3, "u{user}");
    }
    let spread = cluster.keys_per_primary().await;
    assert_eq!(spread.len(), 3, "three primaries");
    assert!(
        spread.iter().all(|&(_, keys)| keys > 20),
        "every primary holds a share of the 200 keys: {spread:?}"
    );
    assert_eq!(spread.iter().map(|&(_, keys)| keys).sum::<usize>(), 200);
    cluster.assert_every_key_has_ttl().await;
}

/// A failover during steady traffic loses no decision to an error, and limiting is exact again
/// right after it: the promoted replica lacks the script, which is loaded on NOSCRIPT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_during_traffic_loses_no_decision() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start().await;
    // The deadline covers the moment writes pause while the primary hands over. Ten seconds,
    // not five: with both cores busy, five was once too short for the handover, and the claim
    // is that no decision is lost, not how fast the handover is.
    let app = Arc::new(app(&cluster, 1_000_000, "10s").await);
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut traffic = JoinSet::new();
    for worker in 0..8 {
        let (app, client, stop) = (app.clone(), client.clone(), stop.clone());
        let (sent, failed) = (sent.clone(), failed.clone());
        traffic.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let status = app
                    .get_user(&client, &format!("w{worker}-{}", n % 50))
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                if status.status() != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sent.load(Ordering::Relaxed);
    cluster.failover().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    while traffic.join_next().await.is_some() {}
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(
        before > 0 && sent > before,
        "traffic ran before and after: {before}, {sent}"
    );
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");

    // Exact again at once, on the new topology.
    let exact = app_exact(&cluster).await;
    assert_eq!(exact, vec![3; 30]);
    cluster.assert_every_key_has_ttl().await;
}

/// On a cluster a user's and an address's keys live in different slots: a denial by the
/// address refunds the user's call, and the refund deletes what it brings back to nothing, so
/// 100 fresh users from an address over its limit leave no key behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_leave_no_key_behind() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start().await;
    let app = TestApp::with_toml(&format!(
        "{}\n[redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"10s\"\n",
        support::user_then_address(2),
        cluster.url()
    ))
    .await;
    let client = reqwest::Client::new();
    for user in ["first", "second"] {
        assert_eq!(app.get_user(&client, user).await.status(), 200);
    }
    let keys = cluster.key_count().await;
    assert_eq!(keys, 2 * 3 + 1, "three per user, one for the address");
    for n in 0..100 {
        let response = app.get_user(&client, &format!("fresh-{n}")).await;
        assert_eq!(response.status(), 429, "fresh-{n}");
    }
    assert_eq!(cluster.key_count().await, keys, "denied requests left keys");
    cluster.assert_every_key_has_ttl().await;
}

/// `tollgate inspect` reads a cluster: the user's keys and the address's live in different
/// slots, each read in a call of its own, and reading spends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_a_cluster() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start().await;
    let toml = format!(
        "{}\n[redis]\nurl = \"{}\"\ntimeout = \"10s\"\n",
        support::user_then_address(5),
        cluster.url()
    );
    let app = TestApp::with_toml(&toml).await;
    let client = reqwest::Client::new();
    assert_eq!(admitted_of(&app, &client, "joe", 2).await, 2);
    let settings = support::settings(&toml);
    let localhost = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    for _ in 0..2 {
        let report = tollgate::inspect::inspect(&settings, "joe", localhost, None)
            .await
            .unwrap();
        let remaining: Vec<(String, u64)> = report
            .standings
            .iter()
            .map(|(_, s)| (s.policy.name().to_string(), s.remaining))
            .collect();
        let expected = ["fixed_window", "sliding_window", "token_bucket", "per_ip"]
            .map(|name| (name.to_string(), 3));
        assert_eq!(remaining, expected);
    }
    assert_eq!(
        admitted_of(&app, &client, "ann", 4).await,
        3,
        "nothing was spent"
    );
    cluster.assert_every_key_has_ttl().await;
}

/// `tollgate reset` on a cluster: the user's keys and the address's, in different slots, are
/// deleted, and the service, which had the denial cached, admits the user again within a
/// second and a half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reaches_a_cluster() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start().await;
    let toml = format!(
        "{}\n[redis]\nurl = \"{}\"\ntimeout = \"10s\"\n",
        support::user_then_address(100),
        cluster.url()
    );
    let app = TestApp::with_toml(&toml).await;
    let client = reqwest::Client::new();
    assert_eq!(admitted_of(&app, &client, "joe", 7).await, 5);
    let settings = support::settings(&toml);
    let localhost = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    let report = tollgate::reset::reset(&settings, "joe", localhost, None, None)
        .await
        .unwrap();
    assert_eq!(report.reset.len(), 4);
    assert!(
        report.reset.iter().all(|(_, _, deleted)| *deleted),
        "{report}"
    );
    let joe = || async { app.get_user(&client, "joe").await.status().as_u16() };
    support::until_not_refused(Duration::from_millis(1_500), joe).await;
    assert_eq!(
        admitted_of(&app, &client, "joe", 5).await,
        4,
        "one was admitted above"
    );
    cluster.assert_every_key_has_ttl().await;
}

/// Thirty users on a fresh service with limit 3, each sending 4: how many each got.
async fn app_exact(cluster: &RedisCluster) -> Vec<usize> {
    let app = app(cluster, 3, "5s").await;
    let client = reqwest::Client::new();
    let mut admitted = Vec::new();
    for user in 0..30 {
        admitted.push(admitted_of(&app, &client, &format!("after-{user}"), 4).await);
    }
    admitted
}

/// At the default 100 ms deadline under `on_error = "allow"`, a failover costs no error either:
/// the requests inside the failover window are decided by the failure mode (they pass without
/// rate-limit headers), and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_at_the_default_deadline_degrades_only_its_window() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start().await;
    let app = Arc::new(
        TestApp::with_toml(&format!(
            "[redis]\nurl = \"{}\"\n\n[[policies]]\nname = \"per_user\"\nlimit = 1000000\nwindow = \"{}\"\n",
            cluster.url(),
            support::NO_BOUNDARY
        ))
        .await,
    );
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let degraded_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut traffic = JoinSet::new();
    for worker in 0..8 {
        let (app, client, stop) = (app.clone(), client.clone(), stop.clone());
        let (degraded_at, failed) = (degraded_at.clone(), failed.clone());
        traffic.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let response = app
                    .get_user(&client, &format!("w{worker}-{}", n % 50))
                    .await;
                if response.status() != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                } else if !response.headers().contains_key("ratelimit") {
                    degraded_at.lock().unwrap().push(std::time::Instant::now());
                }
                n += 1;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = std::time::Instant::now();
    cluster.failover().await;
    let ended = std::time::Instant::now();
    // The client settles on the new topology after the nodes do, and the breaker may need a
    // cool-down or two and a probe: "exact again within a few seconds". Eight, not three: on a
    // busy two-core machine three was once too few, and this claims an end, not a speed.
    let settled = ended + Duration::from_secs(8);
    tokio::time::sleep(Duration::from_millis(8_500)).await;
    stop.store(true, Ordering::Relaxed);
    while traffic.join_next().await.is_some() {}
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "allow never fails a request"
    );
    let degraded = degraded_at.lock().unwrap();
    eprintln!(
        "failover window {:?}; {} requests decided by on_error",
        ended - began,
        degraded.len()
    );
    for at in degraded.iter() {
        assert!(
            *at >= began && *at <= settled,
            "degraded outside the failover window: {:?} after it began, which lasted {:?}",
            at.saturating_duration_since(began),
            ended - began
        );
    }
}
