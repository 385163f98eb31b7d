//! The shared store: one EVALSHA of a Lua script per decision, reloaded after NOSCRIPT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;

use crate::algorithm::Outcome;
use crate::decision::{Decision, PolicyDecision};
use crate::quota::Algorithm;
use crate::store::{Check, Clock, Store, StoreError, StoreFuture};
use crate::throttle::Throttle;

/// The decide script: each algorithm's part, then the driver; embedded so the binary is
/// self-contained.
pub const DECIDE_LUA: &str = concat!(
    include_str!("../../lua/fixed_window.lua"),
    include_str!("../../lua/sliding_window.lua"),
    include_str!("../../lua/token_bucket.lua"),
    include_str!("../../lua/decide.lua"),
);

/// How long to wait between reconnection attempts after Redis goes away.
const RECONNECT_DELAY_MS: u32 = 100;

/// Counts in Redis, so every instance that shares the Redis shares the limits.
pub struct RedisStore {
    conn: Conn,
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
    /// Starts a client for `config` over one connection: see [`RedisStore::connect_with`].
    pub async fn connect(config: Config, timeout: Duration) -> Result<Self, StoreError> {
        Self::connect_with(config, timeout, 1).await
    }

    /// Starts `connections` clients for `config` (at least one) that reconnect forever, and
    /// loads the scripts if it can. Decisions take the connections in turn; each pipelines
    /// whatever decisions are in flight on it.
    ///
    /// An unreachable Redis is not an error here: the service must still start and serve under
    /// its failure mode, and decisions resume once the client reconnects.
    pub async fn connect_with(
        mut config: Config,
        timeout: Duration,
        connections: usize,
    ) -> Result<Self, StoreError> {
        // Retry a first connection that fails exactly like one lost later, so a Redis that is
        // down at startup is picked up when it comes up.
        config.fail_fast = false;
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
                // be counted twice: errors count more, never less. One retry was measured to
                // lose decisions in a failover; three lost none in repeated runs.
                conn.max_command_attempts = 4;
                // Each decision is one small write that a request waits on: Nagle's algorithm
                // would hold it until the previous write is acknowledged.
                conn.tcp.nodelay = Some(true);
            })
            .set_policy(ReconnectPolicy::new_constant(0, RECONNECT_DELAY_MS))
            .build_pool(connections.max(1))
            .map_err(redis_error)?;
        let connection_error = watch_connections(pool.clients());
        pool.connect();
        let store = RedisStore {
            conn: Conn {
                pool,
                script: Script::from_lua(DECIDE_LUA),
                reloads: Arc::new(AtomicU64::new(0)),
            },
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
        let Conn { pool, script, .. } = &self.conn;
        pool.wait_for_connect().await.map_err(redis_error)?;
        script.load(pool.next()).await.map_err(redis_error)
    }

    /// The underlying client, for tests and tools that inspect Redis through tollgate's pool.
    pub fn client(&self) -> &Client {
        self.conn.pool.next()
    }

    /// Decides `checks` all-or-nothing: one EVALSHA when they share a hash tag (always, for
    /// policies keyed by the same caller), else one per tag, in order, giving back what earlier
    /// calls consumed when a later one denies. Every decide call keeps one deadline.
    async fn run(&self, checks: &[Check], clock: Clock) -> Result<Decision, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let groups = hash_tag_groups(checks);
        let mut outcomes = vec![None; checks.len()];
        let mut consumed: Vec<(Vec<usize>, Vec<u64>)> = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let decide = self
                .conn
                .call(checks, group, Mode::Decide, None, clock, deadline);
            let reply = tokio::time::timeout_at(deadline, decide)
                .await
                .map_err(|_| StoreError::Timeout(self.timeout))??;
            reply.record(group, &mut outcomes);
            if reply.allowed {
                consumed.push((group.clone(), reply.receipts()));
                continue;
            }
            // Denied, whatever happens next. The refunds must run even if this request's future
            // is dropped, so they go to a task; its report only refines the headers.
            let follow_up = tokio::spawn(self.conn.clone().follow_up(
                checks.to_vec(),
                consumed,
                groups[g + 1..].to_vec(),
                clock,
                self.timeout,
            ));
            if let Ok(Ok(replies)) = tokio::time::timeout_at(deadline, follow_up).await {
                for (members, reply) in replies {
                    reply.record(&members, &mut outcomes);
                }
            }
            return Ok(decision(checks, false, outcomes));
        }
        Ok(decision(checks, true, outcomes))
    }
}

