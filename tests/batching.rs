//! On a single Redis, the decisions in flight together share one EVALSHA, and each is still
//! decided on its own: its own answer, its own errors, and never counted once its request has gone.

mod support;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{ClientLike, KeysInterface};
use fred::types::CustomCommand;
use futures::future::join_all;
use support::RedisServer;
use tollgate::key::{CallerTag, KeyBuilder};
use tollgate::store::redis::Connections;
use tollgate::store::{Check, Clock, RedisStore, Store, StoreError};
use tollgate::{Algorithm, Policy, PolicyName, Settings, Window};

fn per_hour(limit: u64) -> Arc<Policy> {
    named("per_hour", limit, 3_600_000)
}

fn named(name: &str, limit: u64, window_ms: u64) -> Arc<Policy> {
    let policy = Policy::new(
        PolicyName::new(name).unwrap(),
        Algorithm::FixedWindow,
        NonZeroU64::new(limit).unwrap(),
        Window::from_millis(window_ms).unwrap(),
    )
    .unwrap();
    Arc::new(policy)
}

fn checks(caller: &str, policy: &Arc<Policy>) -> Vec<Check> {
    let tag = CallerTag::of(caller.as_bytes());
    let key = KeyBuilder::new("tollgate").key(&tag, policy.name());
    vec![Check::new(key, policy.clone())]
}

async fn store(server: &RedisServer) -> RedisStore {
    store_with(server, Connections::default()).await
}

async fn store_with(server: &RedisServer, connections: Connections) -> RedisStore {
    let config = fred::prelude::Config::from_url(&server.url()).unwrap();
    RedisStore::connect_with(config, Duration::from_secs(5), connections)
        .await
        .unwrap()
}

/// Twenty decisions at once on a store whose calls carry at most `max_batch`.
async fn calls_for_twenty_at_once(max_batch: usize) -> u64 {
    let server = RedisServer::start().await;
    let connections = Connections {
        max_batch,
        ..Connections::default()
    };
    let store = store_with(&server, connections).await;
    calls_for_twenty(&server, &store).await
}

/// The EVALSHA calls that twenty decisions at once on `store` cost `server`.
async fn calls_for_twenty(server: &RedisServer, store: &dyn Store) -> u64 {
    let policy = per_hour(1);
    let callers: Vec<Vec<Check>> = (0..20)
        .map(|i| checks(&format!("caller-{i}"), &policy))
        .collect();

    let before = server.evalsha_calls().await;
    let decisions = join_all(callers.iter().map(|c| store.decide(c, Clock::Store))).await;
    assert!(decisions.into_iter().all(|d| d.unwrap().allowed));
    assert_eq!(server.keys().await.len(), 20);
    server.evalsha_calls().await - before
}

/// Twenty callers decided at once cost one EVALSHA, and each gets its own count: caller i had
/// spent i of 10, so the first ten are admitted with 9 - i left and the rest are denied.
#[tokio::test]
async fn decisions_in_flight_share_one_call_and_keep_their_own_counts() {
    let server = RedisServer::start().await;
    let store = store(&server).await;
    let policy = per_hour(10);
    let callers: Vec<Vec<Check>> = (0..20)
        .map(|i| checks(&format!("caller-{i}"), &policy))
        .collect();
    for (i, caller) in callers.iter().enumerate() {
        for _ in 0..i {
            store.decide(caller, Clock::Store).await.unwrap();
        }
    }

    let before = (server.evalsha_calls().await, store.counts().calls);
    let decisions = join_all(callers.iter().map(|c| store.decide(c, Clock::Store))).await;
    assert_eq!(server.evalsha_calls().await - before.0, 1);
    assert_eq!(
        store.counts().calls - before.1,
        1,
        "the store counts its calls"
    );

    for (i, decision) in decisions.into_iter().enumerate() {
        let decision = decision.unwrap();
        assert_eq!(decision.allowed, i < 10, "caller {i}");
        let remaining = if i < 10 { 9 - i as u64 } else { 0 };
        assert_eq!(decision.policies[0].remaining, remaining, "caller {i}");
    }
    server.assert_every_key_has_ttl().await;
}

/// Shadow policies in a shared call are decided per decision too: twenty callers at once, each
/// under a real policy of 10 and a shadow policy of 5, caller i having made i requests. Those
/// past the shadow limit report a would-be denial and leave the shadow key untouched; those
/// past the real one are denied too, and charge neither key.
#[tokio::test]
async fn shadow_policies_in_a_shared_call_are_decided_per_decision() {
    let server = RedisServer::start().await;
    let store = store(&server).await;
    let (real, shadow) = (
        per_hour(10),
        Arc::new(
            named("shadow", 5, 3_600_000)
                .as_ref()
                .clone()
                .with_shadow(true),
        ),
    );
    let callers: Vec<Vec<Check>> = (0..20)
        .map(|i| {
            let caller = format!("caller-{i}");
            [checks(&caller, &real), checks(&caller, &shadow)].concat()
        })
        .collect();
    for (i, caller) in callers.iter().enumerate() {
        for _ in 0..i {
            store.decide(caller, Clock::Store).await.unwrap();
        }
    }
    let counts = |caller: &[Check]| {
        let keys: Vec<String> = caller.iter().map(|c| c.key.clone()).collect();
        let client = store.client().clone();
        async move {
            let mut counts = Vec::new();
            for key in keys {
                let value: Option<String> = client.get(&key).await.unwrap();
                counts.push(value.map_or(0, |v| v.split(':').next().unwrap().parse().unwrap()));
            }
            counts
        }
    };
    let before = join_all(callers.iter().map(|c| counts(c))).await;

    let calls = server.evalsha_calls().await;
    let decisions = join_all(callers.iter().map(|c| store.decide(c, Clock::Store))).await;
    assert_eq!(server.evalsha_calls().await - calls, 1);

    let after = join_all(callers.iter().map(|c| counts(c))).await;
    for (i, decision) in decisions.into_iter().enumerate() {
        let decision = decision.unwrap();
        assert_eq!(decision.allowed, i < 10, "caller {i}");
        let would_deny = i >= 5;
        assert_eq!(
            decision.shadow_denials().count(),
            usize::from(would_deny),
            "caller {i}"
        );
        let charged = [u64::from(i < 10), u64::from(i < 5)];
        let spent: Vec<u64> = after[i]
            .iter()
            .zip(&before[i])
            .map(|(a, b)| a - b)
            .collect();
        assert_eq!(spent, charged, "caller {i}: what each key was charged");
    }
    server.assert_every_key_has_ttl().await;
}

