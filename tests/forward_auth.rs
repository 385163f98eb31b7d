//! End to end over TCP, the forward-auth endpoint: a proxy asks `/check` about another request,
//! named by its forwarding headers, and tollgate decides as it would in front of that request.
//! These tests send the headers each proxy sends; `tests/gateways.rs` runs the real proxies.
//!
//! No window boundary falls inside a test: windows are [`NO_BOUNDARY`] long.

#[macro_use]
mod support;

use support::policies::{assert_unlimited, key_of, quotas, remaining, route_rest, sha256_hex};
use support::{header, Backend, RedisServer, TestApp, NO_BOUNDARY};

/// `[forward_auth]` on `/check`, believing any peer, beside `toml`.
fn endpoint(toml: &str) -> String {
    format!("[forward_auth]\npath = \"/check\"\ntrust_any_peer = true\n{toml}")
}

/// One policy, `name`, of `limit` per user, with `extra` keys (routes, costs).
fn policy(name: &str, limit: u64, extra: &str) -> String {
    format!(
        "[[policies]]\nname = \"{name}\"\nlimit = {limit}\nwindow = \"{NO_BOUNDARY}\"\n{extra}\n"
    )
}

/// `GET /check` as `user` (when given) about `method` `uri`, in Traefik's and Caddy's headers.
async fn ask(app: &TestApp, user: Option<&str>, method: &str, uri: &str) -> reqwest::Response {
    ask_with(
        app,
        user,
        &[("x-forwarded-method", method), ("x-forwarded-uri", uri)],
    )
    .await
}

