//! Envoy's descriptors counted by domain, rule and code, for `/metrics`: never by a
//! descriptor's values, so the series are fixed by the configuration.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Domains, Unit};

/// The codes a descriptor is answered with, as labelled.
const CODES: [&str; 3] = ["ok", "over_limit", "shadow_over_limit"];

/// A descriptor's code, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Under the limit, or no limit.
    Ok,
    /// Over the limit.
    OverLimit,
    /// Answered OK, though a shadow limit would have denied it.
    ShadowOverLimit,
}

/// Per domain and rule, how many descriptors were answered with each code.
#[derive(Debug, Default)]
pub struct RlsMetrics {
    /// Domain, then rule name, to a row of `counts`.
    rows: HashMap<Box<str>, HashMap<Box<str>, usize>>,
    /// Domain and rule of each row, in the order they render.
    labels: Vec<(Box<str>, Box<str>)>,
    /// Shared with the counters a reload regroups these into, row by row.
    counts: Vec<Arc<[AtomicU64; 3]>>,
    /// Descriptors no rule matched, in a known domain or not.
    unmatched: Arc<AtomicU64>,
    /// Requests for a domain no configuration names: a typo in Envoy's `domain` limits nothing.
    unknown_domain: Arc<AtomicU64>,
}

impl RlsMetrics {
    /// Counters for every rule of `domains`, and for Envoy's overrides in each domain.
    pub fn new(domains: &Domains) -> Self {
        let mut labels: Vec<(Box<str>, Box<str>)> = domains
            .rules()
            .into_iter()
            .map(|(domain, rule)| (domain.into(), rule.name().as_str().into()))
            .chain(domains.names().flat_map(|domain| {
                Unit::ALL.map(|unit| (domain.into(), format!("override.{}", unit.as_str()).into()))
            }))
            .collect();
        labels.sort();
        labels.dedup();
        let mut rows: HashMap<Box<str>, HashMap<Box<str>, usize>> = HashMap::new();
        for (i, (domain, rule)) in labels.iter().enumerate() {
            rows.entry(domain.clone())
                .or_default()
                .insert(rule.clone(), i);
        }
        RlsMetrics {
            rows,
            counts: labels.iter().map(|_| Default::default()).collect(),
            labels,
            unmatched: Default::default(),
            unknown_domain: Default::default(),
        }
    }

    /// Counters for `domains` after a reload that go on from these: a rule of a domain counted
    /// here keeps its counts, so a reload never resets a series.
    pub fn regrouped(&self, domains: &Domains) -> Self {
        let mut next = RlsMetrics::new(domains);
        for (row, label) in next.labels.iter().enumerate() {
            if let Ok(old) = self.labels.binary_search(label) {
                next.counts[row] = self.counts[old].clone();
            }
        }
        next.unmatched = self.unmatched.clone();
        next.unknown_domain = self.unknown_domain.clone();
        next
    }

    /// Counts a descriptor of `domain` that rule `rule` answered with `code`.
    pub fn answered(&self, domain: &str, rule: &str, code: Code) {
        let row = self.rows.get(domain).and_then(|rules| rules.get(rule));
        if let Some(&row) = row {
            let i = match code {
                Code::Ok => 0,
                Code::OverLimit => 1,
                Code::ShadowOverLimit => 2,
            };
            self.counts[row][i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a descriptor that no rule matched.
    pub fn unmatched(&self) {
        self.unmatched.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request for a domain no configuration names.
    pub fn unknown_domain(&self) {
        self.unknown_domain.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in Prometheus text.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP tollgate_rls_descriptors_total Envoy's descriptors answered, by domain, \
             rule and code.\n# TYPE tollgate_rls_descriptors_total counter\n",
        );
        for ((domain, rule), counts) in self.labels.iter().zip(&self.counts) {
            for (code, count) in CODES.iter().zip(counts.iter()) {
                let _ = writeln!(
                    out,
                    "tollgate_rls_descriptors_total{{domain=\"{}\",rule=\"{rule}\",code=\"{code}\"}} {}",
                    escape(domain),
                    count.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tollgate_rls_unmatched_descriptors_total Envoy's descriptors no rule matched \
             (answered OK, with no limit).\n# TYPE tollgate_rls_unmatched_descriptors_total \
             counter\ntollgate_rls_unmatched_descriptors_total {}",
            self.unmatched.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_rls_unknown_domain_total Requests for a domain no configuration names \
             (answered OK, with no limit).\n# TYPE tollgate_rls_unknown_domain_total \
             counter\ntollgate_rls_unknown_domain_total {}",
            self.unknown_domain.load(Ordering::Relaxed)
        );
    }
}

/// A label value as Prometheus text escapes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
