//! Configuration: defaults, then `tollgate.toml` (or `--config`), then `TOLLGATE_*` variables.
//!
//! Everything is validated once, here, into types that cannot hold a bad value. A mistake is a
//! [`ConfigError`] naming the key and the reason; the binary prints it on one line and exits 2.
//!
//! This module holds [`Settings`] and the layering; each concern beside it has a file:
//! - `raw`: the file's shapes, as written, and their defaults;
//! - `validate`: raw shapes into [`Settings`], each mistake a [`ConfigError`];
//! - `error`: [`ConfigError`], and figment's errors rendered as one line that names the key;
//! - `redis_url`: [`RedisSettings`], the URL's translation for fred, and its redaction;
//! - `secret`: [`Secret`], secrets read verbatim from variables, and `.env`;
//! - `variables`: `TOLLGATE_*` variables that set no key, and Kubernetes' service links;
//! - `effective`: the effective configuration that `check-config` prints;
//! - `keys`: each policy's key for one caller, which `tollgate key` prints;
//! - `restart`: what a reload cannot change, and the digest that names a configuration.

mod effective;
mod error;
mod keys;
mod raw;
mod redis_url;
mod restart;
mod secret;
mod validate;
pub(crate) use validate::PolicyShape;
mod variables;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::caller::{Identity, OnMissing};
use crate::http::{ForwardAuth, ServerSettings};
use crate::key::KeyBuilder;
use crate::limiter::OnError;
use crate::middleware::headers::HeaderMode;
use crate::policy::Policy;
use crate::rls::RlsSettings;

pub use error::ConfigError;
pub use keys::Unkeyed;
pub use redis_url::{redact_url, RedisSettings};
pub use restart::hash_files;
pub use secret::Secret;

use error::from_figment_error;
use raw::RawConfig;
use secret::{load_dotenv, var_verbatim, SECRET_VARS};
use variables::{stray_variables, StrayVariable, PREFIX};

/// The file read from the working directory when no `--config` or `TOLLGATE_CONFIG` names one.
pub const DEFAULT_FILE: &str = "tollgate.toml";

