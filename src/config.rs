//! Configuration: defaults, then `tollgate.toml` (or `--config`), then `TOLLGATE_*` variables.
//!
//! Everything is validated once, here, into types that cannot hold a bad value. A mistake is a
//! [`ConfigError`] naming the key and the reason; the binary prints it on one line and exits 2.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::client_ip::{Cidr, ForwardedHeader, Proxies};
use crate::http::ServerSettings;
use crate::key::KeyBuilder;
use crate::limiter::{OnError, OnMissing, Rule};
use crate::middleware::extract::Identity;
use crate::middleware::headers::HeaderMode;
use crate::quota::{parse_duration, Algorithm, Policy, PolicyName, Window};
use crate::scope::{By, Dimension, RoutePattern, Scope};

/// The file read from the working directory when no `--config` or `TOLLGATE_CONFIG` names one.
pub const DEFAULT_FILE: &str = "tollgate.toml";

/// A configuration mistake: which key, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The key, dotted (`redis.timeout`, `limits[0].limit`), or the file that could not be read.
    pub key: String,
    /// What is wrong, in a sentence fragment.
    pub reason: String,
}

impl ConfigError {
    /// A mistake at `key`; a reason spread over several lines is joined into one, and control
    /// characters in a key (an unknown key may be named anything) are escaped.
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        let key = key.into();
        let key = if key.chars().any(char::is_control) {
            key.escape_default().to_string()
        } else {
            key
        };
        ConfigError {
            key,
            reason: one_line(&reason.into()),
        }
    }
}

/// The non-empty lines of `text`, trimmed and joined with `; `: an error is one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A value that must never be printed: `Debug` and `Serialize` show `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

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
    /// The policies and what each applies to, in order.
    pub rules: Vec<Rule>,
    /// How logs are written.
    pub log_format: LogFormat,
    /// Whether denials are cached in process until their retry time.
    pub local_cache: bool,
    /// Which responses carry the rate-limit headers.
    pub headers: HeaderMode,
    /// What loading noticed but did not refuse, for the binary to report: each `TOLLGATE_*`
    /// variable that names no key (a Kubernetes service link excepted), which is ignored.
    pub warnings: Vec<String>,
    /// How the server treats connections: timeouts, the connection cap, the shutdown grace.
    pub server: ServerSettings,
    /// The configuration as it was read, with every derived default filled in and the URL's
    /// secret taken out, for `check-config`.
    effective: RawConfig,
    /// Whether the URL held a secret, taken out of `effective`.
    url_had_secret: bool,
}

/// Where Redis is and how to log in to it.
#[derive(Clone)]
pub struct RedisSettings {
    /// The URL, which may itself hold a password, so it is kept secret.
    url: Secret,
    /// `redis.password`, which overrides a password in the URL.
    password: Option<Secret>,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(self.url.expose()))
            .field("password", &self.password)
            .finish()
    }
}

impl RedisSettings {
    /// A client configuration for fred.
    pub fn client_config(&self) -> fred::prelude::Config {
        let mut config = fred::prelude::Config::from_url(self.url.expose())
            .expect("the URL was validated when the configuration was loaded");
        if let Some(password) = &self.password {
            config.password = Some(password.expose().to_owned());
        }
        config
    }

    /// The URL with any password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose())
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
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
        settings.warnings = stray_variables()
            .iter()
            .filter(|stray| !stray.service_link)
            .map(StrayVariable::warning)
            .collect();
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

    /// The key builder these settings describe: the prefix, and the hash key if any.
    pub fn key_builder(&self) -> KeyBuilder {
        let keys = KeyBuilder::new(self.key_prefix.clone());
        match &self.hash_key {
            Some(key) => keys.with_hash_key(key.expose().as_bytes()),
            None => keys,
        }
    }

    /// The effective configuration as TOML, every key with its value, derived defaults
    /// included; a secret is a comment saying whether it is set, so that the text read back as
    /// a file changes nothing but the secrets it cannot show.
    pub fn effective_toml(&self) -> String {
        let mut shown = self.effective.clone();
        let mut notes: Vec<(&str, String)> = Vec::new();
        if shown.redis.url.is_none() {
            notes.push(("redis", "# url is not set: the memory store decides".into()));
        } else if self.url_had_secret {
            notes.push(("redis", "# url holds a password (not shown)".into()));
        }
        if shown.server.max_connections.is_none() {
            notes.push((
                "server",
                "# max_connections is not set: sized when serving starts, from the descriptor \
                 limit"
                    .into(),
            ));
        }
        for (table, key, secret) in [
            ("redis", "password", shown.redis.password.take()),
            ("identity", "hash_key", shown.identity.hash_key.take()),
        ] {
            let state = if secret.is_some() {
                "is set (not shown)"
            } else {
                "is not set"
            };
            notes.push((table, format!("# {key} {state}")));
        }
        let text = toml::to_string(&shown).expect("the configuration serializes to TOML");
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for (table, note) in notes {
            let header = format!("[{table}]");
            match lines.iter().position(|line| *line == header) {
                Some(at) => {
                    let after = lines[at + 1..]
                        .iter()
                        .take_while(|line| line.starts_with('#'))
                        .count();
                    lines.insert(at + 1 + after, note);
                }
                None => lines.extend([String::new(), header, note]),
            }
        }
        lines.join("\n") + "\n"
    }
}

