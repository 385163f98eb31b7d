//! The one place that names Redis keys.
//!
//! A caller's key for policy P is `<prefix>:{<tag>}:<P>`, with `:<hex>` appended when the policy
//! is keyed by more than one thing (`by = ["user", "route"]`). The tag is the lowercase hex
//! SHA-256 of what names the caller (its user name, or `\0ip:<address>`), or HMAC-SHA256 under
//! `identity.hash_key`, or `global` for one bucket for everyone. The braces make it a Redis
//! Cluster hash tag: every key of one caller hashes to the same slot, so one script call can
//! touch all of them. Hashing bounds the key length and keeps names out of Redis in clear.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::policy::PolicyName;

/// The prefix of every key unless configured otherwise (`redis.key_prefix`).
pub const DEFAULT_PREFIX: &str = "tollgate";

/// Builds the Redis keys of callers under one prefix.
#[derive(Clone)]
pub struct KeyBuilder {
    prefix: String,
    /// `identity.hash_key`: when set, names are hashed with HMAC-SHA256 under it. Kept keyed,
    /// so each name costs a copy of the keyed state rather than the key schedule again.
    hash_key: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for KeyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBuilder")
            .field("prefix", &self.prefix)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "***"))
            .finish()
    }
}

impl KeyBuilder {
    /// A builder for keys that start with `prefix` ([`DEFAULT_PREFIX`] by default).
    pub fn new(prefix: impl Into<String>) -> Self {
        KeyBuilder {
            prefix: prefix.into(),
            hash_key: None,
        }
    }

    /// Hashes names with HMAC-SHA256 under `key`, so a copy of Redis cannot be matched against
    /// a dictionary of user names.
    pub fn with_hash_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        let key: Vec<u8> = key.into();
        self.hash_key = Some(Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key"));
        self
    }

    /// The tag of a caller named `name` (raw bytes, so any header value is a name).
    pub fn tag(&self, name: &[u8]) -> CallerTag {
        match &self.hash_key {
            None => CallerTag::of(name),
            Some(keyed) => {
                let mut mac = keyed.clone();
                mac.update(name);
                CallerTag::hex(&mac.finalize().into_bytes())
            }
        }
    }

    /// The key of `caller` under `policy`.
    pub fn key(&self, caller: &CallerTag, policy: &PolicyName) -> String {
        let policy = policy.as_str();
        let mut key = String::with_capacity(self.prefix.len() + caller.len + policy.len() + 4 + 17);
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push_str(caller.as_str());
        key.push_str("}:");
        key.push_str(policy);
        key
    }

    /// The key the readiness probe writes and deletes at once: `<prefix>:{readyz}`, under the
    /// prefix so that a Redis user limited to it may write it, and never a caller's key, whose
    /// tags are 64 hex digits or `global`.
    pub fn readiness_key(&self) -> String {
        format!("{}:{{readyz}}", self.prefix)
    }

    /// The key of `caller` under `policy`, narrowed by `rest` (the other dimensions' values),
    /// which is hashed and appended outside the hash tag.
    pub fn key_within(&self, caller: &CallerTag, policy: &PolicyName, rest: &[u8]) -> String {
        let digest = self.tag(rest);
        let mut key = self.key(caller, policy);
        key.push(':');
        key.push_str(&digest.as_str()[..16]);
        key
    }
}

/// A caller's hash tag: a hex digest of its name, or `global`.
///
/// Held inline, not on the heap: it is made for every request, and only copied into the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallerTag {
    text: [u8; 64],
    len: usize,
}

impl CallerTag {
    /// The lowercase hex SHA-256 of `name`.
    pub fn of(name: &[u8]) -> Self {
        Self::hex(&Sha256::digest(name))
    }

    /// The tag shared by everyone, for policies keyed `by = "global"`.
    pub fn global() -> Self {
        let mut text = [0; 64];
        text[..6].copy_from_slice(b"global");
        CallerTag { text, len: 6 }
    }

    /// The tag of a 32-byte digest: its lowercase hex.
    fn hex(digest: &[u8]) -> Self {
        let mut text = [0; 64];
        let len = base16ct::lower::encode(digest, &mut text)
            .expect("a 32-byte digest fits 64 hex digits")
            .len();
        CallerTag { text, len }
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written: hex digits or "global".
        std::str::from_utf8(&self.text[..self.len]).expect("ASCII")
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
            keys.key(&keys.tag(b"joe"), &policy),
            "tollgate:{78675cc176081372c43abab3ea9fb70c74381eb02dc6e93fb6d44d161da6eeb3}:per_minute"
        );
    }

    /// With a hash key the tag is HMAC-SHA256, here RFC 4231 test case 2.
    #[test]
    fn hash_key_uses_hmac_sha256() {
        let keys = KeyBuilder::new("tollgate").with_hash_key("Jefe");
        assert_eq!(
            keys.tag(b"what do ya want for nothing?").as_str(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(!format!("{keys:?}").contains("Jefe"));
    }
}
