//! The in-process store: one instance's counts in a map, evicted as their windows end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::algorithm::fixed_window::{self, Counter};
use crate::decision::{Decision, PolicyDecision};
use crate::quota::Algorithm;
use crate::store::{Check, Clock, Store, StoreFuture};

/// The map is swept of ended windows whenever it grows to twice its size after the last sweep,
/// and never below this many entries, so sweeping costs O(1) per decision on average.
const MIN_SWEEP_LEN: usize = 1024;

/// Counts in process memory: exact for one instance, not shared between instances.
#[derive(Debug, Default)]
pub struct MemoryStore {
    windows: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    counters: HashMap<String, Entry>,
    /// The length at which the next sweep runs.
    sweep_at: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    counter: Counter,
    /// Unix milliseconds at which the window ends, the memory store's TTL.
    expires_at: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many counters are held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.lock().counters.len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        // A panic while holding the lock cannot leave a half-written decision: each entry is
        // written whole, so the data is still consistent and the poison can be ignored.
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn decide_now(&self, checks: &[Check], now: u64) -> Decision {
        let mut windows = self.lock();
        windows.sweep(now);
        let evaluations: Vec<_> = checks
            .iter()
            .map(|check| match check.policy.algorithm() {
                Algorithm::FixedWindow => {
                    let stored = windows.counters.get(&check.key).map(|e| e.counter);
                    fixed_window::evaluate(stored, &check.policy, now)
                }
            })
            .collect();
        let allowed = evaluations.iter().all(|e| e.fits);
        let policies = checks
            .iter()
            .zip(&evaluations)
            .map(|(check, eval)| {
                let mut count = eval.count;
                if allowed {
                    let counter = eval.consume(check.policy.cost());
                    count = counter.count;
                    let entry = Entry {
                        counter,
                        expires_at: now + eval.reset_after_ms,
                    };
                    windows.counters.insert(check.key.clone(), entry);
                }
                PolicyDecision {
                    policy: check.policy.clone(),
                    allowed: eval.fits,
                    limit: check.policy.limit(),
                    // A count above the limit (lowered mid-window) leaves nothing.
                    remaining: check.policy.limit().saturating_sub(count),
                    retry_after: Duration::from_millis(eval.retry_after_ms()),
                    reset_after: Duration::from_millis(eval.reset_after_ms),
                }
            })
            .collect();
        Decision { allowed, policies }
    }
}

impl Windows {
    /// Drops ended windows once the map has doubled since the last sweep.
    fn sweep(&mut self, now: u64) {
        if self.counters.len() < self.sweep_at {
            return;
        }
        self.counters.retain(|_, entry| entry.expires_at > now);
        self.sweep_at = (self.counters.len() * 2).max(MIN_SWEEP_LEN);
    }
}

impl Store for MemoryStore {
    fn decide<'a>(&'a self, checks: &'a [Check], clock: Clock) -> StoreFuture<'a, Decision> {
        let now = match clock {
            Clock::Store => unix_millis(SystemTime::now()),
            Clock::At(ms) => ms,
        };
        let decision = self.decide_now(checks, now);
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn ready(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{Policy, PolicyName, Window};
    use std::num::NonZeroU64;
    use std::sync::Arc;

    fn check(key: &str, limit: u64, window_ms: u64) -> Check {
        let policy = Policy::new(
            PolicyName::new("p").unwrap(),
            Algorithm::FixedWindow,
            NonZeroU64::new(limit).unwrap(),
            Window::from_millis(window_ms).unwrap(),
        )
        .unwrap();
        Check {
            key: key.into(),
            policy: Arc::new(policy),
        }
    }

    /// Ended windows are evicted, so memory is bounded by the callers active in one window.
    #[test]
    fn ended_windows_are_evicted() {
        let store = MemoryStore::new();
        for i in 0..5_000 {
            store.decide_now(&[check(&format!("k{i}"), 1, 1_000)], 10_000);
        }
        assert_eq!(store.len(), 5_000);
        for i in 0..5_000 {
            store.decide_now(&[check(&format!("n{i}"), 1, 1_000)], 11_000);
        }
        assert!(
            store.len() < 8_000,
            "the first window's 5,000 counters should have been swept, {} remain",
            store.len()
        );
    }
}
