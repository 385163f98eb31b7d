//! [`Domains`]: each domain's tree of descriptors, and the match of a request's descriptors
//! to the rules that apply, as envoyproxy/ratelimit's `GetLimit` walks its tree.
//!
//! At each level, the entry's key finds its nodes in a map; then its value is looked up in a
//! map (`key_value`), else tried against the key's wildcard values in the order they were
//! declared, else the key alone applies. A rule applies only at the descriptor's last entry,
//! and there is no backtracking: a `key_value` node with no way down is a miss, even if the
//! key alone would have led further.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use super::{Bucket, Descriptor, Matched, Override, Unit};
use crate::policy::{Algorithm, Policy, PolicyName};

/// What a matched rule does to its descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limits {
    /// Counted under each policy, decided together: one fixed window for a YAML rate_limit,
    /// any number of any algorithm for a rule of tollgate's own.
    Count(Vec<Arc<Policy>>),
    /// `requests_per_unit: 0`: every request is over the limit, and nothing is counted.
    Block {
        /// The unit written beside the 0, which Envoy is told.
        unit: Unit,
        /// Under `shadow_mode`, the request is let through and only reported.
        shadow: bool,
    },
    /// `unlimited: true`: always under the limit, without asking the store.
    Unlimited,
}

/// One rule: a YAML rate_limit, a rule of tollgate's own, or Envoy's override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// How metrics and logs name the rule; a YAML rate_limit's policy has the same name.
    name: PolicyName,
    limits: Limits,
    /// The rate_limit's `name`, as written: what other rules' `replaces` name.
    limit_name: Option<Box<str>>,
    /// The `name`s of the rules this one drops when both apply to one request.
    replaces: Vec<Box<str>>,
    /// Where it was configured, for errors and logs: `file: descriptors[0]`, `rls.rules[2]`.
    source: Box<str>,
}

impl Rule {
    /// A rule named `name`, configured at `source`, that replaces nothing.
    pub(crate) fn new(name: PolicyName, limits: Limits, source: impl Into<Box<str>>) -> Self {
        Rule {
            name,
            limits,
            limit_name: None,
            replaces: Vec::new(),
            source: source.into(),
        }
    }

    /// The rule as `replaces` names it (`limit_name`), dropping the rules named `replaces`.
    pub(crate) fn with_replaces(
        mut self,
        limit_name: Option<String>,
        replaces: Vec<String>,
    ) -> Self {
        self.limit_name = limit_name.map(Into::into);
        self.replaces = replaces.into_iter().map(Into::into).collect();
        self
    }

    /// The name metrics and logs show: the rate_limit's `name` if valid, else the path.
    pub fn name(&self) -> &PolicyName {
        &self.name
    }

    /// What it does.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The rate_limit's `name` as written, which other rules' `replaces` name.
    pub fn limit_name(&self) -> Option<&str> {
        self.limit_name.as_deref()
    }

    /// The names of the rules it replaces.
    pub fn replaces(&self) -> impl Iterator<Item = &str> {
        self.replaces.iter().map(AsRef::as_ref)
    }

    /// Where it was configured.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The rule Envoy's override makes: one fixed window, named by its unit only, so that
    /// overrides never put a descriptor's values into metrics.
    fn from_override(limit: Override) -> Rule {
        let name = PolicyName::new(&format!("override.{}", limit.unit.as_str()))
            .expect("a unit makes a valid name");
        let limits = match NonZeroU64::new(limit.requests_per_unit.into()) {
            None => Limits::Block {
                unit: limit.unit,
                shadow: false,
            },
            Some(per_unit) => Limits::Count(vec![Arc::new(
                Policy::new(
                    name.clone(),
                    Algorithm::FixedWindow,
                    per_unit,
                    limit.unit.window(),
                )
                .expect("a u32 per unit of at most a year is a valid fixed window"),
            )]),
        };
        Rule::new(name, limits, "Envoy's limit override")
    }
}

/// Every domain's descriptors, loaded and checked: what a request's descriptors are matched to.
#[derive(Debug, Default)]
pub struct Domains {
    domains: HashMap<Box<str>, Domain>,
}

#[derive(Debug)]
struct Domain {
    root: Level,
    /// The file that declared it first, for the error about a second.
    source: Box<str>,
}

/// One level of a tree: the nodes of each key.
#[derive(Debug, Default)]
pub(crate) struct Level {
    keys: HashMap<Box<str>, KeyNodes>,
}

/// The nodes of one key at one level, in the order they are tried.
#[derive(Debug, Default)]
struct KeyNodes {
    /// `key: k, value: v`, by value.
    exact: HashMap<Box<str>, Node>,
    /// `value` with a `*`, in the order declared: the first that matches is taken.
    wildcards: Vec<(Pattern, Node)>,
    /// `key: k` alone: any value, one counter per value.
    any: Option<Box<Node>>,
}

