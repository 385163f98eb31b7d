//! `tollgate reset`: a caller's quota made whole, and every running instance told to forget the
//! denials it cached, through one marker key in Redis that each instance reads twice a second.

use std::fmt;
use std::net::IpAddr;
use std::sync::Weak;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::{Client, KeysInterface};
use fred::types::Expiration;

use crate::command::{self, CommandError};
use crate::config::{Settings, Unkeyed};
use crate::limiter::denial_cache::DenialCache;
use crate::scope::Dimension;
use crate::store::StoreError;

/// How often each instance reads the marker: a reset reaches every instance within a second.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

/// How long the marker lives: far longer than any instance takes to read it, and never forever.
const MARKER_TTL_MS: i64 = 3_600_000;

/// The marker key under `prefix`: each reset writes a new value to it.
pub fn marker_key(prefix: &str) -> String {
    format!("{prefix}:resets")
}

/// What `tollgate reset` did: each policy's key and whether it held a count, and the policies
/// whose keys need an address or a route that was not given.
#[derive(Debug)]
pub struct Report {
    /// Each policy reset: its name, its key, and whether a count was deleted.
    pub reset: Vec<(String, String, bool)>,
    /// The policies that could not be keyed.
    pub unkeyed: Vec<Unkeyed>,
    /// The policies left alone because every caller shares their bucket (`by = "global"`, or
    /// the route alone).
    pub shared: Vec<String>,
}

/// Deletes the counts of the caller `user` (from `ip`, on `route`) under `settings`, of every
/// policy or only of `policy`, then writes the marker that has every instance forget its
/// cached denials.
pub async fn reset(
    settings: &Settings,
    user: &str,
    ip: Option<IpAddr>,
    route: Option<&str>,
    policy: Option<&str>,
) -> Result<Report, CommandError> {
    if settings.redis.is_none() {
        return Err(CommandError::MemoryStore);
    }
    if let Some(name) = policy {
        if !settings.policies.iter().any(|p| p.name().as_str() == name) {
            let names: Vec<&str> = settings
                .policies
                .iter()
                .map(|p| p.name().as_str())
                .collect();
            return Err(CommandError::NoSuchPolicy(
                name.to_owned(),
                names.join(", "),
            ));
        }
    }
    let (mut checks, mut unkeyed, mut shared) = (Vec::new(), Vec::new(), Vec::new());
    for check in settings.caller_checks(user, ip, route) {
        match check {
            Ok(check) if policy.is_none_or(|name| check.policy.name().as_str() == name) => {
                // A bucket no caller's name is part of (everyone's, or a route's) is every
                // caller's: resetting one caller must not give it back to all of them.
                let by = check.policy.scope().by.dimensions();
                if by
                    .iter()
                    .any(|d| matches!(d, Dimension::User | Dimension::Ip | Dimension::Header(_)))
                {
                    checks.push(check);
                } else {
                    shared.push(check.policy.name().to_string());
                }
            }
            Ok(_) => {}
            Err(missing) if policy.is_none_or(|name| missing.policy.as_str() == name) => {
                unkeyed.push(missing)
            }
            Err(_) => {}
        }
    }
    if checks.is_empty() {
        let mut why: Vec<String> = unkeyed
            .iter()
            .map(|u| {
                format!(
                    "{} is keyed by {:?}; pass --ip and/or --route",
                    u.policy, u.by
                )
            })
            .collect();
        why.extend(
            shared
                .iter()
                .map(|name| format!("{name} is shared by every caller")),
        );
        if why.is_empty() {
            why.push("no policy is configured".into());
        }
        return Err(CommandError::NothingKeyed(why.join("; ")));
    }
    let store = command::store(settings).await?;
    let client = store.client();
    let within = command::timeout(settings);
    let mut reset = Vec::new();
    for check in checks {
        // One key a call: on a cluster a caller's keys by address and by name are in different
        // slots.
        let deleted: i64 = timed(within, client.del(check.key.as_str())).await?;
        reset.push((check.policy.name().to_string(), check.key, deleted > 0));
    }
    timed::<()>(
        within,
        client.set(
            marker_key(&settings.key_prefix),
            token(),
            Some(Expiration::PX(MARKER_TTL_MS)),
            None,
            false,
        ),
    )
    .await?;
    Ok(Report {
        reset,
        unkeyed,
        shared,
    })
}

/// `call`'s answer within `within`.
async fn timed<T>(
    within: Duration,
    call: impl std::future::Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(within, call).await {
        Ok(answer) => answer.map_err(|e| StoreError::Redis(e.to_string())),
        Err(_) => Err(StoreError::Timeout(within)),
    }
}

/// A value no earlier reset wrote: the time, and this process.
fn token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{now}-{}", std::process::id())
}

impl fmt::Display for Report {
    /// One line a policy, then what the running instances do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (policy, key, deleted) in &self.reset {
            let what = if *deleted {
                "reset"
            } else {
                "had nothing to reset"
            };
            writeln!(f, "{policy}: {what} ({key})")?;
        }
        for policy in &self.shared {
            writeln!(f, "{policy}: left alone, every caller shares its count")?;
        }
        writeln!(
            f,
            "running instances forget their cached denials within a second"
        )
    }
}

/// Reads the marker under `prefix` every [`WATCH_EVERY`] and, whenever a read finds a marker
/// other than the last one seen, has `cache` forget its denials. Ends when the cache is
/// dropped. A read that fails is tried again at the next tick. The first marker found counts
/// as a change too: a reset made before this instance's first good read must still reach
/// denials it cached meanwhile, and clearing a cache costs one store call per denied caller.
pub async fn watch(client: Client, prefix: String, cache: Weak<DenialCache>) {
    let key = marker_key(&prefix);
    let mut seen: Option<String> = None;
    // A marker already there when the watch starts is a reset made before this cache existed
    // (a reload starts a new one): it is cleared, but not announced.
    let mut first = true;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let read = tokio::time::timeout(WATCH_EVERY, client.get::<Option<String>, _>(&key));
        let Ok(Ok(value)) = read.await else {
            continue;
        };
        if value.is_some() && value != seen {
            cache.clear();
            if !first {
                tracing::info!("a reset was made: cached denials forgotten");
            }
        }
        first = false;
        seen = value;
    }
}
