//! Live configuration, on the real binary: SIGHUP, a file written in place and a Kubernetes
//! ConfigMap's symlink swap each reload it, on the memory store and on Redis; a raised limit
//! admits at once and a lowered one denies at once; a broken file is refused and the old limits
//! keep applying; a key only a restart changes is warned about; reloads under load lose and
//! double-count nothing.

mod support;

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use support::binary::Binary;
use support::rls::{client_on, Client};
use support::served::Served;
use support::{free_port, RedisServer, NO_BOUNDARY};

/// The store a scenario runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
}

/// One policy, `limit` per user in a window no test crosses, with `extra` TOML after it (and
/// the Redis URL first, when there is one). The watch polls every 100 ms, or never for `0s`.
fn config(redis: Option<&RedisServer>, watch: &str, limit: u64, extra: &str) -> String {
    let redis = redis.map_or(String::new(), |r| {
        format!("[redis]\nurl = \"{}\"\ntimeout = \"2s\"\n", r.url())
    });
    format!(
        "{redis}[reload]\nwatch_interval = \"{watch}\"\n\n[[policies]]\nname = \"per_user\"\n\
         limit = {limit}\nwindow = \"{NO_BOUNDARY}\"\n{extra}"
    )
}

/// The binary on `backend`, reading `tollgate.toml` written by `text` (given the Redis server,
/// if any).
async fn start(backend: Backend, text: impl Fn(Option<&RedisServer>) -> String) -> Served {
    let redis = match backend {
        Backend::Memory => None,
        Backend::Redis => Some(RedisServer::start().await),
    };
    Served::start_on(redis, text).await
}

/// SIGHUP alone (the watch is off) applies a raised limit and a lowered one at once, the
/// denial cache included, on both stores; counts carry across.
#[tokio::test]
async fn a_signal_reloads_raised_and_lowered_limits_at_once() {
    for backend in [Backend::Memory, Backend::Redis] {
        let served = start(backend, |r| config(r, "0s", 2, "")).await;
        let redis = served.redis.as_ref();
        // joe's third request is denied, and that denial cached.
        assert_eq!(
            served.statuses("joe", 3).await,
            [200, 200, 429],
            "{backend:?}"
        );
        served.write(&config(redis, "0s", 4, ""));
        // The watch is off: nothing happens until the signal.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(served.metric("tollgate_config_generation").await, 1.0);
        served.binary.signal("-HUP");
        served.until_generation(2).await;
        // Raised: admitted at once, his two earlier requests still counted.
        assert_eq!(
            served.statuses("joe", 3).await,
            [200, 200, 429],
            "{backend:?}"
        );
        assert_eq!(served.statuses("ann", 1).await, [200], "{backend:?}");
        served.write(&config(redis, "0s", 1, ""));
        served.binary.signal("-HUP");
        served.until_generation(3).await;
        // Lowered: ann, who has spent 1, is denied at once.
        assert_eq!(served.statuses("ann", 1).await, [429], "{backend:?}");
        let log = served.binary.log();
        assert!(
            log.contains("configuration reloaded trigger=\"signal\" generation=3"),
            "{log}"
        );
        assert!(served.binary.log().matches("reloaded").count() >= 2);
        if let Some(redis) = redis {
            redis.assert_every_key_has_ttl().await;
        }
    }
}

/// A file written in place is reloaded without a signal, within the watch interval, on both
/// stores.
#[tokio::test]
async fn a_file_written_in_place_is_reloaded() {
    for backend in [Backend::Memory, Backend::Redis] {
        let served = start(backend, |r| config(r, "100ms", 2, "")).await;
        assert_eq!(
            served.statuses("joe", 3).await,
            [200, 200, 429],
            "{backend:?}"
        );
        served.write(&config(served.redis.as_ref(), "100ms", 3, ""));
        served.until_generation(2).await;
        assert_eq!(served.statuses("joe", 2).await, [200, 429], "{backend:?}");
        assert_eq!(
            served
                .metric("tollgate_config_reloads_total{outcome=\"applied\"}")
                .await,
            1.0
        );
        let log = served.binary.log();
        assert!(
            log.contains("configuration reloaded trigger=\"file\""),
            "{log}"
        );
    }
}

