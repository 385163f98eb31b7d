//! `RedisStore::decide` (one EVALSHA) against a `redis-server` this bench starts, with a bare `PING` through the same fred client as baseline.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use fred::prelude::{ClientLike, Config, KeysInterface};
use tollgate::store::Check;
use tollgate::{Clock, KeyBuilder, RedisStore, Store};

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    redis_store(&mut c);
    c.final_summary();
    support::print_ratios(started, &["redis_store"]);
}

/// `decide` for one policy and for three (one per algorithm, one caller, so one EVALSHA),
/// against a `PING` and a `GET` of a missing key through the store's own client.
fn redis_store(c: &mut Criterion) {
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(Skip(why)) => {
            eprintln!("redis_store benchmarks skipped: {why}");
            return;
        }
    };
    // Current-thread, so the bench, fred's connection task and redis-server fit on two cores
    // without a third thread fighting them; PING pays the same runtime, so the ratio holds.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(async {
        let config = Config::from_url(&server.url()).unwrap();
        // Generous: a loaded machine must slow the figures, not turn them into timeouts.
        let store = RedisStore::connect(config, Duration::from_secs(5))
            .await
            .unwrap();
        store.load_scripts().await.expect("the scripts load");
        store
    });
    let keys = KeyBuilder::new("tollgate");
    let tag = keys.tag(b"user-0042@example.com");
    let checks: Vec<Check> = support::roomy_policies()
        .into_iter()
        .map(|p| Check::new(keys.key(&tag, p.name()), p))
        .collect();
    let decide = |checks: &[Check]| {
        runtime
            .block_on(store.decide(checks, Clock::Store))
            .expect("redis decides")
    };
    assert!(decide(&checks[..1]).allowed && decide(&checks).allowed);

    let client = store.client();
    let mut group = c.benchmark_group("redis_store");
    group.bench_function("baseline_ping", |b| {
        b.to_async(&runtime)
            .iter(|| async { client.ping::<String>(None).await.unwrap() })
    });
    group.bench_function("get_missing", |b| {
        b.to_async(&runtime).iter(|| async {
            let value: Option<String> = client.get("tollgate:bench:absent").await.unwrap();
            value
        })
    });
    support::bench_decides(&mut group, &runtime, &store, &checks);
    group.finish();
    runtime.block_on(store.client().quit()).ok();
    drop(server);
}

/// Why the Redis benchmarks cannot run here; not a failure of the code under measure.
struct Skip(String);

/// A `redis-server` on a free loopback port, with no persistence, killed on drop.
///
/// The integration tests' guard in `tests/support` is async and richer; a bench needs only this.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts a server and waits until that very process answers; a few tries, since a free
    /// port can be taken between finding it and binding it.
    fn start() -> Result<Self, Skip> {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child =
                match spawned {
                    Ok(child) => child,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Skip(
                        "redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)"
                            .into(),
                    )),
                    Err(e) => return Err(Skip(format!("cannot start redis-server: {e}"))),
                };
            let mut server = RedisServer { port, child };
            if server.wait_until_answering() {
                return Ok(server);
            }
        }
        Err(Skip(
            "redis-server did not start on a free port in 5 tries".into(),
        ))
    }

    /// `redis://127.0.0.1:<port>`.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Polls until PING answers and `INFO server` names our process; false if it exited first
    /// (the port was taken) or stayed silent for 10 s.
    fn wait_until_answering(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.ask("PING").is_some_and(|r| r.starts_with("+PONG"))
                && self
                    .ask("INFO server")
                    .is_some_and(|r| r.contains(&format!("process_id:{}\r\n", self.child.id())))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// One inline command over a raw socket, so readiness does not depend on the client under
    /// measure; the reply as text, read until it looks complete or 500 ms pass.
    fn ask(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            // A status or error is one line; of INFO, only the process id line is wanted.
            let done = match text.split_once("process_id:") {
                Some((_, pid)) => pid.contains("\r\n"),
                None => text.starts_with(['+', '-']) && text.ends_with("\r\n"),
            };
            if done {
                break;
            }
        }
        Some(String::from_utf8_lossy(&reply).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
