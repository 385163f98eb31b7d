//! An adversarial review of live configuration: what a careless operator or a production
//! incident does to a reload. Each test proves one behaviour.
//!
//! The real binary is used for signals, files and logs; the library
//! (`tollgate::reload::Reloader`) where a count of the runtime's tasks or a digest is easier
//! read in process.

mod support;

use std::os::unix::fs::OpenOptionsExt;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use support::rls::{client_on, Client};
use support::rls::{descriptor, statuses};
use support::served::{Served, RELOAD_DEADLINE};
use support::{free_port, RedisServer, NO_BOUNDARY};
use tollgate::reload::{Outcome, Reloader};
use tollgate::Settings;

/// One policy `per_user`, `limit` per user in a window no test crosses, the watch polling
/// `watch` (`0s`: SIGHUP only), with `extra` TOML before it (top-level keys and tables).
fn config(watch: &str, limit: u64, extra: &str) -> String {
    format!(
        "{extra}\n[reload]\nwatch_interval = \"{watch}\"\n\n[[policies]]\nname = \"per_user\"\n\
         limit = {limit}\nwindow = \"{NO_BOUNDARY}\"\n"
    )
}

/// Asks about `user`'s descriptor in domain `api`: each status's code and limit.
async fn ask(client: &Client, user: &str) -> Vec<(Code, Option<u32>)> {
    let request = RateLimitRequest {
        domain: "api".into(),
        descriptors: vec![descriptor(&[("user", user)])],
        hits_addend: 0,
    };
    let answer = client.clone().should_rate_limit(request).await;
    statuses(&answer.expect("answered").into_inner())
        .into_iter()
        .map(|(code, limit, _)| (code, limit))
        .collect()
}

/// A descriptor file of domain `domain` limiting each `user` to `limit` a day.
fn descriptor_yaml(domain: &str, limit: u32) -> String {
    format!(
        "domain: {domain}\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: day\n      \
         requests_per_unit: {limit}\n"
    )
}

/// `[rls]` listening on `port` and loading `config` (paths).
fn rls_section(port: u16, config: &[&Path]) -> String {
    let config: Vec<String> = config
        .iter()
        .map(|path| format!("{:?}", path.display().to_string()))
        .collect();
    format!(
        "[rls]\nlisten = \"127.0.0.1:{port}\"\nconfig = [{}]\n",
        config.join(", ")
    )
}

/// A configuration directory: `descriptors/` holding `<domain>.yaml` at `limit` a day, and
/// `tollgate.toml` polling every `watch`, `per_user` a user, serving the descriptors on
/// `rls_port`. Returns the directory, the configuration file and the descriptors' directory.
fn with_descriptors(
    rls_port: u16,
    watch: &str,
    per_user: u64,
    (domain, limit): (&str, u32),
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let descriptors = dir.path().join("descriptors");
    std::fs::create_dir(&descriptors).unwrap();
    let yaml = descriptors.join(format!("{domain}.yaml"));
    std::fs::write(yaml, descriptor_yaml(domain, limit)).unwrap();
    let file = dir.path().join("tollgate.toml");
    let text = config(watch, per_user, &rls_section(rls_port, &[&descriptors]));
    std::fs::write(&file, text).unwrap();
    (dir, file, descriptors)
}

// ---- Bugs ----------------------------------------------------------------------------------

