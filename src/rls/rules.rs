//! The `[rls]` section of tollgate's configuration: where the YAML files are, and tollgate's
//! own rules for what the YAML cannot say (several policies on one descriptor, any algorithm,
//! any window), validated into [`RlsSettings`] with errors that name their key.
//!
//! ```toml
//! [rls]
//! config = ["ratelimit/"]              # ratelimit's YAML files, or directories of them
//!
//! [[rls.policies]]
//! name = "per_minute"
//! algorithm = "sliding_window"
//! limit = 100
//! window = "1m"
//!
//! [[rls.rules]]
//! domain = "api"
//! descriptor = [{ key = "user" }]
//! policies = ["per_minute"]
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::descriptors::{Domains, Limits, Node, Rule};
use super::names::{child_path, name_of, segment};
use super::Loader;
use crate::config::{ConfigError, PolicyShape};
use crate::policy::{Algorithm, Policy, PolicyName};

/// The validated `[rls]` section.
#[derive(Clone, Debug, Default)]
pub struct RlsSettings {
    /// `rls.listen`: where Envoy's rate limit service listens, when it is served.
    pub listen: Option<SocketAddr>,
    /// Every domain, from the YAML files and the rules.
    pub domains: Arc<Domains>,
    /// `rls.config`: the YAML files and directories the domains were read from, which a
    /// running service watches for changes.
    pub sources: Vec<PathBuf>,
}

/// `[rls]` as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(default)]
    config: Vec<String>,
    #[serde(default)]
    merge_domains: bool,
    #[serde(default)]
    policies: Vec<RawRlsPolicy>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// `[[rls.policies]]`: a policy as `[[policies]]` writes one, without what only HTTP requests
/// have (routes, `by`, costs, `when`): the descriptor says who shares a bucket, and Envoy's
/// `hits_addend` what a request costs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRlsPolicy {
    name: String,
    #[serde(default)]
    algorithm: Algorithm,
    limit: u64,
    window: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burst: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shadow: bool,
}

/// `[[rls.rules]]`: the policies that apply to one descriptor of one domain.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    domain: String,
    descriptor: Vec<RawEntry>,
    policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replaces: Vec<String>,
}

/// One entry of a rule's descriptor: a key, and a value (with `*` wildcards) or none for any.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

impl RawRls {
    /// Whether `listen` is set, which `check-config` notes when it is not.
    pub(crate) fn listen_is_set(&self) -> bool {
        self.listen.is_some()
    }

    /// Writes each token bucket's `burst` out, as `check-config` shows `[[policies]]`.
    pub(crate) fn fill_defaults(&mut self) {
        for policy in &mut self.policies {
            if policy.algorithm == Algorithm::TokenBucket {
                policy.burst = Some(policy.burst.unwrap_or(policy.limit));
            }
        }
    }

    /// Loads the YAML files and adds the rules; the warnings are what was accepted but is
    /// ignored, for the binary to print.
    pub(crate) fn validate(&self) -> Result<(RlsSettings, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let listen = self
            .listen
            .as_deref()
            .map(|text| {
                text.parse().map_err(|_| {
                    ConfigError::new(
                        "rls.listen",
                        format!("{text:?} is not an IP address and port, like \"127.0.0.1:8081\""),
                    )
                })
            })
            .transpose()?;
        let policies = self.policies()?;
        let mut loader = Loader::new().merge_domains(self.merge_domains);
        for (i, path) in self.config.iter().enumerate() {
            loader
                .load_path(Path::new(path))
                .map_err(|e| ConfigError::new(format!("rls.config[{i}]"), e.to_string()))?;
        }
        warnings.extend(loader.warnings());
        let mut used = HashSet::new();
        for (i, raw) in self.rules.iter().enumerate() {
            raw.add_to(i, &policies, loader.domains_mut(), &mut used)?;
        }
        for (i, policy) in policies.iter().enumerate() {
            if !used.contains(policy.name()) {
                warnings.push(format!(
                    "rls.policies[{i}] ({}) is named by no rule in rls.rules",
                    policy.name()
                ));
            }
        }
        let domains = Arc::new(loader.finish());
        match (listen, domains.is_empty()) {
            (Some(_), true) => warnings.push(
                "rls.listen is set, but no domain is configured (rls.config, rls.rules): every \
                 descriptor Envoy sends will be answered OK"
                    .to_owned(),
            ),
            (None, false) => warnings.push(
                "rls.config or rls.rules configure domains, but rls.listen is not set: nothing \
                 serves Envoy's rate limit protocol"
                    .to_owned(),
            ),
            _ => {}
        }
        let sources = self.config.iter().map(PathBuf::from).collect();
        Ok((
            RlsSettings {
                listen,
                domains,
                sources,
            },
            warnings,
        ))
    }

