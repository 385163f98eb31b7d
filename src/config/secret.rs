//! Secrets: [`Secret`], which never prints its value, the variables read verbatim because
//! they may hold one, and `.env`.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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
/// The variable that holds the Redis password, read as it is written.
const PASSWORD_VAR: &str = "TOLLGATE_REDIS__PASSWORD";

/// The secrets that variables may carry, read verbatim: (variable, configuration key).
pub(super) const SECRET_VARS: [(&str, &str); 2] = [
    (PASSWORD_VAR, "redis.password"),
    ("TOLLGATE_IDENTITY__HASH_KEY", "identity.hash_key"),
];
/// The variable `var`, matched without regard to case, as figment matches the others.
pub(super) fn var_verbatim(var: &str) -> Option<String> {
    std::env::vars_os().find_map(|(name, value)| {
        name.to_str()
            .filter(|name| name.eq_ignore_ascii_case(var))
            .map(|_| value.to_string_lossy().into_owned())
    })
}

/// Reads `.env` into the environment, without overriding variables already set.
///
/// A line that cannot be parsed is reported by number only: it may hold the password.
pub(super) fn load_dotenv(path: &Path) -> Result<(), ConfigError> {
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
