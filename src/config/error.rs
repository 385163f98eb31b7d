//! [`ConfigError`], and figment's errors rendered as one line that names the key and never
//! shows a secret.

/// A configuration mistake: which key, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The key, dotted (`redis.timeout`, `policies[0].limit`), or the file that could not be read.
    pub key: String,
    /// What is wrong, in a sentence fragment.
    pub reason: String,
}

impl ConfigError {
    /// A mistake at `key`; a reason spread over several lines is joined into one, and control
    /// characters in a key (an unknown key may be named anything) are escaped.
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
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
/// Turns figment's error into one line that names the key, and never shows a secret.
pub(super) fn from_figment_error(error: figment::Error) -> ConfigError {
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
        // serde names a configuration enum's variants by their configuration names.
        Kind::UnknownVariant(actual, expected) => {
            let expected: Vec<String> = expected.iter().map(|name| format!("{name:?}")).collect();
            format!("{actual:?} is not one of {}", expected.join(", "))
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

/// `["policies", "0", "limit"]` becomes `policies[0].limit`.
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

    /// Figment's array paths render as `policies[0].limit`.
    #[test]
    fn paths_render_with_indices() {
        let path = ["policies", "0", "limit"].map(String::from);
        assert_eq!(render_path(&path), "policies[0].limit");
    }
}