/// The variable that holds the Redis password, read as it is written.
const PASSWORD_VAR: &str = "TOLLGATE_REDIS__PASSWORD";

/// The secrets that variables may carry, read verbatim: (variable, configuration key).
const SECRET_VARS: [(&str, &str); 2] = [
    (PASSWORD_VAR, "redis.password"),
    ("TOLLGATE_IDENTITY__HASH_KEY", "identity.hash_key"),
];

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

/// The prefix of every variable tollgate reads.
const PREFIX: &str = "TOLLGATE_";

/// A `TOLLGATE_*` variable that sets no configuration key.
struct StrayVariable {
    /// The variable's name, as set.
    name: String,
    /// The key it would set, as figment reads it (`TOLLGATE_REDIS__URLL` would set `redis.urll`).
    key: String,
    /// Whether Kubernetes set it, for a Service whose name begins with `tollgate`.
    service_link: bool,
}

impl StrayVariable {
    /// The warning that names the variable, and the key it may have meant; never its value.
    fn warning(&self) -> String {
        let name = escape_control(&self.name);
        let key = escape_control(&self.key);
        let mut warning =
            format!("{name} is ignored: it would set {key}, which is not a configuration key");
        if let Some(near) = nearest_key(&self.key, &known_keys()) {
            let var = format!("{PREFIX}{}", near.to_ascii_uppercase().replace('.', "__"));
            warning.push_str(&format!("; did you mean {var} ({near})?"));
        }
        warning
    }
}

/// `text` with control characters escaped, so a strange variable name cannot forge log lines.
fn escape_control(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.escape_default().to_string()
    } else {
        text.to_owned()
    }
}

/// The `TOLLGATE_*` variables that name no configuration key.
fn stray_variables() -> Vec<StrayVariable> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.to_str().map(|name| name.trim().to_owned()))
        .collect();
    let set: std::collections::HashSet<String> =
        names.iter().map(|name| name.to_ascii_uppercase()).collect();
    let known = known_keys();
    names
        .into_iter()
        .filter_map(|name| {
            let key = variable_key(&name)?;
            if is_known(&known, &key) {
                return None;
            }
            let service_link = is_service_link(&name, &set);
            Some(StrayVariable {
                name,
                key,
                service_link,
            })
        })
        .collect()
}

/// The key `Env::prefixed("TOLLGATE_").split("__")` reads the variable `name` as, lowercased;
/// `None` for a variable it does not read.
fn variable_key(name: &str) -> Option<String> {
    let prefix = name.get(..PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let key = name[PREFIX.len()..]
        .replace("__", ".")
        .trim()
        .to_ascii_lowercase();
    (!key.split('.').any(str::is_empty)).then_some(key)
}

/// Whether `key` is read by the configuration: a key, a table, something inside a key (an
/// array's element, left for validation to judge), or the file's name.
fn is_known(known: &[String], key: &str) -> bool {
    key == "config"
        || known.iter().any(|k| {
            k == key
                || key
                    .strip_prefix(k.as_str())
                    .is_some_and(|r| r.starts_with('.'))
                || k.strip_prefix(key).is_some_and(|r| r.starts_with('.'))
        })
}

/// Whether Kubernetes injected the variable `name` as a service link, as its kubelet does for
/// every Service of the namespace: `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT`,
/// `<SVC>_SERVICE_PORT_<PORT NAME>`, `<SVC>_PORT` and `<SVC>_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]`.
///
/// Only when that Service's `<SVC>_SERVICE_HOST` and `<SVC>_SERVICE_PORT` are both set, which
/// Kubernetes always does, so that a lone `TOLLGATE_LISTEN_PORT` is still warned about.
fn is_service_link(name: &str, set: &std::collections::HashSet<String>) -> bool {
    let name = name.to_ascii_uppercase();
    name.match_indices('_')
        .filter(|&(at, _)| at + 1 >= PREFIX.len())
        .any(|(at, _)| {
            let (service, tail) = (&name[..at], &name[at + 1..]);
            is_link_tail(tail)
                && set.contains(&format!("{service}_SERVICE_HOST"))
                && set.contains(&format!("{service}_SERVICE_PORT"))
        })
}

/// Whether `tail` is what a service link adds after the Service's name.
fn is_link_tail(tail: &str) -> bool {
    if matches!(tail, "SERVICE_HOST" | "SERVICE_PORT" | "PORT") {
        return true;
    }
    if let Some(port_name) = tail.strip_prefix("SERVICE_PORT_") {
        return port_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    }
    let Some((number, rest)) = tail.strip_prefix("PORT_").and_then(|r| r.split_once('_')) else {
        return false;
    };
    let (protocol, field) = rest.split_once('_').unwrap_or((rest, ""));
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(protocol, "TCP" | "UDP" | "SCTP")
        && matches!(field, "" | "PROTO" | "PORT" | "ADDR")
}

/// Every configuration key, dotted (`redis.url`), from serde's own lists of fields, so that a
/// key added to the raw configuration is known here without being listed again.
fn known_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for &top in fields_of(None).unwrap_or_default() {
        match fields_of(Some(top)) {
            Some(fields) => keys.extend(fields.iter().map(|field| format!("{top}.{field}"))),
            None => keys.push(top.to_owned()),
        }
    }
    keys
}