/// A descriptor of the configuration: maybe a rule, maybe deeper levels.
#[derive(Debug, Default)]
pub(crate) struct Node {
    rule: Option<Arc<Rule>>,
    pub(crate) children: Level,
    /// Under `share_threshold`, the wildcard that stands for the value in the bucket.
    shared: Option<Box<str>>,
    /// Where it was declared, for the error about a duplicate.
    source: Box<str>,
}

impl Node {
    /// A node declared at `source`.
    pub(crate) fn new(rule: Option<Rule>, shared: Option<String>, source: String) -> Self {
        Node {
            rule: rule.map(Arc::new),
            children: Level::default(),
            shared: shared.map(Into::into),
            source: source.into(),
        }
    }
}

/// A value with `*`s, each matching any run of characters, possibly empty.
#[derive(Debug)]
struct Pattern {
    text: Box<str>,
    /// The text between the `*`s: at least two parts.
    parts: Vec<Box<str>>,
}

impl Pattern {
    /// The pattern of `text`, `None` when it has no `*`.
    fn new(text: &str) -> Option<Self> {
        text.contains('*').then(|| Pattern {
            text: text.into(),
            parts: text.split('*').map(Into::into).collect(),
        })
    }

    /// Whether `value` matches: it starts with the first part, ends with the last, and holds
    /// the others in order in between, none overlapping.
    fn matches(&self, value: &str) -> bool {
        let (first, last) = (&self.parts[0], &self.parts[self.parts.len() - 1]);
        let fixed: usize = self.parts.iter().map(|part| part.len()).sum();
        if value.len() < fixed || !value.starts_with(&**first) || !value.ends_with(&**last) {
            return false;
        }
        let mut rest = &value[first.len()..value.len() - last.len()];
        for part in &self.parts[1..self.parts.len() - 1] {
            match rest.find(&**part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

impl Level {
    /// Adds `node` for `key` and `value` (`None`: the key alone); the error names where the
    /// one already there was declared.
    pub(crate) fn insert(
        &mut self,
        key: &str,
        value: Option<&str>,
        node: Node,
    ) -> Result<&mut Node, String> {
        let nodes = self.keys.entry(key.into()).or_default();
        if let Some(taken) = nodes.find(value) {
            return Err(taken.source.to_string());
        }
        Ok(nodes.slot(value, node))
    }

    /// The node for `key` and `value`, added as `make()` if there is none.
    pub(crate) fn find_or_insert(
        &mut self,
        key: &str,
        value: Option<&str>,
        make: impl FnOnce() -> Node,
    ) -> &mut Node {
        let nodes = self.keys.entry(key.into()).or_default();
        if nodes.find(value).is_none() {
            nodes.slot(value, make());
        }
        nodes.find(value).expect("just added")
    }
}

impl KeyNodes {
    /// The node declared for `value` exactly as written (a wildcard by its text).
    fn find(&mut self, value: Option<&str>) -> Option<&mut Node> {
        match value {
            None => self.any.as_deref_mut(),
            Some(value) if value.contains('*') => self
                .wildcards
                .iter_mut()
                .find(|(p, _)| &*p.text == value)
                .map(|(_, n)| n),
            Some(value) => self.exact.get_mut(value),
        }
    }

    /// Stores `node` for `value`, which has none yet.
    fn slot(&mut self, value: Option<&str>, node: Node) -> &mut Node {
        match value.map(|v| (v, Pattern::new(v))) {
            None => self.any.insert(Box::new(node)),
            Some((_, Some(pattern))) => {
                self.wildcards.push((pattern, node));
                &mut self.wildcards.last_mut().expect("just pushed").1
            }
            Some((value, None)) => self.exact.entry(value.into()).or_insert(node),
        }
    }

    /// The node a request's `value` reaches, and the wildcard that stands for it when shared.
    fn lookup(&self, value: &str) -> Option<(&Node, Option<&str>)> {
        if let Some(node) = self.exact.get(value) {
            return Some((node, None));
        }
        if let Some((_, node)) = self.wildcards.iter().find(|(p, _)| p.matches(value)) {
            return Some((node, node.shared.as_deref()));
        }
        self.any.as_deref().map(|node| (node, None))
    }
}

impl Node {
    /// Sets the node's rule; the error names the rule already there.
    pub(crate) fn set_rule(&mut self, rule: Rule) -> Result<(), String> {
        match &self.rule {
            Some(taken) => Err(taken.source().to_owned()),
            None => {
                self.rule = Some(Arc::new(rule));
                Ok(())
            }
        }
    }
}

impl Domains {
    /// The top level of `domain`, new or, when `merge`, one declared before; without `merge`,
    /// a domain declared twice is an error naming the first file.
    pub(crate) fn domain(
        &mut self,
        domain: &str,
        source: &str,
        merge: bool,
    ) -> Result<&mut Level, String> {
        if let Some(first) = self.domains.get(domain) {
            if !merge {
                return Err(first.source.to_string());
            }
        }
        let entry = self.domains.entry(domain.into()).or_insert_with(|| Domain {
            root: Level::default(),
            source: source.into(),
        });
        Ok(&mut entry.root)
    }

    /// Every configured rule, with its domain, in no particular order.
    pub fn rules(&self) -> Vec<(&str, &Arc<Rule>)> {
        fn walk<'a>(domain: &'a str, level: &'a Level, out: &mut Vec<(&'a str, &'a Arc<Rule>)>) {
            for nodes in level.keys.values() {
                let any = nodes.any.as_deref();
                let all = nodes
                    .exact
                    .values()
                    .chain(nodes.wildcards.iter().map(|(_, n)| n));
                for node in all.chain(any) {
                    if let Some(rule) = &node.rule {
                        out.push((domain, rule));
                    }
                    walk(domain, &node.children, out);
                }
            }
        }
        let mut out = Vec::new();
        for (domain, tree) in &self.domains {
            walk(domain, &tree.root, &mut out);
        }
        out
    }

    /// Whether `domain` is configured.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// Whether no domain is configured.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The configured domains, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(AsRef::as_ref)
    }

    /// The rule that applies to one descriptor with `entries` in `domain`, and its bucket:
    /// `None` for an unknown domain or a descriptor that reaches no rule, which Envoy is
    /// answered OK. Envoy's `limit` bypasses the configuration, for a known domain.
    pub fn get_limit<K: AsRef<str>, V: AsRef<str>>(
        &self,
        domain: &str,
        entries: &[(K, V)],
        limit: Option<Override>,
    ) -> Option<Matched> {
        let tree = self.domains.get(domain)?;
        if let Some(limit) = limit {
            return Some(Matched {
                rule: Arc::new(Rule::from_override(limit)),
                bucket: Bucket::new(domain, entries),
            });
        }
        let last = entries.len().checked_sub(1)?;
        let mut level = &tree.root;
        // Entries whose shared wildcard stands for their value in the bucket: rare, so a Vec
        // that allocates only when used.
        let mut shared: Vec<(usize, &str)> = Vec::new();
        for (i, (key, value)) in entries.iter().enumerate() {
            let (node, wildcard) = level.keys.get(key.as_ref())?.lookup(value.as_ref())?;
            if let Some(wildcard) = wildcard {
                shared.push((i, wildcard));
            }
            if i == last {
                let rule = node.rule.clone()?;
                let values = entries.iter().enumerate().map(|(j, (k, v))| {
                    let value = shared.iter().find(|(at, _)| *at == j).map(|(_, w)| *w);
                    (k.as_ref(), value.unwrap_or(v.as_ref()))
                });
                return Some(Matched {
                    rule,
                    bucket: Bucket::from_parts(domain, values),
                });
            }
            level = &node.children;
        }
        None
    }

    /// The match of each of a request's descriptors, in order, after `replaces`: a rule named
    /// by another matched rule's `replaces` is dropped (`None`), except an unlimited one,
    /// which stays unlimited as in ratelimit.
    pub fn limits(&self, domain: &str, descriptors: &[Descriptor]) -> Vec<Option<Matched>> {
        let mut matched: Vec<Option<Matched>> = descriptors
            .iter()
            .map(|d| self.get_limit(domain, &d.entries, d.limit))
            .collect();
        // The rules that replace others, held apart so that `matched` can be changed.
        let replacing: Vec<Arc<Rule>> = matched
            .iter()
            .flatten()
            .filter(|m| !m.rule.replaces.is_empty())
            .map(|m| m.rule.clone())
            .collect();
        if replacing.is_empty() {
            return matched;
        }
        let is_replaced = |name: &str| replacing.iter().any(|r| r.replaces().any(|n| n == name));
        for slot in &mut matched {
            let drop = slot.as_ref().is_some_and(|m| {
                m.rule.limits != Limits::Unlimited && m.rule.limit_name().is_some_and(is_replaced)
            });
            if drop {
                *slot = None;
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wildcards match as ratelimit's `wildcardMatch` does: `*` is any run, parts in order,
    /// prefix and suffix never overlapping.
    #[test]
    fn wildcards_match_like_ratelimit() {
        let matches = |pattern: &str, value: &str| Pattern::new(pattern).unwrap().matches(value);
        assert!(matches("value*", "value"));
        assert!(matches("value*", "valueXYZ"));
        assert!(!matches("value*", "valu"));
        assert!(matches("/api/*/action", "/api/123/action"));
        assert!(!matches("/api/*/action", "/api/123/other"));
        assert!(matches(
            "/api/*/resource/*/action",
            "/api/v1/resource/9/action"
        ));
        assert!(!matches("/api/*/resource/*/action", "/api/v1/action"));
        assert!(matches("*", ""));
        assert!(!matches("ab*ba", "aba"), "prefix and suffix overlap");
        assert!(matches("ab*ba", "abba"));
        assert!(matches("foo*bar*baz", "foobarbaz"));
        assert!(!matches("foo*bar*baz", "foobazbar"));
        assert!(matches("a**b", "ab"));
        assert!(matches("*é*", "café!"));
    }
}
