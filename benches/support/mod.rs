//! What the criterion benches share: policies that never run out, and a closing table of each
//! group's medians as ratios to the group's baseline, read back from this very run's estimates.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;
use tollgate::store::Check;
use tollgate::{Algorithm, Clock, Policy, PolicyName, Store, Window};

/// `decide_1` and `decide_3`: `store` deciding the first of `checks`, then all three, each
/// asserted admitted, so a benchmark never times a denial.
pub fn bench_decides(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &tokio::runtime::Runtime,
    store: &impl Store,
    checks: &[Check],
) {
    for (id, checks) in [("decide_1", &checks[..1]), ("decide_3", checks)] {
        group.bench_function(id, |b| {
            b.to_async(runtime).iter(|| async {
                let decision = store.decide(checks, Clock::Store).await.unwrap();
                assert!(decision.allowed);
                decision
            })
        });
    }
}

/// One policy per algorithm, so roomy that millions of benchmark iterations never run out.
pub fn roomy_policies() -> Vec<Arc<Policy>> {
    let name = |n: &str| PolicyName::new(n).unwrap();
    let limit = |n: u64| NonZeroU64::new(n).unwrap();
    let window = |ms: u64| Window::from_millis(ms).unwrap();
    [
        // Fixed and sliding: a trillion a window. Sliding keeps limit × window under 2^51.
        (
            name("fixed"),
            Algorithm::FixedWindow,
            limit(1_000_000_000_000),
            window(60_000),
        ),
        (
            name("sliding"),
            Algorithm::SlidingWindow,
            limit(1_000_000_000_000),
            window(1_000),
        ),
        // A token a microsecond, the fastest refill, and a billion-token bucket.
        (
            name("bucket"),
            Algorithm::TokenBucket,
            limit(1_000_000_000),
            window(1_000_000),
        ),
    ]
    .into_iter()
    .map(|(n, a, l, w)| Arc::new(Policy::new(n, a, l, w).unwrap()))
    .collect()
}

/// The prefix that marks a group's baseline among its benchmark ids.
pub const BASELINE: &str = "baseline_";

/// Prints, for each of `groups`, every benchmark's median and its ratio to the group's
/// `baseline_*` benchmark, counting only estimates written since `started`.
///
/// Prints nothing in `--test` or `--list` mode, or when a filter left a group's baseline out:
/// a ratio against a figure from an earlier run would mix two machines' moods.
pub fn print_ratios(started: SystemTime, groups: &[&str]) {
    let Some(root) = criterion_dir(groups) else {
        return;
    };
    let mut lines = Vec::new();
    for group in groups {
        let mut medians = fresh_medians(&root.join(group), started);
        medians.sort_by(|a, b| {
            let base = |id: &str| !id.starts_with(BASELINE);
            base(&a.0).cmp(&base(&b.0)).then(a.0.cmp(&b.0))
        });
        let Some(baseline) = medians
            .iter()
            .find(|(id, _)| id.starts_with(BASELINE))
            .map(|(_, ns)| *ns)
        else {
            continue;
        };
        for (id, ns) in &medians {
            lines.push(format!(
                "{:<42} {:>12} {:>8.2}",
                format!("{group}/{id}"),
                human(*ns),
                ns / baseline
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    println!();
    println!("Medians of this run, as ratios to each group's baseline_* (1.00):");
    println!("{:<42} {:>12} {:>8}", "benchmark", "median", "ratio");
    for line in lines {
        println!("{line}");
    }
}

/// Where criterion writes: `$CRITERION_HOME`, else the nearest `criterion` folder beside this
/// executable (`<target>/release/deps/<bench>`) that holds one of `groups`.
fn criterion_dir(groups: &[&str]) -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|dir| dir.join("criterion"))
        .find(|dir| groups.iter().any(|g| dir.join(g).is_dir()))
}

/// `(benchmark id, median ns)` for each benchmark of one group measured since `started`.
fn fresh_medians(group_dir: &Path, started: SystemTime) -> Vec<(String, f64)> {
    let Ok(entries) = std::fs::read_dir(group_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let file = entry.path().join("new").join("estimates.json");
            let written = std::fs::metadata(&file).and_then(|m| m.modified()).ok()?;
            if written < started {
                return None;
            }
            let estimates: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
            let median = estimates["median"]["point_estimate"].as_f64()?;
            Some((entry.file_name().to_string_lossy().into_owned(), median))
        })
        .collect()
}

/// `412 ns`, `3.41 µs`, `1.20 ms`.
fn human(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}