/// A policy of an Envoy rule keeps its `tollgate_decisions_total` across a reload that keeps
/// its name, as a `[[policies]]` policy does.
#[tokio::test]
async fn a_rule_policys_counters_survive_a_reload() {
    let rls_port = free_port();
    let rules = |limit: u64| {
        let rls = format!(
            "[rls]\nlisten = \"127.0.0.1:{rls_port}\"\n\n[[rls.policies]]\nname = \"per_descriptor\"\n\
             limit = 10\nwindow = \"1d\"\n\n[[rls.rules]]\ndomain = \"api\"\n\
             descriptor = [{{ key = \"user\" }}]\npolicies = [\"per_descriptor\"]\n"
        );
        config("0s", limit, &rls)
    };
    let served = Served::start(&rules(5)).await;
    let client = client_on(rls_port).await;
    for _ in 0..2 {
        assert_eq!(ask(&client, "joe").await[0].0, Code::Ok);
    }
    let allowed = "tollgate_decisions_total{policy=\"per_descriptor\",outcome=\"allowed\"}";
    let descriptors = "tollgate_rls_descriptors_total{domain=\"api\",rule=\"user\",code=\"ok\"}";
    assert_eq!(served.metric(allowed).await, 2.0);
    assert_eq!(served.metric(descriptors).await, 2.0);
    // Only [[policies]] changes; the rule and its policy keep their names.
    served.write(&rules(6));
    served.binary.signal("-HUP");
    served.until_generation(2).await;
    // Envoy's own series carries over...
    assert_eq!(served.metric(descriptors).await, 2.0);
    // ...and so must the policy's.
    assert_eq!(
        served.metric(allowed).await,
        2.0,
        "{}",
        served.metrics().await
    );
}

/// A configuration refused for a mistake in a descriptor file it adds is reloaded once that
/// file is fixed: the files the refused configuration names are watched too.
#[tokio::test]
async fn fixing_the_new_descriptor_file_of_a_refused_configuration_reloads_it() {
    let rls_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("api.yaml"), dir.path().join("web.yaml"));
    std::fs::write(&first, descriptor_yaml("api", 1)).unwrap();
    let file = dir.path().join("tollgate.toml");
    std::fs::write(&file, config("100ms", 5, &rls_section(rls_port, &[&first]))).unwrap();
    let served = Served::serve(dir, file).await;
    // The second file has a mistake: a unit ratelimit does not know.
    std::fs::write(
        &second,
        descriptor_yaml("web", 1).replace("unit: day", "unit: fortnight"),
    )
    .unwrap();
    served.write(&config(
        "100ms",
        5,
        &rls_section(rls_port, &[&first, &second]),
    ));
    served
        .until_metric("tollgate_config_reloads_total{outcome=\"rejected\"}", 1.0)
        .await;
    // The operator fixes the file the log named, and nothing else.
    std::fs::write(&second, descriptor_yaml("web", 1)).unwrap();
    served.until_generation(2).await;
}

/// A file the descriptor loader does not read (not `*.yaml` or `*.yml`), written beside the
/// descriptor files, changes nothing: the reload is `unchanged` and the generation stays.
#[tokio::test]
async fn a_file_the_loader_ignores_changes_nothing() {
    let (dir, file, descriptors) = with_descriptors(free_port(), "0s", 5, ("api", 1));
    let served = Served::serve(dir, file).await;
    std::fs::write(descriptors.join("api.yaml~"), "an editor's backup").unwrap();
    std::fs::write(descriptors.join("README.md"), "what these files are").unwrap();
    served.binary.signal("-HUP");
    served.until_reloads(1.0).await;
    assert_eq!(
        served
            .metric("tollgate_config_reloads_total{outcome=\"unchanged\"}")
            .await,
        1.0
    );
    assert_eq!(served.metric("tollgate_config_generation").await, 1.0);
}

/// A configuration file emptied (as `>` truncates it before writing, or a failed write leaves
/// it) is refused on SIGHUP, as a deleted one is, rather than read as "the defaults", which
/// would put the default policy in place of the operator's.
#[tokio::test]
async fn an_emptied_file_is_refused_on_a_signal() {
    let served = Served::start(&config("0s", 1, "")).await;
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
    served.write("");
    served.binary.signal("-HUP");
    served.until_reloads(1.0).await;
    assert_eq!(
        served
            .metric("tollgate_config_reloads_total{outcome=\"rejected\"}")
            .await,
        1.0,
        "{}",
        served.binary.log()
    );
    assert_eq!(served.statuses("joe", 1).await, [429]);
}

// ---- Behaviour that holds ------------------------------------------------------------------

