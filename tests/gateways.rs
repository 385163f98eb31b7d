//! tollgate behind the real proxies, unmodified and from their packages: nginx (both ways of
//! turning a denial into the client's 429), Caddy, Traefik and HAProxy through forward-auth, and
//! Envoy through the rate limit service, each running the exact configuration file in
//! `docs/gateways/`, with only its three addresses moved to free ports.
//!
//! They need the proxies installed, so plain `cargo test` skips them; `.ci/run` installs the
//! proxies and runs `cargo test --test gateways -- --ignored`, where a missing proxy fails.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::Router;
use support::{free_port, header, RedisServer, TestApp, NO_BOUNDARY};
use tokio::net::TcpListener;

/// How a proxy's files in `docs/gateways/` write the addresses of tollgate, the API and the
/// proxy, and how an address moved to a free port is written there.
struct Addresses {
    tollgate: &'static str,
    api: &'static str,
    proxy: &'static str,
    written: fn(SocketAddr) -> String,
}

/// The forward-auth proxies' files: `127.0.0.1:8000`, tollgate's HTTP port.
const HOST_PORT: Addresses = Addresses {
    tollgate: "127.0.0.1:8000",
    api: "127.0.0.1:9000",
    proxy: "127.0.0.1:8080",
    written: |addr| addr.to_string(),
};

/// Envoy's file, whose socket addresses carry the port in `port_value`; tollgate's is its
/// `[rls] listen`.
const PORT_VALUE: Addresses = Addresses {
    tollgate: "port_value: 8081",
    api: "port_value: 9000",
    proxy: "port_value: 8080",
    written: |addr| format!("port_value: {}", addr.port()),
};

/// A path no policy covers, which the proxy passes to the API once it serves.
const READY_PATH: &str = "/ready";

/// One proxy: the files it runs and how it is started from the directory that holds them.
struct Proxy {
    name: &'static str,
    files: &'static [&'static str],
    /// The program and its arguments; `{dir}` is the directory holding the files.
    command: &'static [&'static str],
    /// `forward_auth.deny_status` this configuration expects.
    deny_status: u16,
    /// How its files write the three addresses.
    addresses: Addresses,
}

const NGINX_403: Proxy = Proxy {
    name: "nginx, 403 mapped to 429",
    files: &["nginx-403.conf"],
    command: &[
        "nginx",
        "-p",
        "{dir}",
        "-c",
        "{dir}/nginx-403.conf",
        "-g",
        "daemon off;",
    ],
    deny_status: 403,
    addresses: HOST_PORT,
};

const NGINX_STATUS: Proxy = Proxy {
    name: "nginx, $upstream_status mapped to 429",
    files: &["nginx-status.conf"],
    command: &[
        "nginx",
        "-p",
        "{dir}",
        "-c",
        "{dir}/nginx-status.conf",
        "-g",
        "daemon off;",
    ],
    deny_status: 429,
    addresses: HOST_PORT,
};

const CADDY: Proxy = Proxy {
    name: "Caddy",
    files: &["Caddyfile"],
    command: &[
        "caddy",
        "run",
        "--config",
        "{dir}/Caddyfile",
        "--adapter",
        "caddyfile",
    ],
    deny_status: 429,
    addresses: HOST_PORT,
};

const TRAEFIK: Proxy = Proxy {
    name: "Traefik",
    files: &["traefik.yml", "traefik-dynamic.yml"],
    command: &["traefik", "--configFile={dir}/traefik.yml"],
    deny_status: 429,
    addresses: HOST_PORT,
};

const HAPROXY: Proxy = Proxy {
    name: "HAProxy",
    files: &["haproxy.cfg", "tollgate.lua"],
    command: &["haproxy", "-db", "-f", "{dir}/haproxy.cfg"],
    deny_status: 429,
    addresses: HOST_PORT,
};

const ENVOY: Proxy = Proxy {
    name: "Envoy",
    files: &["envoy.yaml"],
    command: &[
        "envoy",
        "-c",
        "{dir}/envoy.yaml",
        // No shared memory for a hot restart, which parallel Envoys would contend for.
        "--disable-hot-restart",
        "--log-level",
        "warn",
    ],
    // Envoy asks tollgate's rate limit service over gRPC, not its forward-auth endpoint.
    deny_status: 429,
    addresses: PORT_VALUE,
};