/// Kubernetes updates a mounted ConfigMap by pointing `..data` at a new directory: the file
/// the binary was given is a symlink whose target changes, not a file written. That reloads,
/// on both stores.
#[tokio::test]
async fn a_configmap_symlink_swap_is_reloaded() {
    for backend in [Backend::Memory, Backend::Redis] {
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => Some(RedisServer::start().await),
        };
        let dir = tempfile::tempdir().unwrap();
        let first = config(redis.as_ref(), "100ms", 2, "");
        configmap_version(dir.path(), "..2026_12_06_v1", &first);
        let file = dir.path().join("tollgate.toml");
        std::os::unix::fs::symlink("..data/tollgate.toml", &file).unwrap();
        let served = Served::serve_with(dir, file, redis).await;
        assert_eq!(
            served.statuses("joe", 3).await,
            [200, 200, 429],
            "{backend:?}"
        );
        let dir = served.dir.path();
        let second = config(served.redis.as_ref(), "100ms", 4, "");
        configmap_version(dir, "..2026_12_06_v2", &second);
        std::fs::remove_dir_all(dir.join("..2026_12_06_v1")).unwrap();
        served.until_generation(2).await;
        assert_eq!(
            served.statuses("joe", 3).await,
            [200, 200, 429],
            "{backend:?}"
        );
        if let Some(redis) = &served.redis {
            redis.assert_every_key_has_ttl().await;
        }
    }
}

/// Writes `text` as `tollgate.toml` in a new directory `version` of the ConfigMap mounted at
/// `dir`, then points `..data` at it as the kubelet does: a new link renamed over the old.
fn configmap_version(dir: &Path, version: &str, text: &str) {
    std::fs::create_dir(dir.join(version)).unwrap();
    std::fs::write(dir.join(version).join("tollgate.toml"), text).unwrap();
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &staged).unwrap();
    // rename(2) replaces the old link in one step: a reader sees one version or the other.
    std::fs::rename(&staged, dir.join("..data")).unwrap();
}

/// A broken file is refused whole: the error names the key as at startup, a metric counts it,
/// and the old limits keep applying until a good file replaces it.
#[tokio::test]
async fn a_broken_file_is_refused_and_the_old_limits_keep_applying() {
    let served = start(Backend::Memory, |r| config(r, "100ms", 2, "")).await;
    assert_eq!(served.statuses("joe", 1).await, [200]);
    let rejected = "tollgate_config_reloads_total{outcome=\"rejected\"}";
    // A typo in a key, then a value out of range.
    let typo = config(None, "100ms", 5, "").replace("limit = 5", "limt = 5");
    served.write(&typo);
    served.until_metric(rejected, 1.0).await;
    served.write(&config(None, "100ms", 5, "").replace(&format!("\"{NO_BOUNDARY}\""), "\"0s\""));
    served.until_metric(rejected, 2.0).await;
    let log = served.binary.log();
    for expected in [
        "policies[0].limt: unknown key",
        "policies[0].window",
        "the running configuration keeps serving",
    ] {
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }
    assert_eq!(served.metric("tollgate_config_generation").await, 1.0);
    // Still the first configuration's 2.
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
    served.write(&config(None, "100ms", 3, ""));
    served.until_generation(2).await;
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
}

/// A key only a restart applies is warned about by name and kept; the rest of the reload
/// applies, and `/metrics` says a restart is pending.
#[tokio::test]
async fn a_restart_only_key_is_warned_about_and_kept() {
    let served = start(Backend::Memory, |r| config(r, "100ms", 2, "")).await;
    // The memory store would refuse a fifth caller, were its cap applied.
    let capped = format!(
        "[memory]\nmax_callers = 4\n{}",
        config(None, "100ms", 3, "")
    );
    served.write(&capped);
    served.until_generation(2).await;
    assert_eq!(served.metric("tollgate_config_restart_pending").await, 1.0);
    for user in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(served.statuses(user, 1).await, [200], "{user}");
    }
    // The new limit did apply.
    assert_eq!(served.statuses("joe", 4).await, [200, 200, 200, 429]);
    let log = served.binary.log();
    assert!(
        log.contains("memory.max_callers changed, but only a restart applies it"),
        "{log}"
    );
}

/// The default `tollgate.toml` deleted is refused, not read as "no file, so the defaults":
/// that would lift every limit to the default 3 a minute. A file put back is reloaded.
#[tokio::test]
async fn a_deleted_file_is_refused() {
    let text = config(None, "100ms", 1, "");
    let binary = Binary::start_with_files(&[("tollgate.toml", &text)], &[]).await;
    let file = binary.dir().join("tollgate.toml");
    let served = Served {
        binary,
        dir: tempfile::tempdir().unwrap(),
        file,
        client: reqwest::Client::new(),
        redis: None,
    };
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
    std::fs::remove_file(&served.file).unwrap();
    served
        .until_metric("tollgate_config_reloads_total{outcome=\"rejected\"}", 1.0)
        .await;
    assert_eq!(served.statuses("joe", 1).await, [429]);
    assert!(served
        .binary
        .log()
        .contains("the configuration file is gone"));
    served.write(&config(None, "100ms", 2, ""));
    served.until_generation(2).await;
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
}

