//! `TOLLGATE_*` variables that set no configuration key: found, so that layering leaves them
//! out and loading warns about them, except for Kubernetes' service links.

use std::collections::HashSet;

use figment::providers::Serialized;
use figment::Figment;

use super::raw::RawConfig;

/// The prefix of every variable tollgate reads.
pub(super) const PREFIX: &str = "TOLLGATE_";

/// A `TOLLGATE_*` variable that sets no configuration key.
pub(super) struct StrayVariable {
    /// The variable's name, as set.
    name: String,
    /// The key it would set, as figment reads it (`TOLLGATE_REDIS__URLL` would set `redis.urll`).
    pub(super) key: String,
    /// Whether Kubernetes set it, for a Service whose name begins with `tollgate`.
    pub(super) service_link: bool,
}

impl StrayVariable {
    /// The warning that names the variable, and the key it may have meant; never its value.
    pub(super) fn warning(&self) -> String {
        let name = escape_control(&self.name);
        let key = escape_control(&self.key);
        let mut warning =
            format!("{name} is ignored: it would set {key}, which is not a configuration key");
        if let Some(near) = nearest_key(&self.key, &known_keys()) {
            let var = format!("{PREFIX}{}", near.to_ascii_uppercase().replace('.', "__"));
            warning.push_str(&format!("; did you mean {var} ({near})?"));
        }
        warning
    }
}

/// `text` with control characters escaped, so a strange variable name cannot forge log lines.
fn escape_control(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.escape_default().to_string()
    } else {
        text.to_owned()
    }
}

/// The `TOLLGATE_*` variables that name no configuration key.
pub(super) fn stray_variables() -> Vec<StrayVariable> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.to_str().map(|name| name.trim().to_owned()))
        .collect();
    let set: HashSet<String> = names.iter().map(|name| name.to_ascii_uppercase()).collect();
    let known = known_keys();
    names
        .into_iter()
        .filter_map(|name| {
            let key = variable_key(&name)?;
            if is_known(&known, &key) {
                return None;
            }
            let service_link = is_service_link(&name, &set);
            Some(StrayVariable {
                name,
                key,
                service_link,
            })
        })
        .collect()
}

/// The key `Env::prefixed("TOLLGATE_").split("__")` reads the variable `name` as, lowercased;
/// `None` for a variable it does not read.
fn variable_key(name: &str) -> Option<String> {
    let prefix = name.get(..PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let key = name[PREFIX.len()..]
        .replace("__", ".")
        .trim()
        .to_ascii_lowercase();
    (!key.split('.').any(str::is_empty)).then_some(key)
}

/// Whether `key` is read by the configuration: a key, a table, something inside a key (an
/// array's element, left for validation to judge), or the file's name.
fn is_known(known: &[String], key: &str) -> bool {
    key == "config"
        || known.iter().any(|k| {
            k == key
                || key
                    .strip_prefix(k.as_str())
                    .is_some_and(|r| r.starts_with('.'))
                || k.strip_prefix(key).is_some_and(|r| r.starts_with('.'))
        })
}

/// Whether Kubernetes injected the variable `name` as a service link, as its kubelet does for
/// every Service of the namespace: `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT`,
/// `<SVC>_SERVICE_PORT_<PORT NAME>`, `<SVC>_PORT` and `<SVC>_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]`.
///
/// Only when that Service's `<SVC>_SERVICE_HOST` and `<SVC>_SERVICE_PORT` are both set, which
/// Kubernetes always does, so that a lone `TOLLGATE_LISTEN_PORT` is still warned about.
fn is_service_link(name: &str, set: &HashSet<String>) -> bool {
    let name = name.to_ascii_uppercase();
    name.match_indices('_')
        .filter(|&(at, _)| at + 1 >= PREFIX.len())
        .any(|(at, _)| {
            let (service, tail) = (&name[..at], &name[at + 1..]);
            is_link_tail(tail)
                && set.contains(&format!("{service}_SERVICE_HOST"))
                && set.contains(&format!("{service}_SERVICE_PORT"))
        })
}

/// Whether `tail` is what a service link adds after the Service's name.
fn is_link_tail(tail: &str) -> bool {
    if matches!(tail, "SERVICE_HOST" | "SERVICE_PORT" | "PORT") {
        return true;
    }
    if let Some(port_name) = tail.strip_prefix("SERVICE_PORT_") {
        return port_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    }
    let Some((number, rest)) = tail.strip_prefix("PORT_").and_then(|r| r.split_once('_')) else {
        return false;
    };
    let (protocol, field) = rest.split_once('_').unwrap_or((rest, ""));
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(protocol, "TCP" | "UDP" | "SCTP")
        && matches!(field, "" | "PROTO" | "PORT" | "ADDR")
}

/// Every configuration key, dotted (`redis.url`), from serde's own lists of fields, so that a
/// key added to the raw configuration is known here without being listed again.
pub(super) fn known_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for &top in fields_of(None).unwrap_or_default() {
        match fields_of(Some(top)) {
            Some(fields) => keys.extend(fields.iter().map(|field| format!("{top}.{field}"))),
            None => keys.push(top.to_owned()),
        }
    }
    keys
}