    /// `[[rls.policies]]`, validated as `[[policies]]` are.
    fn policies(&self) -> Result<Vec<Arc<Policy>>, ConfigError> {
        let mut policies: Vec<Arc<Policy>> = Vec::with_capacity(self.policies.len());
        for (i, raw) in self.policies.iter().enumerate() {
            let shape = PolicyShape {
                name: &raw.name,
                algorithm: raw.algorithm,
                limit: raw.limit,
                window: &raw.window,
                burst: raw.burst,
            };
            let policy = shape.validate(
                |field| format!("rls.policies[{i}].{field}"),
                policies.iter().map(|p| p.name()),
            )?;
            policies.push(Arc::new(policy.with_shadow(raw.shadow)));
        }
        Ok(policies)
    }
}

impl RawRule {
    /// Validates rule `i` and adds it to `domains`, noting the policies it names in `used`.
    fn add_to(
        &self,
        i: usize,
        policies: &[Arc<Policy>],
        domains: &mut Domains,
        used: &mut HashSet<PolicyName>,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("rls.rules[{i}].{field}");
        if self.domain.is_empty() {
            return Err(ConfigError::new(key("domain"), "must not be empty"));
        }
        if self.descriptor.is_empty() {
            return Err(ConfigError::new(
                key("descriptor"),
                "must list at least one entry, like [{ key = \"user\" }]",
            ));
        }
        let mut path = String::new();
        for (j, entry) in self.descriptor.iter().enumerate() {
            let at = |field: &str| format!("rls.rules[{i}].descriptor[{j}].{field}");
            if entry.key.is_empty() {
                return Err(ConfigError::new(at("key"), "must not be empty"));
            }
            if entry.key.contains('*') {
                return Err(ConfigError::new(
                    at("key"),
                    format!("{:?}: only a value may hold a '*' wildcard", entry.key),
                ));
            }
            if entry.value.as_deref() == Some("") {
                return Err(ConfigError::new(
                    at("value"),
                    "must not be empty: leave value out to match any value",
                ));
            }
            path = child_path(&path, &segment(&entry.key, entry.value.as_deref()));
        }
        if self.policies.is_empty() {
            return Err(ConfigError::new(
                key("policies"),
                "must name at least one of rls.policies",
            ));
        }
        let mut chosen: Vec<Arc<Policy>> = Vec::with_capacity(self.policies.len());
        for (k, name) in self.policies.iter().enumerate() {
            let at = format!("rls.rules[{i}].policies[{k}]");
            let Some(policy) = policies.iter().find(|p| p.name().as_str() == name) else {
                let known: Vec<&str> = policies.iter().map(|p| p.name().as_str()).collect();
                let known = if known.is_empty() {
                    "rls.policies is empty".to_owned()
                } else {
                    format!("rls.policies has: {}", known.join(", "))
                };
                return Err(ConfigError::new(
                    at,
                    format!("unknown policy {name:?}; {known}"),
                ));
            };
            if chosen.iter().any(|p| p.name() == policy.name()) {
                return Err(ConfigError::new(at, format!("names {name:?} twice")));
            }
            used.insert(policy.name().clone());
            chosen.push(policy.clone());
        }
        let name = match &self.name {
            Some(name) => PolicyName::new(name).map_err(|r| ConfigError::new(key("name"), r))?,
            None => name_of(&path),
        };
        for (k, replaced) in self.replaces.iter().enumerate() {
            let at = format!("rls.rules[{i}].replaces[{k}]");
            if replaced.is_empty() {
                return Err(ConfigError::new(at, "must not be empty"));
            }
            if self.name.as_ref() == Some(replaced) {
                return Err(ConfigError::new(at, "a rule cannot replace itself"));
            }
        }
        let source = format!("rls.rules[{i}]");
        let rule = Rule::new(name, Limits::Count(chosen), source.clone())
            .with_replaces(self.name.clone(), self.replaces.clone());
        let mut level = domains
            .domain(&self.domain, &source, true)
            .expect("merging never fails");
        let make = || Node::new(None, None, source.clone());
        let (last, above) = self.descriptor.split_last().expect("checked non-empty");
        for entry in above {
            level = &mut level
                .find_or_insert(&entry.key, entry.value.as_deref(), make)
                .children;
        }
        let node = level.find_or_insert(&last.key, last.value.as_deref(), make);
        node.set_rule(rule).map_err(|first| {
            ConfigError::new(
                key("descriptor"),
                format!(
                    "domain {:?} already has a rule for this descriptor: {first}",
                    self.domain
                ),
            )
        })
    }
}
