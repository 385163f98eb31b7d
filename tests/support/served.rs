//! The real binary reading a configuration file the test rewrites, and `/metrics` read back:
//! what the reload tests share.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tollgate::reload::Outcome;

use super::binary::Binary;
use super::RedisServer;

/// How long a reload may take to show in `/metrics`.
pub const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// The binary, reading the configuration file `file` through `TOLLGATE_CONFIG`.
pub struct Served {
    pub binary: Binary,
    /// The configuration directory, kept for the test's life.
    pub dir: tempfile::TempDir,
    /// The configuration file the binary reads.
    pub file: PathBuf,
    pub client: reqwest::Client,
    /// The Redis it counts in, kept for the test's life, when it counts in one.
    pub redis: Option<RedisServer>,
}

impl Served {
    /// The binary reading `tollgate.toml` in a new directory, written with `text`.
    pub async fn start(text: &str) -> Self {
        Self::start_on(None, |_| text.to_owned()).await
    }

    /// The binary counting in `redis` (the memory store without), reading `tollgate.toml` in a
    /// new directory, written with what `text` makes of that Redis.
    pub async fn start_on(
        redis: Option<RedisServer>,
        text: impl Fn(Option<&RedisServer>) -> String,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tollgate.toml");
        std::fs::write(&file, text(redis.as_ref())).unwrap();
        Self::serve_with(dir, file, redis).await
    }

    /// The binary reading `file` (in `dir`, already written).
    pub async fn serve(dir: tempfile::TempDir, file: PathBuf) -> Self {
        Self::serve_with(dir, file, None).await
    }

    /// The binary reading `file` (in `dir`, already written), counting in `redis` if the file
    /// says so.
    pub async fn serve_with(
        dir: tempfile::TempDir,
        file: PathBuf,
        redis: Option<RedisServer>,
    ) -> Self {
        let config = file.display().to_string();
        let binary = Binary::start_with(&[("TOLLGATE_CONFIG", &config)]).await;
        Served {
            binary,
            dir,
            file,
            client: reqwest::Client::new(),
            redis,
        }
    }

    /// Writes `text` over the configuration file in place.
    pub fn write(&self, text: &str) {
        std::fs::write(&self.file, text).unwrap();
    }

    /// Replaces the configuration file with a new one holding `text`, in one step (rename).
    pub fn replace(&self, text: &str) {
        let staged = self.dir.path().join("staged.toml.tmp");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &self.file).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.binary.port)
    }

    /// A `GET path` naming the caller in `header`.
    pub async fn get(&self, path: &str, header: &str, user: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(header, user)
            .send()
            .await
            .unwrap()
    }

    /// The statuses of `n` requests from `user` on `/user`, one after another.
    pub async fn statuses(&self, user: &str, n: usize) -> Vec<u16> {
        let mut statuses = Vec::new();
        for _ in 0..n {
            statuses.push(self.get("/user", "x-user", user).await.status().as_u16());
        }
        statuses
    }

    /// `/metrics`, as text.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// The value of the sample `name` in `/metrics`, if it is there.
    pub async fn sample(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    /// The value of the sample `name` in `/metrics`, which must be there.
    pub async fn metric(&self, name: &str) -> f64 {
        match self.sample(name).await {
            Some(value) => value,
            None => panic!("no {name} in /metrics:\n{}", self.metrics().await),
        }
    }

    /// Waits until the sample `name` reads `value`, failing the test after the deadline.
    pub async fn until_metric(&self, name: &str, value: f64) {
        let started = Instant::now();
        loop {
            let now = self.metric(name).await;
            if now == value {
                return;
            }
            assert!(
                started.elapsed() < RELOAD_DEADLINE,
                "{name} is {now}, not {value}, {RELOAD_DEADLINE:?} on; the log:\n{}",
                self.binary.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the `generation`th configuration serves.
    pub async fn until_generation(&self, generation: u64) {
        self.until_metric("tollgate_config_generation", generation as f64)
            .await;
    }

    /// Waits until `reloads` reloads have ended, whatever their outcome.
    pub async fn until_reloads(&self, reloads: f64) {
        let started = Instant::now();
        loop {
            let mut ended = 0.0;
            for outcome in Outcome::ALL {
                let name = format!(
                    "tollgate_config_reloads_total{{outcome=\"{}\"}}",
                    outcome.as_str()
                );
                ended += self.metric(&name).await;
            }
            if ended >= reloads {
                return;
            }
            assert!(
                started.elapsed() < RELOAD_DEADLINE,
                "{ended} reloads, not {reloads}; the log:\n{}",
                self.binary.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `x-ratelimit-limit` a new caller is answered with on `/user`.
    pub async fn limit_for_a_new_caller(&self, user: &str) -> Option<u64> {
        let response = self.get("/user", "x-user", user).await;
        let limit = response.headers().get("x-ratelimit-limit")?;
        limit.to_str().ok()?.parse().ok()
    }
}
