//! The shared store: decisions made by a Lua script run with EVALSHA, reloaded after NOSCRIPT.
//! On a single Redis, every policy of a request is decided in one EVALSHA, and the decisions in
//! flight together share it (the `batch` module).

mod batch;

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
use crate::store::{Check, Clock, Store, StoreCounts, StoreError, StoreFuture};
use crate::throttle::Throttle;

use batch::Batcher;

/// The decide script: each algorithm's part, then the driver; embedded so the binary is
/// self-contained.
pub const DECIDE_LUA: &str = concat!(
    include_str!("../../../lua/fixed_window.lua"),
    include_str!("../../../lua/sliding_window.lua"),
    include_str!("../../../lua/token_bucket.lua"),
    include_str!("../../../lua/decide.lua"),
);

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

/// Counts in Redis, so every instance that shares the Redis shares the limits.
pub struct RedisStore {
    conn: Conn,
    /// The longest a decision may wait on Redis; past it the failure mode decides.
    timeout: Duration,
    /// Redis Cluster, where a call's keys must share a slot: a request's policies are decided
    /// in one call per hash tag, with refunds. Elsewhere one call decides them all.
    clustered: bool,
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
                // be counted twice: errors count more, never less. One retry was measured to
                // lose decisions in a failover; three lost none in repeated runs.
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
        let caller = Caller::new(pool);
        // A cluster refuses a call whose keys span slots, and each caller has its own slot.
        let max_batch = connections.max_batch.max(1);
        let batcher =
            (!clustered && max_batch > 1).then(|| Batcher::start(caller.clone(), max_batch));
        let store = RedisStore {
            conn: Conn { caller, batcher },
            timeout,
            clustered,
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
        let Caller { pool, script, .. } = &self.conn.caller;
        pool.wait_for_connect().await.map_err(redis_error)?;
        script.load(pool.next()).await.map_err(redis_error)
    }

    /// The underlying client, for tests and tools that inspect Redis through tollgate's pool.
    pub fn client(&self) -> &Client {
        self.conn.caller.pool.next()
    }

    /// Decides as on Redis Cluster (one call per hash tag, refunds after a later denial, no
    /// shared calls), so that tests can run that path against a single Redis.
    #[doc(hidden)]
    pub fn split_by_hash_tag(mut self) -> Self {
        self.clustered = true;
        self.conn.batcher = None;
        self
    }

    /// Decides `checks` all-or-nothing. Off a cluster, in one EVALSHA whatever their keys: a
    /// denial writes nothing. On a cluster, in one EVALSHA when they share a hash tag (always,
    /// for policies keyed by the same caller), else one per tag, in order, giving back what
    /// earlier calls consumed when a later one denies. Every decide call keeps one deadline.
    async fn run(&self, checks: &[Check], clock: Clock) -> Result<Decision, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let groups = if self.clustered {
            hash_tag_groups(checks)
        } else {
            vec![(0..checks.len()).collect()]
        };
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
                // Kept for the refunds a later group's denial would need; the last group has none.
                if g + 1 < groups.len() {
                    consumed.push((group.clone(), reply.receipts()));
                }
                continue;
            }
            // Denied, whatever happens next. With nothing consumed before it and no group after
            // it (always, off a cluster), there is nothing to give back or to read.
            if consumed.is_empty() && g + 1 == groups.len() {
                return Ok(decision(checks, false, outcomes));
            }
            // The refunds must run even if this request's future is dropped, so they go to a
            // task; its report only refines the headers.
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

    /// `error`, told apart: a call that timed out while the connection is known to be down
    /// (the client queues commands while it reconnects) failed for the connection, not for
    /// slowness.
    fn explain(&self, error: StoreError) -> StoreError {
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
}

/// All a decision needs to reach Redis, cheap to clone into a task.
#[derive(Clone)]
struct Conn {
    /// Runs the script.
    caller: Caller,
    /// Gathers the decisions in flight into shared calls; `None` on a cluster, or when
    /// `redis.max_batch` is 1.
    batcher: Option<Batcher>,
}

