//! Findings of a review of Envoy's rate limit service, each proved by a test that failed on the
//! code it was written against: hostile costs, deadlines, overrides, the local fallback, floods
//! of descriptors and connections, shutdown, statuses on a cluster, the denial cache, shadow.
//!
//! No window boundary falls inside a test: YAML limits are per year, TOML ones [`NO_BOUNDARY`].

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use support::rls::{ask, client, descriptor, overall, statuses};
use support::{Backend, RedisServer, TestApp, NO_BOUNDARY};
use tonic::transport::Channel;

/// ratelimit's YAML: per user 3 a year, per address 2, per path 5, a shadow limit of 1, a
/// shadow block, and three more keys of 10 a year, for requests of many descriptors.
const YAML: &str = r#"
domain: api
descriptors:
  - key: user
    rate_limit: {unit: year, requests_per_unit: 3}
  - key: remote_address
    rate_limit: {unit: year, requests_per_unit: 2}
  - key: path
    rate_limit: {unit: year, requests_per_unit: 5}
  - key: shadowed
    shadow_mode: true
    rate_limit: {unit: year, requests_per_unit: 1}
  - key: blocked_shadow
    shadow_mode: true
    rate_limit: {unit: year, requests_per_unit: 0}
  - key: k1
    rate_limit: {unit: year, requests_per_unit: 10}
  - key: k2
    rate_limit: {unit: year, requests_per_unit: 10}
  - key: k3
    rate_limit: {unit: year, requests_per_unit: 10}
"#;

/// tollgate's own rules: one policy of each algorithm, 3 per [`NO_BOUNDARY`], on descriptors
/// `fixed`, `sliding` and `token`.
fn algorithm_rules() -> String {
    let mut toml = String::new();
    for (key, algorithm) in [
        ("fixed", "fixed_window"),
        ("sliding", "sliding_window"),
        ("token", "token_bucket"),
    ] {
        toml.push_str(&format!(
            "[[rls.policies]]\nname = \"{key}_3\"\nalgorithm = \"{algorithm}\"\nlimit = 3\n\
             window = \"{NO_BOUNDARY}\"\n\n[[rls.rules]]\ndomain = \"api\"\n\
             descriptor = [{{ key = \"{key}\" }}]\npolicies = [\"{key}_3\"]\n\n"
        ));
    }
    toml
}

/// [`YAML`]'s `[rls]` section, with `extra` TOML after it.
fn rls_toml(extra: &str) -> (tempfile::NamedTempFile, String) {
    support::rls::rls_toml(YAML, extra)
}

/// A descriptor of `entries` costing `hits`.
fn costing(entries: &[(&str, &str)], hits: u64) -> RateLimitDescriptor {
    RateLimitDescriptor {
        hits_addend: Some(UInt64Value { value: hits }),
        ..descriptor(entries)
    }
}

/// A descriptor of `entries` with Envoy's limit override of `per_year` a year.
fn overridden(entries: &[(&str, &str)], per_year: u32) -> RateLimitDescriptor {
    RateLimitDescriptor {
        limit: Some(RateLimitOverride {
            requests_per_unit: per_year,
            unit: RateLimitUnit::Year as i32,
        }),
        ..descriptor(entries)
    }
}

/// A request in domain `api` for `descriptors`.
fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "api".into(),
        descriptors,
        hits_addend: 0,
    }
}

/// The answer, or the gRPC status the call ended with.
async fn call(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    client
        .should_rate_limit(request)
        .await
        .map(tonic::Response::into_inner)
}

