//! envoyproxy/ratelimit's YAML files, read unchanged into [`Domains`] by a [`Loader`].
//!
//! Each file is read into a YAML value, its merge keys (`<<`) applied as ratelimit's YAML
//! library does, then walked by hand (`walk.rs`), so that each mistake names its file, its
//! path in the file (`descriptors[0].rate_limit.unit`) and what is wrong. A key ratelimit
//! accepts but tollgate does not act on is either refused (`quota_mode: true`, which would
//! change decisions) or counted, for one warning per key (`detailed_metric`,
//! `value_to_metric`, `metadata`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::descriptors::Domains;
use super::walk::Walk;

/// A mistake in a YAML file: which file, where in it, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{reason}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct LoadError {
    /// The file, as it was named to the loader.
    pub file: String,
    /// The path in the file, `descriptors[1].rate_limit.unit`; empty for the file as a whole.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// Why each key that is accepted but not acted on is ignored.
const IGNORED: [(&str, &str); 3] = [
    (
        "detailed_metric",
        "tollgate's metrics name a domain and a rule, never a descriptor's values",
    ),
    (
        "value_to_metric",
        "tollgate's metrics name a domain and a rule, never a descriptor's values",
    ),
    ("metadata", "tollgate sends Envoy no dynamic metadata"),
];

/// The descriptor files of the directory `dir`, as [`Loader::load_path`] reads them: its
/// `*.yaml` and `*.yml` files that are regular files (through symlinks, as a mounted ConfigMap's
/// are), not hidden ones, not below it, in name order. A running service watches these and
/// nothing else of the directory.
pub fn descriptor_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|file| {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
            yaml && !name.starts_with('.') && file.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads ratelimit's YAML files, and tollgate's own rules, into [`Domains`].
#[derive(Debug, Default)]
pub struct Loader {
    domains: Domains,
    /// ratelimit's `MERGE_DOMAIN_CONFIG`: several files may add to one domain.
    merge_domains: bool,
    /// Each ignored key: where it was first seen, and how many times.
    ignored: BTreeMap<&'static str, (String, usize)>,
}

impl Loader {
    /// An empty loader; a domain may be declared by one file only.
    pub fn new() -> Self {
        Loader::default()
    }

    /// Lets several files add descriptors to one domain, as ratelimit's `MERGE_DOMAIN_CONFIG`.
    pub fn merge_domains(mut self, merge: bool) -> Self {
        self.merge_domains = merge;
        self
    }

    /// Loads a YAML file, or each `*.yaml` and `*.yml` file of a directory in name order (not
    /// hidden ones, not below it).
    pub fn load_path(&mut self, path: &Path) -> Result<(), LoadError> {
        let fail = |file: &Path, reason: String| LoadError {
            file: file.display().to_string(),
            path: String::new(),
            reason,
        };
        if !path.is_dir() {
            // A named pipe or a device would block the read, or never end it.
            if path.exists() && !path.is_file() {
                return Err(fail(path, "is not a file or a directory".into()));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(path, format!("cannot be read: {e}")))?;
            return self.load_str(&path.display().to_string(), &text);
        }
        let files =
            descriptor_files(path).map_err(|e| fail(path, format!("cannot be read: {e}")))?;
        if files.is_empty() {
            return Err(fail(path, "holds no .yaml or .yml file".into()));
        }
        files.iter().try_for_each(|file| self.load_path(file))
    }

    /// Loads one file's `text`, named `file` in errors.
    pub fn load_str(&mut self, file: &str, text: &str) -> Result<(), LoadError> {
        let fail = |reason: String| LoadError {
            file: file.to_owned(),
            path: String::new(),
            reason,
        };
        let mut value: Value =
            serde_yaml::from_str(text).map_err(|e| fail(format!("is not YAML: {e}")))?;
        value
            .apply_merge()
            .map_err(|e| fail(format!("has a bad merge key: {e}")))?;
        let mut walk = Walk::new(file, &mut self.ignored);
        walk.file(&value, &mut self.domains, self.merge_domains)
    }

    /// One warning per key that was accepted and ignored, naming where it was first seen.
    pub fn warnings(&self) -> Vec<String> {
        self.ignored
            .iter()
            .map(|(key, (first, count))| {
                let why = IGNORED
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or("", |(_, why)| why);
                let more = match count {
                    1 => String::new(),
                    n => format!(", and {} more", n - 1),
                };
                format!("rls.config: {key} is ignored ({first}{more}): {why}")
            })
            .collect()
    }

    /// The domains, for rules to be added to.
    pub(crate) fn domains_mut(&mut self) -> &mut Domains {
        &mut self.domains
    }

    /// The domains loaded.
    pub fn finish(self) -> Domains {
        self.domains
    }
}