/// The client and the script: one EVALSHA, with the script loaded again after NOSCRIPT.
#[derive(Clone)]
struct Caller {
    /// The connections, taken in turn.
    pool: Pool,
    /// `DECIDE_LUA`, by its SHA-1.
    script: Script,
    /// EVALSHA calls issued, retries included.
    calls: Arc<AtomicU64>,
    /// How often Redis had lost the script (NOSCRIPT) and it was loaded again.
    reloads: Arc<AtomicU64>,
}

impl Conn {
    /// After a denial: refunds what the earlier groups consumed, then reads the later groups
    /// without consuming, each call within `timeout`. Returns what each call reported; a call
    /// that failed reports nothing (its refund may have happened in part, or not at all: errors
    /// count more).
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

    /// The decide script over the checks at `members`: in a call of its own, or, for a
    /// decision on a single Redis, in the batcher's next shared call.
    async fn call(
        &self,
        checks: &[Check],
        members: &[usize],
        mode: Mode,
        receipts: Option<&[u64]>,
        clock: Clock,
        deadline: Instant,
    ) -> Result<Reply, StoreError> {
        let part = Part::new(checks, members, receipts);
        match &self.batcher {
            Some(batcher) if mode == Mode::Decide && clock == Clock::Store => {
                batcher.decide(part, deadline).await
            }
            _ => {
                let call = || call_of(clock, mode, &[&part]);
                // Boxed: fred's EVALSHA future is about 7 KB, and inline it would make every
                // decision's future that large, the batched ones included.
                let reply = Box::pin(self.caller.eval(call, mode, deadline)).await?;
                let mut answers = read_call(reply, &[&part]);
                answers.pop().expect("one answer for the one part")
            }
        }
    }
}

impl Caller {
    /// Runs the decide script through `pool`, with nothing counted yet.
    fn new(pool: Pool) -> Caller {
        Caller {
            pool,
            script: Script::from_lua(DECIDE_LUA),
            calls: Arc::new(AtomicU64::new(0)),
            reloads: Arc::new(AtomicU64::new(0)),
        }
    }

    /// One EVALSHA of the decide script; `call` gives its KEYS and ARGV, and is asked again for
    /// the retry after NOSCRIPT.
    ///
    /// fred gets the time left until `deadline` as the command's own timeout, so a command that
    /// times out is never written later. A refund is never retried: giving back twice would
    /// admit more than the limit.
    async fn eval(
        &self,
        call: impl Fn() -> (Vec<Key>, Vec<Value>),
        mode: Mode,
        deadline: Instant,
    ) -> Result<Vec<Value>, StoreError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StoreError::Timeout(Duration::ZERO));
        }
        // fred's `evalsha_with_reload`, spelled out so that reloads can be counted.
        let client = self.pool.next();
        let evalsha = |timeout: Duration| {
            let (keys, args) = call();
            self.calls.fetch_add(1, Ordering::Relaxed);
            async move {
                let options = Options {
                    timeout: Some(timeout),
                    max_attempts: (mode == Mode::Refund).then_some(1),
                    ..Options::default()
                };
                client
                    .with_options(&options)
                    .evalsha::<Vec<Value>, _, _, _>(self.script.sha1().clone(), keys, args)
                    .await
            }
        };
        match evalsha(left).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                self.script.load(client).await.map_err(redis_error)?;
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StoreError::Timeout(Duration::ZERO));
                }
                evalsha(left).await
            }
            reply => reply,
        }
        .map_err(redis_error)
    }
}

/// One decision's part of a call: its keys, and its values in ARGV (see lua/decide.lua).
struct Part {
    /// The key of each of its checks, in KEYS: one per policy.
    keys: Vec<Key>,
    /// Its number of checks, then seven values for each, in ARGV.
    args: Vec<Value>,
}

impl Part {
    /// The part for the checks at `members`; `receipts`, one per member, for a refund.
    fn new(checks: &[Check], members: &[usize], receipts: Option<&[u64]>) -> Part {
        Part {
            keys: script_keys(checks, members),
            args: script_args(checks, members, receipts),
        }
    }

    /// How many policies it decides, so how many its part of the reply reports.
    fn policies(&self) -> usize {
        self.keys.len()
    }
}