/// A descriptor's `hits_addend` that no policy could ever admit (above the limit, above 2^53,
/// at and above 2^63) is over the limit and spends nothing, under every algorithm: it never
/// wraps into an admission, a panic or a reply the store cannot read.
async fn a_cost_no_policy_can_admit_is_over_the_limit(store: &Backend) {
    let (_yaml, toml) = rls_toml(&algorithm_rules());
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    for key in ["fixed", "sliding", "token"] {
        let first = ask(&mut client, request(vec![descriptor(&[(key, "a")])])).await;
        assert_eq!(statuses(&first), [(Code::Ok, Some(3), 2)], "{key}");
        for hits in [4, (1 << 53) + 1, 1 << 63, u64::MAX] {
            let answer = call(&mut client, request(vec![costing(&[(key, "a")], hits)])).await;
            let answer = answer.unwrap_or_else(|status| panic!("{key}, {hits}: {status:?}"));
            assert_eq!(overall(&answer), Code::OverLimit, "{key}, cost {hits}");
        }
        let after = ask(&mut client, request(vec![descriptor(&[(key, "a")])])).await;
        assert_eq!(
            statuses(&after),
            [(Code::Ok, Some(3), 1)],
            "{key}: the huge costs spent nothing, so this is the second request admitted"
        );
    }
}
on_both_stores!(a_cost_no_policy_can_admit_is_over_the_limit);

/// A caller whose quota is spent stays denied whatever `hits_addend` it sends: a cost at or
/// above 2^63 is no way around the limit.
async fn an_exhausted_caller_stays_denied_whatever_its_cost(store: &Backend) {
    let (_yaml, toml) = rls_toml("");
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    let joe = || request(vec![descriptor(&[("user", "joe")])]);
    for _ in 0..3 {
        assert_eq!(overall(&ask(&mut client, joe()).await), Code::Ok);
    }
    assert_eq!(overall(&ask(&mut client, joe()).await), Code::OverLimit);
    for hits in [1 << 63, u64::MAX - 1, u64::MAX] {
        for _ in 0..3 {
            let answer = call(
                &mut client,
                request(vec![costing(&[("user", "joe")], hits)]),
            )
            .await;
            assert!(
                answer.as_ref().is_ok_and(|a| overall(a) == Code::OverLimit),
                "joe, over his limit, sent hits_addend {hits}: {answer:?}"
            );
        }
    }
}
on_both_stores!(an_exhausted_caller_stays_denied_whatever_its_cost);

/// One caller's huge `hits_addend` is that caller's denial alone: it fails no decision, so it
/// never opens the breaker that every other caller's decision goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_cost_never_opens_the_breaker_for_others() {
    let server = RedisServer::start().await;
    let (_yaml, toml) = rls_toml(&format!(
        "{}[redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"10s\"\n",
        algorithm_rules(),
        server.url()
    ));
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    // A request-level hits_addend, a u32, is enough: 4e9 tokens of a bucket of 3 per 82 years.
    let mut hostile = request(vec![descriptor(&[("token", "mallory")])]);
    hostile.hits_addend = 4_000_000_000;
    let mut mallory = Vec::new();
    for _ in 0..10 {
        let answer = call(&mut client, hostile.clone()).await;
        mallory.push(answer.map(|a| overall(&a)).map_err(|s| s.code()));
    }
    let joe = call(&mut client, request(vec![descriptor(&[("user", "joe")])])).await;
    assert!(
        joe.as_ref().is_ok_and(|a| overall(a) == Code::Ok),
        "joe, after mallory's requests {mallory:?}: {joe:?}"
    );
    assert!(
        mallory.iter().all(|a| *a == Ok(Code::OverLimit)),
        "mallory's own requests: {mallory:?}"
    );
}

/// With Redis stalled longer than Envoy's deadline, tollgate's failure mode answers within the
/// deadline (here `on_error = "allow"`: OK), rather than every call running out of time, which
/// leaves Envoy's own failure mode to decide and never opens the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_slower_than_envoys_deadline_ends_in_the_failure_mode() {
    let server = RedisServer::start().await;
    let (_yaml, toml) = rls_toml(&format!(
        "[redis]\nurl = \"{}\"\non_error = \"allow\"\ntimeout = \"2s\"\n",
        server.url()
    ));
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    assert_eq!(
        overall(&ask(&mut client, request(vec![descriptor(&[("user", "joe")])])).await),
        Code::Ok
    );
    server
        .command(&["CLIENT", "PAUSE", "5000", "ALL"])
        .await
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..8 {
        let mut call = tonic::Request::new(request(vec![descriptor(&[("user", "joe")])]));
        call.set_timeout(Duration::from_millis(600));
        let started = Instant::now();
        let answer = client.should_rate_limit(call).await;
        answers.push((
            answer.map(|a| overall(a.get_ref())).map_err(|s| s.code()),
            started.elapsed(),
        ));
    }
    let metrics = app.metrics().await;
    assert!(
        answers.iter().all(|(answer, _)| *answer == Ok(Code::Ok)),
        "every call answered by on_error = \"allow\" within Envoy's deadline: {answers:?}\n\
         {metrics}"
    );
}