/// The client and the script: all a script call needs, cheap to clone into a task.
#[derive(Clone)]
struct Conn {
    /// The connections, taken in turn.
    pool: Pool,
    /// `DECIDE_LUA`, by its SHA-1.
    script: Script,
    /// How often Redis had lost the script (NOSCRIPT) and it was loaded again.
    reloads: Arc<AtomicU64>,
}

impl Conn {
    /// After a denial: refunds what the earlier groups consumed, then reads the later groups
    /// without consuming, each call within `timeout`. Returns what each call reported; a call
    /// that failed reports nothing (its refund may not have happened: errors count more).
    async fn follow_up(
        self,
        checks: Vec<Check>,
        consumed: Vec<(Vec<usize>, Vec<u64>)>,
        later: Vec<Vec<usize>>,
        clock: Clock,
        timeout: Duration,
    ) -> Vec<(Vec<usize>, Reply)> {
        let refunds = consumed
            .into_iter()
            .map(|(members, receipts)| (members, Mode::Refund, Some(receipts)));
        let peeks = later.into_iter().map(|members| (members, Mode::Peek, None));
        let mut replies = Vec::new();
        for (members, mode, receipts) in refunds.chain(peeks) {
            let deadline = Instant::now() + timeout;
            let call = self.call(
                &checks,
                &members,
                mode,
                receipts.as_deref(),
                clock,
                deadline,
            );
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(reply)) => replies.push((members, reply)),
                Ok(Err(error)) => tracing::warn!(%error, mode = mode.as_str(), "follow-up failed"),
                Err(_) => tracing::warn!(mode = mode.as_str(), "follow-up timed out"),
            }
        }
        replies
    }

    /// One EVALSHA of the decide script over the checks at `members`.
    ///
    /// fred gets the time left until `deadline` as the command's own timeout, so a command that
    /// times out is never written later. A refund is never retried: giving back twice would
    /// admit more than the limit.
    async fn call(
        &self,
        checks: &[Check],
        members: &[usize],
        mode: Mode,
        receipts: Option<&[u64]>,
        clock: Clock,
        deadline: Instant,
    ) -> Result<Reply, StoreError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StoreError::Timeout(Duration::ZERO));
        }
        // fred's `evalsha_with_reload`, spelled out so that reloads can be counted. The
        // arguments are built again for the retry rather than cloned for every call.
        let client = self.pool.next();
        let evalsha = |timeout: Duration| async move {
            let options = Options {
                timeout: Some(timeout),
                max_attempts: (mode == Mode::Refund).then_some(1),
                ..Options::default()
            };
            client
                .with_options(&options)
                .evalsha::<Vec<i64>, _, _, _>(
                    self.script.sha1().clone(),
                    script_keys(checks, members),
                    script_args(checks, members, mode, receipts, clock),
                )
                .await
        };
        let reply = match evalsha(left).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                self.script.load(client).await.map_err(redis_error)?;
                let left = deadline.saturating_duration_since(Instant::now());
                evalsha(left.max(Duration::from_millis(1))).await
            }
            reply => reply,
        }
        .map_err(redis_error)?;
        Reply::read(&reply, members.len())
    }
}

/// KEYS of the decide script: the key of each check at `members`.
fn script_keys(checks: &[Check], members: &[usize]) -> Vec<Key> {
    members
        .iter()
        .map(|&i| Key::from(checks[i].key.as_str()))
        .collect()
}

/// ARGV of the decide script (see lua/decide.lua): the clock, the mode, then seven values per
/// check at `members`.
fn script_args(
    checks: &[Check],
    members: &[usize],
    mode: Mode,
    receipts: Option<&[u64]>,
    clock: Clock,
) -> Vec<Value> {
    let mut args: Vec<Value> = Vec::with_capacity(2 + 7 * members.len());
    args.push(match clock {
        Clock::Store => Value::from_static_str(""),
        Clock::At(ms) => Value::from((ms * 1000) as i64),
    });
    args.push(Value::from_static_str(mode.as_str()));
    for (n, &i) in members.iter().enumerate() {
        let policy = &checks[i].policy;
        let bucket = policy.algorithm() == Algorithm::TokenBucket;
        let integer = |n: u64| Value::Integer(n as i64);
        args.push(Value::from_static_str(policy.algorithm().as_str()));
        args.push(integer(policy.limit()));
        args.push(integer(policy.window().as_millis()));
        args.push(integer(checks[i].cost));
        args.push(integer(if bucket { policy.emission_us() } else { 0 }));
        args.push(integer(if bucket { policy.capacity_us() } else { 0 }));
        args.push(integer(receipts.map_or(0, |r| r[n])));
    }
    args
}