/// The fields of `table` (of the root for `None`), read from the error serde gives when an
/// unknown key is added to it; `None` when `table` is not a table.
fn fields_of(table: Option<&str>) -> Option<&'static [&'static str]> {
    const PROBE: &str = "tollgate-probe";
    let key = table.map_or_else(|| PROBE.to_owned(), |table| format!("{table}.{PROBE}"));
    let error = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Serialized::default(&key, 0))
        .extract::<RawConfig>()
        .err()?;
    error.into_iter().find_map(|error| match error.kind {
        figment::error::Kind::UnknownField(field, fields) if field == PROBE => Some(fields),
        _ => None,
    })
}

/// The key in `known` nearest `key`, when it is near enough to be what a typo meant.
fn nearest_key<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(distance, k)| *distance <= (k.len() / 5).clamp(1, 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.as_str())
}

/// The Levenshtein distance between `a` and `b`, in bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(x != y);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The variable `var`, matched without regard to case, as figment matches the others.
fn var_verbatim(var: &str) -> Option<String> {
    std::env::vars_os().find_map(|(name, value)| {
        name.to_str()
            .filter(|name| name.eq_ignore_ascii_case(var))
            .map(|_| value.to_string_lossy().into_owned())
    })
}

/// Reads `.env` into the environment, without overriding variables already set.
///
/// A line that cannot be parsed is reported by number only: it may hold the password.
fn load_dotenv(path: &Path) -> Result<(), ConfigError> {
    let key = path.display().to_string();
    match dotenvy::from_path(path) {
        Ok(()) => Ok(()),
        Err(error) if error.not_found() => Ok(()),
        Err(dotenvy::Error::LineParse(line, _)) => {
            let first = line.lines().next().unwrap_or_default().trim_end();
            let number = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.lines().position(|l| l.trim_end() == first))
                .map_or_else(|| "a line".to_owned(), |n| format!("line {}", n + 1));
            Err(ConfigError::new(
                key,
                format!("{number} cannot be parsed (its text is not shown: it may hold a secret)"),
            ))
        }
        Err(dotenvy::Error::Io(error)) => Err(ConfigError::new(key, error.to_string())),
        Err(_) => Err(ConfigError::new(key, "cannot be read")),
    }
}

/// The configuration as written, before validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    local_cache: bool,
    headers: String,
    redis: RawRedis,
    memory: RawMemory,
    identity: RawIdentity,
    limits: Vec<RawLimit>,
    log: RawLog,
    server: RawServer,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    header_timeout: String,
    idle_timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    shutdown_grace: String,
}

impl RawServer {
    fn validate(&self) -> Result<ServerSettings, ConfigError> {
        let positive = |key: &str, text: &str| {
            let duration = parse_duration(text).map_err(|reason| ConfigError::new(key, reason))?;
            if duration.is_zero() {
                return Err(ConfigError::new(key, "must be longer than 0"));
            }
            Ok(duration)
        };
        let max_connections =
            match self.max_connections {
                None => None,
                Some(n) => Some(NonZeroUsize::new(n).ok_or_else(|| {
                    ConfigError::new("server.max_connections", "must be at least 1")
                })?),
            };
        Ok(ServerSettings {
            header_timeout: positive("server.header_timeout", &self.header_timeout)?,
            idle_timeout: positive("server.idle_timeout", &self.idle_timeout)?,
            max_connections,
            shutdown_grace: positive("server.shutdown_grace", &self.shutdown_grace)?,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<Secret>,
    key_prefix: String,
    on_error: String,
    timeout: String,
    breaker_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker_cool_down: Option<String>,
    local_divisor: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<usize>,
    max_batch: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    max_callers: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    header: String,
    trusted_proxies: Vec<String>,
    forwarded_header: String,
    on_missing: String,
    ipv6_prefix: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_key: Option<Secret>,
}

impl RawIdentity {
    fn validate(&self) -> Result<Identity, ConfigError> {
        let header = HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            ConfigError::new(
                "identity.header",
                format!("{:?} is not a valid HTTP header name", self.header),
            )
        })?;
        let trusted = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, cidr)| {
                Cidr::parse(cidr)
                    .map_err(|r| ConfigError::new(format!("identity.trusted_proxies[{i}]"), r))
            })
            .collect::<Result<_, _>>()?;
        let forwarded = match self.forwarded_header.as_str() {
            "x-forwarded-for" => ForwardedHeader::XForwardedFor,
            "forwarded" => ForwardedHeader::Forwarded,
            other => {
                return Err(ConfigError::new(
                    "identity.forwarded_header",
                    format!("{other:?} is not one of \"x-forwarded-for\", \"forwarded\""),
                ))
            }
        };
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(ConfigError::new(
                "identity.ipv6_prefix",
                format!("{} is not a prefix length from 1 to 128", self.ipv6_prefix),
            ));
        }
        Ok(Identity {
            header,
            proxies: Proxies {
                trusted,
                header: forwarded,
            },
            ipv6_prefix: self.ipv6_prefix,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: String,
    #[serde(default = "default_algorithm")]
    algorithm: String,
    limit: u64,
    window: String,
    #[serde(default = "default_cost")]
    cost: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<String>,
    #[serde(default = "default_by")]
    by: RawBy,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    costs: BTreeMap<String, u64>,
}

/// `by = "user"` or `by = ["user", "route"]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum RawBy {
    One(String),
    Many(Vec<String>),
}

