//! A primary, its replica and three sentinels watching them, each a process on a free port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::CustomCommand;

use super::{answering_pid, free_port, RedisServer};

/// The service name the sentinels watch.
pub const SERVICE: &str = "tollgate-primary";

/// A sentinel-watched primary and replica, killed on drop.
pub struct SentinelSetup {
    primary: RedisServer,
    replica: RedisServer,
    sentinels: Vec<(u16, Child)>,
    _dir: tempfile::TempDir,
}

impl SentinelSetup {
    /// Starts the primary, the replica and three sentinels, and waits until every sentinel
    /// knows the replica and the other sentinels.
    pub async fn start() -> Self {
        let primary = RedisServer::start().await;
        let primary_port = primary.port().to_string();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", primary_port.as_str()]).await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut sentinels = Vec::new();
        for n in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{n}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {SERVICE} 1000\n\
                     sentinel failover-timeout {SERVICE} 5000\n"
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            while answering_pid(port).await != Some(child.id()) {
                assert!(
                    Instant::now() < deadline,
                    "sentinel on {port} did not answer"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sentinels.push((port, child));
        }
        let setup = SentinelSetup {
            primary,
            replica,
            sentinels,
            _dir: dir,
        };
        setup.wait_until_known().await;
        setup
    }

    /// `redis-sentinel://` with every sentinel, as tollgate documents it.
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{}/{SERVICE}",
            self.sentinels[0].0
        );
        for (i, (port, _)) in self.sentinels.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{port}"));
        }
        url
    }

    /// The port of the primary the sentinels name now.
    pub async fn primary_port(&self) -> u16 {
        let reply: Vec<String> =
            sentinel_command(self.sentinels[0].0, &["get-master-addr-by-name", SERVICE]).await;
        reply[1].parse().unwrap()
    }

    /// Forces a failover with `SENTINEL FAILOVER` and waits until the replica is the primary
    /// the sentinels name, and it accepts writes.
    pub async fn failover(&self) {
        let old = self.primary_port().await;
        let _: Value = sentinel_command(self.sentinels[0].0, &["failover", SERVICE]).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.primary_port().await;
            if now != old && role(now).await.starts_with("master") {
                return;
            }
            assert!(Instant::now() < deadline, "no failover within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ports of the two data nodes, primary first as started.
    pub fn data_ports(&self) -> [u16; 2] {
        [self.primary.port(), self.replica.port()]
    }

    async fn wait_until_known(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (port, _) in &self.sentinels {
            loop {
                let master: Vec<String> = sentinel_command(*port, &["master", SERVICE]).await;
                let field = |name: &str| {
                    master
                        .iter()
                        .position(|f| f == name)
                        .and_then(|i| master.get(i + 1))
                        .and_then(|v| v.parse::<u32>().ok())
                        .unwrap_or(0)
                };
                if field("num-slaves") >= 1 && field("num-other-sentinels") >= 2 {
                    break;
                }
                assert!(Instant::now() < deadline, "sentinels did not meet in 30 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn sentinel_command<R: FromValue>(port: u16, args: &[&str]) -> R {
    let client = plain_client(port).await;
    let reply = client
        .custom(
            CustomCommand::new_static("SENTINEL", None, false),
            args.to_vec(),
        )
        .await
        .unwrap();
    let _ = client.quit().await;
    reply
}

async fn role(port: u16) -> String {
    let client = plain_client(port).await;
    let reply: Vec<Value> = client
        .custom(
            CustomCommand::new_static("ROLE", None, false),
            Vec::<String>::new(),
        )
        .await
        .unwrap_or_default();
    let _ = client.quit().await;
    reply
        .first()
        .and_then(|v| v.as_string())
        .unwrap_or_default()
}

async fn plain_client(port: u16) -> Client {
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.expect("the node answers");
    client
}