/// Two descriptors with the same entries under one override count in one bucket at the sum of
/// their costs, as two descriptors of one configured rule do.
async fn identical_overrides_count_both(store: &Backend) {
    let (_yaml, toml) = rls_toml("");
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    let twice = request(vec![
        overridden(&[("tenant", "acme")], 2),
        overridden(&[("tenant", "acme")], 2),
    ]);
    let answer = ask(&mut client, twice).await;
    assert_eq!(overall(&answer), Code::Ok);
    assert_eq!(
        statuses(&answer),
        [(Code::Ok, Some(2), 0), (Code::Ok, Some(2), 0)],
        "both spent"
    );
    let third = ask(
        &mut client,
        request(vec![overridden(&[("tenant", "acme")], 2)]),
    )
    .await;
    assert_eq!(
        overall(&third),
        Code::OverLimit,
        "2 a year, 2 already spent: {:?}",
        statuses(&third)
    );
}
on_both_stores!(identical_overrides_count_both);

/// With Redis down and `on_error = "local"`, Envoy's override is divided by `local_divisor`, as
/// every configured limit is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_fallback_divides_an_override() {
    let mut server = RedisServer::start().await;
    let url = server.url();
    server.stop();
    let (_yaml, toml) = rls_toml(&format!(
        "[redis]\nurl = \"{url}\"\non_error = \"local\"\ntimeout = \"100ms\"\nlocal_divisor = 2\n"
    ));
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    // A configured limit: 2 a year, divided by 2, is 1.
    let address = || request(vec![descriptor(&[("remote_address", "192.0.2.1")])]);
    assert_eq!(overall(&ask(&mut client, address()).await), Code::Ok);
    assert_eq!(
        overall(&ask(&mut client, address()).await),
        Code::OverLimit,
        "a configured limit is divided"
    );
    // Envoy's override of 2 a year, divided by 2, is 1 as well.
    let tenant = || request(vec![overridden(&[("tenant", "acme")], 2)]);
    assert_eq!(overall(&ask(&mut client, tenant()).await), Code::Ok);
    let second = ask(&mut client, tenant()).await;
    assert_eq!(
        overall(&second),
        Code::OverLimit,
        "an override is divided too: {:?}",
        statuses(&second)
    );
}

/// A request of 20,000 descriptors, which no Envoy route sends but any client of the port may,
/// costs this process little: it is answered, or refused, within a second. (It took 2.2 s, and
/// 8.7 s for 40,000: Plan::add looks for each check's key among all the checks before it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_descriptors_are_cheap() {
    let (_yaml, toml) = rls_toml("");
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    let values: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
    let many = request(
        values
            .iter()
            .map(|v| descriptor(&[("user", v.as_str())]))
            .collect(),
    );
    let started = Instant::now();
    let answer = call(&mut client, many).await;
    let took = started.elapsed();
    let answered = answer.as_ref().map(|a| a.statuses.len());
    assert!(took < Duration::from_secs(1), "{answered:?} in {took:?}");
}

/// A configuration file serving [`YAML`] on `rls_port`, with `extra` TOML; the directory holds
/// both files for the test's life.
fn binary_config(rls_port: u16, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("ratelimit.yaml");
    std::fs::write(&yaml, YAML).unwrap();
    let toml = format!(
        "[rls]\nlisten = \"127.0.0.1:{rls_port}\"\nconfig = [{:?}]\n{extra}",
        yaml.display().to_string()
    );
    std::fs::write(dir.path().join("tollgate.toml"), toml).unwrap();
    dir
}