fn default_by() -> RawBy {
    RawBy::One(Dimension::User.as_str().into())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: String,
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

impl RawConfig {
    fn validate(self) -> Result<Settings, ConfigError> {
        let listen = self.listen.parse().map_err(|_| {
            ConfigError::new(
                "listen",
                format!(
                    "{:?} is not an IP address and port, like \"127.0.0.1:8000\"",
                    self.listen
                ),
            )
        })?;
        let redis = self.redis.validate_connection()?;
        let key_prefix = validate_prefix(&self.redis.key_prefix)?;
        let on_error = match self.redis.on_error.as_str() {
            "allow" => OnError::Allow,
            "deny" => OnError::Deny,
            "local" => OnError::Local,
            other => {
                return Err(ConfigError::new(
                    "redis.on_error",
                    format!("{other:?} is not one of \"allow\", \"deny\", \"local\""),
                ))
            }
        };
        if self.redis.breaker_failures == 0 {
            return Err(ConfigError::new(
                "redis.breaker_failures",
                "must be at least 1",
            ));
        }
        let breaker_cool_down = self
            .redis
            .breaker_cool_down
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|reason| ConfigError::new("redis.breaker_cool_down", reason))?;
        let connections = match self.redis.connections {
            None => default_connections(),
            Some(n @ 1..=MAX_CONNECTIONS) => n,
            Some(_) => {
                return Err(ConfigError::new(
                    "redis.connections",
                    format!("must be between 1 and {MAX_CONNECTIONS}"),
                ))
            }
        };
        if !(1..=MAX_BATCH).contains(&self.redis.max_batch) {
            return Err(ConfigError::new(
                "redis.max_batch",
                format!("must be between 1 and {MAX_BATCH}"),
            ));
        }
        if self.redis.local_divisor == 0 {
            return Err(ConfigError::new(
                "redis.local_divisor",
                "must be at least 1",
            ));
        }
        let timeout = parse_duration(&self.redis.timeout)
            .map_err(|reason| ConfigError::new("redis.timeout", reason))?;
        if timeout.is_zero() {
            return Err(ConfigError::new("redis.timeout", "must be longer than 0"));
        }
        // By default 500 ms, and always longer than the deadline, so that one probe ends before
        // the next may start.
        let breaker_cool_down = match breaker_cool_down {
            Some(cool_down) if cool_down <= timeout => {
                return Err(ConfigError::new(
                    "redis.breaker_cool_down",
                    "must be longer than redis.timeout, so that one probe ends before the next",
                ))
            }
            Some(cool_down) => cool_down,
            None => Duration::from_millis(500).max(timeout * 2),
        };
        let max_callers = NonZeroUsize::new(self.memory.max_callers)
            .ok_or_else(|| ConfigError::new("memory.max_callers", "must be at least 1"))?;
        let identity = self.identity.validate()?;
        let on_missing = match self.identity.on_missing.as_str() {
            "allow" => OnMissing::Allow,
            "deny" => OnMissing::Deny,
            "ip" => OnMissing::Ip,
            other => {
                return Err(ConfigError::new(
                    "identity.on_missing",
                    format!("{other:?} is not one of \"allow\", \"deny\", \"ip\""),
                ))
            }
        };
        if matches!(&self.identity.hash_key, Some(key) if key.expose().is_empty()) {
            return Err(ConfigError::new("identity.hash_key", "must not be empty"));
        }
        let hash_key = self.identity.hash_key.clone();
        let rules = validate_limits(&self.limits)?;
        let log_format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "log.format",
                    format!("{other:?} is not one of \"text\", \"json\""),
                ))
            }
        };
        let headers = HeaderMode::parse(&self.headers).ok_or_else(|| {
            ConfigError::new(
                "headers",
                format!(
                    "{:?} is not one of {}",
                    self.headers,
                    HeaderMode::ALL
                        .map(|mode| format!("{:?}", mode.as_str()))
                        .join(", ")
                ),
            )
        })?;
        let server = self.server.validate()?;
        let mut effective = self;
        let (url, url_had_secret) = match effective.redis.url.take() {
            Some(url) => {
                let (url, had_secret) = strip_userinfo_secret(&url);
                (Some(url), had_secret)
            }
            None => (None, false),
        };
        effective.redis.url = url;
        effective.redis.connections = Some(connections);
        effective.redis.breaker_cool_down = Some(format_duration(breaker_cool_down));
        for limit in &mut effective.limits {
            if limit.algorithm == Algorithm::TokenBucket.as_str() {
                limit.burst = Some(limit.burst.unwrap_or(limit.limit));
            }
        }
        Ok(Settings {
            listen,
            redis,
            key_prefix,
            on_error,
            timeout,
            breaker_failures: effective.redis.breaker_failures,
            breaker_cool_down,
            local_divisor: effective.redis.local_divisor,
            connections,
            max_batch: effective.redis.max_batch,
            max_callers,
            identity,
            on_missing,
            hash_key,
            rules,
            log_format,
            local_cache: effective.local_cache,
            headers,
            warnings: Vec::new(),
            server,
            effective,
            url_had_secret,
        })
    }
}

