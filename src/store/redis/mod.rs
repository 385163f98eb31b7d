//! The shared store: decisions made by a Lua script run with EVALSHA, reloaded after NOSCRIPT.
//! On a single Redis, every policy of a request is decided in one EVALSHA, and the decisions in
//! flight together share it (`batch.rs`).
//!
//! The script's call and its reply are in `script.rs`; the calls per hash tag that Redis Cluster
//! needs, with their refunds, in `groups.rs`; the connections and their health in
//! `connection.rs`.

mod batch;
mod connection;
mod groups;
mod script;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use fred::prelude::*;

use crate::decision::Decision;
use crate::store::{Check, Clock, Store, StoreCounts, StoreError, StoreFuture};

use batch::Batcher;
use script::{call_of, read_call, Mode, Part, Reply, ScriptRunner};

pub use connection::Connections;

/// The target of the store's logs, whichever file logs: the documentation and users' log filters
/// name it.
const LOG_TARGET: &str = module_path!();

/// The decide script: each algorithm's part, then the driver; embedded so the binary is
/// self-contained.
pub const DECIDE_LUA: &str = concat!(
    include_str!("../../../lua/fixed_window.lua"),
    include_str!("../../../lua/sliding_window.lua"),
    include_str!("../../../lua/token_bucket.lua"),
    include_str!("../../../lua/decide.lua"),
);

/// Counts in Redis, so every instance that shares the Redis shares the limits.
pub struct RedisStore {
    dispatch: Dispatch,
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
    /// The underlying client, for tests and tools that inspect Redis through tollgate's pool.
    pub fn client(&self) -> &Client {
        self.dispatch.runner.pool.next()
    }

    /// Decides as on Redis Cluster (one call per hash tag, refunds after a later denial, no
    /// shared calls), so that tests can run that path against a single Redis.
    #[doc(hidden)]
    pub fn split_by_hash_tag(mut self) -> Self {
        self.clustered = true;
        self.dispatch.batcher = None;
        self
    }
}

/// How a decision reaches Redis: in a call of its own or in a shared one; cheap to clone into a task.
#[derive(Clone)]
struct Dispatch {
    /// Runs the script.
    runner: ScriptRunner,
    /// Gathers the decisions in flight into shared calls; `None` on a cluster, or when
    /// `redis.max_batch` is 1.
    batcher: Option<Batcher>,
}

impl Dispatch {
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
                let reply = self.runner.eval(call, mode, deadline).await?;
                let mut answers = read_call(reply, &[&part]);
                answers.pop().expect("one answer for the one part")
            }
        }
    }
}

impl Store for RedisStore {
    fn decide<'a>(&'a self, checks: &'a [Check], clock: Clock) -> StoreFuture<'a, Decision> {
        Box::pin(async move { self.run(checks, clock).await.map_err(|e| self.explain(e)) })
    }

    fn counts(&self) -> StoreCounts {
        let runner = &self.dispatch.runner;
        StoreCounts {
            calls: runner.calls.load(Ordering::Relaxed),
            script_reloads: runner.reloads.load(Ordering::Relaxed),
            ..StoreCounts::default()
        }
    }

    /// Runs the decide script in its "ready" mode, which writes `probe` with a TTL and deletes
    /// it: ready means a decision's write would succeed (the connection, the script, the user's
    /// permissions, and Redis neither out of memory nor a read-only replica), not merely that
    /// PING answers. One call; on a cluster, to the primary that owns `probe`.
    fn ready<'a>(&'a self, probe: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.probe_write(probe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runner whose pool is never connected: for what needs no Redis.
    pub(super) fn unconnected_runner() -> ScriptRunner {
        let pool = Builder::default_centralized()
            .build_pool(1)
            .expect("a pool that is never connected");
        ScriptRunner::new(pool)
    }

    /// A decision's per-request future stays small: fred's 7 KB EVALSHA future is boxed apart.
    #[test]
    fn a_decisions_future_is_small() {
        let store = RedisStore {
            dispatch: Dispatch {
                runner: unconnected_runner(),
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
}