/// `GET /check` as `user` (when given) with `headers`.
async fn ask_with(
    app: &TestApp,
    user: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(app.url("/check"));
    if let Some(user) = user {
        request = request.header("x-user", user);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the service answers")
}

/// A user's requests through `/check` are admitted with an empty 200 and the rate-limit
/// headers, then denied with 429, `Retry-After` and the JSON body, as in front of `/user`.
async fn admits_then_denies_like_the_layer(store: &Backend) {
    let app = store.app(&endpoint(&policy("per_user", 3, ""))).await;
    for left in [2, 1, 0] {
        let response = ask(&app, Some("joe"), "GET", "/api/items").await;
        assert_eq!(response.status(), 200);
        assert_eq!(remaining(&response), quotas(&[("per_user", left)]));
        assert_eq!(response.bytes().await.unwrap().len(), 0, "an empty body");
    }
    let denied = ask(&app, Some("joe"), "GET", "/api/items").await;
    assert_eq!(denied.status(), 429);
    assert!(header(&denied, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(header(&denied, "content-type"), "application/json");
    assert_eq!(
        denied.text().await.unwrap(),
        r#"{"detail":"User Rate Limit Exceeded"}"#
    );
    // Another user has a bucket of their own.
    assert_eq!(
        ask(&app, Some("ann"), "GET", "/api/items").await.status(),
        200
    );
}
on_both_stores!(admits_then_denies_like_the_layer);

/// `deny_status = 403`, for nginx's `auth_request`: a denial is 403, with the same headers.
async fn a_denial_takes_the_configured_status(store: &Backend) {
    let toml = format!("deny_status = 403\n{}", policy("per_user", 1, ""));
    let app = store.app(&endpoint(&toml)).await;
    assert_eq!(ask(&app, Some("joe"), "GET", "/a").await.status(), 200);
    let denied = ask(&app, Some("joe"), "GET", "/a").await;
    assert_eq!(denied.status(), 403);
    assert!(!header(&denied, "retry-after").is_empty());
    assert_eq!(remaining(&denied), quotas(&[("per_user", 0)]));
}
on_both_stores!(a_denial_takes_the_configured_status);

/// A policy's `routes` and `costs` see the proxied request's method and path, without its
/// query: `POST /export?all=1` spends the export's cost, and `GET /other` is not limited.
async fn routes_and_costs_see_the_forwarded_request(store: &Backend) {
    let extra =
        "routes = [\"POST /export\", \"GET /items/*\"]\n[policies.costs]\n\"POST /export\" = 4";
    let app = store.app(&endpoint(&policy("api", 10, extra))).await;
    let export = ask(&app, Some("joe"), "POST", "/export?all=1").await;
    assert_eq!(remaining(&export), quotas(&[("api", 6)]));
    let item = ask(&app, Some("joe"), "GET", "/items/7").await;
    assert_eq!(remaining(&item), quotas(&[("api", 5)]));
    let other = ask(&app, Some("joe"), "GET", "/other").await;
    assert_eq!(other.status(), 200);
    assert_unlimited(&other);
    // GET, not POST: the method is the proxied request's, not the question's.
    assert_unlimited(&ask(&app, Some("joe"), "GET", "/export").await);
}
on_both_stores!(routes_and_costs_see_the_forwarded_request);

/// A forwarded path is matched as the service behind the proxy routes it: merged slashes, dot
/// segments, escapes and a final slash all reach `POST /export`, so none of them dodges its
/// cost; a policy keyed by route counts `/items/1` and `/items/2` in the bucket of the pattern
/// they matched, `/items/*`, not one bucket per path.
async fn no_spelling_of_a_path_dodges_its_policy(store: &Backend) {
    let extra = "routes = [\"POST /export\"]\n[policies.costs]\n\"POST /export\" = 2";
    let by_route = "by = [\"user\", \"route\"]\nroutes = [\"GET /items/*\"]";
    let toml = format!(
        "{}{}",
        policy("exports", 12, extra),
        policy("per_route", 3, by_route)
    );
    let app = store.app(&endpoint(&toml)).await;
    let spellings = [
        "/export",
        "//export",
        "/./export",
        "/x/../export",
        "/%65xport",
        "/export/",
    ];
    for (i, uri) in spellings.into_iter().enumerate() {
        let left = 12 - 2 * (i as u64 + 1);
        let response = ask(&app, Some("joe"), "POST", uri).await;
        assert_eq!(remaining(&response), quotas(&[("exports", left)]), "{uri}");
    }
    for (uri, left) in [("/items/1", 2), ("/items/2", 1), ("/items//3", 0)] {
        let response = ask(&app, Some("joe"), "GET", uri).await;
        assert_eq!(
            remaining(&response),
            quotas(&[("per_route", left)]),
            "{uri}"
        );
    }
    assert_eq!(
        ask(&app, Some("joe"), "GET", "/items/4").await.status(),
        429
    );
    if store.server().is_some() {
        let route = sha256_hex(&route_rest("GET /items/*"));
        let per_route = format!("{}:{}", key_of("joe", "per_route"), &route[..16]);
        store
            .assert_keys(&[key_of("joe", "exports"), per_route])
            .await;
    }
}
on_both_stores!(no_spelling_of_a_path_dodges_its_policy);

/// nginx's convention, `X-Original-Method` and `X-Original-URI`, names the request when the
/// `X-Forwarded-*` pair is absent; when both are sent, `X-Forwarded-*` wins.
async fn the_nginx_headers_name_the_request_too(store: &Backend) {
    let extra = "routes = [\"POST /export\"]";
    let app = store.app(&endpoint(&policy("exports", 5, extra))).await;
    let nginx = [
        ("x-original-method", "POST"),
        ("x-original-uri", "/export?x=1"),
    ];
    let counted = ask_with(&app, Some("joe"), &nginx).await;
    assert_eq!(remaining(&counted), quotas(&[("exports", 4)]));
    let both = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/elsewhere"),
        ("x-original-method", "POST"),
        ("x-original-uri", "/export"),
    ];
    assert_unlimited(&ask_with(&app, Some("joe"), &both).await);
}
on_both_stores!(the_nginx_headers_name_the_request_too);

/// From a peer that is not a trusted proxy, the forwarding headers are not believed: the
/// question is about itself (`GET /check`), so a client reaching tollgate directly can neither
/// spend nor dodge another route's policy. Here the tests' own address, 127.0.0.1, is not
/// trusted; both policies are keyed by address, which is then the peer's.
async fn an_untrusted_peer_names_no_other_request(store: &Backend) {
    let toml = format!(
        "[identity]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[forward_auth]\npath = \"/check\"\n{}{}",
        policy("exports", 5, "by = \"ip\"\nroutes = [\"POST /export\"]"),
        policy("checks", 5, "by = \"ip\"\nroutes = [\"GET /check\"]"),
    );
    let app = store.app(&toml).await;
    let response = ask(&app, Some("joe"), "POST", "/export").await;
    assert_eq!(remaining(&response), quotas(&[("checks", 4)]));
}
on_both_stores!(an_untrusted_peer_names_no_other_request);

/// A trusted proxy's headers are believed, and the client address is read from the right of
/// `X-Forwarded-For` as for any request, so a client-written entry moves nobody's bucket.
async fn a_trusted_proxy_is_believed(store: &Backend) {
    let toml = format!(
        "[identity]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[forward_auth]\npath = \"/check\"\n{}",
        policy("per_ip", 2, "by = \"ip\"\nroutes = [\"POST /export\"]"),
    );
    let app = store.app(&toml).await;
    let from = |spoofed: &'static str| {
        [
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/export"),
            ("x-forwarded-for", spoofed),
        ]
    };
    // The proxy appended the real client, 192.0.2.7; the first entry is the client's own.
    let first = ask_with(&app, None, &from("6.6.6.6, 192.0.2.7")).await;
    assert_eq!(remaining(&first), quotas(&[("per_ip", 1)]));
    let second = ask_with(&app, None, &from("7.7.7.7, 192.0.2.7")).await;
    assert_eq!(remaining(&second), quotas(&[("per_ip", 0)]));
    assert_eq!(
        ask_with(&app, None, &from("8.8.8.8, 192.0.2.7"))
            .await
            .status(),
        429
    );
}
on_both_stores!(a_trusted_proxy_is_believed);

/// Under `on_missing = "deny"`, a question about a request that names nobody is answered 401,
/// which every proxy passes to its client.
async fn an_unnamed_caller_is_refused_under_on_missing_deny(store: &Backend) {
    let toml = format!(
        "[identity]\non_missing = \"deny\"\n{}",
        policy("per_user", 5, "")
    );
    let app = store.app(&endpoint(&toml)).await;
    assert_eq!(ask(&app, None, "GET", "/a").await.status(), 401);
    assert_eq!(ask(&app, Some("joe"), "GET", "/a").await.status(), 200);
}
on_both_stores!(an_unnamed_caller_is_refused_under_on_missing_deny);

/// With the store out under `on_error = "deny"`, the answer is 503 with `Retry-After: 1`, which
/// the proxies pass to their clients; under the default `allow`, an empty 200 with no headers.
#[tokio::test]
async fn a_store_outage_follows_on_error() {
    let redis = RedisServer::not_started();
    for (on_error, status) in [("deny", 503), ("allow", 200)] {
        let toml = format!(
            "[redis]\nurl = \"{}\"\non_error = \"{on_error}\"\ntimeout = \"200ms\"\n{}",
            redis.url(),
            policy("per_user", 5, "")
        );
        let app = TestApp::with_toml(&endpoint(&toml)).await;
        let response = ask(&app, Some("joe"), "GET", "/a").await;
        assert_eq!(response.status(), status, "on_error = {on_error}");
        if status == 503 {
            assert_eq!(header(&response, "retry-after"), "1");
        } else {
            assert_unlimited(&response);
        }
    }
}

/// A `when` on `host` reads the proxied request's host, `X-Forwarded-Host` (Traefik, Caddy),
/// not the host the question was sent to.
async fn a_host_condition_reads_the_forwarded_host(store: &Backend) {
    let app = store
        .app(&endpoint(&policy(
            "api",
            5,
            "when = { host = \"api.example.com\" }",
        )))
        .await;
    let to = |host: &'static str| {
        [
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/a"),
            ("x-forwarded-host", host),
        ]
    };
    let counted = ask_with(&app, Some("joe"), &to("api.example.com")).await;
    assert_eq!(remaining(&counted), quotas(&[("api", 4)]));
    // The same host with a port, a final dot or capitals is the same host.
    for host in ["API.example.com:443", "api.example.com.", "Api.Example.Com"] {
        assert_eq!(ask_with(&app, Some("joe"), &to(host)).await.status(), 200);
    }
    let after = ask_with(&app, Some("joe"), &to("api.example.com")).await;
    assert_eq!(remaining(&after), quotas(&[("api", 0)]));
    assert_unlimited(&ask_with(&app, Some("joe"), &to("www.example.com")).await);
    // Without X-Forwarded-Host, the question's own Host (127.0.0.1:port) names no match.
    assert_unlimited(&ask(&app, Some("joe"), "GET", "/a").await);
}
on_both_stores!(a_host_condition_reads_the_forwarded_host);