/// The policies every proxy is checked with: a user's 3 requests to `/api/*`, exports costing
/// 4 of 10, 2 requests to `/keyed/*` per API key, 3 requests to `/ip/*` per client address; a
/// request naming nobody is refused.
fn tollgate_toml(deny_status: u16) -> String {
    format!(
        r#"
[identity]
trusted_proxies = ["127.0.0.1/32"]
on_missing = "deny"

[forward_auth]
path = "/check"
deny_status = {deny_status}

[[policies]]
name = "per_user"
limit = 3
window = "{NO_BOUNDARY}"
routes = ["GET /api/*"]

[[policies]]
name = "exports"
limit = 10
window = "{NO_BOUNDARY}"
routes = ["POST /export"]
costs = {{ "POST /export" = 4 }}

[[policies]]
name = "per_key"
limit = 2
window = "{NO_BOUNDARY}"
by = "header:x-api-key"
routes = ["GET /keyed/*"]

[[policies]]
name = "per_ip"
limit = 3
window = "{NO_BOUNDARY}"
by = "ip"
routes = ["GET /ip/*"]
"#
    )
}

/// The API behind the proxy: answers 200 and counts the requests that reach it, by path.
struct Api {
    addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, usize>>>,
}

impl Api {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let app = Router::new()
            .fallback(
                |State(seen): State<Arc<Mutex<HashMap<String, usize>>>>, request: Request| async move {
                    *seen.lock().unwrap().entry(request.uri().path().to_owned()).or_default() += 1;
                    "from the API"
                },
            )
            .with_state(seen.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Api { addr, seen }
    }

