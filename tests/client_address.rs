//! End to end over TCP, the client address: forwarding headers read from the right behind
//! trusted proxies and ignored from anyone else, identity headers from untrusted peers counted as
//! missing, and IPv6 clients bucketed per prefix.
//!
//! No window boundary falls inside a test: fixed and sliding windows are [`NO_BOUNDARY`] long,
//! and token buckets refill far less than one token during a test.

#[macro_use]
mod support;

use support::policies::{address_key, assert_unlimited, get, key_of, quotas, remaining};
use support::{Backend, TestApp, NO_BOUNDARY};

/// The status of `GET /user` with `X-Forwarded-For: xff` and no identity header.
async fn status_from(app: &TestApp, client: &reqwest::Client, xff: &str) -> u16 {
    get(app, client, &[("x-forwarded-for", xff)])
        .await
        .status()
        .as_u16()
}

/// From a trusted peer, forwarding headers are read from the right: spoofed left entries are moot.
async fn trusted_chains_are_read_from_the_right(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
[[policies]]
name = "per_ip"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(status_from(&app, &client, "198.51.100.1").await, 200);
    assert_eq!(status_from(&app, &client, "198.51.100.2").await, 200);
    assert_eq!(status_from(&app, &client, "198.51.100.1").await, 429);
    // The client is 198.51.100.7 whatever it claims to its left.
    let chain = status_from(&app, &client, "6.6.6.6, 198.51.100.7").await;
    assert_eq!(chain, 200);
    for spoofed in [
        "7.7.7.7, 198.51.100.7",
        "198.51.100.9, 198.51.100.7",
        "198.51.100.7",
    ] {
        let status = status_from(&app, &client, spoofed).await;
        assert_eq!(status, 429, "X-Forwarded-For: {spoofed}");
    }
    // A trusted hop on the right is skipped.
    let via_proxy = status_from(&app, &client, "8.8.8.8, 198.51.100.7, 10.1.1.1").await;
    assert_eq!(via_proxy, 429);
    // Only X-Forwarded-For is read by default: a client-written Forwarded naming the exhausted
    // 198.51.100.1 changes nothing, and the proxy-appended 198.51.100.3 is the client.
    let forwarded = get(
        &app,
        &client,
        &[
            ("forwarded", "for=\"198.51.100.1\""),
            ("x-forwarded-for", "198.51.100.3"),
        ],
    )
    .await;
    assert_eq!(forwarded.status(), 200);
    // Without forwarding headers the client is the peer itself.
    assert_eq!(get(&app, &client, &[]).await.status(), 200);
    if store.server().is_some() {
        let keys = [
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.3",
            "198.51.100.7",
            "127.0.0.1",
        ]
        .map(|ip| address_key(ip, "per_ip"));
        store.assert_keys(&keys).await;
    }
}
on_both_stores!(trusted_chains_are_read_from_the_right);

/// With `forwarded_header = "forwarded"`, RFC 7239 `Forwarded` is read from the right and
/// X-Forwarded-For is ignored.
async fn forwarded_header_is_configurable(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1"]
forwarded_header = "forwarded"
[[policies]]
name = "per_ip"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    let first = get(
        &app,
        &client,
        &[
            ("forwarded", "for=6.6.6.6, for=\"[2001:db8:1:2::9]:443\""),
            ("x-forwarded-for", "198.51.100.1"),
        ],
    )
    .await;
    assert_eq!(first.status(), 200);
    let same = get(
        &app,
        &client,
        &[
            ("forwarded", "for=7.7.7.7, for=\"[2001:db8:1:2::1]\""),
            ("x-forwarded-for", "198.51.100.2"),
        ],
    )
    .await;
    assert_eq!(
        same.status(),
        429,
        "the same /64, whatever X-Forwarded-For says"
    );
    store
        .assert_keys(&[address_key("2001:db8:1:2::/64", "per_ip")])
        .await;
}
on_both_stores!(forwarded_header_is_configurable);