impl RawRedis {
    fn validate_connection(&self) -> Result<Option<RedisSettings>, ConfigError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        // Never echo the URL in an error: it may hold the password.
        let url = fred_url(url).map_err(|reason| ConfigError::new("redis.url", reason))?;
        if let Err(error) = fred::prelude::Config::from_url(&url) {
            // fred quotes the text it could not read after ": " (a `node=` value, which may hold
            // the password), so only what comes before is passed on.
            let details = error.details();
            let reason = details.split(": ").next().unwrap_or_default().trim();
            return Err(ConfigError::new(
                "redis.url",
                format!("is not a valid Redis URL ({reason}; the URL is not shown)"),
            ));
        }
        Ok(Some(RedisSettings {
            url: Secret::new(url),
            password: self.password.clone(),
        }))
    }
}

/// The URL in the form fred reads, from one of the forms tollgate documents:
/// - `redis://` and `rediss://`: one server;
/// - `redis-cluster://host:port?node=host2:port2` (and `rediss-cluster://`): cluster seed nodes;
/// - `redis-sentinel://host:port/<service-name>?node=host2:port2` (and `rediss-sentinel://`):
///   sentinels and the service they watch, which fred spells `?sentinelServiceName=`.
fn fred_url(url: &str) -> Result<String, String> {
    let not_redis =
        "is not a Redis URL: it must start with redis://, rediss://, redis-cluster://, \
                     rediss-cluster://, redis-sentinel:// or rediss-sentinel://";
    let (scheme, rest) = url.split_once("://").ok_or(not_redis)?;
    let query = rest.split_once('?').map_or("", |(_, query)| query);
    let node_has_userinfo = query.split('&').any(|pair| {
        pair.strip_prefix("node=")
            .is_some_and(|node| node.contains('@') || node.to_ascii_lowercase().contains("%40"))
    });
    if node_has_userinfo {
        // fred would take `secret@host` for a host name, and log it when it fails to connect.
        return Err(
            "a node= parameter is host:port only: the user and password before the first host \
             apply to every node"
                .into(),
        );
    }
    match scheme {
        "redis" | "rediss" | "redis-cluster" | "rediss-cluster" => Ok(url.to_owned()),
        "redis-sentinel" | "rediss-sentinel" => {
            if rest.contains("sentinelUsername=") || rest.contains("sentinelPassword=") {
                return Err(
                    "sentinel credentials are not supported: sentinels must not require a password"
                        .into(),
                );
            }
            if rest.contains("sentinelServiceName=") {
                return Ok(url.to_owned());
            }
            let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
            let before_query = before_query.strip_suffix('/').unwrap_or(before_query);
            let (authority, service) = before_query
                .split_once('/')
                .filter(|(_, service)| !service.is_empty() && !service.contains('/'))
                .ok_or(
                    "a sentinel URL names its service: redis-sentinel://host:port/<service-name>",
                )?;
            let extra = if query.is_empty() {
                String::new()
            } else {
                format!("&{query}")
            };
            Ok(format!(
                "{scheme}://{authority}/0?sentinelServiceName={service}{extra}"
            ))
        }
        _ => Err(not_redis.into()),
    }
}

fn validate_prefix(prefix: &str) -> Result<String, ConfigError> {
    if prefix.is_empty() || prefix.contains(['{', '}']) || prefix.contains(char::is_whitespace) {
        return Err(ConfigError::new(
            "redis.key_prefix",
            "must be non-empty, without spaces or braces (braces would change the hash tag)",
        ));
    }
    Ok(prefix.to_owned())
}

