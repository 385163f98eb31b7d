//! The backends that count requests, behind one trait.
//!
//! Both stores implement the same semantics and give the same decision for the same sequence of
//! requests and times: [`redis::RedisStore`] shares limits across instances through Lua scripts,
//! [`memory::MemoryStore`] counts in process for a single instance and is the Rust reference the
//! scripts are tested against.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::decision::Decision;
use crate::policy::Policy;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// A boxed future, so that stores can be chosen at run time behind `dyn Store`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One policy to check for one caller: the policy, the key that holds its count, and what
/// this request costs.
#[derive(Clone, Debug)]
pub struct Check {
    /// The caller's key for this policy, from [`crate::key::KeyBuilder`].
    pub key: String,
    /// The policy to apply.
    pub policy: Arc<Policy>,
    /// The quota this request spends: the policy's cost, or its route's (at most its capacity).
    pub cost: u64,
}

impl Check {
    /// A check at the policy's own cost.
    pub fn new(key: String, policy: Arc<Policy>) -> Self {
        Check {
            cost: policy.cost(),
            key,
            policy,
        }
    }
}

/// Whose clock decides which window a request falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The store's own clock: Redis `TIME`, or this process's clock for the memory store.
    ///
    /// Production always uses it, so app servers' clocks never split a window.
    Store,
    /// A fixed time in Unix milliseconds, for deterministic contract tests.
    At(u64),
}

/// Counts requests against policies, atomically per decision.
pub trait Store: Send + Sync + 'static {
    /// Decides every check together: all admit and consume their cost, or none consumes.
    fn decide<'a>(&'a self, checks: &'a [Check], clock: Clock) -> StoreFuture<'a, Decision>;

    /// Decides as [`Store::decide`] does, at once, for a store that needs no I/O (the memory
    /// store): no future to box, and no round trip for the limiter to time or to guard with its
    /// circuit breaker. `None`, the default, for a store that must be awaited.
    fn decide_now(&self, checks: &[Check], clock: Clock) -> Option<Result<Decision, StoreError>> {
        let _ = (checks, clock);
        None
    }

    /// Succeeds when the store could make a decision that writes right now. A store that must
    /// write to find out writes `probe` (from [`crate::key::KeyBuilder::readiness_key`]) and
    /// leaves nothing behind.
    fn ready<'a>(&'a self, probe: &'a str) -> StoreFuture<'a, ()>;

    /// What the store has counted of its own work, for the metrics.
    fn counts(&self) -> StoreCounts {
        StoreCounts::default()
    }
}

/// A store's own counters: the calls a Redis store made, the entries a memory store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Script calls issued (EVALSHA): decisions, refunds, peeks, readiness probes, retries
    /// after NOSCRIPT, and calls that timed out before they were written. On a single Redis the
    /// decisions in flight together share one.
    pub calls: u64,
    /// How often the store had lost its scripts and loaded them again (NOSCRIPT).
    pub script_reloads: u64,
    /// Entries a memory store holds, live or not yet swept.
    pub memory_entries: u64,
    /// Decisions a memory store refused because it held `memory.max_callers` entries.
    pub memory_full: u64,
}

impl StoreError {
    /// The kind, as metrics label it: `timeout`, `connection`, `redis` or `reply`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout(_) => "timeout",
            StoreError::Connection(_) => "connection",
            StoreError::Redis(_) => "redis",
            StoreError::Reply(_) => "reply",
        }
    }
}

/// Why a store could not decide.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer within the deadline (its length, when known; zero otherwise).
    #[error("the store did not answer within the deadline")]
    Timeout(Duration),
    /// Redis could not be reached, or dropped the connection, or refused the credentials.
    #[error("redis connection: {0}")]
    Connection(String),
    /// Redis answered with an error.
    #[error("redis: {0}")]
    Redis(String),
    /// The store answered something the decision cannot be read from.
    #[error("unexpected reply from the store: {0}")]
    Reply(String),
}