/// The endpoint answers any method: a proxy may forward the question as it came.
#[tokio::test]
async fn any_method_asks() {
    let app = TestApp::with_toml(&endpoint(&policy("per_user", 5, ""))).await;
    let response = reqwest::Client::new()
        .post(app.url("/check"))
        .header("x-user", "joe")
        .send()
        .await
        .unwrap();
    assert_eq!(remaining(&response), quotas(&[("per_user", 4)]));
}

/// The configuration refuses an endpoint that would believe anyone without being told to, a
/// path the service already serves, and a denial status that is not 4xx, naming the key.
#[test]
fn mistakes_name_their_key() {
    for (toml, key) in [
        (
            "[forward_auth]\npath = \"/check\"\n",
            "identity.trusted_proxies",
        ),
        (
            "[forward_auth]\npath = \"/user\"\ntrust_any_peer = true\n",
            "forward_auth.path",
        ),
        (
            "[forward_auth]\npath = \"check\"\ntrust_any_peer = true\n",
            "forward_auth.path",
        ),
        (
            "[forward_auth]\npath = \"/{id}\"\ntrust_any_peer = true\n",
            "forward_auth.path",
        ),
        (
            "[forward_auth]\npath = \"/check\"\ntrust_any_peer = true\ndeny_status = 200\n",
            "forward_auth.deny_status",
        ),
    ] {
        let error = tollgate::Settings::from_toml(toml).expect_err(toml);
        assert_eq!(error.key, key, "{toml}: {error}");
    }
    let trusted =
        "[identity]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[forward_auth]\npath = \"/check\"\n";
    assert!(tollgate::Settings::from_toml(trusted).is_ok());
}
