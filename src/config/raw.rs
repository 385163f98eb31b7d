//! The configuration file's shapes, as written and before validation, and their defaults.
//!
//! They are also what `check-config` prints, so each serializes back to the TOML it reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Secret;
use crate::caller::address::ForwardedHeader;
use crate::caller::OnMissing;
use crate::limiter::OnError;
use crate::middleware::headers::HeaderMode;
use crate::policy::Algorithm;
use crate::scope::Dimension;

/// The configuration as written, before validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: String,
    pub(super) local_cache: bool,
    pub(super) headers: String,
    pub(super) redis: RawRedis,
    pub(super) memory: RawMemory,
    pub(super) identity: RawIdentity,
    pub(super) limits: Vec<RawLimit>,
    pub(super) log: RawLog,
    pub(super) server: RawServer,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) header_timeout: String,
    pub(super) idle_timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_connections: Option<usize>,
    pub(super) shutdown_grace: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) password: Option<Secret>,
    pub(super) key_prefix: String,
    pub(super) on_error: String,
    pub(super) timeout: String,
    pub(super) breaker_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) breaker_cool_down: Option<String>,
    pub(super) local_divisor: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) connections: Option<usize>,
    pub(super) max_batch: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMemory {
    pub(super) max_callers: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) header: String,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) forwarded_header: String,
    pub(super) on_missing: String,
    pub(super) ipv6_prefix: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) hash_key: Option<Secret>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub(super) name: String,
    #[serde(default = "default_algorithm")]
    pub(super) algorithm: String,
    pub(super) limit: u64,
    pub(super) window: String,
    #[serde(default = "default_cost")]
    pub(super) cost: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) routes: Vec<String>,
    #[serde(default = "default_by")]
    pub(super) by: RawBy,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) costs: BTreeMap<String, u64>,
}

/// `by = "user"` or `by = ["user", "route"]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum RawBy {
    One(String),
    Many(Vec<String>),
}

fn default_by() -> RawBy {
    RawBy::One(Dimension::User.as_str().into())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: String,
}

fn default_algorithm() -> String {
    Algorithm::FixedWindow.as_str().into()
}

fn default_cost() -> u64 {
    1
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen: "127.0.0.1:8000".into(),
            local_cache: true,
            headers: HeaderMode::default().as_str().into(),
            redis: RawRedis {
                url: None,
                password: None,
                key_prefix: "tollgate".into(),
                on_error: OnError::Allow.as_str().into(),
                timeout: "100ms".into(),
                breaker_failures: 5,
                breaker_cool_down: None,
                local_divisor: 1,
                connections: None,
                max_batch: default_max_batch(),
            },
            memory: RawMemory {
                max_callers: crate::store::memory::DEFAULT_MAX_CALLERS,
            },
            identity: RawIdentity {
                header: "x-user".into(),
                trusted_proxies: Vec::new(),
                forwarded_header: ForwardedHeader::default().as_str().into(),
                on_missing: OnMissing::Allow.as_str().into(),
                ipv6_prefix: 64,
                hash_key: None,
            },
            limits: vec![RawLimit {
                name: "per_minute".into(),
                algorithm: default_algorithm(),
                limit: 3,
                window: "1m".into(),
                cost: 1,
                burst: None,
                routes: Vec::new(),
                by: default_by(),
                costs: BTreeMap::new(),
            }],
            log: RawLog {
                format: "text".into(),
            },
            server: RawServer {
                header_timeout: "10s".into(),
                idle_timeout: "60s".into(),
                max_connections: None,
                shutdown_grace: "10s".into(),
            },
        }
    }
}

/// The most `redis.connections` takes: more would only thin out each connection's pipelining.
pub(super) const MAX_CONNECTIONS: usize = 64;

/// The most `redis.max_batch` takes: a call of this many three-policy decisions holds Redis for
/// tens of milliseconds on a slow machine.
pub(super) const MAX_BATCH: usize = 1024;

/// `redis.max_batch` when unset: the store's own default.
fn default_max_batch() -> usize {
    crate::store::redis::Connections::default().max_batch
}

/// `redis.connections` when unset: one connection per four cores the process may run on.
///
/// A connection's reads, writes and RESP coding run on one task, and one connection pipelines
/// every decision in flight on it (about six per Redis read at 25,000 decisions/s, measured).
/// On a core of the development machine that task took under a fifth of a core at the rate one
/// core of tollgate can serve, so one connection per four cores leaves it room, and adds
/// connections only where one could become the narrow point.
pub(super) fn default_connections() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.div_ceil(4)
}
