//! Envoy's rate limit service end to end over gRPC, with envoy-types' own client: descriptors
//! matched as ratelimit matches them, decided all or nothing, answered with a status per
//! descriptor, the headers and the body; on both stores. `tests/gateways.rs` runs a real Envoy.
//!
//! No window boundary falls inside a test: YAML limits are per year, TOML ones [`NO_BOUNDARY`].

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{rate_limit, Code};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use support::rls::{ask, client, descriptor, overall, statuses};
use support::{Backend, RedisServer, TestApp, NO_BOUNDARY};
use tonic::transport::Channel;

/// ratelimit's YAML: per user 3 a year, a `premium` plan 5 a year below a user, a shadow limit
/// of 1 on `shadowed`, a block on `blocked`, an unlimited `internal`.
const YAML: &str = r#"
domain: api
descriptors:
  - key: user
    rate_limit: {unit: year, requests_per_unit: 3}
  - key: plan
    value: premium
    descriptors:
      - key: user
        rate_limit: {unit: year, requests_per_unit: 5, name: premium_user}
  - key: shadowed
    shadow_mode: true
    rate_limit: {unit: year, requests_per_unit: 1}
  - key: blocked
    rate_limit: {unit: year, requests_per_unit: 0}
  - key: internal
    rate_limit: {unlimited: true}
  - key: remote_address
    rate_limit: {unit: year, requests_per_unit: 2}
"#;

/// [`YAML`]'s `[rls]` section, with `extra` TOML after it.
fn rls_toml(extra: &str) -> (tempfile::NamedTempFile, String) {
    support::rls::rls_toml(YAML, extra)
}

/// A request in `domain` for `descriptors`.
fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: 0,
    }
}

/// The value of response header `name`, if Envoy is asked to add it.
fn header<'r>(response: &'r RateLimitResponse, name: &str) -> Option<&'r str> {
    response
        .response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