    /// How many requests to `path` reached the API.
    fn saw(&self, path: &str) -> usize {
        self.seen.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// A running proxy, killed on drop, with its stderr kept for failure messages.
struct Running {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Running {
    /// Copies `proxy`'s files with the three addresses moved, starts it, and waits until it
    /// answers on its port.
    async fn start(proxy: &Proxy, tollgate: SocketAddr, api: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let Addresses {
            tollgate: tollgate_addr,
            api: api_addr,
            proxy: proxy_addr,
            written,
        } = proxy.addresses;
        let mut unmoved = vec![tollgate_addr, api_addr, proxy_addr];
        for file in proxy.files {
            let source = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("docs/gateways")
                .join(file);
            let text = std::fs::read_to_string(&source).unwrap();
            unmoved.retain(|addr| !text.contains(addr));
            let text = text
                .replace(tollgate_addr, &written(tollgate))
                .replace(api_addr, &written(api))
                .replace(proxy_addr, &written(addr));
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        // Were one missing, the proxy would run against an address the test does not serve.
        assert!(
            unmoved.is_empty(),
            "{}: its files never name {unmoved:?}",
            proxy.name
        );
        let path = dir.path().display().to_string();
        let args: Vec<String> = proxy
            .command
            .iter()
            .map(|a| a.replace("{dir}", &path))
            .collect();
        let child = Command::new(&args[0])
            .args(&args[1..])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start {}: {e}", proxy.name, args[0]));
        let mut running = Running { child, dir, addr };
        // Listening is not enough: Traefik opens its port before it has loaded its routes, and
        // answers 404 until then. A path no policy covers reaches the API once all is loaded.
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("{} exited with {status}:\n{}", proxy.name, running.stderr());
            }
            let probe = client.get(running.url(READY_PATH)).send().await;
            if probe.is_ok_and(|response| response.status() == 200) {
                return running;
            }
            assert!(
                Instant::now() < deadline,
                "{} never served:\n{}",
                proxy.name,
                running.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Running {
    /// Asks the proxy to stop, and kills it only if it has not within two seconds: a killed
    /// nginx master leaves its workers running, holding the port.
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill only sends a signal, to a child this test started and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The statuses of `n` requests, sent one after another.
async fn statuses(n: usize, send: impl Fn() -> reqwest::RequestBuilder) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            send()
                .send()
                .await
                .expect("the proxy answers")
                .status()
                .as_u16(),
        );
    }
    out
}

/// Everything a proxy must get right with tollgate deciding for it.
async fn limits_through(proxy: &Proxy) {
    let api = Api::start().await;
    let tollgate = TestApp::with_toml(&tollgate_toml(proxy.deny_status)).await;
    let running = Running::start(proxy, tollgate.addr, api.addr).await;
    let client = reqwest::Client::new();
    let name = proxy.name;
    let stderr = || running.stderr();

    // A user's 3 requests pass, the 4th is the client's 429 with Retry-After and the policy's
    // state, and the API saw only the 3.
    let joe = || {
        client
            .get(running.url("/api/items"))
            .header("x-user", "joe")
    };
    assert_eq!(statuses(3, joe).await, [200; 3], "{name}: {}", stderr());
    let denied = joe().send().await.unwrap();
    assert_eq!(denied.status(), 429, "{name}: {}", stderr());
    let retry_after: u64 = header(&denied, "retry-after").parse().unwrap_or(0);
    assert!(retry_after >= 1, "{name}: Retry-After {retry_after}");
    assert!(
        header(&denied, "ratelimit").contains("\"per_user\";r=0"),
        "{name}"
    );
    assert!(
        denied
            .text()
            .await
            .unwrap()
            .contains("User Rate Limit Exceeded"),
        "{name}"
    );
    assert_eq!(
        api.saw("/api/items"),
        3,
        "{name}: the API saw a denied request"
    );

    // The method and path came from the proxy, whatever the client wrote under the names the
    // proxy uses, and however the client spelt the path: an export costs 4 of 10, so the third
    // is denied.
    let spellings = ["/export", "//export", "/%65xport"];
    let mut exports = Vec::new();
    for path in spellings {
        let export = client
            .post(running.url(path))
            .header("x-user", "joe")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/elsewhere")
            .header("x-original-method", "GET")
            .header("x-original-uri", "/elsewhere");
        exports.push(export.send().await.unwrap().status().as_u16());
    }
    assert_eq!(exports, [200, 200, 429], "{name}: {}", stderr());
    let saw_exports: usize = spellings.iter().map(|path| api.saw(path)).sum();
    assert_eq!(saw_exports, 2, "{name}");

    // A header a policy keys by reaches tollgate: each API key has its own bucket.
    let (client, running) = (&client, &running);
    let keyed = |key: &'static str| {
        move || {
            client
                .get(running.url("/keyed/x"))
                .header("x-user", "joe")
                .header("x-api-key", key)
        }
    };
    assert_eq!(statuses(3, keyed("k1")).await, [200, 200, 429], "{name}");
    assert_eq!(statuses(1, keyed("k2")).await, [200], "{name}");

    // A client-written X-Forwarded-For moves nobody to another address's bucket.
    let spoofed = |i: usize| {
        client
            .get(running.url("/ip/x"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
    };
    let mut by_address = Vec::new();
    for i in 0..4 {
        by_address.push(spoofed(i).send().await.unwrap().status().as_u16());
    }
    assert_eq!(by_address, [200, 200, 200, 429], "{name}");

    // A request naming nobody follows `on_missing = "deny"`: 401, and the API never sees it.
    let nobody = client.get(running.url("/api/other")).send().await.unwrap();
    assert_eq!(nobody.status(), 401, "{name}");
    assert_eq!(api.saw("/api/other"), 0, "{name}");

    // With tollgate gone, the proxy fails closed: a 5xx, and the API sees nothing.
    let tollgate_addr = tollgate.addr;
    drop(tollgate);
    // Stopped once it refuses connections: its shutdown runs on another task.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(tollgate_addr).await.is_ok() {
        assert!(Instant::now() < deadline, "{name}: tollgate never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let alone = client
        .get(running.url("/api/alone"))
        .header("x-user", "ann")
        .send()
        .await
        .unwrap();
    assert!(
        alone.status().is_server_error(),
        "{name}: {}",
        alone.status()
    );
    assert_eq!(api.saw("/api/alone"), 0, "{name}");
    eprintln!(
        "{name}: with tollgate stopped the client got {}",
        alone.status()
    );
}

/// nginx's `auth_request`, tollgate answering 403 and nginx re-labelling it 429.
#[tokio::test]
#[ignore = "needs nginx installed: run by .ci/run with --ignored"]
async fn nginx_with_403() {
    limits_through(&NGINX_403).await;
}

/// nginx's `auth_request`, tollgate answering 429 and nginx reading it from `$upstream_status`.
#[tokio::test]
#[ignore = "needs nginx installed: run by .ci/run with --ignored"]
async fn nginx_with_upstream_status() {
    limits_through(&NGINX_STATUS).await;
}

/// Caddy's `forward_auth`.
#[tokio::test]
#[ignore = "needs caddy installed: run by .ci/run with --ignored"]
async fn caddy() {
    limits_through(&CADDY).await;
}

/// Traefik's `forwardAuth`.
#[tokio::test]
#[ignore = "needs traefik installed: run by .ci/run with --ignored"]
async fn traefik() {
    limits_through(&TRAEFIK).await;
}

/// HAProxy with `docs/gateways/tollgate.lua`.
#[tokio::test]
#[ignore = "needs haproxy installed: run by .ci/run with --ignored"]
async fn haproxy() {
    limits_through(&HAPROXY).await;
}

/// The descriptors `docs/gateways/envoy.yaml` sends, in envoyproxy/ratelimit's format.
const RATELIMIT_YAML: &str = "ratelimit.yaml";

/// `docs/gateways/`'s file `name`.
fn gateways_file(name: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "docs/gateways", name]
        .iter()
        .collect()
}

/// `ratelimit.yaml`'s limits are per hour, in windows aligned to the epoch: a test that began in
/// an hour's last seconds would see its counts reset midway, so it starts in the next hour.
async fn clear_of_the_hours_end() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let left = Duration::from_secs(3600) - Duration::from_secs(now.as_secs() % 3600);
    if left < Duration::from_secs(30) {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
}

/// Envoy's rate limit filter (`docs/gateways/envoy.yaml`) asking tollgate's rate limit service,
/// which loads `docs/gateways/ratelimit.yaml`, with Redis deciding: a user's fourth request is
/// Envoy's 429 with tollgate's `Retry-After` and body, an export's two descriptors are decided
/// all or nothing, a limit raised in the file applies at once after tollgate reloads it, and with
/// tollgate stopped Envoy fails closed.
#[tokio::test]
#[ignore = "needs envoy installed: run by .ci/run with --ignored"]
async fn envoy() {
    clear_of_the_hours_end().await;
    let redis = RedisServer::start().await;
    let api = Api::start().await;
    // The shipped files, copied so that the test can change the limits under a running tollgate.
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("ratelimit.yaml");
    let shipped = std::fs::read_to_string(gateways_file(RATELIMIT_YAML)).unwrap();
    std::fs::write(&yaml, &shipped).unwrap();
    let config = dir.path().join("tollgate.toml");
    let toml = format!(
        "[redis]\nurl = {:?}\n[rls]\nlisten = \"127.0.0.1:0\"\nconfig = [{:?}]\n\
         [reload]\nwatch_interval = \"100ms\"\n",
        redis.url(),
        yaml.display().to_string()
    );
    std::fs::write(&config, toml).unwrap();
    let tollgate = TestApp::reloading(&config).await;
    let rls = tollgate.rls_addr.expect("rls.listen is set");
    let running = Running::start(&ENVOY, rls, api.addr).await;
    let client = reqwest::Client::new();
    let stderr = || running.stderr();
    let get = |path: &str, user: &str| {
        client
            .get(running.url(path))
            .header("x-user", user.to_owned())
    };

    // A user's 3 requests an hour pass, with tollgate's headers; the 4th is Envoy's 429 with
    // tollgate's Retry-After, RateLimit headers and JSON body, and the API saw only the 3.
    for left in [2, 1, 0] {
        let admitted = get("/api/items", "joe").send().await.unwrap();
        assert_eq!(admitted.status(), 200, "{}", stderr());
        assert!(
            header(&admitted, "ratelimit").contains(&format!("\"user\";r={left}")),
            "{}",
            header(&admitted, "ratelimit")
        );
    }
    let denied = get("/api/items", "joe").send().await.unwrap();
    assert_eq!(denied.status(), 429, "{}", stderr());
    assert_eq!(header(&denied, "x-envoy-ratelimited"), "true");
    let retry_after: u64 = header(&denied, "retry-after").parse().unwrap_or(0);
    assert!(
        (1..=3600).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert!(header(&denied, "ratelimit").contains("\"user\";r=0"));
    let content_types: Vec<_> = denied.headers().get_all("content-type").iter().collect();
    assert_eq!(content_types, ["application/json"]);
    assert_eq!(
        denied.text().await.unwrap(),
        r#"{"detail":"User Rate Limit Exceeded"}"#
    );
    assert_eq!(api.saw("/api/items"), 3, "the API saw a denied request");

    // An export sends two descriptors, the user's and the user's exports (1 an hour). Over the
    // exports' limit, however the path is spelt, the user's quota is not charged: its headers
    // say so, and 2 of its 3 requests are left after the one export admitted.
    assert_eq!(statuses(1, || get("/export", "ann")).await, [200]);
    let spellings = ["/export", "//export", "/x/../export", "/%65xport"];
    for path in spellings {
        let over = get(path, "ann").send().await.unwrap();
        assert_eq!(over.status(), 429, "{path}: {}", stderr());
        let state = header(&over, "ratelimit");
        assert!(
            state.contains("\"user\";r=2") && state.contains("\"exports\";r=0"),
            "{path}: {state}"
        );
    }
    let saw_exports: usize = spellings.iter().map(|path| api.saw(path)).sum();
    assert_eq!(saw_exports, 1, "the API saw a denied export");
    assert_eq!(
        statuses(3, || get("/api/items", "ann")).await,
        [200, 200, 429],
        "a denied export charged the user's quota"
    );
    redis.assert_every_key_has_ttl().await;

    // The users' limit raised from 3 to 5 an hour in the file: tollgate reloads it, and joe,
    // whose 4th request was denied (and that denial cached), is admitted at once through Envoy,
    // his 3 earlier requests still counted.
    let raised = shipped.replace(
        "{unit: hour, requests_per_unit: 3}",
        "{unit: hour, requests_per_unit: 5}",
    );
    assert_ne!(
        raised, shipped,
        "the test no longer finds the users' limit in {RATELIMIT_YAML}"
    );
    std::fs::write(&yaml, raised).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tollgate.metric("tollgate_config_generation").await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "tollgate did not reload the file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admitted = get("/api/items", "joe").send().await.unwrap();
    assert_eq!(admitted.status(), 200, "{}", stderr());
    assert!(
        header(&admitted, "ratelimit").contains("\"user\";r=1"),
        "{}",
        header(&admitted, "ratelimit")
    );

    // With tollgate gone, Envoy's failure_mode_deny answers status_on_error: a 503, and the API
    // sees nothing.
    drop(tollgate);
    // Stopped once it refuses connections: its shutdown runs on another task.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(rls).await.is_ok() {
        assert!(Instant::now() < deadline, "tollgate never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let alone = get("/api/alone", "bob").send().await.unwrap();
    assert_eq!(alone.status(), 503, "{}", stderr());
    assert_eq!(api.saw("/api/alone"), 0);
    eprintln!(
        "Envoy: with tollgate stopped the client got {} {:?}",
        alone.status(),
        alone.text().await.unwrap()
    );
}

/// The names the tests and the documents use for the proxies' files exist.
#[test]
fn every_configuration_file_exists() {
    assert!(
        gateways_file(RATELIMIT_YAML).is_file(),
        "Envoy: {RATELIMIT_YAML} is missing"
    );
    for proxy in [
        &NGINX_403,
        &NGINX_STATUS,
        &CADDY,
        &TRAEFIK,
        &HAPROXY,
        &ENVOY,
    ] {
        for file in proxy.files {
            let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "docs/gateways", file]
                .iter()
                .collect();
            assert!(
                path.is_file(),
                "{}: {} is missing",
                proxy.name,
                path.display()
            );
        }
    }
}