/// What the script is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Consume every policy's cost if all admit.
    Decide,
    /// Give back what a `Decide` consumed (by its receipts), then report without consuming.
    Refund,
    /// Report without consuming.
    Peek,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Decide => "decide",
            Mode::Refund => "refund",
            Mode::Peek => "peek",
        }
    }
}

/// The script's reply: `{ allowed, remaining_i, reset_after_ms_i, retry_after_ms_i, receipt_i, … }`.
struct Reply {
    allowed: bool,
    per_policy: Vec<(Outcome, u64)>,
}

impl Reply {
    fn read(reply: &[i64], policies: usize) -> Result<Reply, StoreError> {
        let malformed = || StoreError::Reply(format!("{reply:?} for {policies} policies"));
        let (&allowed, values) = reply.split_first().ok_or_else(malformed)?;
        if values.len() != 4 * policies || values.iter().any(|&n| n < 0) {
            return Err(malformed());
        }
        let per_policy = values
            .chunks_exact(4)
            .map(|v| {
                let outcome = Outcome {
                    remaining: v[0] as u64,
                    reset_after_ms: v[1] as u64,
                    retry_after_ms: v[2] as u64,
                };
                (outcome, v[3] as u64)
            })
            .collect();
        Ok(Reply {
            allowed: allowed == 1,
            per_policy,
        })
    }

    fn record(&self, members: &[usize], outcomes: &mut [Option<Outcome>]) {
        for (&i, (outcome, _)) in members.iter().zip(&self.per_policy) {
            outcomes[i] = Some(*outcome);
        }
    }

    fn receipts(&self) -> Vec<u64> {
        self.per_policy
            .iter()
            .map(|(_, receipt)| *receipt)
            .collect()
    }
}

/// The decision over the policies whose outcome is known (a failed peek leaves one out).
fn decision(checks: &[Check], allowed: bool, outcomes: Vec<Option<Outcome>>) -> Decision {
    let policies = checks
        .iter()
        .zip(outcomes)
        .filter_map(|(check, outcome)| Some(PolicyDecision::new(check.policy.clone(), outcome?)))
        .collect();
    Decision { allowed, policies }
}

/// The indices of `checks`, grouped by the hash tag of their keys, in order of first appearance.
fn hash_tag_groups(checks: &[Check]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, check) in checks.iter().enumerate() {
        let tag = hash_tag(&check.key);
        match groups.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, members)) => members.push(i),
            None => groups.push((tag, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// The `{...}` part of a key, which Redis Cluster hashes; the whole key when there is none.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let close = key[open + 1..].find('}')? + open + 1;
            (close > open + 1).then(|| &key[open + 1..close])
        })
        .unwrap_or(key)
}

impl Store for RedisStore {
    fn decide<'a>(&'a self, checks: &'a [Check], clock: Clock) -> StoreFuture<'a, Decision> {
        Box::pin(self.run(checks, clock))
    }

    fn script_reloads(&self) -> u64 {
        self.conn.reloads.load(Ordering::Relaxed)
    }

    /// Runs the decide script with no keys: ready means the script, the connection and the
    /// user's permissions all work, not merely that PING answers.
    fn ready(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let probe = self
                .conn
                .call(&[], &[], Mode::Peek, None, Clock::Store, deadline);
            let probed = tokio::time::timeout(self.timeout, probe)
                .await
                .unwrap_or(Err(StoreError::Timeout(self.timeout)));
            match probed {
                Ok(_) => Ok(()),
                Err(error) => match self.connection_error.lock().ok().and_then(|e| e.clone()) {
                    Some(cause) => Err(StoreError::Redis(format!("{cause} ({error})"))),
                    None => Err(error),
                },
            }
        })
    }
}

/// Records and logs (at most once a second) the clients' connection errors, and forgets the last
/// one when a client reconnects.
fn watch_connections(clients: &[Client]) -> Arc<Mutex<Option<String>>> {
    let last = Arc::new(Mutex::new(None));
    let throttle = Arc::new(Throttle::new(Duration::from_secs(1)));
    for client in clients {
        watch_connection(client, &last, &throttle);
    }
    last
}

/// One client's part of [`watch_connections`].
fn watch_connection(client: &Client, last: &Arc<Mutex<Option<String>>>, throttle: &Arc<Throttle>) {
    let throttle = throttle.clone();
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
}

fn redis_error(error: fred::error::Error) -> StoreError {
    match error.kind() {
        // fred's own timer, set to the time left: the deadline passed.
        ErrorKind::Timeout => StoreError::Timeout(Duration::ZERO),
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Auth => {
            StoreError::Connection(error.to_string())
        }
        _ => StoreError::Redis(error.to_string()),
    }
}