/// A user's descriptor goes OK, OK, OK, then OVER_LIMIT with a status naming the limit,
/// `Retry-After`, the RateLimit headers and the JSON body; another user has a bucket of
/// their own.
async fn a_user_is_limited_like_ratelimit_says(store: &Backend) {
    let (_yaml, toml) = rls_toml("");
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    let joe = || request("api", vec![descriptor(&[("user", "joe")])]);
    for left in [2, 1, 0] {
        let answer = ask(&mut client, joe()).await;
        assert_eq!(overall(&answer), Code::Ok);
        assert_eq!(statuses(&answer), [(Code::Ok, Some(3), left)]);
        assert!(answer.raw_body.is_empty());
    }
    let denied = ask(&mut client, joe()).await;
    assert_eq!(overall(&denied), Code::OverLimit);
    assert_eq!(statuses(&denied), [(Code::OverLimit, Some(3), 0)]);
    let limit = denied.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(limit.unit, rate_limit::Unit::Year as i32);
    assert_eq!(limit.name, "user");
    assert!(denied.statuses[0].duration_until_reset.unwrap().seconds > 0);
    let retry_after: u64 = header(&denied, "retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(header(&denied, "content-type"), Some("application/json"));
    assert!(header(&denied, "ratelimit").unwrap().contains("r=0"));
    assert_eq!(
        String::from_utf8(denied.raw_body).unwrap(),
        r#"{"detail":"User Rate Limit Exceeded"}"#
    );
    let ann = ask(
        &mut client,
        request("api", vec![descriptor(&[("user", "ann")])]),
    )
    .await;
    assert_eq!(statuses(&ann), [(Code::Ok, Some(3), 2)]);
}
on_both_stores!(a_user_is_limited_like_ratelimit_says);

/// Statuses come in the request's order; a descriptor no rule matches, a deeper descriptor than
/// any rule and an unknown domain are OK with no limit; an exact value's rule wins.
async fn statuses_follow_the_descriptors(store: &Backend) {
    let (_yaml, toml) = rls_toml("");
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    let answer = ask(
        &mut client,
        request(
            "api",
            vec![
                descriptor(&[("nothing", "x")]),
                descriptor(&[("plan", "premium"), ("user", "joe")]),
                descriptor(&[("user", "joe"), ("extra", "1")]),
                descriptor(&[("user", "joe")]),
                descriptor(&[("internal", "x")]),
            ],
        ),
    )
    .await;
    assert_eq!(overall(&answer), Code::Ok);
    assert_eq!(
        statuses(&answer),
        [
            (Code::Ok, None, 0),
            (Code::Ok, Some(5), 4),
            (Code::Ok, None, 0),
            (Code::Ok, Some(3), 2),
            (Code::Ok, None, u32::MAX),
        ]
    );
    let unknown = ask(
        &mut client,
        request("elsewhere", vec![descriptor(&[("user", "joe")])]),
    )
    .await;
    assert_eq!(overall(&unknown), Code::Ok);
    assert_eq!(statuses(&unknown), [(Code::Ok, None, 0)]);
}
on_both_stores!(statuses_follow_the_descriptors);

/// A request's descriptors are decided all or nothing: when one is over its limit, none is
/// spent, and the other's next answer shows it untouched.
async fn descriptors_are_all_or_nothing(store: &Backend) {
    let (_yaml, toml) = rls_toml("");
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    let address = || descriptor(&[("remote_address", "192.0.2.1")]);
    for _ in 0..2 {
        ask(&mut client, request("api", vec![address()])).await;
    }
    let both = ask(
        &mut client,
        request("api", vec![descriptor(&[("user", "joe")]), address()]),
    )
    .await;
    assert_eq!(overall(&both), Code::OverLimit);
    assert_eq!(
        statuses(&both),
        [(Code::Ok, Some(3), 3), (Code::OverLimit, Some(2), 0)],
        "the user's descriptor would fit, and was not charged"
    );
    let alone = ask(
        &mut client,
        request("api", vec![descriptor(&[("user", "joe")])]),
    )
    .await;
    assert_eq!(statuses(&alone), [(Code::Ok, Some(3), 2)]);
    if let Some(keys) = store.keys().await {
        assert_eq!(keys.len(), 2, "the user's key and the address's: {keys:?}");
    }
}
on_both_stores!(descriptors_are_all_or_nothing);

/// The cost: the request's `hits_addend` (0 is 1), a descriptor's own over it, and a
/// descriptor's 0 checks without spending.
async fn hits_addend_is_the_cost(store: &Backend) {
    let (_yaml, toml) = rls_toml("");
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    let mut two = request(
        "api",
        vec![descriptor(&[("plan", "premium"), ("user", "joe")])],
    );
    two.hits_addend = 2;
    assert_eq!(
        statuses(&ask(&mut client, two).await),
        [(Code::Ok, Some(5), 3)]
    );
    let with_own = |hits: u64| {
        let mut d = descriptor(&[("plan", "premium"), ("user", "joe")]);
        d.hits_addend = Some(UInt64Value { value: hits });
        let mut r = request("api", vec![d]);
        r.hits_addend = 2;
        r
    };
    assert_eq!(
        statuses(&ask(&mut client, with_own(0)).await),
        [(Code::Ok, Some(5), 3)],
        "0 checks without spending"
    );
    assert_eq!(
        statuses(&ask(&mut client, with_own(3)).await),
        [(Code::Ok, Some(5), 0)]
    );
    let over = ask(&mut client, with_own(1)).await;
    assert_eq!(overall(&over), Code::OverLimit);
    // A check costing 0 of a user never seen leaves nothing in Redis.
    let mut fresh = descriptor(&[("user", "new")]);
    fresh.hits_addend = Some(UInt64Value { value: 0 });
    assert_eq!(
        statuses(&ask(&mut client, request("api", vec![fresh])).await),
        [(Code::Ok, Some(3), 3)]
    );
    if let Some(keys) = store.keys().await {
        assert_eq!(keys.len(), 1, "{keys:?}");
    }
}
on_both_stores!(hits_addend_is_the_cost);

/// Envoy's limit override replaces the configured limit for its descriptor, even one no rule
/// matches.
async fn an_override_replaces_the_limit(store: &Backend) {
    let (_yaml, toml) = rls_toml("");
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    let overridden = || {
        let mut d = descriptor(&[("anything", "x")]);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: 1,
            unit: envoy_types::pb::envoy::r#type::v3::RateLimitUnit::Year as i32,
        });
        request("api", vec![d])
    };
    assert_eq!(
        statuses(&ask(&mut client, overridden()).await),
        [(Code::Ok, Some(1), 0)]
    );
    assert_eq!(
        overall(&ask(&mut client, overridden()).await),
        Code::OverLimit
    );
}
on_both_stores!(an_override_replaces_the_limit);