/// After hundreds of reloads on Redis, every old generation is dropped: each one's reset
/// watch (which ends when its denial cache, held only by its limiter, is dropped) has ended,
/// so the runtime runs no more tasks than after the first reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_generations_are_dropped_after_many_reloads() {
    const RELOADS: u64 = 300;
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.toml");
    let text = |limit: u64| {
        config(
            "0s",
            limit,
            &format!("[redis]\nurl = \"{}\"\n", redis.url()),
        )
    };
    std::fs::write(&file, text(1)).unwrap();
    let settings = Settings::load(Some(&file)).unwrap();
    let (served, mut reloader) = Reloader::start(settings, Some(file.clone())).await.unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    std::fs::write(&file, text(2)).unwrap();
    assert_eq!(reloader.reload("signal").await, Outcome::Applied);
    // Two ticks of the reset watch: the first generation's watch has seen its cache go.
    tokio::time::sleep(tollgate::reset::WATCH_EVERY * 3).await;
    let after_one = metrics.num_alive_tasks();
    for limit in 3..RELOADS + 3 {
        std::fs::write(&file, text(limit)).unwrap();
        assert_eq!(reloader.reload("signal").await, Outcome::Applied);
    }
    assert_eq!(reloader.status().generation(), RELOADS + 2);
    let started = Instant::now();
    loop {
        let alive = metrics.num_alive_tasks();
        if alive <= after_one {
            break;
        }
        assert!(
            started.elapsed() < RELOAD_DEADLINE,
            "{alive} tasks alive after {RELOADS} reloads, {after_one} after one"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(served);
}

/// Two instances reading the same file name it by the same digest, which a change alters and
/// changing it back restores.
#[tokio::test]
async fn the_digest_names_the_file_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.toml");
    std::fs::write(&file, config("0s", 2, "")).unwrap();
    let start = || async {
        let settings = Settings::load(Some(&file)).unwrap();
        Reloader::start(settings, Some(file.clone())).await.unwrap()
    };
    let (_one, mut one) = start().await;
    let (_two, two) = start().await;
    let first = one.status().digest();
    assert_eq!(first, two.status().digest());
    std::fs::write(&file, config("0s", 3, "")).unwrap();
    assert_eq!(one.reload("signal").await, Outcome::Applied);
    assert_ne!(one.status().digest(), first);
    std::fs::write(&file, config("0s", 2, "")).unwrap();
    assert_eq!(one.reload("signal").await, Outcome::Applied);
    assert_eq!(one.status().digest(), first);
    assert_eq!(one.reload("signal").await, Outcome::Unchanged);
}

/// A file rewritten 50 times in about a second, with two SIGHUPs after each write (100 in
/// all), ends on the last file written: it serves within a few seconds, and the process lives.
#[tokio::test]
async fn a_flood_of_writes_and_signals_ends_on_the_last_file() {
    let mut served = Served::start(&config("100ms", 1, "")).await;
    for limit in 2..=51 {
        served.replace(&config("100ms", limit, ""));
        served.binary.signal("-HUP");
        served.binary.signal("-HUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let limit = served.limit_for_a_new_caller(&format!("new{n}")).await;
        if limit == Some(51) {
            break;
        }
        assert!(
            started.elapsed() < RELOAD_DEADLINE,
            "still {limit:?}, not 51:\n{}",
            served.binary.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing more is pending: the last configuration stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served.limit_for_a_new_caller("last").await, Some(51));
    assert!(served.binary.running());
}

/// A restart-only key changed is pending; changed back, nothing is pending any more.
#[tokio::test]
async fn a_restart_only_key_changed_back_is_no_longer_pending() {
    let served = Served::start(&config("0s", 2, "")).await;
    let digest = served.metrics().await;
    let info = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("tollgate_config_info"))
            .unwrap()
            .to_owned()
    };
    served.write(&config("0s", 2, "[memory]\nmax_callers = 4\n"));
    served.binary.signal("-HUP");
    served.until_generation(2).await;
    assert_eq!(served.metric("tollgate_config_restart_pending").await, 1.0);
    served.write(&config("0s", 2, ""));
    served.binary.signal("-HUP");
    served.until_generation(3).await;
    assert_eq!(served.metric("tollgate_config_restart_pending").await, 0.0);
    assert_eq!(info(&served.metrics().await), info(&digest));
}

