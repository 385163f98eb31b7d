//! One YAML file walked by hand into a domain's tree: each key checked against those its
//! place takes, each value read as ratelimit's YAML library reads it, each mistake a
//! [`LoadError`] with its path.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use serde_yaml::{Mapping, Value};

use super::descriptors::{Domains, Level, Limits, Node, Rule};
use super::names::{child_path, name_of, segment};
use super::{LoadError, Unit};
use crate::policy::{Algorithm, Policy};

/// The keys each place takes, as ratelimit's `validKeys` lists them all.
const ROOT_KEYS: &[&str] = &["domain", "descriptors"];
const DESCRIPTOR_KEYS: &[&str] = &[
    "key",
    "value",
    "rate_limit",
    "descriptors",
    "shadow_mode",
    "quota_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "metadata",
];
const RATE_LIMIT_KEYS: &[&str] = &["unit", "requests_per_unit", "unlimited", "name", "replaces"];
const REPLACES_KEYS: &[&str] = &["name"];

/// One file being read.
pub(super) struct Walk<'a> {
    file: &'a str,
    /// Each ignored key: where it was first seen, and how many times, over every file.
    ignored: &'a mut BTreeMap<&'static str, (String, usize)>,
}

/// `parent.key`, or `key` at the top.
fn field(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'a> Walk<'a> {
    /// A walk of the file named `file`, counting ignored keys in `ignored`.
    pub(super) fn new(
        file: &'a str,
        ignored: &'a mut BTreeMap<&'static str, (String, usize)>,
    ) -> Self {
        Walk { file, ignored }
    }

    /// Adds the file's domain, read from `value`, to `domains`.
    pub(super) fn file(
        &mut self,
        value: &Value,
        domains: &mut Domains,
        merge: bool,
    ) -> Result<(), LoadError> {
        let root = self.mapping(value, "", ROOT_KEYS)?;
        let domain = self.text(root.get("domain"), "domain")?.unwrap_or_default();
        if domain.is_empty() {
            return Err(self.error("domain", "is missing: each file names its domain"));
        }
        let level = domains.domain(&domain, self.file, merge).map_err(|first| {
            self.error(
                "domain",
                format!(
                    "duplicate domain {domain:?}: {first} declares it too (rls.merge_domains \
                     = true merges them)"
                ),
            )
        })?;
        self.descriptors(root.get("descriptors"), "descriptors", level, "")
    }

    /// A mistake at `path` in this file.
    fn error(&self, path: &str, reason: impl Into<String>) -> LoadError {
        LoadError {
            file: self.file.to_owned(),
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// The descriptors at `path`, added to `level`; `parent` is the path of names above.
    fn descriptors(
        &mut self,
        value: Option<&Value>,
        path: &str,
        level: &mut Level,
        parent: &str,
    ) -> Result<(), LoadError> {
        let items = match value {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                let found = kind(other);
                return Err(self.error(
                    path,
                    format!("expected a list of descriptors, found {found}"),
                ));
            }
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let map = self.mapping(item, &at, DESCRIPTOR_KEYS)?;
            let key = self.text(map.get("key"), &field(&at, "key"))?;
            let key = key.filter(|key| !key.is_empty()).ok_or_else(|| {
                self.error(&at, "descriptor has empty key: every descriptor has a key")
            })?;
            if key.contains('*') {
                return Err(self.error(
                    &field(&at, "key"),
                    format!("{key:?}: only a value may hold a '*' wildcard, not a key"),
                ));
            }
            let value = self.text(map.get("value"), &field(&at, "value"))?;
            let value = value.filter(|value| !value.is_empty());
            let (shadow, shared) = self.flags(map, &at, value.as_deref())?;
            let segment = segment(&key, value.as_deref());
            let name_path = child_path(parent, &segment);
            let rule = self.rate_limit(map.get("rate_limit"), &at, &name_path, shadow)?;
            let source = format!("{}: {at}", self.file);
            let node = Node::new(rule, shared, source);
            let node = level.insert(&key, value.as_deref(), node).map_err(|first| {
                self.error(
                    &at,
                    format!("duplicate descriptor {segment:?} at this level: {first} declares it too"),
                )
            })?;
            self.descriptors(
                map.get("descriptors"),
                &field(&at, "descriptors"),
                &mut node.children,
                &name_path,
            )?;
        }
        Ok(())
    }

    /// A descriptor's flags: whether it is in shadow mode, and under `share_threshold` the
    /// wildcard `value` that stands for its values; the flags it ignores are counted, and
    /// `quota_mode` is refused.
    fn flags(
        &mut self,
        map: &Mapping,
        at: &str,
        value: Option<&str>,
    ) -> Result<(bool, Option<String>), LoadError> {
        let shadow = self.boolean(map.get("shadow_mode"), &field(at, "shadow_mode"))?;
        if self.boolean(map.get("quota_mode"), &field(at, "quota_mode"))? {
            return Err(self.error(
                &field(at, "quota_mode"),
                "is not supported: a quota descriptor over its limit would deny the request \
                 here, where ratelimit lets it through",
            ));
        }
        for key in ["detailed_metric", "value_to_metric"] {
            if self.boolean(map.get(key), &field(at, key))? {
                self.ignore(key, &field(at, key));
            }
        }
        match map.get("metadata") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) if m.is_empty() => {}
            Some(Value::Mapping(_)) => self.ignore("metadata", &field(at, "metadata")),
            Some(other) => {
                let found = kind(other);
                return Err(self.error(
                    &field(at, "metadata"),
                    format!("expected a mapping, found {found}"),
                ));
            }
        }
        let share = self.boolean(map.get("share_threshold"), &field(at, "share_threshold"))?;
        match value {
            _ if !share => Ok((shadow, None)),
            Some(value) if value.contains('*') => Ok((shadow, Some(value.to_owned()))),
            _ => Err(self.error(
                &field(at, "share_threshold"),
                "can only be used with wildcard values (containing '*')",
            )),
        }
    }

    /// The rule of the descriptor at `at`, if it has a `rate_limit`.
    fn rate_limit(
        &self,
        value: Option<&Value>,
        at: &str,
        name_path: &str,
        shadow: bool,
    ) -> Result<Option<Rule>, LoadError> {
        let path = field(at, "rate_limit");
        let map = match value {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => self.mapping(value, &path, RATE_LIMIT_KEYS)?,
        };
        let unlimited = self.boolean(map.get("unlimited"), &field(&path, "unlimited"))?;
        let unit_path = field(&path, "unit");
        let unit = self
            .text(map.get("unit"), &unit_path)?
            .filter(|u| !u.is_empty());
        let per_unit = self.uint32(
            map.get("requests_per_unit"),
            &field(&path, "requests_per_unit"),
        )?;
        let limit_name = self.text(map.get("name"), &field(&path, "name"))?;
        let limit_name = limit_name.filter(|name| !name.is_empty());
        let replaces =
            self.replaces(map.get("replaces"), &field(&path, "replaces"), &limit_name)?;
        let name = name_of(limit_name.as_deref().unwrap_or(name_path));
        let limits = if unlimited {
            if unit.is_some() {
                return Err(self.error(
                    &unit_path,
                    "should not specify rate limit unit when unlimited",
                ));
            }
            Limits::Unlimited
        } else {
            let unit = unit.as_deref().unwrap_or_default();
            let unit = Unit::parse(unit).ok_or_else(|| {
                self.error(
                    &unit_path,
                    format!(
                        "invalid rate limit unit {unit:?}; use second, minute, hour, day, week, \
                         month or year"
                    ),
                )
            })?;
            let per_unit = per_unit.ok_or_else(|| {
                self.error(
                    &path,
                    "requests_per_unit is missing (ratelimit would read 0 and refuse every \
                     request: write 0 if that is meant)",
                )
            })?;
            match NonZeroU64::new(per_unit.into()) {
                None => Limits::Block { unit, shadow },
                Some(per_unit) => {
                    let policy = Policy::new(
                        name.clone(),
                        Algorithm::FixedWindow,
                        per_unit,
                        unit.window(),
                    )
                    .expect("a u32 per unit of at most a year is a valid fixed window");
                    Limits::Count(vec![Arc::new(policy.with_shadow(shadow))])
                }
            }
        };
        let source = format!("{}: {path}", self.file);
        Ok(Some(
            Rule::new(name, limits, source).with_replaces(limit_name, replaces),
        ))
    }

    /// The names a rate_limit's `replaces` lists: none empty, none its own `name`.
    fn replaces(
        &self,
        value: Option<&Value>,
        path: &str,
        own: &Option<String>,
    ) -> Result<Vec<String>, LoadError> {
        let items = match value {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                let found = kind(other);
                return Err(self.error(
                    path,
                    format!("expected a list of {{name: …}}, found {found}"),
                ));
            }
        };
        let mut names = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let map = self.mapping(item, &at, REPLACES_KEYS)?;
            let name = self.text(map.get("name"), &field(&at, "name"))?;
            let Some(name) = name.filter(|name| !name.is_empty()) else {
                return Err(self.error(
                    &field(&at, "name"),
                    "should not be empty: it names the rate_limit replaced",
                ));
            };
            if own.as_ref() == Some(&name) {
                return Err(self.error(
                    &field(&at, "name"),
                    format!("{name:?} is this rate_limit's own name: a rule cannot replace itself"),
                ));
            }
            names.push(name);
        }
        Ok(names)
    }

    /// Counts an ignored key, remembering where it was first seen.
    fn ignore(&mut self, key: &'static str, path: &str) {
        let file = self.file;
        self.ignored
            .entry(key)
            .or_insert_with(|| (format!("{file}: {path}"), 0))
            .1 += 1;
    }

    /// The mapping at `path`, whose keys must be among `allowed`; null is an empty mapping.
    fn mapping<'v>(
        &self,
        value: &'v Value,
        path: &str,
        allowed: &[&str],
    ) -> Result<&'v Mapping, LoadError> {
        static EMPTY: std::sync::OnceLock<Mapping> = std::sync::OnceLock::new();
        let map = match value {
            Value::Mapping(map) => map,
            Value::Null => EMPTY.get_or_init(Mapping::new),
            other => {
                let found = kind(other);
                let at = if path.is_empty() { "the file" } else { path };
                return Err(self.error(path, format!("expected a mapping at {at}, found {found}")));
            }
        };
        for key in map.keys() {
            let Value::String(key) = key else {
                return Err(self.error(path, format!("a key is not text: {}", scalar(key))));
            };
            if !allowed.contains(&key.as_str()) {
                return Err(self.error(&field(path, key), unknown_key(key, allowed)));
            }
        }
        Ok(map)
    }

    /// Text, as ratelimit's YAML library reads a scalar into a string: a whole number or a
    /// boolean as written; `None` for null or absent.
    fn text(&self, value: Option<&Value>, path: &str) -> Result<Option<String>, LoadError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
            Some(Value::Number(n)) => Err(self.error(
                path,
                format!("{n} is a number with a fraction, which ratelimit refuses: quote it"),
            )),
            Some(other) => {
                let found = kind(other);
                Err(self.error(path, format!("expected text, found {found}")))
            }
        }
    }

    /// A boolean, in YAML 1.1's spellings too (`yes`, `on`), as ratelimit's YAML library reads
    /// them; absent or null is `false`.
    fn boolean(&self, value: Option<&Value>, path: &str) -> Result<bool, LoadError> {
        const TRUE: [&str; 11] = [
            "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
        ];
        const FALSE: [&str; 11] = [
            "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
        ];
        match value {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if TRUE.contains(&s.as_str()) => Ok(true),
            Some(Value::String(s)) if FALSE.contains(&s.as_str()) => Ok(false),
            Some(other) => Err(self.error(
                path,
                format!("expected true or false, found {}", scalar(other)),
            )),
        }
    }

    /// A whole number from 0 to 2^32 - 1; `None` for null or absent.
    fn uint32(&self, value: Option<&Value>, path: &str) -> Result<Option<u32>, LoadError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= u32::MAX.into()) => {
                Ok(n.as_u64().map(|n| n as u32))
            }
            Some(other) => Err(self.error(
                path,
                format!(
                    "expected a whole number from 0 to {}, found {}",
                    u32::MAX,
                    scalar(other)
                ),
            )),
        }
    }
}

/// The reason for an unknown key, saying where it belongs when it is valid elsewhere.
fn unknown_key(key: &str, allowed: &[&str]) -> String {
    let places = [
        (ROOT_KEYS, "at the top of the file"),
        (DESCRIPTOR_KEYS, "in a descriptor"),
        (RATE_LIMIT_KEYS, "in a rate_limit"),
        (REPLACES_KEYS, "in a replaces entry"),
    ];
    let mut reason = format!(
        "unknown key {key:?}; expected one of: {}",
        allowed.join(", ")
    );
    if let Some((_, place)) = places.iter().find(|(keys, _)| keys.contains(&key)) {
        reason.push_str(&format!(
            " ({key} belongs {place}: ratelimit ignores it here)"
        ));
    }
    reason
}

/// What a value is, for an error: `a list`, `a mapping`, or the scalar itself.
fn kind(value: &Value) -> String {
    match value {
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        other => scalar(other),
    }
}

/// A scalar as an error quotes it, short and on one line.
fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{:?}", s.chars().take(40).collect::<String>()),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}
