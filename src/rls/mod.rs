//! Envoy's rate limit descriptors: envoyproxy/ratelimit's YAML files and tollgate's own rules,
//! loaded into [`Domains`] and matched to a request's descriptors exactly as ratelimit does.
//!
//! This is the core the `envoy.service.ratelimit.v3` service calls; nothing here serves.
//! - `descriptors`: [`Domains`], the tree of each domain's descriptors, and the match: a map
//!   lookup per entry, `key_value` first, then a wildcard value, then the key alone.
//! - `yaml`: [`Loader`], which reads ratelimit's YAML files unchanged, each mistake a
//!   [`LoadError`] naming the file and the path in it; `walk` reads one file's tree.
//! - `rules`: the `[rls]` section of tollgate's TOML: the YAML files, and rules that apply
//!   several policies, of any algorithm and window, to one descriptor.
//! - `bucket`: [`Bucket`], the counter a matched descriptor counts in.
//! - `names`: each rule's name, as metrics and keys show it.
//!
//! See docs/envoy.md for what is supported and where tollgate differs.

mod bucket;
mod descriptors;
mod grpc;
pub mod metrics;
mod names;
mod plan;
mod rules;
mod server;
mod service;
mod walk;
mod yaml;

use std::sync::Arc;

use crate::policy::Window;

pub use bucket::Bucket;
pub use descriptors::{Domains, Limits, Rule};
pub(crate) use rules::RawRls;
pub use rules::RlsSettings;
pub use server::router;
pub use service::RlsService;
pub use yaml::{descriptor_files, LoadError, Loader};

/// A rate limit unit, as ratelimit's `unit` and Envoy's `RateLimitUnit` name them.
///
/// Windows are fixed and aligned to the Unix epoch, as ratelimit counts: a month is 30 days and
/// a year 365, as its dividers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One second.
    Second,
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds, from midnight UTC.
    Day,
    /// 7 days, from a Thursday at midnight UTC (the epoch's weekday).
    Week,
    /// 30 days.
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    /// Every unit, shortest first.
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// The name the YAML writes, in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// Parses a unit in any case, as ratelimit upper-cases it; `unknown` is not a unit.
    pub fn parse(text: &str) -> Option<Unit> {
        Unit::ALL
            .into_iter()
            .find(|unit| unit.as_str().eq_ignore_ascii_case(text))
    }

    /// The length in seconds: ratelimit's divider for the unit.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    /// The unit as a tollgate window.
    pub fn window(self) -> Window {
        Window::from_millis(self.seconds() * 1000).expect("a year is a valid window")
    }
}

/// The limit Envoy may send with a descriptor, which replaces the configured one for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    /// Requests per unit; 0 refuses every request.
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
}

/// One descriptor of a request: its entries, in order, and Envoy's limit override if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// The `(key, value)` entries, from the most general to the most specific.
    pub entries: Vec<(String, String)>,
    /// The limit Envoy sent for it, which bypasses the configuration.
    pub limit: Option<Override>,
}

/// A descriptor's match: the rule that applies, and the bucket it counts in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    /// The rule: its name, its limits, what it replaces.
    pub rule: Arc<Rule>,
    /// Who shares the counter: the domain and the descriptor's entries.
    pub bucket: Bucket,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units parse in any case, as ratelimit upper-cases them, and `unknown` is refused.
    #[test]
    fn units_parse_in_any_case() {
        assert_eq!(Unit::parse("SECOND"), Some(Unit::Second));
        assert_eq!(Unit::parse("Week"), Some(Unit::Week));
        assert_eq!(Unit::parse("unknown"), None);
        assert_eq!(Unit::parse("seconds"), None);
        for unit in Unit::ALL {
            assert_eq!(Unit::parse(unit.as_str()), Some(unit));
            assert_eq!(unit.window().as_millis(), unit.seconds() * 1000);
        }
    }

    /// A month and a year are ratelimit's fixed dividers, 30 and 365 days.
    #[test]
    fn months_and_years_are_fixed_lengths() {
        assert_eq!(Unit::Month.seconds(), 2_592_000);
        assert_eq!(Unit::Year.seconds(), 31_536_000);
        assert_eq!(Unit::Week.seconds(), 604_800);
    }
}
