//! The one place that names Redis keys.
//!
//! A caller's key for policy P is `<prefix>:{<lowercase hex sha256 of the caller>}:<P>`. The
//! braces are a Redis Cluster hash tag: every key of one caller hashes to the same slot, so one
//! script call can touch all of them. The caller's name is hashed so that keys have a bounded
//! length and a copy of Redis does not list user names in clear.

use sha2::{Digest, Sha256};

use crate::quota::PolicyName;

/// Builds the Redis keys of callers under one prefix.
#[derive(Clone, Debug)]
pub struct KeyBuilder {
    prefix: String,
}

impl KeyBuilder {
    /// A builder for keys that start with `prefix` (`tollgate` by default).
    pub fn new(prefix: impl Into<String>) -> Self {
        KeyBuilder {
            prefix: prefix.into(),
        }
    }

    /// The key of `caller` under `policy`.
    pub fn key(&self, caller: &CallerTag, policy: &PolicyName) -> String {
        format!("{}:{{{}}}:{}", self.prefix, caller.0, policy)
    }
}

/// A caller's hash tag: the lowercase hex SHA-256 of the caller's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallerTag(String);

impl CallerTag {
    /// Hashes the caller's name, as raw bytes so that any header value can be a name.
    pub fn of(caller: &[u8]) -> Self {
        CallerTag(base16ct::lower::encode_string(&Sha256::digest(caller)))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys follow the documented scheme; the digest is `printf joe | sha256sum`.
    #[test]
    fn key_scheme_is_prefix_hash_tag_policy() {
        let keys = KeyBuilder::new("tollgate");
        let policy = PolicyName::new("per_minute").unwrap();
        assert_eq!(
            keys.key(&CallerTag::of(b"joe"), &policy),
            "tollgate:{78675cc176081372c43abab3ea9fb70c74381eb02dc6e93fb6d44d161da6eeb3}:per_minute"
        );
    }
}