/// Under a descriptor limit of 64, 100 silent connections to the rate limit port neither stop
/// the HTTP port from answering nor make accepting fail, as 100 to the HTTP port do not
/// (`tests/shutdown.rs`): the gRPC server has a cap and a timer for them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_to_the_rate_limit_port_starve_nothing() {
    let rls_port = support::free_port();
    let dir = binary_config(rls_port, "");
    let config = dir.path().join("tollgate.toml");
    let binary = support::binary::Binary::start_limited(
        &[
            ("TOLLGATE_CONFIG", config.to_str().unwrap()),
            ("TOLLGATE_SERVER__HEADER_TIMEOUT", "300ms"),
        ],
        Some(64),
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        match tokio::net::TcpStream::connect(("127.0.0.1", rls_port)).await {
            Ok(stream) => silent.push(stream),
            Err(e) => panic!("connect to the rate limit port: {e}\n{}", binary.log()),
        }
    }
    // Long past the HTTP port's header timeout (300 ms): whatever timer the rate limit port
    // has, if any, has had its chance to close them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let health =
        support::binary::exchange(binary.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let log = binary.log();
    assert!(
        health
            .as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "/healthz while 100 connections sit silent on the rate limit port: {health:?}\n{log}"
    );
    assert!(
        !log.contains("accept error")
            && !log.contains("cannot accept")
            && !log.contains("Too many open files"),
        "accept errors were logged:\n{log}"
    );
}

/// SIGTERM while a gRPC call waits on a stalled Redis: the call is given
/// `server.shutdown_grace`, as an HTTP request is, and the process exits soon after it rather
/// than when the store's timeout ends the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_grpc_call_cannot_hold_shutdown_past_the_grace() {
    let server = RedisServer::start().await;
    let rls_port = support::free_port();
    let dir = binary_config(
        rls_port,
        &format!(
            "[redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"20s\"\n",
            server.url()
        ),
    );
    let config = dir.path().join("tollgate.toml");
    let mut binary = support::binary::Binary::start_with(&[
        ("TOLLGATE_CONFIG", config.to_str().unwrap()),
        ("TOLLGATE_SERVER__SHUTDOWN_GRACE", "1s"),
    ])
    .await;
    let mut client = RateLimitServiceClient::connect(format!("http://127.0.0.1:{rls_port}"))
        .await
        .expect("the service accepts gRPC");
    assert_eq!(
        overall(&ask(&mut client, request(vec![descriptor(&[("user", "joe")])])).await),
        Code::Ok
    );
    server
        .command(&["CLIENT", "PAUSE", "30000", "WRITE"])
        .await
        .unwrap();
    let stuck = tokio::spawn(async move {
        call(&mut client, request(vec![descriptor(&[("user", "joe")])])).await
    });
    // Nothing tells when the call reaches the paused store; half a second is ample, and were it
    // still on its way, it would be just as much in flight at SIGTERM.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = binary.terminate();
    let (status, after) = binary.exit_within(sent, Duration::from_secs(6)).await;
    assert_eq!(status.code(), Some(0), "{}", binary.log());
    assert!(
        after < Duration::from_secs(3),
        "exited {after:?} after SIGTERM"
    );
    stuck.abort();
}