/// `shadow_mode` is decided and counted but answers OK; `requests_per_unit: 0` is over the
/// limit with nothing spent anywhere.
async fn shadow_answers_ok_and_zero_blocks(store: &Backend) {
    let (_yaml, toml) = rls_toml("");
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    for _ in 0..3 {
        let answer = ask(
            &mut client,
            request("api", vec![descriptor(&[("shadowed", "x")])]),
        )
        .await;
        assert_eq!(overall(&answer), Code::Ok);
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tollgate_shadow_denials_total{policy=\"shadowed\"} 2"),
        "{metrics}"
    );
    let blocked = ask(
        &mut client,
        request(
            "api",
            vec![
                descriptor(&[("user", "joe")]),
                descriptor(&[("blocked", "x")]),
            ],
        ),
    )
    .await;
    assert_eq!(overall(&blocked), Code::OverLimit);
    assert_eq!(statuses(&blocked)[1].0, Code::OverLimit);
    assert!(header(&blocked, "retry-after").is_some());
    let joe = ask(
        &mut client,
        request("api", vec![descriptor(&[("user", "joe")])]),
    )
    .await;
    assert_eq!(
        statuses(&joe),
        [(Code::Ok, Some(3), 2)],
        "the block spent nothing"
    );
}
on_both_stores!(shadow_answers_ok_and_zero_blocks);

/// tollgate's own rules: several policies of any algorithm on one descriptor, decided together,
/// and metrics by domain and rule, never by a descriptor's value.
async fn several_policies_on_one_descriptor(store: &Backend) {
    let (_yaml, toml) = rls_toml(&format!(
        r#"
[[rls.policies]]
name = "burst"
algorithm = "token_bucket"
limit = 2
window = "{NO_BOUNDARY}"

[[rls.policies]]
name = "steady"
algorithm = "sliding_window"
limit = 3
window = "{NO_BOUNDARY}"

[[rls.rules]]
domain = "api"
descriptor = [{{ key = "tenant" }}]
policies = ["burst", "steady"]
"#
    ));
    let app = store.app(&toml).await;
    let mut client = client(&app).await;
    let tenant = || request("api", vec![descriptor(&[("tenant", "acme")])]);
    assert_eq!(overall(&ask(&mut client, tenant()).await), Code::Ok);
    assert_eq!(overall(&ask(&mut client, tenant()).await), Code::Ok);
    let third = ask(&mut client, tenant()).await;
    assert_eq!(overall(&third), Code::OverLimit, "the bucket of 2 is empty");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tollgate_rls_descriptors_total{domain=\"api\",rule=\"tenant\",code=\"ok\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tollgate_rls_descriptors_total{domain=\"api\",rule=\"tenant\",code=\"over_limit\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("acme"),
        "no descriptor value in the metrics"
    );
}
on_both_stores!(several_policies_on_one_descriptor);

/// A request Envoy could not have meant is an error, which Envoy's failure mode handles.
#[tokio::test]
async fn malformed_requests_are_refused() {
    let (_yaml, toml) = rls_toml("");
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    for (bad, expected) in [
        (request("", vec![descriptor(&[("user", "joe")])]), "domain"),
        (request("api", vec![]), "descriptors"),
        (
            {
                let mut d = descriptor(&[("user", "joe")]);
                d.is_negative_hits = true;
                request("api", vec![d])
            },
            "is_negative_hits",
        ),
        (
            request(
                "api",
                (0..65).map(|_| descriptor(&[("user", "joe")])).collect(),
            ),
            "at most 64",
        ),
        (
            request("api", vec![descriptor(&[("k", "v"); 33])]),
            "at most 32",
        ),
    ] {
        let status = client.should_rate_limit(bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(expected), "{}", status.message());
    }
}