/// From an untrusted peer, X-Forwarded-For is ignored: spoofing it mints no new bucket.
async fn untrusted_peers_cannot_spoof_forwarded_for(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["10.0.0.0/8"]
[[policies]]
name = "per_ip"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(status_from(&app, &client, "198.51.100.1").await, 200);
    for spoofed in ["198.51.100.2", "10.1.1.1", "6.6.6.6, 198.51.100.3"] {
        let status = status_from(&app, &client, spoofed).await;
        assert_eq!(status, 429, "X-Forwarded-For: {spoofed}");
    }
    assert_eq!(get(&app, &client, &[]).await.status(), 429);
    store
        .assert_keys(&[address_key("127.0.0.1", "per_ip")])
        .await;
}
on_both_stores!(untrusted_peers_cannot_spoof_forwarded_for);

/// With trusted proxies set, the identity header from any other peer counts as missing.
async fn untrusted_peers_cannot_name_the_caller(store: &Backend) {
    let limits = format!(
        r#"
[[policies]]
name = "per_user"
limit = 5
window = "{NO_BOUNDARY}"
"#
    );
    let untrusted = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["10.0.0.0/8"]
on_missing = "deny"
{limits}
"#
        ))
        .await;
    let client = reqwest::Client::new();
    let refused = untrusted.get_user(&client, "joe").await;
    assert_eq!(refused.status(), 401);

    let trusted = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1"]
on_missing = "deny"
{limits}
"#
        ))
        .await;
    let counted = trusted.get_user(&client, "joe").await;
    assert_eq!(counted.status(), 200);
    assert_eq!(remaining(&counted), quotas(&[("per_user", 4)]));
    store.assert_keys(&[key_of("joe", "per_user")]).await;
}
on_both_stores!(untrusted_peers_cannot_name_the_caller);

/// `/user` answers `null` for an identity header from an untrusted peer, as the limiter sees it.
async fn untrusted_identity_is_not_echoed(store: &Backend) {
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["10.0.0.0/8"]
[[policies]]
name = "per_user"
limit = 1
window = "{NO_BOUNDARY}"
"#
        ))
        .await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let response = app.get_user(&client, "joe").await;
        assert_eq!(response.status(), 200);
        assert_unlimited(&response);
        assert_eq!(response.text().await.unwrap(), "null");
    }
}
on_both_stores!(untrusted_identity_is_not_echoed);

/// IPv6 clients share a bucket per /64 (or per `identity.ipv6_prefix`), and no wider.
async fn ipv6_clients_share_a_bucket_per_prefix(store: &Backend) {
    let limits = format!(
        r#"
[[policies]]
name = "per_ip"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
    );
    let app = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1"]
{limits}
"#
        ))
        .await;
    let client = reqwest::Client::new();
    assert_eq!(status_from(&app, &client, "2001:db8:1:2::1").await, 200);
    assert_eq!(status_from(&app, &client, "2001:db8:1:2::ffff").await, 429);
    assert_eq!(
        status_from(&app, &client, "2001:db8:1:2:abcd::7").await,
        429
    );
    assert_eq!(status_from(&app, &client, "2001:db8:1:3::1").await, 200);
    if store.server().is_some() {
        let keys = ["2001:db8:1:2::/64", "2001:db8:1:3::/64"].map(|net| address_key(net, "per_ip"));
        store.assert_keys(&keys).await;
    }

    let wide = store
        .app(&format!(
            r#"
[identity]
trusted_proxies = ["127.0.0.1"]
ipv6_prefix = 48
[[policies]]
name = "per_net"
limit = 1
window = "{NO_BOUNDARY}"
by = "ip"
"#
        ))
        .await;
    assert_eq!(status_from(&wide, &client, "2001:db8:1:2::1").await, 200);
    assert_eq!(status_from(&wide, &client, "2001:db8:1:3::1").await, 429);
    assert_eq!(status_from(&wide, &client, "2001:db8:2::1").await, 200);
}
on_both_stores!(ipv6_clients_share_a_bucket_per_prefix);
