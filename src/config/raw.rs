//! The configuration file's shapes, as written and before validation, and their defaults.
//!
//! They are also what `check-config` prints, so each serializes back to the TOML it reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::effective::format_duration;
use super::{LogFormat, Secret};
use crate::caller::address::ForwardedHeader;
use crate::caller::{Identity, OnMissing};
use crate::http::{ForwardAuth, ServerSettings};
use crate::limiter::OnError;
use crate::middleware::headers::HeaderMode;
use crate::policy::Algorithm;
use crate::rls::RawRls;
use crate::scope::Dimension;

/// The configuration as written, before validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: String,
    pub(super) denial_cache: bool,
    pub(super) headers: HeaderMode,
    pub(super) redis: RawRedis,
    pub(super) memory: RawMemory,
    pub(super) identity: RawIdentity,
    pub(super) policies: Vec<RawPolicy>,
    pub(super) log: RawLog,
    pub(super) server: RawServer,
    pub(super) forward_auth: RawForwardAuth,
    pub(super) rls: RawRls,
    pub(super) reload: RawReload,
}

/// `[reload]`: how the running service notices a changed configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    pub(super) watch_interval: String,
}

/// `[forward_auth]`: setting `path` turns the endpoint on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwardAuth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) path: Option<String>,
    pub(super) deny_status: u16,
    pub(super) trust_any_peer: bool,
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
    pub(super) on_error: OnError,
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
    pub(super) forwarded_header: ForwardedHeader,
    pub(super) on_missing: OnMissing,
    pub(super) ipv6_prefix: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) hash_key: Option<Secret>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) name: String,
    #[serde(default)]
    pub(super) algorithm: Algorithm,
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
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) when: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) shadow: bool,
}

/// `by = "user"` or `by = ["user", "route"]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum RawBy {
    One(String),
    Many(Vec<String>),
}

fn default_by() -> RawBy {
    RawBy::One(Dimension::User.to_string())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: LogFormat,
}

fn default_cost() -> u64 {
    1
}

impl Default for RawConfig {
    /// The library's own defaults, as configuration: each is written once, where it is used.
    fn default() -> Self {
        let identity = Identity::default();
        let server = ServerSettings::default();
        RawConfig {
            listen: "127.0.0.1:8000".into(),
            denial_cache: true,
            headers: HeaderMode::default(),
            redis: RawRedis {
                url: None,
                password: None,
                key_prefix: crate::key::DEFAULT_PREFIX.into(),
                on_error: OnError::default(),
                timeout: "100ms".into(),
                breaker_failures: crate::limiter::breaker::DEFAULT_FAILURES,
                breaker_cool_down: None,
                local_divisor: 1,
                connections: None,
                max_batch: default_max_batch(),
            },
            memory: RawMemory {
                max_callers: crate::store::memory::DEFAULT_MAX_CALLERS,
            },
            identity: RawIdentity {
                header: identity.header.as_str().into(),
                trusted_proxies: Vec::new(),
                forwarded_header: ForwardedHeader::default(),
                on_missing: OnMissing::default(),
                ipv6_prefix: identity.ipv6_prefix,
                hash_key: None,
            },
            policies: vec![RawPolicy {
                name: "per_minute".into(),
                algorithm: Algorithm::default(),
                limit: 3,
                window: "1m".into(),
                cost: 1,
                burst: None,
                routes: Vec::new(),
                by: default_by(),
                costs: BTreeMap::new(),
                when: BTreeMap::new(),
                shadow: false,
            }],
            log: RawLog {
                format: LogFormat::default(),
            },
            forward_auth: RawForwardAuth {
                path: None,
                deny_status: ForwardAuth::DEFAULT_DENY_STATUS.as_u16(),
                trust_any_peer: false,
            },
            server: RawServer {
                header_timeout: format_duration(server.header_timeout),
                idle_timeout: format_duration(server.idle_timeout),
                max_connections: None,
                shutdown_grace: format_duration(server.shutdown_grace),
            },
            rls: RawRls::default(),
            reload: RawReload {
                watch_interval: format_duration(crate::reload::WATCH_EVERY),
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

/// `redis.connections` when unset: one connection per four cores the process may run on, since
/// one connection pipelines every decision in flight and its task needs well under a core.
pub(super) fn default_connections() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each configuration enum reads the name it writes in logs, metrics and `check-config`.
    #[test]
    fn enums_read_the_names_they_write() {
        fn name_of<T: Serialize>(value: T) -> String {
            serde_json::to_value(value)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        }
        for algorithm in Algorithm::ALL {
            assert_eq!(name_of(algorithm), algorithm.as_str());
        }
        for mode in HeaderMode::ALL {
            assert_eq!(name_of(mode), mode.as_str());
        }
        for mode in [OnError::Allow, OnError::Deny, OnError::Local] {
            assert_eq!(name_of(mode), mode.as_str());
        }
        for mode in [OnMissing::Allow, OnMissing::Deny, OnMissing::Ip] {
            assert_eq!(name_of(mode), mode.as_str());
        }
        for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            assert_eq!(name_of(header), header.as_str());
        }
    }
}