/// `redis.on_error` changed while Redis is unreachable: the failure mode follows the new
/// setting at once, and back again.
#[tokio::test]
async fn on_error_changed_during_an_outage_follows_the_new_setting() {
    // Nothing listens there: Redis is down from the start.
    let redis = |on_error: &str| {
        format!(
            "[redis]\nurl = \"redis://127.0.0.1:{}\"\ntimeout = \"100ms\"\non_error = \"{on_error}\"\n",
            free_port()
        )
    };
    // The URL is restart-only: the port changes between writes, but the first one is kept.
    let served = Served::start(&config("0s", 5, &redis("deny"))).await;
    assert_eq!(served.statuses("joe", 1).await, [503]);
    served.write(&config("0s", 5, &redis("allow")));
    served.binary.signal("-HUP");
    served.until_generation(2).await;
    assert_eq!(served.statuses("joe", 3).await, [200, 200, 200]);
    served.write(&config("0s", 5, &redis("deny")));
    served.binary.signal("-HUP");
    served.until_generation(3).await;
    assert_eq!(served.statuses("joe", 1).await, [503]);
}

/// The forward-auth path, the identity header and the headers mode each follow a reload:
/// the old path is gone, the new header names the caller, and the headers are as set.
#[tokio::test]
async fn forward_auth_identity_and_headers_follow_a_reload() {
    let extra = |path: &str, header: &str, mode: &str| {
        format!(
            "headers = \"{mode}\"\n[identity]\nheader = \"{header}\"\n\
             [forward_auth]\npath = \"{path}\"\ntrust_any_peer = true\n"
        )
    };
    let served = Served::start(&config("0s", 1, &extra("/check", "x-user", "all"))).await;
    let first = served.get("/check", "x-user", "joe").await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().contains_key("x-ratelimit-limit"));
    assert_eq!(served.get("/check", "x-user", "joe").await.status(), 429);
    served.write(&config(
        "0s",
        1,
        &extra("/auth", "x-api-user", "retry_after"),
    ));
    served.binary.signal("-HUP");
    served.until_generation(2).await;
    assert_eq!(
        served.get("/check", "x-api-user", "ann").await.status(),
        404
    );
    let admitted = served.get("/auth", "x-api-user", "ann").await;
    assert_eq!(admitted.status(), 200);
    assert!(!admitted.headers().contains_key("x-ratelimit-limit"));
    // ann is named by the new header: her second request is hers, and denied.
    let denied = served.get("/auth", "x-api-user", "ann").await;
    assert_eq!(denied.status(), 429);
    assert!(denied.headers().contains_key("retry-after"));
    assert!(!denied.headers().contains_key("x-ratelimit-limit"));
}