/// gRPC's framing as Envoy's client and any other expect it, on the wire: an answer's status in
/// its trailers; a call refused with its status alone; HTTP's 415 for what is not gRPC.
#[tokio::test]
async fn the_wire_is_grpc() {
    use prost::Message;
    let (_yaml, toml) = rls_toml("");
    let app = TestApp::with_toml(&toml).await;
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let base = format!("http://{}", app.rls_addr.unwrap());
    let method = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
    let framed = |flag: u8, message: &[u8], length: usize| {
        let mut body = vec![flag];
        body.extend_from_slice(&(length as u32).to_be_bytes());
        body.extend_from_slice(message);
        body
    };
    let joe = request("api", vec![descriptor(&[("user", "joe")])]).encode_to_vec();
    // (path, content type, body): the HTTP status, and the grpc-status of a refusal.
    let cases = [
        (
            method,
            "application/json",
            framed(0, &joe, joe.len()),
            415,
            None,
        ),
        (
            "/envoy.service.ratelimit.v3.RateLimitService/Other",
            "application/grpc",
            framed(0, &joe, joe.len()),
            200,
            Some("12"),
        ),
        (
            method,
            "application/grpc",
            framed(1, &joe, joe.len()),
            200,
            Some("12"),
        ),
        (method, "application/grpc", vec![], 200, Some("13")),
        (
            method,
            "application/grpc",
            framed(0, &joe, joe.len() + 1),
            200,
            Some("13"),
        ),
        (
            method,
            "application/grpc",
            framed(0, &[0xff, 0xff], 2),
            200,
            Some("13"),
        ),
        (
            method,
            "application/grpc",
            framed(0, &vec![b'x'; (1 << 20) + 1], (1 << 20) + 1),
            200,
            Some("8"),
        ),
    ];
    for (path, content_type, body, status, grpc_status) in cases {
        let answer = http
            .post(format!("{base}{path}"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), status, "{path} {content_type}");
        let refused = answer
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap());
        assert_eq!(
            refused,
            grpc_status,
            "{path} {content_type}: {:?}",
            answer.headers()
        );
        if grpc_status.is_some() {
            assert_eq!(answer.headers()["content-type"], "application/grpc");
            assert!(
                answer.bytes().await.unwrap().is_empty(),
                "a refusal is its status alone"
            );
        }
    }
    // An answer: one whole message, its status in the trailers (which envoy-types' client reads
    // in every other test), not in the headers.
    let answer = http
        .post(format!("{base}{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(framed(0, &joe, joe.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/grpc");
    assert!(answer.headers().get("grpc-status").is_none());
    let body = answer.bytes().await.unwrap();
    assert_eq!(body[0], 0, "uncompressed");
    assert_eq!(
        u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize,
        body.len() - 5
    );
    let decoded = RateLimitResponse::decode(&body[5..]).unwrap();
    assert_eq!(overall(&decoded), Code::Ok);
}

/// With Redis gone, each failure mode answers as documented: `allow` OK, `deny` UNAVAILABLE
/// (Envoy's failure_mode_deny decides), `local` the local fallback's decision.
#[tokio::test]
async fn a_store_outage_follows_on_error() {
    let mut server = RedisServer::start().await;
    let url = server.url();
    server.stop();
    for (on_error, expected) in [
        ("allow", Some(Code::Ok)),
        ("deny", None),
        ("local", Some(Code::Ok)),
    ] {
        let (_yaml, toml) = rls_toml(&format!(
            "[redis]\nurl = \"{url}\"\non_error = \"{on_error}\"\ntimeout = \"100ms\"\n"
        ));
        let app = TestApp::with_toml(&toml).await;
        let mut client = client(&app).await;
        let joe = || request("api", vec![descriptor(&[("user", "joe")])]);
        let answer = client.should_rate_limit(joe()).await;
        match expected {
            Some(code) => assert_eq!(overall(&answer.unwrap().into_inner()), code, "{on_error}"),
            None => assert_eq!(answer.unwrap_err().code(), tonic::Code::Unavailable),
        }
        if on_error == "local" {
            let answer = ask(&mut client, joe()).await;
            assert_eq!(header(&answer, "x-ratelimit-degraded"), Some("local"));
        }
    }
}

