//! Validation: the raw shapes become [`Settings`], whose types cannot hold a bad value, and each
//! mistake becomes a [`ConfigError`] that names its key.

use std::num::{NonZeroU64, NonZeroUsize};

use axum::http::{HeaderName, StatusCode};

use super::effective::format_duration;
use super::raw::{
    default_connections, RawBy, RawConfig, RawForwardAuth, RawIdentity, RawPolicy, RawServer,
    MAX_BATCH, MAX_CONNECTIONS,
};
use super::redis_url::strip_userinfo_secret;
use super::{ConfigError, Settings};
use crate::caller::address::{Cidr, Proxies};
use crate::caller::Identity;
use crate::http::{ForwardAuth, ServerSettings, SERVICE_PATHS};
use crate::limiter::breaker::DEFAULT_COOL_DOWN;
use crate::policy::{parse_duration, Algorithm, Policy, PolicyName, Window};
use crate::scope::{By, Dimension, RoutePattern, Scope};

impl RawConfig {
    pub(super) fn validate(self) -> Result<Settings, ConfigError> {
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
        // Always longer than the deadline, so that one probe ends before the next may start.
        let breaker_cool_down = match breaker_cool_down {
            Some(cool_down) if cool_down <= timeout => {
                return Err(ConfigError::new(
                    "redis.breaker_cool_down",
                    "must be longer than redis.timeout, so that one probe ends before the next",
                ))
            }
            Some(cool_down) => cool_down,
            None => DEFAULT_COOL_DOWN.max(timeout * 2),
        };
        let max_callers = NonZeroUsize::new(self.memory.max_callers)
            .ok_or_else(|| ConfigError::new("memory.max_callers", "must be at least 1"))?;
        let identity = self.identity.validate()?;
        if matches!(&self.identity.hash_key, Some(key) if key.expose().is_empty()) {
            return Err(ConfigError::new("identity.hash_key", "must not be empty"));
        }
        let hash_key = self.identity.hash_key.clone();
        let policies = validate_policies(&self.policies)?;
        let server = self.server.validate()?;
        let forward_auth = self.forward_auth.validate(&self.identity)?;
        let (rls, warnings) = self.rls.validate()?;
        let watch_interval = parse_duration(&self.reload.watch_interval)
            .map_err(|reason| ConfigError::new("reload.watch_interval", reason))?;
        let mut effective = self;
        effective.rls.fill_defaults();
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
        for policy in &mut effective.policies {
            if policy.algorithm == Algorithm::TokenBucket {
                policy.burst = Some(policy.burst.unwrap_or(policy.limit));
            }
        }
        Ok(Settings {
            listen,
            redis,
            key_prefix,
            on_error: effective.redis.on_error,
            timeout,
            breaker_failures: effective.redis.breaker_failures,
            breaker_cool_down,
            local_divisor: effective.redis.local_divisor,
            connections,
            max_batch: effective.redis.max_batch,
            max_callers,
            identity,
            on_missing: effective.identity.on_missing,
            hash_key,
            policies,
            log_format: effective.log.format,
            denial_cache: effective.denial_cache,
            headers: effective.headers,
            warnings,
            server,
            forward_auth,
            rls,
            effective,
            url_had_secret,
            file: None,
            // 0 turns the watch off: SIGHUP alone reloads.
            watch_interval: (!watch_interval.is_zero()).then_some(watch_interval),
        })
    }
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

impl RawForwardAuth {
    fn validate(&self, identity: &RawIdentity) -> Result<Option<ForwardAuth>, ConfigError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        // Braces and `*` would be route parameters to axum, which panics on some at startup.
        if !path.starts_with('/')
            || path.contains(['?', '#', '{', '}', '*'])
            || path.contains(char::is_whitespace)
        {
            return Err(ConfigError::new(
                "forward_auth.path",
                format!("{path:?} is not a path like \"/check\""),
            ));
        }
        if SERVICE_PATHS.contains(&path.as_str()) {
            return Err(ConfigError::new(
                "forward_auth.path",
                format!(
                    "{path:?} is one of the service's own routes: {}",
                    SERVICE_PATHS.join(", ")
                ),
            ));
        }
        let deny_status = StatusCode::from_u16(self.deny_status)
            .ok()
            .filter(StatusCode::is_client_error)
            .ok_or_else(|| {
                ConfigError::new(
                    "forward_auth.deny_status",
                    format!(
                        "{} is not a 4xx status: use 429, or 403 for nginx's auth_request",
                        self.deny_status
                    ),
                )
            })?;
        if identity.trusted_proxies.is_empty() && !self.trust_any_peer {
            return Err(ConfigError::new(
                "identity.trusted_proxies",
                "is empty, and forward_auth believes the method and path a request names only \
                 from trusted proxies: list your proxies, or set forward_auth.trust_any_peer = \
                 true",
            ));
        }
        Ok(Some(ForwardAuth {
            path: path.clone(),
            deny_status,
            trust_any_peer: self.trust_any_peer,
        }))
    }
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
                header: self.forwarded_header,
            },
            ipv6_prefix: self.ipv6_prefix,
        })
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