/// On a Redis Cluster, where each descriptor's bucket has its own hash tag, a denial's
/// follow-up call that fails for one descriptor (here a key of another type; a primary down
/// does the same) leaves that descriptor's status without a limit, and every other status with
/// its own descriptor's limit, not the next one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_stay_with_their_descriptors_when_a_follow_up_fails() {
    let cluster = support::cluster::RedisCluster::start().await;
    let (_yaml, toml) = rls_toml(&format!(
        "[redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"10s\"\n",
        cluster.url()
    ));
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    let joe = || descriptor(&[("user", "joe")]);
    for _ in 0..3 {
        assert_eq!(
            overall(&ask(&mut client, request(vec![joe()])).await),
            Code::Ok
        );
    }
    // The address's key holds a hash, so reading it fails with WRONGTYPE.
    let bucket = tollgate::rls::Bucket::new("api", &[("remote_address", "192.0.2.1")]);
    let keys = tollgate::KeyBuilder::new("tollgate");
    let name = tollgate::PolicyName::new("remote_address").unwrap();
    let key = keys.key(&keys.tag(bucket.as_bytes()), &name);
    let redis = cluster.client().await;
    for command in [vec!["HSET", &key, "f", "v"], vec!["EXPIRE", &key, "60"]] {
        let _: fred::types::Value = redis
            .custom(
                CustomCommand::new(command[0], ClusterHash::FirstKey, false),
                command[1..].to_vec(),
            )
            .await
            .unwrap();
    }
    // Joe's descriptor, first, denies; the follow-up reads the address's (and fails) and the
    // path's (5 a year, untouched).
    let answer = ask(
        &mut client,
        request(vec![
            joe(),
            descriptor(&[("remote_address", "192.0.2.1")]),
            descriptor(&[("path", "/x")]),
        ]),
    )
    .await;
    assert_eq!(overall(&answer), Code::OverLimit);
    let statuses = statuses(&answer);
    assert_eq!(statuses[0], (Code::OverLimit, Some(3), 0), "{statuses:?}");
    assert_ne!(
        statuses[1].1,
        Some(5),
        "the path's limit on the address: {statuses:?}"
    );
    assert_eq!(statuses[2], (Code::Ok, Some(5), 5), "{statuses:?}");
}

/// A denial of a request of five descriptors, as Envoy sends for a route with five
/// `rate_limits`, is served by the denial cache when repeated, as a denial of one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_denial_cache_serves_five_descriptors() {
    let server = RedisServer::start().await;
    let (_yaml, toml) = rls_toml(&format!(
        "[redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"10s\"\n",
        server.url()
    ));
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    let five = || {
        request(vec![
            descriptor(&[("user", "joe")]),
            descriptor(&[("remote_address", "192.0.2.1")]),
            descriptor(&[("k1", "x")]),
            descriptor(&[("k2", "x")]),
            descriptor(&[("k3", "x")]),
        ])
    };
    for _ in 0..2 {
        let answer = ask(&mut client, five()).await;
        assert_eq!(overall(&answer), Code::Ok);
    }
    assert_eq!(overall(&ask(&mut client, five()).await), Code::OverLimit);
    let before = server.evalsha_calls().await;
    for _ in 0..5 {
        assert_eq!(overall(&ask(&mut client, five()).await), Code::OverLimit);
    }
    assert_eq!(
        server.evalsha_calls().await - before,
        0,
        "repeated denials are served from the cache"
    );
}

/// A shadow descriptor's status is OK with no limit, where ratelimit reports its limit: a
/// shadow limit never shows in what Envoy builds its `x-ratelimit-*` headers from (see
/// docs/envoy.md, "Where tollgate differs"). What it would have denied is counted instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_descriptor_shows_no_limit_and_is_counted() {
    let (_yaml, toml) = rls_toml("");
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    let shadowed = || request(vec![descriptor(&[("shadowed", "x")])]);
    let first = ask(&mut client, shadowed()).await;
    assert_eq!(statuses(&first), [(Code::Ok, None, 0)]);
    let second = ask(&mut client, shadowed()).await;
    assert_eq!(overall(&second), Code::Ok);
    assert_eq!(statuses(&second), [(Code::Ok, None, 0)]);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tollgate_rls_descriptors_total{domain=\"api\",rule=\"shadowed\",code=\"shadow_over_limit\"} 1"
        ),
        "{metrics}"
    );
}

/// A shadow block (`requests_per_unit: 0` under `shadow_mode`) answers OK and counts what it
/// would have denied under its domain and rule; an unknown domain is counted apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_block_counts_what_it_would_have_denied() {
    let (_yaml, toml) = rls_toml("");
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    let answer = ask(
        &mut client,
        request(vec![descriptor(&[("blocked_shadow", "x")])]),
    )
    .await;
    assert_eq!(overall(&answer), Code::Ok);
    let mut typo = request(vec![descriptor(&[("user", "joe")])]);
    typo.domain = "apj".into();
    assert_eq!(overall(&ask(&mut client, typo).await), Code::Ok);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tollgate_rls_descriptors_total{domain=\"api\",rule=\"blocked_shadow\",code=\"shadow_over_limit\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_rls_unknown_domain_total 1"),
        "{metrics}"
    );
}