/// Decisions made by different tasks in one turn of the scheduler share one call: the batcher
/// lets the tasks woken with the first decision run before it sends. One worker thread, as on a
/// core of its own; the tasks are spawned together, as one wake-up's requests are served. The
/// worker must not stop to poll for events among the tasks (by default it does every 61 task
/// polls, and the batcher then sends part of the crowd), so the runtime is built without that.
#[test]
fn decisions_from_the_tasks_of_one_turn_share_one_call() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .event_interval(u32::MAX)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = RedisServer::start().await;
        let store = Arc::new(store(&server).await);
        let policy = per_hour(10);

        let before = server.evalsha_calls().await;
        let admitted = tokio::spawn(async move {
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let (store, caller) = (store.clone(), checks(&format!("caller-{i}"), &policy));
                    tokio::spawn(async move { store.decide(&caller, Clock::Store).await.unwrap() })
                })
                .collect();
            let mut admitted = 0;
            for task in tasks {
                admitted += usize::from(task.await.unwrap().allowed);
            }
            admitted
        })
        .await
        .unwrap();
        assert_eq!(admitted, 20);
        assert_eq!(server.evalsha_calls().await - before, 1);
    });
}

/// More decisions at once than one call carries (`redis.max_batch`) take as many calls as
/// they need, and 1 gives each decision a call of its own.
#[tokio::test]
async fn a_crowd_larger_than_a_call_is_split() {
    assert_eq!(calls_for_twenty_at_once(8).await, 3);
    assert_eq!(calls_for_twenty_at_once(1).await, 20);
}

/// `redis.max_batch` in the configuration reaches the store that `setup::limiter` builds.
#[tokio::test]
async fn the_configured_max_batch_reaches_the_store() {
    let server = RedisServer::start().await;
    let url = server.url();
    let toml = format!("[redis]\nurl = \"{url}\"\nmax_batch = 6\ntimeout = \"5s\"\n");
    let settings = Settings::from_toml(&toml).unwrap();
    let limiter = tollgate::setup::limiter(&settings).await.unwrap();
    assert_eq!(calls_for_twenty(&server, limiter.store()).await, 4);
}

/// A key of another type fails its own caller's decision, with Redis's error, and no other
/// decision of the same call. The broken key is the second of its decision's two, so the
/// decision's part of the reply was half written when it failed, and the next decision's part
/// must still be read right.
#[tokio::test]
async fn a_broken_key_fails_only_its_own_decision() {
    let server = RedisServer::start().await;
    let store = store(&server).await;
    let (per_hour, per_day) = (per_hour(10), named("per_day", 100, 86_400_000));
    let mut broken = checks("broken", &per_hour);
    broken.extend(checks("broken", &per_day));
    let fine = checks("fine", &per_hour);
    let conn = server.client().await;
    let rpush = CustomCommand::new_static("RPUSH", None, false);
    let _: i64 = conn
        .custom(rpush, vec![broken[1].key.as_str(), "not a count"])
        .await
        .unwrap();

    let before = server.evalsha_calls().await;
    let (broken_decision, fine_decision) = tokio::join!(
        store.decide(&broken, Clock::Store),
        store.decide(&fine, Clock::Store)
    );
    assert_eq!(server.evalsha_calls().await - before, 1);

    match broken_decision {
        Err(StoreError::Redis(message)) => assert!(message.contains("WRONGTYPE"), "{message}"),
        other => panic!("expected Redis's WRONGTYPE, got {other:?}"),
    }
    let fine_decision = fine_decision.unwrap();
    assert!(fine_decision.allowed);
    assert_eq!(fine_decision.policies[0].remaining, 9);
    let untouched: Option<String> = conn.get(&broken[0].key).await.unwrap();
    assert_eq!(untouched, None, "the failed decision consumed nothing");
    let _: i64 = conn.del(&broken[1].key).await.unwrap();
    server.assert_every_key_has_ttl().await;
}

/// A decision whose request was dropped before its call went out is left out of the call, so
/// it is never counted.
#[tokio::test]
async fn a_decision_given_up_before_its_call_is_never_counted() {
    let server = RedisServer::start().await;
    let store = store(&server).await;
    let policy = per_hour(10);
    let (gone, kept) = (checks("gone", &policy), checks("kept", &policy));

    let mut given_up = Box::pin(store.decide(&gone, Clock::Store));
    let polled = futures::poll!(given_up.as_mut());
    assert!(polled.is_pending(), "the decision waits for its call");
    drop(given_up);
    let decision = store.decide(&kept, Clock::Store).await.unwrap();
    assert!(decision.allowed);

    assert_eq!(server.keys().await, vec![kept[0].key.clone()]);
    let conn = server.client().await;
    let gone_value: Option<String> = conn.get(&gone[0].key).await.unwrap();
    assert_eq!(gone_value, None);
}
