//! The connections to Redis and their health: the client pool and how it reconnects, the
//! scripts loaded at startup, the last connection error, and the readiness probe.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use fred::prelude::*;
use fred::types::Value;

use super::batch::Batcher;
use super::script::{Mode, ScriptRunner};
use super::{Dispatch, RedisStore, LOG_TARGET};
use crate::log_throttle::LogThrottle;
use crate::store::StoreError;

/// How long to wait between reconnection attempts after Redis goes away.
const RECONNECT_DELAY_MS: u32 = 100;

/// How a [`RedisStore`] uses Redis: `redis.connections` and `redis.max_batch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections {
    /// How many connections decisions take in turn (at least one is opened).
    pub count: usize,
    /// On a single Redis, the most decisions one EVALSHA carries (at least one); 1 sends each
    /// decision in a call of its own.
    pub max_batch: usize,
}

impl Default for Connections {
    /// One connection; calls of up to 64 decisions, which hold Redis for well under a
    /// millisecond (a fixed-window decision costs it about 10 µs).
    fn default() -> Self {
        Connections {
            count: 1,
            max_batch: 64,
        }
    }
}

impl RedisStore {
    /// Starts a client for `config` with the default [`Connections`]: see
    /// [`RedisStore::connect_with`].
    pub async fn connect(config: Config, timeout: Duration) -> Result<Self, StoreError> {
        Self::connect_with(config, timeout, Connections::default()).await
    }

    /// Starts `connections.count` clients for `config` that reconnect forever, and loads the
    /// scripts if it can. Decisions take the connections in turn; each pipelines whatever calls
    /// are in flight on it, and on a single Redis the decisions in flight together share calls
    /// of up to `connections.max_batch`.
    ///
    /// An unreachable Redis is not an error here: the service must still start and serve under
    /// its failure mode, and decisions resume once the client reconnects.
    pub async fn connect_with(
        mut config: Config,
        timeout: Duration,
        connections: Connections,
    ) -> Result<Self, StoreError> {
        // Retry a first connection that fails exactly like one lost later, so a Redis that is
        // down at startup is picked up when it comes up.
        config.fail_fast = false;
        let clustered = config.server.is_clustered();
        let pool = Builder::from_config(config)
            .with_performance_config(|perf| {
                // Commands that time out are marked so, and fred never writes them later:
                // a decision the failure mode already took is not counted again on reconnect.
                perf.default_command_timeout = timeout;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = timeout.max(Duration::from_millis(500));
                conn.internal_command_timeout = timeout.max(Duration::from_millis(500));
                // Retries of a command whose connection broke, within the deadline: a cluster
                // failover (fred drops and remakes connections while it follows the new
                // topology, sometimes more than once) or a killed connection then costs no
                // decision. An attempt may have run before its connection broke, so a cost may
                // be counted twice: errors count more, never less. With one retry a failover
                // in tests/cluster.rs lost decisions; with three it lost none.
                conn.max_command_attempts = 4;
                // Each decision is one small write that a request waits on: Nagle's algorithm
                // would hold it until the previous write is acknowledged.
                conn.tcp.nodelay = Some(true);
            })
            .set_policy(ReconnectPolicy::new_constant(0, RECONNECT_DELAY_MS))
            .build_pool(connections.count.max(1))
            .map_err(redis_error)?;
        let connection_error = watch_connections(pool.clients());
        pool.connect();
        let runner = ScriptRunner::new(pool);
        // A cluster refuses a call whose keys span slots, and each caller has its own slot.
        let max_batch = connections.max_batch.max(1);
        let batcher =
            (!clustered && max_batch > 1).then(|| Batcher::start(runner.clone(), max_batch));
        let store = RedisStore {
            dispatch: Dispatch { runner, batcher },
            timeout,
            clustered,
            connection_error,
        };
        let startup_wait = timeout.max(Duration::from_secs(1));
        match tokio::time::timeout(startup_wait, store.load_scripts()).await {
            Ok(Ok(())) => tracing::info!(target: LOG_TARGET, "redis store ready; scripts loaded"),
            Ok(Err(error)) => {
                tracing::warn!(
                    target: LOG_TARGET,
                    %error,
                    "redis is not usable yet; serving under redis.on_error"
                )
            }
            Err(_) => tracing::warn!(
                target: LOG_TARGET,
                wait = ?startup_wait,
                "redis is not usable yet; serving under redis.on_error until it is"
            ),
        }
        Ok(store)
    }