/// What every policy is made of, `[[policies]]` or `[[rls.policies]]`: a name not among
/// `earlier`, an algorithm, a limit, a window and a burst, each mistake named under `key`.
pub(crate) struct PolicyShape<'a> {
    pub(crate) name: &'a str,
    pub(crate) algorithm: Algorithm,
    pub(crate) limit: u64,
    pub(crate) window: &'a str,
    pub(crate) burst: Option<u64>,
}

impl PolicyShape<'_> {
    /// The policy, or the first mistake under `key(field)`.
    pub(crate) fn validate<'p>(
        &self,
        key: impl Fn(&str) -> String,
        earlier: impl IntoIterator<Item = &'p PolicyName>,
    ) -> Result<Policy, ConfigError> {
        let name = PolicyName::new(self.name).map_err(|r| ConfigError::new(key("name"), r))?;
        if earlier.into_iter().any(|earlier| *earlier == name) {
            return Err(ConfigError::new(
                key("name"),
                format!("duplicate policy name {:?}", self.name),
            ));
        }
        let limit = NonZeroU64::new(self.limit)
            .ok_or_else(|| ConfigError::new(key("limit"), "must be at least 1"))?;
        let window = Window::parse(self.window).map_err(|r| ConfigError::new(key("window"), r))?;
        let policy = Policy::new(name, self.algorithm, limit, window)
            .map_err(|r| ConfigError::new(key("limit"), r))?;
        match self.burst {
            None => Ok(policy),
            Some(burst) => {
                let burst = NonZeroU64::new(burst)
                    .ok_or_else(|| ConfigError::new(key("burst"), "must be at least 1"))?;
                policy
                    .with_burst(burst)
                    .map_err(|r| ConfigError::new(key("burst"), r))
            }
        }
    }
}

fn validate_policies(raw_policies: &[RawPolicy]) -> Result<Vec<Policy>, ConfigError> {
    let mut policies: Vec<Policy> = Vec::with_capacity(raw_policies.len());
    for (i, raw) in raw_policies.iter().enumerate() {
        let key = |field: &str| format!("policies[{i}].{field}");
        let shape = PolicyShape {
            name: &raw.name,
            algorithm: raw.algorithm,
            limit: raw.limit,
            window: &raw.window,
            burst: raw.burst,
        };
        let policy = shape.validate(key, policies.iter().map(Policy::name))?;
        let cost = NonZeroU64::new(raw.cost)
            .ok_or_else(|| ConfigError::new(key("cost"), "must be at least 1"))?;
        let policy = policy
            .with_cost(cost)
            .map_err(|r| ConfigError::new(key("cost"), r))?;
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(j, route)| {
                RoutePattern::parse(route)
                    .map_err(|r| ConfigError::new(format!("policies[{i}].routes[{j}]"), r))
            })
            .collect::<Result<_, _>>()?;
        let names = match &raw.by {
            RawBy::One(name) => std::slice::from_ref(name),
            RawBy::Many(names) => names.as_slice(),
        };
        let dimensions = names
            .iter()
            .map(|name| Dimension::parse(name).map_err(|r| ConfigError::new(key("by"), r)))
            .collect::<Result<_, _>>()?;
        let by = By::new(dimensions).map_err(|r| ConfigError::new(key("by"), r))?;
        let costs = raw
            .costs
            .iter()
            .map(|(route, &cost)| {
                let key = format!("policies[{i}].costs.{route:?}");
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
        let when = raw
            .when
            .iter()
            .map(|(name, value)| {
                let key = format!("policies[{i}].when.{name:?}");
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ConfigError::new(&key, "is not a valid HTTP header name"))?;
                // A host is compared bare: without a port, a final dot or its case.
                let value = if header == axum::http::header::HOST {
                    crate::scope::bare_host(value).to_ascii_lowercase()
                } else {
                    value.clone()
                };
                Ok((header, value))
            })
            .collect::<Result<_, _>>()?;
        policies.push(
            policy
                .with_scope(Scope {
                    routes,
                    by,
                    costs,
                    when,
                })
                .with_shadow(raw.shadow),
        );
    }
    Ok(policies)
}
