//! [`Bucket`]: the counter a matched descriptor counts in, named by its domain and entries.

use std::fmt;

/// Who shares a counter: a domain and a descriptor's entries, as ratelimit's cache key names
/// them (its `domain_key_value_…` without the window start).
///
/// Two descriptors with the same entries in the same domain share a bucket, whichever rule
/// matched them; under `share_threshold`, the wildcard stands for every value it matches.
/// The bytes are `\0rls`, then the domain, each key and each value as `<length>:<bytes>`, so
/// different entries never give the same bytes, and no HTTP caller's name (a header value,
/// which cannot hold a NUL, or `\0ip:…`) does either. [`KeyBuilder::tag`] hashes them.
///
/// [`KeyBuilder::tag`]: crate::KeyBuilder::tag
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bucket(Vec<u8>);

/// What every bucket's bytes start with.
const MAGIC: &[u8] = b"\0rls";

impl Bucket {
    /// The bucket of `entries` in `domain`.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(domain: &str, entries: &[(K, V)]) -> Self {
        Bucket::from_parts(
            domain,
            entries.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
        )
    }

    /// The bucket of the `(key, value)` pairs in `domain`.
    pub(crate) fn from_parts<'a>(
        domain: &str,
        entries: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Self {
        let size = entries
            .clone()
            .map(|(k, v)| k.len() + v.len() + 24)
            .sum::<usize>();
        let mut bytes = Vec::with_capacity(MAGIC.len() + domain.len() + 12 + size);
        bytes.extend_from_slice(MAGIC);
        push_field(&mut bytes, domain);
        for (key, value) in entries {
            push_field(&mut bytes, key);
            push_field(&mut bytes, value);
        }
        Bucket(bytes)
    }

    /// The bytes that name the bucket, for [`KeyBuilder::tag`](crate::KeyBuilder::tag).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The domain.
    pub fn domain(&self) -> &str {
        self.fields().next().unwrap_or_default()
    }

    /// The entries, each `(key, value)`; a shared wildcard's value is its pattern.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut fields = self.fields().skip(1);
        std::iter::from_fn(move || Some((fields.next()?, fields.next()?)))
    }

    /// The fields the bytes hold, in order: the domain, then each key and value.
    fn fields(&self) -> impl Iterator<Item = &str> {
        let mut rest = &self.0[MAGIC.len()..];
        std::iter::from_fn(move || {
            let colon = rest.iter().position(|&b| b == b':')?;
            let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
            let field = rest.get(colon + 1..colon + 1 + len)?;
            rest = &rest[colon + 1 + len..];
            // Built from `&str`s only, so every field is UTF-8.
            std::str::from_utf8(field).ok()
        })
    }
}

/// Appends `<length>:<bytes>`, the length in decimal, without allocating for its digits.
fn push_field(bytes: &mut Vec<u8>, field: &str) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut len = field.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (len % 10) as u8;
        len /= 10;
        if len == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&digits[at..]);
    bytes.push(b':');
    bytes.extend_from_slice(field.as_bytes());
}

impl fmt::Display for Bucket {
    /// `messaging: message_type="marketing", to_number="2061111111"`, values quoted and
    /// escaped, so a value cannot forge a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.domain().escape_debug())?;
        for (i, (key, value)) in self.entries().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{}={value:?}", key.escape_debug())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bucket({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes read back as the domain and entries they were built from.
    #[test]
    fn fields_read_back() {
        let bucket = Bucket::new("api", &[("user", "a:b"), ("path", "")]);
        assert_eq!(bucket.domain(), "api");
        let entries: Vec<_> = bucket.entries().collect();
        assert_eq!(entries, [("user", "a:b"), ("path", "")]);
        assert_eq!(bucket.to_string(), r#"api: user="a:b", path="""#);
        assert_eq!(bucket.as_bytes(), b"\0rls3:api4:user3:a:b4:path0:");
        let long = "x".repeat(1234);
        let bucket = Bucket::new("d", &[("k", long.as_str())]);
        assert!(bucket.as_bytes().starts_with(b"\0rls1:d1:k1234:x"));
        assert_eq!(bucket.entries().collect::<Vec<_>>(), [("k", long.as_str())]);
    }

    /// Entries that ratelimit's `_`-joined cache key would confuse are different buckets.
    #[test]
    fn joined_keys_do_not_collide() {
        let a = Bucket::new("d", &[("a_b", "c")]);
        let b = Bucket::new("d", &[("a", "b_c")]);
        let c = Bucket::new("d_a", &[("b", "c")]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }
}
