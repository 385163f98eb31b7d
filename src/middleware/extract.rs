//! Who the caller is.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The value of the identity header that names the caller, if any.
///
/// An empty value names nobody, exactly like an absent header: both pass unlimited and create no
/// key. With repeated headers, the first one counts. Any bytes are a name: the key hashes them.
pub fn caller<'a>(headers: &'a HeaderMap, identity: &HeaderName) -> Option<&'a HeaderValue> {
    headers.get(identity).filter(|value| !value.is_empty())
}