fn validate_limits(limits: &[RawLimit]) -> Result<Vec<Rule>, ConfigError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(limits.len());
    for (i, raw) in limits.iter().enumerate() {
        let key = |field: &str| format!("limits[{i}].{field}");
        let name = PolicyName::new(&raw.name).map_err(|r| ConfigError::new(key("name"), r))?;
        if rules.iter().any(|r| r.policy.name() == &name) {
            return Err(ConfigError::new(
                key("name"),
                format!("duplicate policy name {:?}", raw.name),
            ));
        }
        let algorithm = Algorithm::parse(&raw.algorithm).ok_or_else(|| {
            ConfigError::new(
                key("algorithm"),
                format!(
                    "unknown algorithm {:?}; known: {}",
                    raw.algorithm,
                    Algorithm::ALL
                        .map(|a| format!("{:?}", a.as_str()))
                        .join(", ")
                ),
            )
        })?;
        let limit = NonZeroU64::new(raw.limit)
            .ok_or_else(|| ConfigError::new(key("limit"), "must be at least 1"))?;
        let window = Window::parse(&raw.window).map_err(|r| ConfigError::new(key("window"), r))?;
        let cost = NonZeroU64::new(raw.cost)
            .ok_or_else(|| ConfigError::new(key("cost"), "must be at least 1"))?;
        let mut policy = Policy::new(name, algorithm, limit, window)
            .map_err(|r| ConfigError::new(key("limit"), r))?;
        if let Some(burst) = raw.burst {
            let burst = NonZeroU64::new(burst)
                .ok_or_else(|| ConfigError::new(key("burst"), "must be at least 1"))?;
            policy = policy
                .with_burst(burst)
                .map_err(|r| ConfigError::new(key("burst"), r))?;
        }
        let policy = policy
            .with_cost(cost)
            .map_err(|r| ConfigError::new(key("cost"), r))?;
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(j, route)| {
                RoutePattern::parse(route)
                    .map_err(|r| ConfigError::new(format!("limits[{i}].routes[{j}]"), r))
            })
            .collect::<Result<_, _>>()?;
        let names = match &raw.by {
            RawBy::One(name) => std::slice::from_ref(name),
            RawBy::Many(names) => names.as_slice(),
        };
        let dimensions = names
            .iter()
            .map(|name| {
                Dimension::parse(name).ok_or_else(|| {
                    ConfigError::new(
                        key("by"),
                        format!("unknown {name:?}; use user, ip, global or route"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let by = By::new(dimensions).map_err(|r| ConfigError::new(key("by"), r))?;
        let costs = raw
            .costs
            .iter()
            .map(|(route, &cost)| {
                let key = format!("limits[{i}].costs.{route:?}");
                let pattern = RoutePattern::parse(route).map_err(|r| ConfigError::new(&key, r))?;
                if cost == 0 || cost > policy.capacity() {
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "must be from 1 to the policy's capacity, {}",
                            policy.capacity()
                        ),
                    ));
                }
                Ok((pattern, cost))
            })
            .collect::<Result<_, _>>()?;
        rules.push(Rule {
            policy: Arc::new(policy),
            scope: Scope { routes, by, costs },
        });
    }
    Ok(rules)
}

/// `redis://user:secret@host:6379/0` becomes `redis://user:***@host:6379/0`, and
/// `redis://secret@host` becomes `redis://***@host`: user info without a colon is, in a Redis
/// URL, almost always a password whose colon was forgotten.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, userinfo, rest)) = split_userinfo(url) else {
        return "***".into();
    };
    match userinfo.and_then(|userinfo| userinfo.split_once(':')) {
        Some((user, _)) => format!("{scheme}://{user}:***@{rest}"),
        None if userinfo.is_some() => format!("{scheme}://***@{rest}"),
        None => url.to_owned(),
    }
}

/// The URL with any secret in its user info taken out (a user name before a colon stays), and
/// whether there was one: what `check-config` prints, as a URL that reads back as one.
fn strip_userinfo_secret(url: &str) -> (String, bool) {
    let Some((scheme, Some(userinfo), rest)) = split_userinfo(url) else {
        return (url.to_owned(), false);
    };
    match userinfo.split_once(':') {
        Some((user, _)) if !user.is_empty() => (format!("{scheme}://{user}@{rest}"), true),
        _ => (format!("{scheme}://{rest}"), true),
    }
}

/// `scheme://userinfo@rest` split into its scheme, its user info if any, and the rest; `None`
/// for text that is not a URL (`split_userinfo("nope")`).
fn split_userinfo(url: &str) -> Option<(&str, Option<&str>, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) => (scheme, Some(userinfo), &rest[userinfo.len() + 1..]),
        None => (scheme, None, rest),
    })
}