/// An unchanged file, signalled, swaps nothing: cached denials and the generation stay.
#[tokio::test]
async fn a_reload_that_changes_nothing_swaps_nothing() {
    let served = start(Backend::Memory, |r| config(r, "0s", 1, "")).await;
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
    served.binary.signal("-HUP");
    served
        .until_metric("tollgate_config_reloads_total{outcome=\"unchanged\"}", 1.0)
        .await;
    assert_eq!(served.metric("tollgate_config_generation").await, 1.0);
    assert_eq!(served.metric("tollgate_cached_denials_total").await, 0.0);
    // The denial cached before the reload is served from the cache after it.
    assert_eq!(served.statuses("joe", 1).await, [429]);
    assert_eq!(served.metric("tollgate_cached_denials_total").await, 1.0);
}

/// A policy that keeps its name while its window, then its algorithm, then its rate changes
/// never misreads what the old one stored, on both stores: a new window or algorithm counts
/// afresh (with the new window's TTL on Redis), and a bucket's raised rate keeps what was spent.
#[tokio::test]
async fn a_policy_changed_under_its_name_never_misreads_its_counts() {
    let shaped = |redis: Option<&RedisServer>, algorithm: &str, limit: u64, window: &str| {
        config(redis, "0s", limit, "")
            .replace(&format!("\"{NO_BOUNDARY}\""), &format!("\"{window}\""))
            .replace(
                "limit = ",
                &format!("algorithm = \"{algorithm}\"\nlimit = "),
            )
    };
    for backend in [Backend::Memory, Backend::Redis] {
        let served = start(backend, |r| shaped(r, "fixed_window", 2, NO_BOUNDARY)).await;
        let redis = served.redis.as_ref();
        assert_eq!(
            served.statuses("joe", 3).await,
            [200, 200, 429],
            "{backend:?}"
        );
        let steps = [
            // An hour's window in place of the long one: joe's count is not the hour's.
            (shaped(redis, "fixed_window", 2, "1h"), vec![200, 200, 429]),
            // A token bucket of the same name: it starts afresh.
            (shaped(redis, "token_bucket", 2, "1h"), vec![200, 200, 429]),
            // Ten times the rate: the two tokens spent are 2 of 20, so joe is admitted at once.
            (shaped(redis, "token_bucket", 20, "1h"), vec![200]),
        ];
        for (generation, (text, expected)) in steps.into_iter().enumerate() {
            served.write(&text);
            served.binary.signal("-HUP");
            served.until_generation(generation as u64 + 2).await;
            assert_eq!(
                served.statuses("joe", expected.len()).await,
                expected,
                "{backend:?}"
            );
            if let Some(redis) = redis {
                for key in redis
                    .keys()
                    .await
                    .iter()
                    .filter(|k| k.ends_with(":per_user"))
                {
                    let ttl = redis.command(&["PTTL", key]).await.unwrap();
                    let ttl = ttl.as_i64().unwrap();
                    assert!(ttl > 0 && ttl <= 3_600_000, "{key}: PTTL {ttl}");
                }
            }
        }
    }
}

