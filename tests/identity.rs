//! End to end over TCP, what names a caller: a request that names nobody under each
//! `identity.on_missing`, and keys named by HMAC under `identity.hash_key`.
//!
//! No window boundary falls inside a test: fixed and sliding windows are [`NO_BOUNDARY`] long,
//! and token buckets refill far less than one token during a test.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::policies::{
    address_key, assert_unlimited, get, key, key_of, quotas, remaining, route_rest, set, sha256_hex,
};
use support::{header, Backend, RedisServer, TestApp, NO_BOUNDARY};

/// Lowercase hex HMAC-SHA256 of `message` under `key`, computed here rather than by tollgate.
fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `on_missing = "deny"`: a request that names nobody gets a 401 with a JSON reason, uncounted.
async fn on_missing_deny_refuses_anonymous_requests(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
on_missing = "deny"
[[policies]]
name = "per_user"
limit = 5
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for headers in [&[][..], &[("x-user", "")][..]] {
        let refused = get(&app, &client, headers).await;
        assert_eq!(refused.status(), 401, "headers {headers:?}");
        assert_eq!(header(&refused, "content-type"), "application/json");
        assert_unlimited(&refused);
        let body: serde_json::Value = refused.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "the 401 says why: {body}");
    }
    store.assert_keys(&[]).await;
    assert_eq!(app.get_user(&client, "joe").await.status(), 200);
}
on_both_stores!(on_missing_deny_refuses_anonymous_requests);

/// `on_missing = "ip"`: a request that names nobody is limited by its client address.
async fn on_missing_ip_limits_anonymous_requests_by_address(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
on_missing = "ip"
[[policies]]
name = "per_user"
limit = 2
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for r in [1, 0] {
        let response = get(&app, &client, &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(remaining(&response), quotas(&[("per_user", r)]));
    }
    assert_eq!(get(&app, &client, &[]).await.status(), 429);
    assert_eq!(app.get_user(&client, "joe").await.status(), 200);
    if store.server().is_some() {
        let keys = [
            address_key("127.0.0.1", "per_user"),
            key_of("joe", "per_user"),
        ];
        store.assert_keys(&keys).await;
    }
}
on_both_stores!(on_missing_ip_limits_anonymous_requests_by_address);

/// `on_missing = "allow"` (the default): a request naming nobody passes user policies uncounted.
async fn on_missing_allow_passes_anonymous_requests(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[[policies]]
name = "per_user"
limit = 1
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = get(&app, &client, &[]).await;
        assert_eq!(response.status(), 200);
        assert_unlimited(&response);
    }
    store.assert_keys(&[]).await;

    let mixed = store
        .app(&format!(
            r#"
[[policies]]
name = "per_user_2"
limit = 1
window = "{NO_BOUNDARY}"
[[policies]]
name = "per_ip"
limit = 2
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    let first = get(&mixed, &client, &[]).await;
    assert_eq!(first.status(), 200);
    assert_eq!(remaining(&first), quotas(&[("per_ip", 1)]));
}
on_both_stores!(on_missing_allow_passes_anonymous_requests);

/// `identity.hash_key`: keys use hex(HMAC-SHA256(hash_key, name)), and `tollgate key` agrees.
#[tokio::test]
async fn hash_key_names_keys_by_hmac() {
    const SECRET: &str = "s3cret-key";
    let redis = RedisServer::start().await;
    let config = format!(
        r#"
[identity]
hash_key = "{SECRET}"
[[policies]]
name = "per_user"
limit = 5
window = "{NO_BOUNDARY}"
[[policies]]
name = "per_route"
limit = 5
window = "{NO_BOUNDARY}"
by = ["user", "route"]
[redis]
url = "{}"
"#,
        redis.url()
    );
    let app = TestApp::with_toml(&config).await;
    let client = reqwest::Client::new();
    assert_eq!(app.get_user(&client, "joe").await.status(), 200);

    let tag = hmac_hex(SECRET.as_bytes(), b"joe");
    assert_ne!(tag, sha256_hex(b"joe"));
    let route = hmac_hex(SECRET.as_bytes(), &route_rest("/user"));
    let expected = [
        key(&tag, "per_user"),
        format!("{}:{}", key(&tag, "per_route"), &route[..16]),
    ];
    let written: BTreeSet<String> = redis.keys().await.into_iter().collect();
    assert_eq!(Some(written), set(&expected));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, &config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(&path)
        .args(["key", "joe", "--route", "/user"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{}\n{}\n", expected[0], expected[1])
    );
    redis.assert_every_key_has_ttl().await;
}