/// Each part's answer from a call's reply. A part that cannot be read, or values left over,
/// mean the reply and the call disagree, so no part can be trusted: all of them fail. A
/// decision's own error (its text in the reply) fails that decision alone.
fn read_call(values: Vec<Value>, parts: &[&Part]) -> Vec<Result<Reply, StoreError>> {
    let failed = |why: String| all_failed(&StoreError::Reply(why), parts.len());
    let mut values = values.into_iter();
    let mut answers = Vec::with_capacity(parts.len());
    for part in parts {
        let answer = Reply::read(&mut values, part.policies());
        if let Err(StoreError::Reply(why)) = &answer {
            return failed(format!("a call of {} decisions: {why}", parts.len()));
        }
        answers.push(answer);
    }
    match values.next() {
        None => answers,
        Some(extra) => failed(format!("{extra:?} after the last decision of the call")),
    }
}

/// `error` as the answer of each of the `n` decisions of a call.
fn all_failed(error: &StoreError, n: usize) -> Vec<Result<Reply, StoreError>> {
    (0..n).map(|_| Err(error.clone())).collect()
}

/// KEYS and ARGV of one call carrying `parts`, all in `mode`.
fn call_of(clock: Clock, mode: Mode, parts: &[&Part]) -> (Vec<Key>, Vec<Value>) {
    let keys = parts.iter().map(|p| p.keys.len()).sum();
    let args = parts.iter().map(|p| p.args.len()).sum::<usize>() + 2;
    let (mut keys, mut args) = (Vec::with_capacity(keys), Vec::with_capacity(args));
    args.push(match clock {
        Clock::Store => Value::from_static_str(""),
        Clock::At(ms) => Value::from((ms * 1000) as i64),
    });
    args.push(Value::from_static_str(mode.as_str()));
    for part in parts {
        keys.extend_from_slice(&part.keys);
        args.extend_from_slice(&part.args);
    }
    (keys, args)
}

/// KEYS of the decide script: the key of each check at `members`.
fn script_keys(checks: &[Check], members: &[usize]) -> Vec<Key> {
    members
        .iter()
        .map(|&i| Key::from(checks[i].key.as_str()))
        .collect()
}

/// One decision's ARGV in the decide script (see lua/decide.lua): the number of checks at
/// `members`, then seven values for each.
fn script_args(checks: &[Check], members: &[usize], receipts: Option<&[u64]>) -> Vec<Value> {
    let mut args: Vec<Value> = Vec::with_capacity(1 + 7 * members.len());
    args.push(Value::Integer(members.len() as i64));
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
    /// Write one key with a TTL and delete it: the readiness probe.
    Ready,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Decide => "decide",
            Mode::Refund => "refund",
            Mode::Peek => "peek",
            Mode::Ready => "ready",
        }
    }
}

/// One decision's part of the script's reply:
/// `{ allowed, remaining_i, reset_after_ms_i, retry_after_ms_i, receipt_i, … }`, or the text of
/// the error that failed it.
struct Reply {
    allowed: bool,
    per_policy: Vec<(Outcome, u64)>,
}