/// `redis.key_prefix` changed live, then `tollgate reset`: the new generation's reset watch
/// reads the marker under the new prefix, so the caller's cached denial is forgotten.
#[tokio::test]
async fn a_reset_after_a_prefix_change_reaches_the_new_cache() {
    let redis = RedisServer::start().await;
    let text = |prefix: &str| {
        config(
            "0s",
            1,
            &format!(
                "[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
                redis.url()
            ),
        )
    };
    let served = Served::start(&text("before")).await;
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
    served.write(&text("after"));
    served.binary.signal("-HUP");
    served.until_generation(2).await;
    // A new prefix, new keys: joe starts afresh, and his denial is cached anew.
    assert_eq!(served.statuses("joe", 3).await, [200, 429, 429]);
    assert!(served.metric("tollgate_cached_denials_total").await >= 1.0);
    let reset = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["reset", "joe"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TOLLGATE_CONFIG", &served.file)
        .current_dir(served.dir.path())
        .output()
        .unwrap();
    assert!(reset.status.success(), "{reset:?}");
    let started = Instant::now();
    while served.statuses("joe", 1).await != [200] {
        assert!(
            started.elapsed() < RELOAD_DEADLINE,
            "joe still denied after the reset:\n{}",
            served.binary.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A policy that keeps its name keeps its counters across reloads; a renamed one starts a new
/// series and the old name's series goes; toggling `shadow` keeps the count, so the policy
/// denies at once once it is real.
#[tokio::test]
async fn counters_follow_names_and_shadow_toggles_keep_counts() {
    let two = |second: &str, shadow: bool| {
        format!(
            "[[policies]]\nname = \"{second}\"\nlimit = 1\nwindow = \"{NO_BOUNDARY}\"\n\
             shadow = {shadow}\n"
        )
    };
    let text =
        |second: &str, shadow: bool| format!("{}\n{}", config("0s", 10, ""), two(second, shadow));
    let served = Served::start(&text("trial", true)).await;
    assert_eq!(served.statuses("joe", 3).await, [200, 200, 200]);
    let kept = "tollgate_decisions_total{policy=\"per_user\",outcome=\"allowed\"}";
    let shadowed = "tollgate_shadow_denials_total{policy=\"trial\"}";
    assert_eq!(served.metric(kept).await, 3.0);
    assert_eq!(served.metric(shadowed).await, 2.0);
    // Real now: joe has spent 3 of 1, so he is denied at once.
    served.write(&text("trial", false));
    served.binary.signal("-HUP");
    served.until_generation(2).await;
    assert_eq!(served.statuses("joe", 1).await, [429]);
    assert_eq!(served.metric(kept).await, 3.0);
    // Renamed: a new series, the old one gone; per_user's goes on.
    served.write(&text("renamed", false));
    served.binary.signal("-HUP");
    served.until_generation(3).await;
    assert_eq!(served.statuses("ann", 1).await, [200]);
    assert_eq!(served.metric(kept).await, 4.0);
    let text = served.metrics().await;
    assert!(!text.contains("policy=\"trial\""), "{text}");
    assert!(
        text.contains("tollgate_decisions_total{policy=\"renamed\",outcome=\"allowed\"} 1"),
        "{text}"
    );
}

/// `TOLLGATE_CONFIG` naming a chain of symlinks: pointing a link in the middle at another
/// file reloads it.
#[tokio::test]
async fn a_symlink_chain_retargeted_midway_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1.toml"), dir.path().join("v2.toml"));
    std::fs::write(&v1, config("100ms", 1, "")).unwrap();
    std::fs::write(&v2, config("100ms", 3, "")).unwrap();
    let (outer, middle) = (dir.path().join("tollgate.toml"), dir.path().join("current"));
    std::os::unix::fs::symlink(&v1, &middle).unwrap();
    std::os::unix::fs::symlink(&middle, &outer).unwrap();
    let served = Served::serve(dir, outer).await;
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
    let staged = served.dir.path().join("current.tmp");
    std::os::unix::fs::symlink(&v2, &staged).unwrap();
    std::fs::rename(&staged, &middle).unwrap();
    served.until_generation(2).await;
    assert_eq!(served.statuses("joe", 3).await, [200, 200, 429]);
}

/// A directory where the configuration file should be is refused, and the old limits keep
/// applying; a file put back is reloaded.
#[tokio::test]
async fn a_directory_in_place_of_the_file_is_refused() {
    let served = Served::start(&config("100ms", 1, "")).await;
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
    std::fs::remove_file(&served.file).unwrap();
    std::fs::create_dir(&served.file).unwrap();
    std::fs::write(served.file.join("tollgate.toml"), config("100ms", 9, "")).unwrap();
    served
        .until_metric("tollgate_config_reloads_total{outcome=\"rejected\"}", 1.0)
        .await;
    assert_eq!(served.statuses("joe", 1).await, [429]);
    assert_eq!(served.metric("tollgate_config_generation").await, 1.0);
    std::fs::remove_dir_all(&served.file).unwrap();
    served.write(&config("100ms", 2, ""));
    served.until_generation(2).await;
    assert_eq!(served.statuses("joe", 2).await, [200, 429]);
}

/// An `rls.config` directory gaining a YAML file serves its domain without a signal; losing
/// its last one is refused, naming `rls.config[0]`, and the domains already loaded stay.
#[tokio::test]
async fn a_descriptor_directory_gaining_and_losing_files() {
    let rls_port = free_port();
    let (dir, file, descriptors) = with_descriptors(rls_port, "100ms", 5, ("web", 5));
    let served = Served::serve(dir, file).await;
    let client = client_on(rls_port).await;
    assert_eq!(ask(&client, "joe").await[0], (Code::Ok, None));
    std::fs::write(descriptors.join("api.yaml"), descriptor_yaml("api", 1)).unwrap();
    served.until_generation(2).await;
    assert_eq!(ask(&client, "joe").await[0], (Code::Ok, Some(1)));
    assert_eq!(ask(&client, "joe").await[0].0, Code::OverLimit);
    std::fs::remove_file(descriptors.join("api.yaml")).unwrap();
    std::fs::remove_file(descriptors.join("web.yaml")).unwrap();
    served
        .until_metric("tollgate_config_reloads_total{outcome=\"rejected\"}", 1.0)
        .await;
    let log = served.binary.log();
    assert!(log.contains("rls.config[0]"), "{log}");
    assert_eq!(ask(&client, "joe").await[0].0, Code::OverLimit);
}

/// A mistake in a descriptor file is refused, naming `rls.config[i]` and the file; the old
/// limits keep answering, and the file fixed is reloaded.
#[tokio::test]
async fn a_descriptor_file_mistake_names_its_entry_and_file() {
    let rls_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (web, api) = (dir.path().join("web.yaml"), dir.path().join("api.yaml"));
    std::fs::write(&web, descriptor_yaml("web", 5)).unwrap();
    std::fs::write(&api, descriptor_yaml("api", 1)).unwrap();
    let file = dir.path().join("tollgate.toml");
    std::fs::write(
        &file,
        config("100ms", 5, &rls_section(rls_port, &[&web, &api])),
    )
    .unwrap();
    let served = Served::serve(dir, file).await;
    let client = client_on(rls_port).await;
    assert_eq!(ask(&client, "joe").await[0], (Code::Ok, Some(1)));
    std::fs::write(
        &api,
        descriptor_yaml("api", 3).replace("unit: day", "unit: fortnight"),
    )
    .unwrap();
    served
        .until_metric("tollgate_config_reloads_total{outcome=\"rejected\"}", 1.0)
        .await;
    let log = served.binary.log();
    assert!(log.contains("rls.config[1]"), "{log}");
    assert!(log.contains(&api.display().to_string()), "{log}");
    assert_eq!(ask(&client, "joe").await[0].0, Code::OverLimit);
    std::fs::write(&api, descriptor_yaml("api", 3)).unwrap();
    served.until_generation(2).await;
    assert_eq!(ask(&client, "joe").await[0], (Code::Ok, Some(3)));
}

/// A file in an `rls.config` directory that changes all the time (one the loader does not
/// even read) does not keep the service from reloading: a SIGHUP still applies a new file.
#[tokio::test]
async fn a_file_that_never_settles_does_not_starve_reloads() {
    let rls_port = free_port();
    let (dir, file, descriptors) = with_descriptors(rls_port, "100ms", 1, ("api", 1));
    let text = |limit: u64| config("100ms", limit, &rls_section(rls_port, &[&descriptors]));
    let served = Served::serve(dir, file).await;
    // Something (a sidecar's heartbeat, a log) rewrites a file there every 50 ms.
    let heartbeat = descriptors.join("heartbeat");
    let beating = tokio::spawn(async move {
        for beat in 0u64.. {
            std::fs::write(&heartbeat, beat.to_string()).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    served.write(&text(7));
    served.binary.signal("-HUP");
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        if served.limit_for_a_new_caller(&format!("new{n}")).await == Some(7) {
            break;
        }
        assert!(
            started.elapsed() < RELOAD_DEADLINE,
            "the new limit never applied:\n{}",
            served.binary.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    beating.abort();
}

/// A named pipe in an `rls.config` directory (which the loader skips: not a regular file) does
/// not hang loading: the configuration's digest, which startup and every reload take, returns.
#[test]
fn a_named_pipe_beside_the_descriptors_does_not_hang_loading() {
    let (_dir, file, descriptors) = with_descriptors(free_port(), "0s", 1, ("api", 1));
    let fifo = descriptors.join("pipe");
    let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let settings = Settings::load(Some(&file)).unwrap();
        let _ = done.send(settings.digest());
    });
    let digest = finished.recv_timeout(Duration::from_secs(3));
    // Release a reader stuck on the pipe: a writer that opens and closes it gives it EOF. Not
    // blocking, so that with no reader (nothing stuck) the open fails rather than waits.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
    assert!(digest.is_ok(), "the digest did not return within 3 s");
}
