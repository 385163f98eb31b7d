//! Each rule's name, as metrics and keys show it: the rate_limit's `name` when it has one,
//! else its path in the tree, `key_value.key` as ratelimit's statistics name it.
//!
//! A name is a [`PolicyName`]; text it cannot hold (a `/`, a `*`, more than 64 characters)
//! is kept readable, its other characters turned to `_` and 8 hex digits of its SHA-256
//! appended, so that the name stays stable and two paths rarely share one.

use sha2::{Digest, Sha256};

use crate::policy::PolicyName;

/// The longest a name is before its hash is appended: 55 + `-` + 8 hex digits = 64.
const READABLE: usize = 55;

/// The segment of the path that a descriptor adds: `key`, or `key_value`.
pub(crate) fn segment(key: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{key}_{value}"),
        None => key.to_owned(),
    }
}

/// The path of a descriptor below `parent` (empty at the top of a domain).
pub(crate) fn child_path(parent: &str, segment: &str) -> String {
    if parent.is_empty() {
        segment.to_owned()
    } else {
        format!("{parent}.{segment}")
    }
}

/// `text` as a name: itself when it is a valid one, else readable and hashed.
pub(crate) fn name_of(text: &str) -> PolicyName {
    if let Ok(name) = PolicyName::new(text) {
        return name;
    }
    let mut readable: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(READABLE)
        .collect();
    let digest = Sha256::digest(text.as_bytes());
    readable.push('-');
    readable.push_str(&base16ct::lower::encode_string(&digest[..4]));
    PolicyName::new(&readable).expect("only allowed characters, at most 64")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path that is a valid name is the name; another is made one, stably and distinctly.
    #[test]
    fn paths_become_stable_names() {
        assert_eq!(name_of("database_users").as_str(), "database_users");
        assert_eq!(
            name_of("remote_address_50.0.0.5").as_str(),
            "remote_address_50.0.0.5"
        );
        let path = name_of("path_/api/*/action");
        assert_eq!(
            path.as_str(),
            "path__api___action-34e42bbf",
            "as docs/envoy.md shows"
        );
        assert_eq!(path, name_of("path_/api/*/action"), "stable");
        assert_ne!(path, name_of("path_/api/?/action"), "distinct");
        let long = name_of(&"a".repeat(100));
        assert_eq!(long.as_str().len(), 64);
        assert_eq!(name_of("my limit").as_str().len(), "my_limit-".len() + 8);
    }

    /// A path joins `key` and `key_value` segments with dots.
    #[test]
    fn paths_join_segments() {
        let top = segment("message_type", Some("marketing"));
        assert_eq!(
            child_path(&top, &segment("to_number", None)),
            "message_type_marketing.to_number"
        );
        assert_eq!(child_path("", "key"), "key");
    }
}
