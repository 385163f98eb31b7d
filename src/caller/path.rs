//! A path a proxy forwards, brought to the one spelling policies match, so that `//export`,
//! `/a/../export` or `/%65xport` cannot dodge a policy on `/export`.
//!
//! Behind a proxy, tollgate sees the path as the client wrote it (nginx's `$request_uri`,
//! Traefik's and Caddy's `X-Forwarded-Uri`), while the service behind it routes a decoded,
//! cleaned path: Starlette, Go's `net/http` and nginx's own `$uri` all decode escapes and merge
//! or resolve segments. tollgate matches the cleaned path, so it errs towards limiting: two
//! spellings the service might treat alike are always treated alike here.

use std::borrow::Cow;

/// The path as policies match it: escapes decoded (where the result is UTF-8), repeated slashes
/// merged, `.` and `..` segments resolved (never above the root), and a leading `/`; an
/// absolute-form target (`http://host/path`) keeps only its path. The path is borrowed when
/// it is already clean, as almost every path is.
pub fn normalize(path: &str) -> Cow<'_, str> {
    let path = without_authority(path);
    if is_clean(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode(path);
    Cow::Owned(resolve(&decoded))
}

/// The path of an absolute-form target, which a client may send and nginx passes on as is.
fn without_authority(target: &str) -> &str {
    let Some((scheme, rest)) = target.split_once("://") else {
        return target;
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+')
    {
        return target;
    }
    rest.find('/').map_or("/", |at| &rest[at..])
}

/// Whether the path needs no work: it starts with `/`, has no escape, no empty segment and no
/// dot segment.
fn is_clean(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.first() == Some(&b'/')
        && !bytes.contains(&b'%')
        && !bytes.windows(2).any(|pair| pair == b"//")
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// The path with its `%XX` escapes decoded, or as it is where decoding would not give UTF-8
/// (the service could not have read such a path as text either).
fn decode(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_or(Cow::Borrowed(path), Cow::Owned)
}

/// The path with empty, `.` and `..` segments resolved, as RFC 3986 removes dot segments and
/// as servers merge slashes; a final `/` (or a final dot segment) leaves a final `/`.
fn resolve(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/') {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling a service would route as `/api/export` is matched as `/api/export`.
    #[test]
    fn spellings_of_one_path_meet() {
        for spelling in [
            "/api/export",
            "//api//export",
            "/api/./export",
            "/api/x/../export",
            "/../api/export",
            "/%61pi/%65xport",
            "/api%2Fexport",
            "/api/%2E/export",
            "/api/x/%2e%2E/export",
            "api/export",
            "http://example.com/api/export",
            "https://example.com:8443//api/export",
        ] {
            assert_eq!(normalize(spelling), "/api/export", "{spelling}");
        }
    }

    /// A final slash stays, so that a prefix pattern still sees a path below its prefix; clean
    /// paths are borrowed.
    #[test]
    fn final_slashes_stay_and_clean_paths_are_borrowed() {
        assert_eq!(normalize("/api/"), "/api/");
        assert_eq!(normalize("/api//"), "/api/");
        assert_eq!(normalize("/api/."), "/api/");
        assert_eq!(normalize("/api/x/.."), "/api/");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("http://example.com"), "/");
        assert!(matches!(normalize("/api/items/1"), Cow::Borrowed(_)));
        assert!(matches!(normalize("/a.b/..c/.d"), Cow::Borrowed(_)));
    }

    /// Escapes that do not make UTF-8, or are not escapes at all, are left as they are.
    #[test]
    fn undecodable_escapes_stay() {
        assert_eq!(normalize("/caf%C3%A9"), "/café");
        assert_eq!(normalize("/%FF/x"), "/%FF/x");
        assert_eq!(normalize("/100%"), "/100%");
        assert_eq!(normalize("/%zz//x"), "/%zz/x");
    }
}