/// A duration as the configuration writes one, in the largest unit that keeps it exact.
fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ]
    .into_iter()
    .find(|&(_, unit)| ms != 0 && ms.is_multiple_of(unit))
    .map_or_else(
        || format!("{ms}ms"),
        |(name, unit)| format!("{}{name}", ms / unit),
    )
}

/// Turns figment's error into one line that names the key, and never shows a secret.
fn from_figment_error(error: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path = render_path(&error.path);
    let mut with_field = |field: &str| {
        // figment's path already ends with an unknown field, but not with a missing one.
        if error.path.last().map(String::as_str) != Some(field) {
            path = if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
        }
    };
    let reason = match &error.kind {
        Kind::UnknownField(field, expected) => {
            with_field(field);
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            with_field(field);
            "is required".to_owned()
        }
        // A TOML syntax error quotes the offending line, which may be the password's.
        Kind::Message(message) => message
            .lines()
            .filter(|line| !is_source_excerpt(line))
            .collect::<Vec<_>>()
            .join("\n"),
        Kind::InvalidType(_, expected) if may_hold_secret(&path) => {
            let expected = expected_kind(expected);
            format!("has the wrong type, expected {expected} (the value is not shown)")
        }
        Kind::InvalidType(actual, expected) => {
            format!("found {actual}, expected {}", expected_kind(expected))
        }
        _ if may_hold_secret(&path) => "is invalid (the value is not shown)".to_owned(),
        other => other.to_string(),
    };
    let source = error.metadata.as_ref().map(|m| match &m.source {
        Some(source) => source.to_string(),
        None => m.name.to_string(),
    });
    match (path.is_empty(), source) {
        (true, Some(source)) => ConfigError::new(source, reason),
        (true, None) => ConfigError::new("<root>", reason),
        (false, Some(source)) => ConfigError::new(path, format!("{reason} (from {source})")),
        (false, None) => ConfigError::new(path, reason),
    }
}

/// The most `redis.connections` takes: more would only thin out each connection's pipelining.
const MAX_CONNECTIONS: usize = 64;

/// The most `redis.max_batch` takes: a call of this many three-policy decisions holds Redis for
/// tens of milliseconds on a slow machine.
const MAX_BATCH: usize = 1024;

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
fn default_connections() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.div_ceil(4)
}

/// serde's `struct RawRedis` is a TOML table to the reader of the message.
fn expected_kind(expected: &str) -> &str {
    if expected.starts_with("struct ") {
        "a table"
    } else {
        expected
    }
}

/// Whether a value at `path` may hold the password: the URL, the password, or what holds them.
fn may_hold_secret(path: &str) -> bool {
    matches!(
        path,
        "" | "redis" | "redis.url" | "redis.password" | "identity" | "identity.hash_key"
    )
}

/// Whether `line` is part of the source excerpt a TOML error draws (`2 | text`, `  |   ^`).
fn is_source_excerpt(line: &str) -> bool {
    line.trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start()
        .starts_with('|')
}

