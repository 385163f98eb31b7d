//! In-process costs (key building, header rendering, memory-store decisions, `Limiter::check`,
//! matching Envoy descriptors), each group against a `baseline_*` of the bare work beneath it.

mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, Method};
use criterion::Criterion;
use sha2::{Digest, Sha256};
use tollgate::caller::RequestFacts;
use tollgate::middleware::headers;
use tollgate::store::Check;
use tollgate::{
    Algorithm, Decision, KeyBuilder, Limiter, MemoryStore, Policy, PolicyDecision, PolicyName,
    Verdict, Window,
};

/// A user name of typical length: what the identity header carries.
const USER: &[u8] = b"user-0042@example.com";

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    keys(&mut c);
    headers(&mut c);
    memory_store(&mut c);
    rls(&mut c);
    c.final_summary();
    support::print_ratios(started, &["keys", "headers", "memory_store", "rls"]);
}

/// A caller's tag and key, plain SHA-256 and HMAC, against a bare SHA-256 of the same name.
fn keys(c: &mut Criterion) {
    let plain = KeyBuilder::new("tollgate");
    // A 32-byte secret, the usual length; what the bytes are does not change the cost.
    let hmac = KeyBuilder::new("tollgate").with_hash_key([7u8; 32]);
    let policy = PolicyName::new("per_minute").unwrap();
    let mut group = c.benchmark_group("keys");
    group.bench_function("baseline_sha256", |b| {
        b.iter(|| Sha256::digest(black_box(USER)))
    });
    group.bench_function("tag_key", |b| {
        b.iter(|| plain.key(&plain.tag(black_box(USER)), &policy))
    });
    group.bench_function("tag_key_hmac", |b| {
        b.iter(|| hmac.key(&hmac.tag(black_box(USER)), &policy))
    });
    group.finish();
}

/// `apply` and `apply_denial` for one and three policies, against inserting the five names
/// `apply` sets with static values into a fresh map: the `HeaderMap` work any rendering pays.
fn headers(c: &mut Criterion) {
    let one = decision(&policies()[..1], true);
    let three = decision(&policies(), true);
    let one_denied = decision(&policies()[..1], false);
    let three_denied = decision(&policies(), false);
    let mut group = c.benchmark_group("headers");
    group.bench_function("baseline_5_static_inserts", |b| {
        b.iter(|| {
            let mut map = HeaderMap::new();
            for name in [
                headers::RATELIMIT_POLICY,
                headers::RATELIMIT,
                headers::X_RATELIMIT_LIMIT,
                headers::X_RATELIMIT_REMAINING,
                headers::X_RATELIMIT_RESET,
            ] {
                map.insert(name, HeaderValue::from_static("\"per_minute\";q=100;w=60"));
            }
            map
        })
    });
    for (id, decision) in [("apply_1", &one), ("apply_3", &three)] {
        group.bench_function(id, |b| {
            b.iter(|| {
                let mut map = HeaderMap::new();
                headers::apply(&mut map, black_box(decision));
                map
            })
        });
    }
    for (id, decision) in [
        ("apply_denial_1", &one_denied),
        ("apply_denial_3", &three_denied),
    ] {
        group.bench_function(id, |b| {
            b.iter(|| {
                let mut map = HeaderMap::new();
                headers::apply_denial(&mut map, black_box(decision));
                map
            })
        });
    }
    group.finish();
}

/// `MemoryStore::decide` and a whole `Limiter::check` over it, for one policy and three (one
/// per algorithm), and a check answered by the denial cache, against one counter bumped in
/// a mutexed `HashMap` under the same key.
fn memory_store(c: &mut Criterion) {
    // Current-thread: the memory store's futures are ready at once, so a runtime is only the
    // harness, and on two shared cores a second thread would only add noise.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let roomy = support::roomy_policies();
    let keys = KeyBuilder::new("tollgate");
    let tag = keys.tag(USER);
    let checks: Vec<Check> = roomy
        .iter()
        .map(|p| Check::new(keys.key(&tag, p.name()), p.clone()))
        .collect();
    let store = MemoryStore::new();
    let limiter_1 = Limiter::new(Arc::new(MemoryStore::new()), [roomy[0].as_ref().clone()]);
    let limiter_3 = Limiter::new(
        Arc::new(MemoryStore::new()),
        roomy.iter().map(|p| p.as_ref().clone()),
    );
    let facts = RequestFacts {
        user: Some(USER),
        ip: Some("\0ip:192.0.2.1".into()),
        method: Method::GET,
        path: "/api/items".into(),
        route: Some("/api/items"),
        headers: &HeaderMap::new(),
        host: None,
    };
    // Measure admissions only: a denial takes another path (the denial cache).
    runtime.block_on(async {
        for (n, limiter) in [(1, &limiter_1), (3, &limiter_3)] {
            match limiter.check(&facts).await {
                Verdict::Decided(d) if d.allowed && d.policies.len() == n => {}
                other => panic!("the bench limiter should admit with {n} policies: {other:?}"),
            }
        }
    });
    // That other path: one request a day, spent, so every check is a cached denial.
    let tight: Policy = "per_day: 1 per 1d".parse().unwrap();
    let limiter_denied = Limiter::new(Arc::new(MemoryStore::new()), [tight]);
    runtime.block_on(async {
        limiter_denied.check(&facts).await;
        limiter_denied.check(&facts).await;
    });

    let counters = Mutex::new(HashMap::from([(checks[0].key.clone(), 0u64)]));
    let mut group = c.benchmark_group("memory_store");
    group.bench_function("baseline_mutex_map_bump", |b| {
        b.iter(|| {
            let mut counters = counters.lock().unwrap();
            *counters.get_mut(black_box(checks[0].key.as_str())).unwrap() += 1;
        })
    });
    support::bench_decides(&mut group, &runtime, &store, &checks);
    for (id, limiter) in [
        ("limiter_check_1", &limiter_1),
        ("limiter_check_3", &limiter_3),
    ] {
        group.bench_function(id, |b| {
            b.to_async(&runtime).iter(|| async {
                let verdict = limiter.check(black_box(&facts)).await;
                assert!(matches!(&verdict, Verdict::Decided(d) if d.allowed));
                verdict
            })
        });
    }
    group.bench_function("limiter_check_cached_denial_1", |b| {
        b.to_async(&runtime).iter(|| async {
            let verdict = limiter_denied.check(black_box(&facts)).await;
            assert!(matches!(&verdict, Verdict::Decided(d) if !d.allowed));
            verdict
        })
    });
    group.finish();
}