/// The fields of `table` (of the root for `None`), read from the error serde gives when an
/// unknown key is added to it; `None` when `table` is not a table.
fn fields_of(table: Option<&str>) -> Option<&'static [&'static str]> {
    const PROBE: &str = "tollgate-probe";
    let key = table.map_or_else(|| PROBE.to_owned(), |table| format!("{table}.{PROBE}"));
    let error = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Serialized::default(&key, 0))
        .extract::<RawConfig>()
        .err()?;
    error.into_iter().find_map(|error| match error.kind {
        figment::error::Kind::UnknownField(field, fields) if field == PROBE => Some(fields),
        _ => None,
    })
}

/// The key in `known` nearest `key`, when it is near enough to be what a typo meant.
fn nearest_key<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(distance, k)| *distance <= (k.len() / 5).clamp(1, 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.as_str())
}

/// The Levenshtein distance between `a` and `b`, in bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(x != y);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kubernetes' service links are recognised, for a Service named `tollgate` or
    /// `tollgate-<more>`, only beside that Service's own host and port variables.
    #[test]
    fn service_links_are_recognised() {
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        let tollgate = set(&["TOLLGATE_SERVICE_HOST", "TOLLGATE_SERVICE_PORT"]);
        for name in [
            "TOLLGATE_SERVICE_HOST",
            "TOLLGATE_SERVICE_PORT",
            "TOLLGATE_SERVICE_PORT_HTTP",
            "TOLLGATE_PORT",
            "TOLLGATE_PORT_8000_TCP",
            "TOLLGATE_PORT_8000_TCP_PROTO",
            "TOLLGATE_PORT_8000_TCP_PORT",
            "TOLLGATE_PORT_8000_TCP_ADDR",
            "TOLLGATE_PORT_53_UDP_ADDR",
        ] {
            assert!(is_service_link(name, &tollgate), "{name}");
        }
        assert!(!is_service_link("TOLLGATE_PORT", &set(&[])));
        assert!(!is_service_link("TOLLGATE_LISTEN_PORT", &tollgate));
        assert!(!is_service_link("TOLLGATE_PORT_8000_HTTP", &tollgate));
        let redis = set(&["TOLLGATE_REDIS_SERVICE_HOST", "TOLLGATE_REDIS_SERVICE_PORT"]);
        assert!(is_service_link("TOLLGATE_REDIS_PORT_6379_TCP_ADDR", &redis));
    }

    /// A variable's key is read as figment reads it, and a typo's nearest key is suggested.
    #[test]
    pub(super) fn stray_variables_are_read_like_figment_and_suggest_a_key() {
        assert_eq!(
            variable_key("TOLLGATE_REDIS__URLL").as_deref(),
            Some("redis.urll")
        );
        assert_eq!(variable_key("tollgate_listen").as_deref(), Some("listen"));
        assert_eq!(variable_key("TOLLGATE_REDIS____URL"), None);
        assert_eq!(variable_key("OTHER_LISTEN"), None);
        let known = known_keys();
        assert!(is_known(&known, "redis"));
        assert!(is_known(&known, "policies.0.name"));
        assert!(!is_known(&known, "port"));
        assert_eq!(nearest_key("redis.urll", &known), Some("redis.url"));
        assert_eq!(nearest_key("redis_url", &known), Some("redis.url"));
        assert_eq!(nearest_key("port_8000_tcp", &known), None);
    }
}
