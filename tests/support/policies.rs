//! What the policy tests share: `GET /user` with headers, the `RateLimit` header read back,
//! and the Redis keys a request is expected to write, built here rather than by tollgate.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use fred::prelude::KeysInterface;
use sha2::{Digest, Sha256};

use super::{header, RedisServer, TestApp, NO_BOUNDARY};

/// [`NO_BOUNDARY`] in seconds, as `RateLimit-Policy` advertises it.
pub fn no_boundary_secs() -> u64 {
    let days: u64 = NO_BOUNDARY
        .strip_suffix('d')
        .and_then(|d| d.parse().ok())
        .expect("NO_BOUNDARY is a number of days");
    days * 86_400
}

/// The Unix time in milliseconds (Redis runs on this machine's clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `GET /user` with `headers` (name, value) added.
pub async fn get(
    app: &TestApp,
    client: &reqwest::Client,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client.get(app.url("/user"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the service answers")
}

/// The items of the `RateLimit` header, in order: each policy's name, `r` and `t`.
pub fn quota_items(response: &reqwest::Response) -> Vec<(String, u64, u64)> {
    let value = header(response, "ratelimit");
    value
        .split(", ")
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap().trim_matches('"').to_owned();
            let (mut r, mut t) = (None, None);
            for param in parts {
                match param.split_once('=') {
                    Some(("r", v)) => r = v.parse().ok(),
                    Some(("t", v)) => t = v.parse().ok(),
                    _ => panic!("unexpected parameter {param:?} in RateLimit: {value}"),
                }
            }
            let missing = || panic!("RateLimit item {item:?} lacks r or t");
            (name, r.unwrap_or_else(missing), t.unwrap_or_else(missing))
        })
        .collect()
}

/// Each policy's name and remaining quota (`r`), from the `RateLimit` header, in order.
pub fn remaining(response: &reqwest::Response) -> Vec<(String, u64)> {
    quota_items(response)
        .into_iter()
        .map(|(name, r, _)| (name, r))
        .collect()
}

/// The expected [`remaining`] for `pairs`.
pub fn quotas(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(n, r)| (n.to_string(), *r)).collect()
}

/// Asserts that `response` carries no rate-limit header: no policy applied to it.
pub fn assert_unlimited(response: &reqwest::Response) {
    for name in ["ratelimit-policy", "ratelimit", "x-ratelimit-limit"] {
        assert!(
            response.headers().get(name).is_none(),
            "unexpected {name}: {:?}",
            response.headers().get(name)
        );
    }
}

/// Lowercase hex SHA-256, computed here rather than by tollgate.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `tollgate:{<tag>}:<policy>`, the documented key scheme.
pub fn key(tag: &str, policy: &str) -> String {
    format!("tollgate:{{{tag}}}:{policy}")
}

/// The key of a user named `name` without a hash key.
pub fn key_of(name: &str, policy: &str) -> String {
    key(&sha256_hex(name.as_bytes()), policy)
}

/// The key of a client address (`127.0.0.1`, `2001:db8::/64`), named `\0ip:<address>` so that
/// no user name (a header value cannot hold a NUL byte) can share its bucket.
pub fn address_key(address: &str, policy: &str) -> String {
    key(&sha256_hex(format!("\0ip:{address}").as_bytes()), policy)
}

/// The set of `keys`, to compare with [`Store::keys`].
pub fn set(keys: &[String]) -> Option<BTreeSet<String>> {
    Some(keys.iter().cloned().collect())
}

/// The length-prefixed route that narrows a key of a policy keyed `by = ["user", "route"]`.
pub fn route_rest(route: &str) -> Vec<u8> {
    let mut rest = (route.len() as u64).to_be_bytes().to_vec();
    rest.extend_from_slice(route.as_bytes());
    rest
}

/// How much quota a Redis key says was consumed, read the way each algorithm stores it; 0 for
/// a key that does not exist.
pub async fn consumed(
    redis: &RedisServer,
    key: &str,
    algorithm: &str,
    limit: u64,
    window_ms: u64,
) -> u64 {
    let value: Option<String> = redis.client().await.get(key).await.unwrap();
    let Some(value) = value else { return 0 };
    match algorithm {
        // "<count>:<window_start_ms>:<window_ms>"
        "fixed_window" => {
            let parts: Vec<&str> = value.split(':').collect();
            assert_eq!(parts.len(), 3, "{key} holds {value}");
            assert_eq!(parts[2], window_ms.to_string(), "{key} holds {value}");
            parts[0].parse().unwrap()
        }
        // "<curr>:<prev>:<window_start_ms>:<window_ms>"; nothing came before a NO_BOUNDARY
        // window.
        "sliding_window" => {
            let parts: Vec<&str> = value.split(':').collect();
            assert_eq!(parts.len(), 4, "{key} holds {value}");
            assert_eq!(parts[3], window_ms.to_string(), "{key} holds {value}");
            assert_eq!(parts[1], "0", "{key} holds {value}");
            parts[0].parse().unwrap()
        }
        // "<tat_us>:<emission_us>": the bucket is full again at the TAT, so the tokens spent
        // are how many emission intervals it lies ahead of now (less than one interval has
        // elapsed since).
        "token_bucket" => {
            let (tat, emission) = value.split_once(':').unwrap();
            let tat: u64 = tat.parse().unwrap();
            let emission_us = (window_ms * 1000).div_ceil(limit);
            assert_eq!(emission, emission_us.to_string(), "{key} holds {value}");
            tat.saturating_sub(now_ms() * 1000).div_ceil(emission_us)
        }
        other => panic!("unknown algorithm {other}"),
    }
}

/// Runs the decide script directly in `mode` (`decide`, `refund`) for one key at `now_us`, as
/// RedisStore would, with `receipt` for a refund, and returns its reply.
pub async fn script(
    conn: &fred::prelude::Client,
    key: &str,
    now_us: u64,
    mode: &str,
    policy: &tollgate::Policy,
    receipt: u64,
) -> Vec<i64> {
    use fred::prelude::LuaInterface;
    let (first, second) = match policy.algorithm() {
        tollgate::Algorithm::TokenBucket => (policy.emission_us(), policy.capacity_us()),
        _ => (policy.limit(), policy.window().as_millis()),
    };
    let mut args: Vec<String> = vec![
        now_us.to_string(),
        mode.into(),
        "1".into(),
        policy.algorithm().as_str().into(),
        policy.cost().to_string(),
        first.to_string(),
        second.to_string(),
        u8::from(policy.shadow()).to_string(),
    ];
    if mode == "refund" {
        args.push(receipt.to_string());
    }
    conn.eval(tollgate::store::redis::DECIDE_LUA, vec![key], args)
        .await
        .unwrap()
}