impl Reply {
    /// Reads the next decision's part, of `policies` policies, from a call's reply.
    fn read(reply: &mut impl Iterator<Item = Value>, policies: usize) -> Result<Reply, StoreError> {
        let allowed = match reply.next() {
            Some(Value::Integer(allowed @ (0 | 1))) => allowed == 1,
            Some(Value::String(error)) => return Err(StoreError::Redis(error.to_string())),
            Some(Value::Bytes(error)) => {
                return Err(StoreError::Redis(String::from_utf8_lossy(&error).into()))
            }
            other => {
                return Err(StoreError::Reply(format!(
                    "{other:?} where a decision of {policies} policies begins"
                )))
            }
        };
        let mut number = || match reply.next() {
            Some(Value::Integer(n)) if n >= 0 => Ok(n as u64),
            other => Err(StoreError::Reply(format!(
                "{other:?} in a decision of {policies} policies"
            ))),
        };
        let mut per_policy = Vec::with_capacity(policies);
        for _ in 0..policies {
            let outcome = Outcome {
                remaining: number()?,
                reset_after_ms: number()?,
                retry_after_ms: number()?,
            };
            per_policy.push((outcome, number()?));
        }
        Ok(Reply {
            allowed,
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
        Box::pin(async move { self.run(checks, clock).await.map_err(|e| self.explain(e)) })
    }

    fn counts(&self) -> StoreCounts {
        let caller = &self.conn.caller;
        StoreCounts {
            calls: caller.calls.load(Ordering::Relaxed),
            script_reloads: caller.reloads.load(Ordering::Relaxed),
            ..StoreCounts::default()
        }
    }

    /// Runs the decide script in its "ready" mode, which writes `probe` with a TTL and deletes
    /// it: ready means a decision's write would succeed (the connection, the script, the user's
    /// permissions, and Redis neither out of memory nor a read-only replica), not merely that
    /// PING answers. One call; on a cluster, to the primary that owns `probe`.
    fn ready<'a>(&'a self, probe: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let key = Key::from(probe);
            let call = || {
                let mode = Value::from_static_str(Mode::Ready.as_str());
                let args = vec![Value::from_static_str(""), mode];
                (vec![key.clone()], args)
            };
            let probe = Box::pin(self.conn.caller.eval(call, Mode::Ready, deadline));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A part of `policies` checks; only its number of keys matters to reading the reply.
    fn part(policies: usize) -> Part {
        Part {
            keys: (0..policies).map(|_| Key::from("k")).collect(),
            args: Vec::new(),
        }
    }

    fn integers(values: &[i64]) -> Vec<Value> {
        values.iter().map(|&n| Value::Integer(n)).collect()
    }

    /// A caller whose pool is never connected: for what needs no Redis.
    pub(super) fn unconnected_caller() -> Caller {
        let pool = Builder::default_centralized()
            .build_pool(1)
            .expect("a pool that is never connected");
        Caller::new(pool)
    }

    /// A decision's per-request future stays small: fred's 7 KB EVALSHA future is boxed apart.
    #[test]
    fn a_decisions_future_is_small() {
        let store = RedisStore {
            conn: Conn {
                caller: unconnected_caller(),
                batcher: None,
            },
            timeout: Duration::from_secs(1),
            clustered: false,
            connection_error: Arc::default(),
        };
        let decide = store.run(&[], Clock::Store);
        let size = std::mem::size_of_val(&decide);
        assert!(size < 1024, "{size} bytes");
    }

    /// Each part is read on its own; a decision's error text fails that decision alone.
    #[test]
    fn each_part_is_read_on_its_own() {
        let mut values = integers(&[1, 9, 100, 0, 7]);
        values.push(Value::from("WRONGTYPE Operation against a key"));
        values.extend(integers(&[0, 0, 100, 100, 7, 4, 50, 0, 7]));
        let answers = read_call(values, &[&part(1), &part(1), &part(2)]);
        let first = answers[0].as_ref().unwrap();
        assert!(first.allowed);
        assert_eq!(first.per_policy[0].0.remaining, 9);
        assert!(matches!(&answers[1], Err(StoreError::Redis(m)) if m.starts_with("WRONGTYPE")));
        let third = answers[2].as_ref().unwrap();
        assert!(!third.allowed);
        assert_eq!(third.per_policy[1].0.remaining, 4);
    }

    /// A part that cannot be read shifts every later one, so every part fails, not only it.
    #[test]
    fn an_unreadable_part_fails_every_part() {
        let values = integers(&[1, 9, 100, 0, 1, 9, 100, 0, 7]);
        let answers = read_call(values, &[&part(1), &part(1)]);
        assert!(answers
            .iter()
            .all(|a| matches!(a, Err(StoreError::Reply(_)))));
    }

    /// Values left over mean the reply and the call disagree: every part fails.
    #[test]
    fn values_left_over_fail_every_part() {
        let values = integers(&[1, 9, 100, 0, 7, 1]);
        let answers = read_call(values, &[&part(1)]);
        assert!(matches!(&answers[0], Err(StoreError::Reply(_))));
    }
}