/// A changed secret alone is a change to apply, though the digest on `/metrics` leaves
/// secrets out: a new `identity.hash_key` names every caller's key anew.
#[tokio::test]
async fn a_changed_hash_key_alone_is_applied_and_kept_out_of_the_digest() {
    let keyed = |key: &str| {
        format!(
            "[identity]\nhash_key = \"{key}\"\n{}",
            config(None, "0s", 1, "")
        )
    };
    let served = start(Backend::Memory, |_| keyed("pepper")).await;
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
    let digest = |text: String| {
        text.lines()
            .find(|l| l.starts_with("tollgate_config_info"))
            .map(str::to_owned)
            .unwrap()
    };
    let metrics = || async {
        served
            .client
            .get(served.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = digest(metrics().await);
    served.write(&keyed("salt"));
    served.binary.signal("-HUP");
    served.until_generation(2).await;
    // joe's count is under his old key name: under the new one he starts afresh.
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
    assert_eq!(digest(metrics().await), before);
    assert!(!metrics().await.contains("salt") && !metrics().await.contains("pepper"));
}

/// The count stored for `key`'s value: the number before the first `:`.
fn stored_count(value: &str) -> u64 {
    value.split(':').next().unwrap().parse().unwrap()
}

/// Reloads 11 times, 100 ms apart, between two limits while 16 clients send requests
/// throughout: every answer is 200 or 429 with one of the two limits, no caller is admitted
/// past the larger, and on Redis each caller's stored count is exactly the requests admitted.
#[tokio::test]
async fn reloads_under_load_lose_and_double_count_nothing() {
    const USERS: usize = 12;
    const LIMITS: [u64; 2] = [20, 35];
    /// The configurations served, the first included.
    const RELOADS: usize = 12;
    for backend in [Backend::Memory, Backend::Redis] {
        let served = start(backend, |r| config(r, "0s", LIMITS[0], "")).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..16 {
            let (client, url) = (served.client.clone(), served.url("/user"));
            let stop = stop.clone();
            workers.spawn(async move {
                // (user, status, the limit the answer named)
                let mut seen: Vec<(usize, u16, u64)> = Vec::new();
                let mut i = worker;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let user = i % USERS;
                    i += 7;
                    let response = client
                        .get(&url)
                        .header("x-user", format!("user{user}"))
                        .send()
                        .await
                        .expect("every request is answered");
                    let limit = response
                        .headers()
                        .get("x-ratelimit-limit")
                        .map(|v| v.to_str().unwrap().parse().unwrap())
                        .unwrap_or(0);
                    seen.push((user, response.status().as_u16(), limit));
                }
                seen
            });
        }
        let mut generation = 1;
        while generation < RELOADS {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let limit = LIMITS[generation % 2];
            served.write(&config(served.redis.as_ref(), "0s", limit, ""));
            served.binary.signal("-HUP");
            generation += 1;
            served.until_generation(generation as u64).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut admitted = [0u64; USERS];
        let mut answers = 0;
        while let Some(seen) = workers.join_next().await {
            for (user, status, limit) in seen.unwrap() {
                answers += 1;
                assert!(
                    status == 200 || status == 429,
                    "{backend:?}: status {status}"
                );
                assert!(LIMITS.contains(&limit), "{backend:?}: limit {limit}");
                if status == 200 {
                    admitted[user] += 1;
                }
            }
        }
        assert!(answers > 200, "{backend:?}: only {answers} answers");
        assert_eq!(generation, RELOADS);
        for (user, admitted) in admitted.iter().enumerate() {
            assert!(
                *admitted <= LIMITS[1],
                "{backend:?}: user{user} admitted {admitted} times"
            );
        }
        if let Some(redis) = &served.redis {
            let keys = redis.keys().await;
            let mut stored = 0;
            for key in keys.iter().filter(|k| k.ends_with(":per_user")) {
                let value = redis.command(&["GET", key]).await.unwrap();
                stored += stored_count(&value.as_string().unwrap());
            }
            assert_eq!(stored, admitted.iter().sum::<u64>(), "{keys:?}");
            redis.assert_every_key_has_ttl().await;
        }
    }
}

/// The descriptor files of Envoy's protocol are watched too: a changed `requests_per_unit`
/// applies without a signal.
#[tokio::test]
async fn a_changed_descriptor_file_is_reloaded() {
    use support::rls::{descriptor, statuses};
    let rls_port = free_port();
    let yaml = |limit: u32| {
        format!(
            "domain: api\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: day\n      \
             requests_per_unit: {limit}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let descriptors = dir.path().join("ratelimit.yaml");
    std::fs::write(&descriptors, yaml(1)).unwrap();
    let file = dir.path().join("tollgate.toml");
    std::fs::write(
        &file,
        format!(
            "[reload]\nwatch_interval = \"100ms\"\n[rls]\nlisten = \"127.0.0.1:{rls_port}\"\n\
             config = [{:?}]\n",
            descriptors.display().to_string()
        ),
    )
    .unwrap();
    let served = Served::serve(dir, file).await;
    let mut client = client_on(rls_port).await;
    let ask = |client: &mut Client| {
        let request = RateLimitRequest {
            domain: "api".into(),
            descriptors: vec![descriptor(&[("user", "joe")])],
            hits_addend: 0,
        };
        let mut client = client.clone();
        async move {
            statuses(
                &client
                    .should_rate_limit(request)
                    .await
                    .expect("answered")
                    .into_inner(),
            )
        }
    };
    assert_eq!(ask(&mut client).await[0].1, Some(1));
    assert_eq!(ask(&mut client).await[0].0, Code::OverLimit);
    std::fs::write(&descriptors, yaml(3)).unwrap();
    served.until_generation(2).await;
    let raised = ask(&mut client).await;
    assert_eq!(raised[0].0, Code::Ok, "{raised:?}");
    assert_eq!(raised[0].1, Some(3));
}