/// Envoy's deadline is kept: with Redis paused and a store timeout of 10 s, a call sent with a
/// 200 ms `grpc-timeout` is answered by the failure mode (`deny`: UNAVAILABLE) before the
/// deadline, not after the store's timeout.
#[tokio::test]
async fn envoys_deadline_is_kept() {
    let server = RedisServer::start().await;
    let (_yaml, toml) = rls_toml(&format!(
        "[redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"10s\"\n",
        server.url()
    ));
    let app = TestApp::with_toml(&toml).await;
    let mut client = client(&app).await;
    server
        .command(&["CLIENT", "PAUSE", "3000", "ALL"])
        .await
        .unwrap();
    let mut call = tonic::Request::new(request("api", vec![descriptor(&[("user", "joe")])]));
    call.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let status = client.should_rate_limit(call).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(200), "{took:?}");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(app
        .metrics()
        .await
        .contains("tollgate_store_errors_total{kind=\"timeout\"} 1"));
}

/// The standard gRPC health service answers SERVING beside the rate limit service.
#[tokio::test]
async fn the_health_service_answers() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let (_yaml, toml) = rls_toml("");
    let app = TestApp::with_toml(&toml).await;
    let channel = Channel::from_shared(format!("http://{}", app.rls_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "envoy.service.ratelimit.v3.RateLimitService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
}

/// The HTTP service's machinery serves Envoy too: descriptors asked at once share one
/// EVALSHA, and a denial repeated is served by the denial cache, without a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_calls_and_the_denial_cache_apply() {
    let server = RedisServer::start().await;
    let (_yaml, toml) = rls_toml(&format!(
        "[redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"10s\"\n",
        server.url()
    ));
    let app = TestApp::with_toml(&toml).await;
    let client = client(&app).await;
    let before = server.evalsha_calls().await;
    let calls = (0..40).map(|i| {
        let mut client = client.clone();
        async move {
            let user = format!("user-{i}");
            ask(
                &mut client,
                request("api", vec![descriptor(&[("user", &user)])]),
            )
            .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(|a| overall(a) == Code::Ok));
    let used = server.evalsha_calls().await - before;
    assert!(used < 40, "40 decisions at once took {used} calls");

    let mut client = client.clone();
    let joe = || request("api", vec![descriptor(&[("user", "joe")])]);
    for _ in 0..4 {
        ask(&mut client, joe()).await;
    }
    let before = server.evalsha_calls().await;
    for _ in 0..5 {
        assert_eq!(overall(&ask(&mut client, joe()).await), Code::OverLimit);
    }
    assert_eq!(
        server.evalsha_calls().await,
        before,
        "denials served from the cache"
    );
    assert!(app
        .metrics()
        .await
        .contains("tollgate_cached_denials_total 5"));
    server.assert_every_key_has_ttl().await;
}

/// ratelimit's README, Example 2, loaded unchanged: 5 marketing messages a day to a number and
/// 100 messages a day to it in all. Its sixth marketing message is over the limit, and, where
/// ratelimit would still count it against the 100, tollgate spends nothing.
#[tokio::test]
async fn readme_example_two_behaves_as_its_readme_says() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ratelimit/readme_example2.yaml"
    );
    let app = TestApp::with_toml(&format!(
        "[rls]\nlisten = \"127.0.0.1:0\"\nconfig = [{fixture:?}]\n"
    ))
    .await;
    let mut client = client(&app).await;
    let marketing = || {
        request(
            "messaging",
            vec![
                descriptor(&[("message_type", "marketing"), ("to_number", "2061111111")]),
                descriptor(&[("to_number", "2061111111")]),
            ],
        )
    };
    for left in (0..5).rev() {
        let answer = ask(&mut client, marketing()).await;
        assert_eq!(
            statuses(&answer),
            [(Code::Ok, Some(5), left), (Code::Ok, Some(100), 95 + left)]
        );
    }
    let sixth = ask(&mut client, marketing()).await;
    assert_eq!(overall(&sixth), Code::OverLimit);
    assert_eq!(
        statuses(&sixth),
        [(Code::OverLimit, Some(5), 0), (Code::Ok, Some(100), 95)]
    );
    let other = ask(
        &mut client,
        request(
            "messaging",
            vec![descriptor(&[("to_number", "2061111111")])],
        ),
    )
    .await;
    assert_eq!(statuses(&other), [(Code::Ok, Some(100), 94)]);
}
