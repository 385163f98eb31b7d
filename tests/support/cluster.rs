//! A real Redis Cluster for tests: three primaries and three replicas, each a `redis-server` on a
//! free port, joined with `redis-cli --cluster create`.

use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::CustomCommand;

use super::RedisServer;

/// Three primaries with one replica each, killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Where the nodes keep their cluster state files.
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster, and waits until every node says it is ok.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().to_str().expect("a UTF-8 path").to_owned();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes-{port}.conf",
                "--cluster-node-timeout",
                "1000",
                "--dir",
                &path,
            ];
            nodes.push(RedisServer::start_with(&args).await);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = tokio::task::spawn_blocking(move || create.output())
            .await
            .unwrap()
            .expect("redis-cli runs (it comes with redis-server)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_until_ok().await;
        cluster
    }

    /// `redis-cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port());
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port()));
        }
        url
    }

    /// A client of the whole cluster, to inspect what tollgate left.
    pub async fn client(&self) -> Client {
        let config = Config::from_url(&self.url()).unwrap();
        let client = Builder::from_config(config).build().unwrap();
        client.init().await.expect("the cluster client connects");
        client
    }

    /// The ports of the nodes that are primaries now.
    pub async fn primaries(&self) -> Vec<u16> {
        let mut primaries = Vec::new();
        for node in &self.nodes {
            if node_command(node.port(), "ROLE", &[])
                .await
                .starts_with("master")
            {
                primaries.push(node.port());
            }
        }
        primaries
    }

    /// Promotes a replica with `CLUSTER FAILOVER`, and waits until it is a primary and the
    /// cluster is ok again. Returns the promoted node's port.
    pub async fn failover(&self) -> u16 {
        let primaries = self.primaries().await;
        let replica = self
            .nodes
            .iter()
            .map(|n| n.port())
            .find(|p| !primaries.contains(p))
            .expect("a replica");
        node_command(replica, "CLUSTER", &["FAILOVER"]).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !node_command(replica, "ROLE", &[])
            .await
            .starts_with("master")
        {
            assert!(
                Instant::now() < deadline,
                "the replica was not promoted in 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_until_ok().await;
        replica
    }

    /// How many keys each primary holds, by port.
    pub async fn keys_per_primary(&self) -> Vec<(u16, usize)> {
        let mut spread = Vec::new();
        for port in self.primaries().await {
            spread.push((port, node_keys(port).await.len()));
        }
        spread
    }

    /// Asserts that no key on any primary lives without a TTL, or holds a count of nothing
    /// ([`super::assert_holds_a_count`]).
    pub async fn assert_every_key_has_ttl(&self) {
        for port in self.primaries().await {
            let client = node_client(port).await;
            for key in node_keys(port).await {
                // A node demoted since `primaries` answers MOVED: its keys are checked on the
                // node that owns them now, or they are gone.
                if let Ok(pttl) = client.pttl::<i64, _>(&key).await {
                    assert_ne!(pttl, -1, "key {key} on :{port} has no TTL");
                }
                if let Ok(Some(value)) = client.get::<Option<String>, _>(&key).await {
                    super::assert_holds_a_count(&key, &value);
                }
            }
        }
    }

    /// How many keys all the primaries hold together.
    pub async fn key_count(&self) -> usize {
        let spread = self.keys_per_primary().await;
        spread.iter().map(|&(_, keys)| keys).sum()
    }

    async fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let info = node_command(node.port(), "CLUSTER", &["INFO"]).await;
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster is not ok after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A client of one node alone.
async fn node_client(port: u16) -> Client {
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.expect("the node answers");
    client
}

/// Every key on one node (KEYS is fine on a test node of a few hundred keys).
async fn node_keys(port: u16) -> Vec<String> {
    let client = node_client(port).await;
    let keys: Vec<String> = client
        .custom(CustomCommand::new_static("KEYS", None, false), vec!["*"])
        .await
        .unwrap();
    let _ = client.quit().await;
    keys
}

/// One command to one node, as text (an array reply becomes its first element's text).
async fn node_command(port: u16, command: &'static str, args: &[&str]) -> String {
    let client = node_client(port).await;
    let reply: Value = client
        .custom(
            CustomCommand::new_static(command, None, false),
            args.to_vec(),
        )
        .await
        .unwrap_or(Value::Null);
    let _ = client.quit().await;
    match reply {
        Value::Array(items) => items
            .first()
            .and_then(|v| v.as_string())
            .unwrap_or_default(),
        other => other.as_string().unwrap_or_default(),
    }
}
