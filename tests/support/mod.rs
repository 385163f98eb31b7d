//! What the integration tests share: a real `redis-server` per test, and the real service on a
//! free port.
//!
//! Each test that needs Redis starts its own server (about 10 ms), so tests that stop, restart or
//! flush Redis never disturb each other, and none ever touches a server it did not start.
//!
//! Beside this file: `backend` runs one test on both stores, `binary` runs the real binary as a
//! child process, `config` runs it in a directory of its own for the configuration tests,
//! `policies` reads the rate-limit headers back and builds the keys a request should write,
//! `served` runs the binary on a configuration file the reload tests rewrite, and `cluster` and
//! `sentinel` start those Redis topologies.
#![allow(dead_code)]

#[macro_use]
mod backend;
pub mod binary;
pub mod cluster;
pub mod config;
pub mod policies;
pub mod rls;
pub mod sentinel;
pub mod served;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::CustomCommand;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tollgate::config::Settings;

// Re-exported where the tests have always found it; not every test binary uses it.
#[allow(unused_imports)]
pub use backend::Backend;

/// A `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Extra `redis-server` arguments, e.g. to make it a cluster node.
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server with no persistence and waits until it answers.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A free port with no server on it yet: [`restart`](Self::restart) starts one there.
    pub fn not_started() -> Self {
        RedisServer {
            port: free_port(),
            child: None,
            args: Vec::new(),
        }
    }

    /// Starts a server with extra arguments; `{port}` in them becomes its port.
    pub async fn start_with(args: &[&str]) -> Self {
        for _ in 0..5 {
            let mut server = RedisServer::not_started();
            let port = server.port.to_string();
            server.args = args.iter().map(|a| a.replace("{port}", &port)).collect();
            if server.spawn().await {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 tries");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server, as a crash or an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn().await,
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Spawns on `self.port` and waits until that very process answers; false if it exited
    /// first, because the port was taken.
    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: install it (Debian/Ubuntu: apt-get install redis-server)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            // Another test's server may hold the port: only our own process counts.
            if answering_pid(self.port).await == Some(child.id()) {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = child.kill();
        panic!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        );
    }

    /// A fresh fred client connected to this server, to inspect what tollgate left.
    pub async fn client(&self) -> Client {
        let client = Builder::from_config(Config::from_url(&self.url()).unwrap())
            .build()
            .unwrap();
        client.init().await.expect("test client connects");
        client
    }

    /// Runs one command (`["CONFIG", "SET", "maxmemory", "0"]`), returning its reply or Redis's
    /// error text.
    pub async fn command(&self, args: &[&str]) -> Result<fred::types::Value, String> {
        let client = self.client().await;
        let reply = client
            .custom(
                CustomCommand::new(args[0], None, false),
                args[1..].iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            )
            .await
            .map_err(|e| e.to_string());
        let _ = client.quit().await;
        reply
    }

    /// Every key in the server, by SCAN.
    pub async fn keys(&self) -> Vec<String> {
        let client = self.client().await;
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        loop {
            let (next, page): (String, Vec<String>) = client
                .custom(
                    fred::types::CustomCommand::new_static("SCAN", None, false),
                    vec![cursor.clone(), "COUNT".into(), "1000".into()],
                )
                .await
                .unwrap();
            keys.extend(page);
            if next == "0" {
                return keys;
            }
            cursor = next;
        }
    }

    /// How many EVALSHA calls this server has run, from INFO commandstats.
    pub async fn evalsha_calls(&self) -> u64 {
        let client = self.client().await;
        let stats: String = client
            .custom(
                CustomCommand::new_static("INFO", None, false),
                vec!["commandstats"],
            )
            .await
            .unwrap();
        stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Asserts the two invariants every Redis test ends on: every key has a TTL, which rules
    /// out permanent lockouts, and every caller's key (`prefix:{hash}:policy`) holds a count
    /// above zero ([`assert_holds_a_count`]), which rules out keys that only denied requests
    /// touched. The one other key, `tollgate reset`'s marker, needs only its TTL.
    pub async fn assert_every_key_has_ttl(&self) {
        let client = self.client().await;
        for key in self.keys().await {
            let pttl: i64 = client.pttl(&key).await.unwrap();
            // -1 alone means "no TTL". 0 is a key in its last millisecond, and -2 one that
            // expired between SCAN and PTTL: both had a TTL.
            assert_ne!(pttl, -1, "key {key} has no TTL");
            let value: Option<String> = client
                .get(&key)
                .await
                .unwrap_or_else(|e| panic!("key {key} cannot be read as a count: {e}"));
            // None: the key expired since.
            if let Some(value) = value {
                assert_holds_a_count(&key, &value);
            }
        }
    }
}

/// Asserts that `value`, stored at a caller's `key` (`prefix:{hash}:policy`), is a state the
/// scripts write (lua/*.lua) holding a count above zero: a token bucket's `tat_us:emission_us`,
/// a fixed window's `count:start:window_ms`, or a sliding window's `curr:prev:start:window_ms`.
/// A denied request writes
/// nothing, and a refund that brings a count back to nothing deletes the key, so a zero means
/// denied requests left something behind. Any other key (`tollgate reset`'s marker) holds no
/// count.
pub fn assert_holds_a_count(key: &str, value: &str) {
    if key.ends_with(":resets") && !key.contains('{') {
        return;
    }
    let numbers: Vec<u64> = value
        .split(':')
        .map(|n| n.parse())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|_| panic!("key {key} holds {value:?}, which tollgate never writes"));
    let count = match numbers[..] {
        [tat_us, _emission_us] => tat_us,
        [count, _start, _window_ms] => count,
        [curr, prev, _start, _window_ms] => curr + prev,
        _ => panic!("key {key} holds {value:?}, which tollgate never writes"),
    };
    assert!(
        count > 0,
        "key {key} holds {value:?}: nothing counted, left behind by denied requests"
    );
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process id of the Redis answering on `port`, from `INFO server` over a raw socket, so
/// that readiness does not depend on the client under test.
pub async fn answering_pid(port: u16) -> Option<u32> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream.write_all(b"INFO server\r\n").await.ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if let Some(rest) = text.split("process_id:").nth(1) {
                if let Some((pid, _)) = rest.split_once("\r\n") {
                    return pid.trim().parse().ok();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(500), read)
        .await
        .ok()?
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The real service on a free port, shut down on drop.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where Envoy's rate limit service listens, when `rls.listen` is set (on a free port,
    /// whatever it says).
    pub rls_addr: Option<SocketAddr>,
    shutdown: Vec<oneshot::Sender<()>>,
}

impl TestApp {
    /// Serves the service that `settings` describe, Envoy's rate limit service beside it on a
    /// port of its own when `rls.listen` is set, as the binary does.
    pub async fn spawn(settings: &Settings) -> Self {
        let services = tollgate::setup::services(settings)
            .await
            .expect("the app builds");
        let rls = match services.rls {
            None => None,
            Some((_, service)) => Some(tollgate::rls::router(service).await.into()),
        };
        Self::serve(services.router.into(), rls, settings.server.clone()).await
    }

    /// Serves the configuration file `file` as the binary does, through the reloader, which
    /// reloads it when it or a descriptor file changes (Envoy's rate limit service beside it on
    /// a free port, whatever `rls.listen` says).
    pub async fn reloading(file: &std::path::Path) -> Self {
        let settings = Settings::load_again(Some(file)).expect("the configuration loads");
        let server = settings.server.clone();
        let (served, reloader) = tollgate::reload::Reloader::start(settings, Some(file.into()))
            .await
            .expect("the app builds");
        tokio::spawn(reloader.run());
        Self::serve(served.http, served.rls.map(|(_, router)| router), server).await
    }

    /// Serves `http` on a free port, and `rls` beside it on another, until dropped.
    async fn serve(
        http: tollgate::http::LiveRouter,
        rls: Option<tollgate::http::LiveRouter>,
        server: tollgate::http::ServerSettings,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (beside, rls_addr) = match rls {
            None => (None, None),
            Some(router) => {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let rls_addr = listener.local_addr().unwrap();
                (Some((listener, router)), Some(rls_addr))
            }
        };
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(tollgate::http::server::serve_all(
            listener,
            http,
            beside,
            server,
            async {
                let _ = rx.await;
            },
        ));
        TestApp {
            addr,
            rls_addr,
            shutdown: vec![tx],
        }
    }

    /// Serves the TOML configuration `toml` (over the defaults).
    pub async fn with_toml(toml: &str) -> Self {
        Self::spawn(&settings(toml)).await
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("the service answers")
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample of `/metrics`, e.g. `tollgate_breaker_state{state="open"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    }

    /// `GET /user` as `user`.
    pub async fn get_user(&self, client: &reqwest::Client, user: &str) -> reqwest::Response {
        client
            .get(self.url("/user"))
            .header("x-user", user)
            .send()
            .await
            .expect("the service answers")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for tx in self.shutdown.drain(..) {
            let _ = tx.send(());
        }
    }
}

/// Settings from TOML over the defaults, failing the test on a mistake.
pub fn settings(toml: &str) -> Settings {
    Settings::from_toml(toml).unwrap_or_else(|e| panic!("test configuration: {e}"))
}

/// A window that began at the Unix epoch and ends in 2052: windows align to the epoch, so no
/// window boundary can fall inside a test that uses it.
pub const NO_BOUNDARY: &str = "30000d";

/// TOML for a Redis-backed service with one fixed-window policy and the default timeout.
pub fn redis_toml(redis: &RedisServer, limit: u64, window: &str, on_error: &str) -> String {
    redis_toml_with_timeout(redis, limit, window, on_error, "100ms")
}

/// [`redis_toml`] with `redis.timeout` set, for bursts that queue longer than 100 ms in a debug
/// build on two cores: those tests prove exactness, not latency.
pub fn redis_toml_with_timeout(
    redis: &RedisServer,
    limit: u64,
    window: &str,
    on_error: &str,
    timeout: &str,
) -> String {
    format!(
        r#"
[redis]
url = "{}"
on_error = "{on_error}"
timeout = "{timeout}"

[[policies]]
name = "per_minute"
limit = {limit}
window = "{window}"
"#,
        redis.url()
    )
}

/// Policies in the order of docs/configuration.md's example: per user (one of each algorithm,
/// 5 each), then per address (`per_ip` requests), as TOML.
pub fn user_then_address(per_ip: u64) -> String {
    let mut toml = String::new();
    for algorithm in ["fixed_window", "sliding_window", "token_bucket"] {
        toml.push_str(&format!(
            "[[policies]]\nname = \"{algorithm}\"\nalgorithm = \"{algorithm}\"\nlimit = 5\n\
             window = \"{NO_BOUNDARY}\"\n"
        ));
    }
    toml.push_str(&format!(
        "[[policies]]\nname = \"per_ip\"\nlimit = {per_ip}\nwindow = \"{NO_BOUNDARY}\"\nby = \"ip\"\n"
    ));
    toml
}

/// A header of `response` as text.
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Sends `n` concurrent `GET /user` as `user` and counts the 200s; any status but 200 or 429
/// fails the test.
pub async fn admitted_of(app: &TestApp, client: &reqwest::Client, user: &str, n: usize) -> usize {
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url, user) = (client.clone(), app.url("/user"), user.to_owned());
        requests.spawn(async move {
            client
                .get(url)
                .header("x-user", user)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let mut admitted = 0;
    while let Some(status) = requests.join_next().await {
        match status.unwrap().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    admitted
}

/// Waits until `status()` answers anything but 429, failing the test if it still answers 429
/// after `within`: for what the service applies on a timer of its own, such as a reset.
pub async fn until_not_refused<F, Fut>(within: Duration, mut status: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let started = std::time::Instant::now();
    while status().await == 429 {
        let waited = started.elapsed();
        assert!(waited < within, "still refused {waited:?} after the change");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits out the last three seconds of a minute, so a scenario of a few requests is not split
/// across two one-minute windows.
///
/// Windows are aligned to the Unix epoch on the machine's clock (Redis runs on the same one).
pub async fn clear_of_minute_boundary() {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let left = 60_000 - ms % 60_000;
    if left < 3_000 {
        tokio::time::sleep(Duration::from_millis(left + 10)).await;
    }
}