/// The validated configuration of a `tollgate` service.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The address the HTTP server binds.
    pub listen: SocketAddr,
    /// The shared store; `None` selects the in-process memory store.
    pub redis: Option<RedisSettings>,
    /// The first segment of every Redis key.
    pub key_prefix: String,
    /// What decides when Redis cannot.
    pub on_error: OnError,
    /// The longest a decision waits on Redis.
    pub timeout: Duration,
    /// Consecutive store failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the open breaker skips the store before it probes.
    pub breaker_cool_down: Duration,
    /// Under `on_error = "local"`, what every limit is divided by: the number of instances.
    pub local_divisor: u64,
    /// `redis.connections`: how many connections decisions take in turn, each pipelined.
    pub connections: usize,
    /// `redis.max_batch`: the most decisions one script call carries on a single Redis.
    pub max_batch: usize,
    /// `memory.max_callers`: the most entries a memory store holds (the store, or the fallback).
    pub max_callers: NonZeroUsize,
    /// How callers are named: the identity header, trusted proxies, IPv6 grouping.
    pub identity: Identity,
    /// What happens when a policy keyed by user applies to a request that names nobody.
    pub on_missing: OnMissing,
    /// `identity.hash_key`: when set, key names use HMAC-SHA256 under it.
    pub hash_key: Option<Secret>,
    /// The policies, each with what it applies to, in order.
    pub policies: Vec<Policy>,
    /// How logs are written.
    pub log_format: LogFormat,
    /// Whether denials are cached in process until their retry time.
    pub denial_cache: bool,
    /// Which responses carry the rate-limit headers.
    pub headers: HeaderMode,
    /// What loading noticed but did not refuse, for the binary to report: each `TOLLGATE_*`
    /// variable that names no key (a Kubernetes service link excepted), which is ignored, and
    /// what `[rls]` accepts without acting on it.
    pub warnings: Vec<String>,
    /// How the server treats connections: timeouts, the connection cap, the shutdown grace.
    pub server: ServerSettings,
    /// The forward-auth endpoint, when `forward_auth.path` turns it on.
    pub forward_auth: Option<ForwardAuth>,
    /// `[rls]`: Envoy's rate limit descriptors, from ratelimit's YAML and tollgate's rules.
    pub rls: RlsSettings,
    /// `reload.watch_interval`: how often the running service reads its configuration files
    /// for changes; `None` (0 configured) leaves reloading to SIGHUP.
    pub watch_interval: Option<Duration>,
    /// The configuration as it was read, with every derived default filled in and the URL's
    /// secret taken out, for `check-config`.
    effective: RawConfig,
    /// Whether the URL held a secret, taken out of `effective`.
    url_had_secret: bool,
    /// The configuration file [`Settings::load`] read, or would have read had it existed.
    file: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Settings {
    /// Loads the layered configuration: defaults, the file, then the environment.
    ///
    /// `file` is the `--config` path; without it, `TOLLGATE_CONFIG`, then `tollgate.toml` in the
    /// working directory if it exists. A `.env` file in the working directory is read into the
    /// environment first, without overriding variables already set.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        load_dotenv(Path::new(".env"))?;
        Settings::load_again(file)
    }

    /// [`Settings::load`] without reading `.env`, as a reload loads: `.env` is read once, at
    /// startup, because setting a variable while other threads run is unsound.
    pub fn load_again(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let file = match file {
            Some(path) => Some(("--config", path.to_owned())),
            None => std::env::var_os("TOLLGATE_CONFIG").map(|p| ("TOLLGATE_CONFIG", p.into())),
        };
        let figment = match &file {
            Some((source, path)) if !path.is_file() => {
                return Err(ConfigError::new(
                    *source,
                    format!("{}: no such configuration file", path.display()),
                ))
            }
            Some((_, path)) => layered(path),
            None => layered(Path::new(DEFAULT_FILE)),
        };
        let mut settings = Settings::from_figment(figment)?;
        settings.file = Some(match file {
            Some((_, path)) => path,
            None => PathBuf::from(DEFAULT_FILE),
        });
        settings.warnings.extend(
            stray_variables()
                .iter()
                .filter(|stray| !stray.service_link)
                .map(StrayVariable::warning),
        );
        Ok(settings)
    }

    /// Defaults overlaid with the TOML in `text`, and nothing else: for tests and embedders.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(text));
        Settings::from_figment(figment)
    }

    /// Extracts and validates settings from any figment, so tests can layer their own sources.
    pub fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(from_figment_error)?;
        raw.validate()
    }

    /// The configuration file these settings were loaded from, or would have been had it
    /// existed (`tollgate.toml` when none is named); `None` when they come from elsewhere.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The key builder these settings describe: the prefix, and the hash key if any.
    pub fn key_builder(&self) -> KeyBuilder {
        let keys = KeyBuilder::new(self.key_prefix.clone());
        match &self.hash_key {
            Some(key) => keys.with_hash_key(key.expose().as_bytes()),
            None => keys,
        }
    }
}

/// Defaults, then the TOML file at `path` (if it exists), then the `TOLLGATE_*` variables that
/// name a key; the others (Kubernetes service links, typos) are left out.
pub fn layered(path: &Path) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    if path.is_file() {
        figment = figment.merge(Toml::file_exact(path));
    }
    // figment reads variables as TOML values, so `007` would become the number 7, and a type
    // error would echo it: secrets are taken verbatim, as strings, instead.
    // A variable that names no key is left out (and warned about by `Settings::load`): the
    // environment is shared with the platform, which sets `TOLLGATE_*` variables of its own.
    let strays: Vec<String> = stray_variables()
        .into_iter()
        .map(|stray| stray.key)
        .collect();
    figment = figment.merge(
        Env::prefixed(PREFIX)
            .split("__")
            .ignore(&["config", "redis.password", "identity.hash_key"])
            .filter(move |key| {
                let key = key.as_str().trim();
                !strays.iter().any(|stray| stray.eq_ignore_ascii_case(key))
            }),
    );
    for (var, key) in SECRET_VARS {
        if let Some(secret) = var_verbatim(var) {
            figment = figment.merge(Serialized::default(key, secret));
        }
    }
    figment
}
