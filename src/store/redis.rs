//! The shared store: one EVALSHA of a Lua script per decision, reloaded after NOSCRIPT.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;

use crate::decision::{Decision, PolicyDecision};
use crate::store::{Check, Clock, Store, StoreError, StoreFuture};
use crate::throttle::Throttle;

/// The fixed-window script, embedded so the binary is self-contained.
pub const FIXED_WINDOW_LUA: &str = include_str!("../../lua/fixed_window.lua");

/// How long to wait between reconnection attempts after Redis goes away.
const RECONNECT_DELAY_MS: u32 = 100;

/// Counts in Redis, so every instance that shares the Redis shares the limits.
pub struct RedisStore {
    client: Client,
    fixed_window: Script,
    /// The longest a decision may wait on Redis; past it the failure mode decides.
    timeout: Duration,
    /// The last connection error (refused, wrong password, ...) since the last good connection,
    /// so `/readyz` can say why instead of only "timed out".
    connection_error: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client's config holds the password: never print it.
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Starts a client for `config` that reconnects forever, and loads the scripts if it can.
    ///
    /// An unreachable Redis is not an error here: the service must still start and serve under
    /// its failure mode, and decisions resume once the client reconnects.
    pub async fn connect(mut config: Config, timeout: Duration) -> Result<Self, StoreError> {
        // Retry a first connection that fails exactly like one lost later, so a Redis that is
        // down at startup is picked up when it comes up.
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_performance_config(|perf| {
                // Commands that time out are marked so, and fred never writes them later:
                // a decision the failure mode already took is not counted again on reconnect.
                perf.default_command_timeout = timeout;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = timeout.max(Duration::from_millis(500));
                conn.internal_command_timeout = timeout.max(Duration::from_millis(500));
                // An EVALSHA whose connection broke may have run: never send it twice.
                conn.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_constant(0, RECONNECT_DELAY_MS))
            .build()
            .map_err(redis_error)?;
        let connection_error = watch_connection(&client);
        client.connect();
        let store = RedisStore {
            client,
            fixed_window: Script::from_lua(FIXED_WINDOW_LUA),
            timeout,
            connection_error,
        };
        let startup_wait = timeout.max(Duration::from_secs(1));
        match tokio::time::timeout(startup_wait, store.load_scripts()).await {
            Ok(Ok(())) => tracing::info!("redis store ready; scripts loaded"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "redis is not usable yet; serving under redis.on_error")
            }
            Err(_) => tracing::warn!(
                wait = ?startup_wait,
                "redis is not usable yet; serving under redis.on_error until it is"
            ),
        }
        Ok(store)
    }

    /// Loads every script with SCRIPT LOAD, on every primary.
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        self.client.wait_for_connect().await.map_err(redis_error)?;
        self.fixed_window
            .load(&self.client)
            .await
            .map_err(redis_error)
    }

    /// The underlying client, for tests and tools that inspect Redis through tollgate's pool.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn run(&self, checks: &[Check], clock: Clock) -> Result<Decision, StoreError> {
        let mut keys = Vec::with_capacity(checks.len());
        let mut args: Vec<Value> = Vec::with_capacity(1 + 3 * checks.len());
        args.push(match clock {
            Clock::Store => Value::from(""),
            Clock::At(ms) => Value::from(ms as i64),
        });
        for check in checks {
            keys.push(check.key.as_str());
            args.push(Value::from(check.policy.limit() as i64));
            args.push(Value::from(check.policy.window().as_millis() as i64));
            args.push(Value::from(check.policy.cost() as i64));
        }
        let reply: Vec<i64> = self
            .fixed_window
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(redis_error)?;
        read_reply(checks, &reply)
    }
}

impl Store for RedisStore {
    fn decide<'a>(&'a self, checks: &'a [Check], clock: Clock) -> StoreFuture<'a, Decision> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.run(checks, clock))
                .await
                .map_err(|_| StoreError::Timeout(self.timeout))?
        })
    }

    /// Runs the decision script with no keys: ready means the script, the connection and the
    /// user's permissions all work, not merely that PING answers.
    fn ready(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            match self.decide(&[], Clock::Store).await {
                Ok(_) => Ok(()),
                Err(error) => match self.connection_error.lock().ok().and_then(|e| e.clone()) {
                    Some(cause) => Err(StoreError::Redis(format!("{cause} ({error})"))),
                    None => Err(error),
                },
            }
        })
    }
}

/// Reads `{ allowed, remaining_i, reset_after_ms_i, retry_after_ms_i, ... }` into a decision.
fn read_reply(checks: &[Check], reply: &[i64]) -> Result<Decision, StoreError> {
    let malformed = || StoreError::Reply(format!("{reply:?} for {} policies", checks.len()));
    let (&allowed, per_policy) = reply.split_first().ok_or_else(malformed)?;
    if per_policy.len() != 3 * checks.len() || per_policy.iter().any(|&n| n < 0) {
        return Err(malformed());
    }
    let policies = checks
        .iter()
        .zip(per_policy.chunks_exact(3))
        .map(|(check, values)| {
            let [remaining, reset_after_ms, retry_after_ms] = [values[0], values[1], values[2]];
            PolicyDecision {
                policy: check.policy.clone(),
                allowed: retry_after_ms == 0,
                limit: check.policy.limit(),
                remaining: remaining as u64,
                retry_after: Duration::from_millis(retry_after_ms as u64),
                reset_after: Duration::from_millis(reset_after_ms as u64),
            }
        })
        .collect();
    Ok(Decision {
        allowed: allowed == 1,
        policies,
    })
}

/// Records and logs (at most once a second) the client's connection errors, and forgets them
/// once it reconnects.
fn watch_connection(client: &Client) -> Arc<Mutex<Option<String>>> {
    let last = Arc::new(Mutex::new(None));
    let throttle = Arc::new(Throttle::new(Duration::from_secs(1)));
    let on_error = last.clone();
    client.on_error(move |(error, _server)| {
        let message = error.to_string();
        if throttle.ready() {
            tracing::warn!(error = %message, "redis connection error");
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
    last
}

fn redis_error(error: fred::error::Error) -> StoreError {
    StoreError::Redis(error.to_string())
}
