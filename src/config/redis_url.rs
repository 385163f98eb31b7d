//! Where Redis is: [`RedisSettings`], the documented URL forms translated into the one fred
//! reads, and the URL's redaction for logs and for `check-config`.

use std::fmt;

use super::raw::RawRedis;
use super::{ConfigError, Secret};

/// Where Redis is and how to log in to it.
#[derive(Clone)]
pub struct RedisSettings {
    /// The URL, which may itself hold a password, so it is kept secret.
    pub(super) url: Secret,
    /// `redis.password`, which overrides a password in the URL.
    pub(super) password: Option<Secret>,
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

impl RawRedis {
    pub(super) fn validate_connection(&self) -> Result<Option<RedisSettings>, ConfigError> {
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
pub(super) fn strip_userinfo_secret(url: &str) -> (String, bool) {
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
}