/// `["limits", "0", "limit"]` becomes `limits[0].limit`.
fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if segment.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password in the URL is redacted, and a URL without one is left alone.
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:hunter2@redis.example:6380"),
            "rediss://app:***@redis.example:6380"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    /// Cluster URLs pass as they are; a sentinel URL's path names the service.
    #[test]
    fn sentinel_and_cluster_urls_translate_for_fred() {
        assert_eq!(
            fred_url("redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001").unwrap(),
            "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001"
        );
        assert_eq!(
            fred_url("redis-sentinel://:pw@127.0.0.1:26379/mymaster?node=127.0.0.1:26380").unwrap(),
            "redis-sentinel://:pw@127.0.0.1:26379/0?sentinelServiceName=mymaster&node=127.0.0.1:26380"
        );
        assert!(fred_url("redis-sentinel://127.0.0.1:26379").is_err());
        assert_eq!(
            fred_url("rediss-sentinel://127.0.0.1:26379/mymaster/").unwrap(),
            "rediss-sentinel://127.0.0.1:26379/0?sentinelServiceName=mymaster"
        );
        assert!(fred_url("redis-sentinel://h:1/m?sentinelPassword=s3cret").is_err());
        assert!(fred_url("http://127.0.0.1:6379").is_err());
        for url in [
            "redis-cluster://127.0.0.1:7000",
            "redis-sentinel://127.0.0.1:26379/mymaster",
        ] {
            assert!(
                fred::prelude::Config::from_url(&fred_url(url).unwrap()).is_ok(),
                "{url}"
            );
        }
    }

    /// User info without a colon is redacted whole: in a Redis URL it is a forgotten colon's
    /// password far more often than a user name.
    #[test]
    fn bare_userinfo_is_redacted_whole() {
        assert_eq!(
            redact_url("redis://S3cretPW@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis-cluster://S3cretPW@127.0.0.1:7000?node=127.0.0.1:7001"),
            "redis-cluster://***@127.0.0.1:7000?node=127.0.0.1:7001"
        );
        assert_eq!(
            strip_userinfo_secret("redis://S3cretPW@h:1/0"),
            ("redis://h:1/0".to_owned(), true)
        );
        assert_eq!(
            strip_userinfo_secret("redis://app:pw@h:1/0"),
            ("redis://app@h:1/0".to_owned(), true)
        );
        assert_eq!(
            strip_userinfo_secret("redis://h:1/0"),
            ("redis://h:1/0".to_owned(), false)
        );
    }

    /// `check-config` prints every key the configuration takes, found from serde's own field
    /// lists, so a key added later cannot be left out: each as `key = ` or, for a secret or an
    /// unset key, as a `# key ` comment, in its table.
    #[test]
    fn effective_toml_names_every_key() {
        let keys = known_keys();
        assert!(keys.iter().any(|k| k == "redis.connections"), "{keys:?}");
        for text in [
            Settings::from_toml("").unwrap().effective_toml(),
            Settings::from_toml(
                "[redis]\nurl = \"redis://:pw@127.0.0.1:6379\"\npassword = \"pw\"\n\
                 [identity]\nhash_key = \"pepper\"\n",
            )
            .unwrap()
            .effective_toml(),
        ] {
            let table: toml::Table = text.parse().expect("check-config prints TOML");
            assert!(!text.contains("pw") && !text.contains("pepper"), "{text}");
            for key in keys.iter().filter(|k| !k.starts_with("limits")) {
                let (section, name) = key.split_once('.').map_or(("", key.as_str()), |s| s);
                let lines: Vec<&str> = if section.is_empty() {
                    text.lines().take_while(|l| !l.starts_with('[')).collect()
                } else {
                    let header = format!("[{section}]");
                    text.lines()
                        .skip_while(|l| *l != header)
                        .skip(1)
                        .take_while(|l| !l.starts_with('['))
                        .collect()
                };
                assert!(
                    lines.iter().any(|l| l.starts_with(&format!("{name} = "))
                        || l.starts_with(&format!("# {name} "))),
                    "{key} is not printed:\n{text}"
                );
            }
            assert!(table["redis"].get("connections").is_some(), "{text}");
        }
    }

    /// Kubernetes' service links are recognised, for a Service named `tollgate` or
    /// `tollgate-<more>`, only beside that Service's own host and port variables.
    #[test]
    fn service_links_are_recognised() {
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        let tollgate = set(&["TOLLGATE_SERVICE_HOST", "TOLLGATE_SERVICE_PORT"]);
        for name in [
            "TOLLGATE_SERVICE_HOST",
            "TOLLGATE_SERVICE_PORT",
            "TOLLGATE_SERVICE_PORT_HTTP",
            "TOLLGATE_PORT",
            "TOLLGATE_PORT_8000_TCP",
            "TOLLGATE_PORT_8000_TCP_PROTO",
            "TOLLGATE_PORT_8000_TCP_PORT",
            "TOLLGATE_PORT_8000_TCP_ADDR",
            "TOLLGATE_PORT_53_UDP_ADDR",
        ] {
            assert!(is_service_link(name, &tollgate), "{name}");
        }
        assert!(!is_service_link("TOLLGATE_PORT", &set(&[])));
        assert!(!is_service_link("TOLLGATE_LISTEN_PORT", &tollgate));
        assert!(!is_service_link("TOLLGATE_PORT_8000_HTTP", &tollgate));
        let redis = set(&["TOLLGATE_REDIS_SERVICE_HOST", "TOLLGATE_REDIS_SERVICE_PORT"]);
        assert!(is_service_link("TOLLGATE_REDIS_PORT_6379_TCP_ADDR", &redis));
    }

    /// A variable's key is read as figment reads it, and a typo's nearest key is suggested.
    #[test]
    fn stray_variables_are_read_like_figment_and_suggest_a_key() {
        assert_eq!(
            variable_key("TOLLGATE_REDIS__URLL").as_deref(),
            Some("redis.urll")
        );
        assert_eq!(variable_key("tollgate_listen").as_deref(), Some("listen"));
        assert_eq!(variable_key("TOLLGATE_REDIS____URL"), None);
        assert_eq!(variable_key("OTHER_LISTEN"), None);
        let known = known_keys();
        assert!(is_known(&known, "redis"));
        assert!(is_known(&known, "limits.0.name"));
        assert!(!is_known(&known, "port"));
        assert_eq!(nearest_key("redis.urll", &known), Some("redis.url"));
        assert_eq!(nearest_key("redis_url", &known), Some("redis.url"));
        assert_eq!(nearest_key("port_8000_tcp", &known), None);
    }

    /// A duration prints in the largest unit that keeps it exact.
    #[test]
    fn durations_print_exactly() {
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(2000)), "2s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    /// Figment's array paths render as `limits[0].limit`.
    #[test]
    fn paths_render_with_indices() {
        let path = ["limits", "0", "limit"].map(String::from);
        assert_eq!(render_path(&path), "limits[0].limit");
    }
}