/// Three policies as a service would configure them, for header rendering.
fn policies() -> Vec<Arc<Policy>> {
    let name = |n: &str| PolicyName::new(n).unwrap();
    let limit = |n: u64| NonZeroU64::new(n).unwrap();
    let window = |ms: u64| Window::from_millis(ms).unwrap();
    vec![
        Policy::new(
            name("per_minute"),
            Algorithm::FixedWindow,
            limit(100),
            window(60_000),
        ),
        Policy::new(
            name("per_hour"),
            Algorithm::SlidingWindow,
            limit(1_000),
            window(3_600_000),
        ),
        Policy::new(
            name("burst"),
            Algorithm::TokenBucket,
            limit(10),
            window(1_000),
        )
        .and_then(|p| p.with_burst(limit(20))),
    ]
    .into_iter()
    .map(|p| Arc::new(p.unwrap()))
    .collect()
}

/// A decision over `policies`: all admit, or the first denies for 41 s.
fn decision(policies: &[Arc<Policy>], allowed: bool) -> Decision {
    let decided = policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let denies = !allowed && i == 0;
            PolicyDecision {
                policy: p.clone(),
                allowed: !denies,
                limit: p.capacity(),
                remaining: if denies { 0 } else { p.capacity() / 2 },
                retry_after: Duration::from_millis(if denies { 41_001 } else { 0 }),
                reset_after: Duration::from_millis(41_001 + 1_000 * i as u64),
            }
        })
        .collect();
    Decision {
        allowed,
        policies: decided,
    }
}

/// Matching a descriptor in a domain of 1,000 values and 10 wildcards: two entries found by
/// value then by key alone, one found by the last wildcard, one that misses; against one
/// lookup of a `HashMap<String, _>`, the bare work of one level.
fn rls(c: &mut Criterion) {
    use std::fmt::Write;
    let mut yaml = String::from("domain: api\ndescriptors:\n");
    for i in 0..1000 {
        let _ = write!(
            yaml,
            "  - key: tenant\n    value: t{i}\n    descriptors:\n      - key: user\n        \
             rate_limit: {{unit: minute, requests_per_unit: 100}}\n"
        );
    }
    for i in 0..10 {
        let _ = write!(
            yaml,
            "  - key: path\n    value: /api/v{i}/*\n    rate_limit: {{unit: second, \
             requests_per_unit: 10}}\n"
        );
    }
    let mut loader = tollgate::rls::Loader::new();
    loader.load_str("bench.yaml", &yaml).unwrap();
    let domains = loader.finish();
    let map: HashMap<String, u32> = (0..1000).map(|i| (format!("t{i}"), i)).collect();
    let mut group = c.benchmark_group("rls");
    group.bench_function("baseline_hashmap_get", |b| {
        b.iter(|| map.get(black_box("t500")))
    });
    group.bench_function("get_limit_2_entries", |b| {
        let entries = [("tenant", "t500"), ("user", "user-0042@example.com")];
        b.iter(|| domains.get_limit("api", black_box(&entries), None).unwrap())
    });
    group.bench_function("get_limit_10th_wildcard", |b| {
        let entries = [("path", "/api/v9/items/42")];
        b.iter(|| domains.get_limit("api", black_box(&entries), None).unwrap())
    });
    group.bench_function("get_limit_miss", |b| {
        let entries = [("tenant", "t5000"), ("user", "u")];
        b.iter(|| domains.get_limit("api", black_box(&entries), None))
    });
    group.finish();
}
