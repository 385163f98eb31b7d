//! `tollgate inspect`: where each policy stands for one caller, read from Redis without spending
//! anything, for the operator asked why a customer is being limited.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::command::{self, CommandError};
use crate::config::{Settings, Unkeyed};
use crate::decision::PolicyDecision;

/// What `tollgate inspect` found: each keyed policy's standing, in configuration order, and the
/// policies whose keys need an address or a route that was not given.
#[derive(Debug)]
pub struct Report {
    /// Each policy's key and what it reports for its own cost.
    pub standings: Vec<(String, PolicyDecision)>,
    /// The policies that could not be keyed.
    pub unkeyed: Vec<Unkeyed>,
}

/// Reads where each policy stands for the caller `user` (from `ip`, on `route`) under
/// `settings`, spending nothing.
pub async fn inspect(
    settings: &Settings,
    user: &str,
    ip: Option<IpAddr>,
    route: Option<&str>,
) -> Result<Report, CommandError> {
    if settings.redis.is_none() {
        return Err(CommandError::MemoryStore);
    }
    let (mut checks, mut unkeyed) = (Vec::new(), Vec::new());
    for check in settings.caller_checks(user, ip, route) {
        match check {
            Ok(check) => checks.push(check),
            Err(policy) => unkeyed.push(policy),
        }
    }
    if checks.is_empty() {
        return Ok(Report {
            standings: Vec::new(),
            unkeyed,
        });
    }
    let store = command::store(settings).await?;
    let decision = store.peek(&checks).await?;
    let standings = checks
        .into_iter()
        .map(|check| check.key)
        .zip(decision.policies)
        .collect();
    Ok(Report { standings, unkeyed })
}

impl fmt::Display for Report {
    /// A table, one policy a line: its limit, what remains, when it is whole again, whether a
    /// request of its cost would be admitted now, and its key for `redis-cli`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<[String; 6]> = self
            .standings
            .iter()
            .map(|(key, standing)| row(key, standing))
            .collect();
        let header = [
            "policy",
            "limit",
            "remaining",
            "full in",
            "next request",
            "key",
        ]
        .map(String::from);
        let mut widths = [0; 6];
        for row in std::iter::once(&header).chain(&rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// One policy's line of the table.
fn row(key: &str, standing: &PolicyDecision) -> [String; 6] {
    let policy = &standing.policy;
    let mut name = policy.name().to_string();
    if policy.shadow() {
        name.push_str(" (shadow)");
    }
    let next = if standing.allowed {
        "admitted".to_owned()
    } else {
        let verdict = if policy.shadow() {
            "would be denied"
        } else {
            "denied"
        };
        format!("{verdict} for {}", span(standing.retry_after))
    };
    let full_in = if standing.reset_after.is_zero() || standing.remaining >= standing.limit {
        "now".to_owned()
    } else {
        span(standing.reset_after)
    };
    [
        name,
        format!(
            "{} per {}",
            standing.limit,
            length(policy.window().as_duration())
        ),
        standing.remaining.to_string(),
        full_in,
        next,
        key.to_owned(),
    ]
}

/// A wait, in its two largest units (`42s`, `35m 43s`, `2h 5m`, `1d 3h`), rounded up to the
/// second as `Retry-After` is, and down below that.
fn span(duration: Duration) -> String {
    let secs = duration.as_millis().div_ceil(1000);
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    let parts = match (d, h, m) {
        (0, 0, 0) => return format!("{s}s"),
        (0, 0, _) => [(m, "m"), (s, "s")],
        (0, _, _) => [(h, "h"), (m, "m")],
        _ => [(d, "d"), (h, "h")],
    };
    let shown: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    shown.join(" ")
}

/// A window's length in its largest whole unit, `1d`, `2h`, `1m` or `30s`, as it is configured.
fn length(duration: Duration) -> String {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{}s", ms.div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths read as they are configured; anything else in seconds, rounded up.
    #[test]
    fn lengths_read_as_configured() {
        let ms = Duration::from_millis;
        assert_eq!(length(ms(86_400_000)), "1d");
        assert_eq!(length(ms(7_200_000)), "2h");
        assert_eq!(length(ms(60_000)), "1m");
        assert_eq!(length(ms(90_000)), "90s");
        assert_eq!(length(ms(41_001)), "42s");
        assert_eq!(length(ms(1)), "1s");
    }

    /// Waits read in their two largest units, rounded up to the second.
    #[test]
    fn waits_read_in_two_units() {
        let ms = Duration::from_millis;
        assert_eq!(span(ms(0)), "0s");
        assert_eq!(span(ms(41_001)), "42s");
        assert_eq!(span(ms(60_000)), "1m");
        assert_eq!(span(ms(2_143_000)), "35m 43s");
        assert_eq!(span(ms(7_500_000)), "2h 5m");
        assert_eq!(span(ms(97_200_000)), "1d 3h");
        assert_eq!(span(ms(86_400_000)), "1d");
    }
}