    /// Loads every script with SCRIPT LOAD, on every primary.
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        let ScriptRunner { pool, script, .. } = &self.dispatch.runner;
        pool.wait_for_connect().await.map_err(redis_error)?;
        script.load(pool.next()).await.map_err(redis_error)
    }

    /// `error`, told apart: a call that timed out while the connection is known to be down
    /// (the client queues commands while it reconnects) failed for the connection, not for
    /// slowness.
    pub(super) fn explain(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Timeout(_) => {
                match self.connection_error.lock().ok().and_then(|e| e.clone()) {
                    Some(cause) => StoreError::Connection(cause),
                    None => error,
                }
            }
            error => error,
        }
    }

    /// The readiness probe behind [`Store::ready`](crate::store::Store::ready): one call of
    /// the decide script in its "ready" mode, naming the last connection error when it fails.
    pub(super) async fn probe_write(&self, probe: &str) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.timeout;
        let key = Key::from(probe);
        let call = || {
            let mode = Value::from_static_str(Mode::Ready.as_str());
            let args = vec![Value::from_static_str(""), mode];
            (vec![key.clone()], args)
        };
        let probe = Box::pin(self.dispatch.runner.eval(call, Mode::Ready, deadline));
        let probed = tokio::time::timeout(self.timeout, probe)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.timeout)))
            .map(drop);
        match probed {
            Ok(_) => Ok(()),
            Err(error) => match self.connection_error.lock().ok().and_then(|e| e.clone()) {
                Some(cause) => Err(StoreError::Redis(format!("{cause} ({error})"))),
                None => Err(error),
            },
        }
    }
}

/// Records and logs (at most once a second) the clients' connection errors, and forgets the last
/// one when a client reconnects.
fn watch_connections(clients: &[Client]) -> Arc<Mutex<Option<String>>> {
    let last = Arc::new(Mutex::new(None));
    let throttle = Arc::new(LogThrottle::new(Duration::from_secs(1)));
    for client in clients {
        watch_connection(client, &last, &throttle);
    }
    last
}

/// One client's part of [`watch_connections`].
fn watch_connection(
    client: &Client,
    last: &Arc<Mutex<Option<String>>>,
    throttle: &Arc<LogThrottle>,
) {
    let throttle = throttle.clone();
    let on_error = last.clone();
    client.on_error(move |(error, _server)| {
        let message = error.to_string();
        if throttle.ready() {
            tracing::warn!(target: LOG_TARGET, error = %message, "redis connection error");
        }
        if let Ok(mut last) = on_error.lock() {
            *last = Some(message);
        }
        std::future::ready(Ok(()))
    });
    let on_reconnect = last.clone();
    client.on_reconnect(move |_server| {
        if let Ok(mut last) = on_reconnect.lock() {
            *last = None;
        }
        std::future::ready(Ok(()))
    });
}

/// A fred error as the store's: a lapsed deadline, a lost connection, or Redis's own answer.
pub(super) fn redis_error(error: fred::error::Error) -> StoreError {
    match error.kind() {
        // fred's own timer, set to the time left: the deadline passed.
        ErrorKind::Timeout => StoreError::Timeout(Duration::ZERO),
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Auth => {
            StoreError::Connection(error.to_string())
        }
        _ => StoreError::Redis(error.to_string()),
    }
}
