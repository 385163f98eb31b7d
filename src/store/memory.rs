//! The in-process store: one instance's counts in a map, evicted as they stop mattering.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::algorithm::{self, Evaluation, State};
use crate::decision::{Decision, PolicyDecision};
use crate::store::{Check, Clock, Store, StoreError, StoreFuture};

/// The map is swept of expired entries whenever it grows to twice its size after the last
/// sweep, and never below this many entries, so sweeping costs O(1) per decision on average.
const MIN_SWEEP_LEN: usize = 1024;

/// Counts in process memory: exact for one instance, not shared between instances.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<String, Entry>,
    /// The length at which the next sweep runs.
    sweep_at: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    state: State,
    /// Unix microseconds at which the entry stops mattering: the memory store's TTL.
    expires_at_us: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries are held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave a half-written decision: each entry is
        // written whole, so the data is still consistent and the poison can be ignored.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn decide_at(&self, checks: &[Check], now_us: u64) -> Decision {
        let mut entries = self.lock();
        entries.sweep(now_us);
        if let [check] = checks {
            return entries.decide_one(check, now_us);
        }
        let evaluations: Vec<_> = checks
            .iter()
            .map(|check| {
                let stored = entries
                    .by_key
                    .get(&check.key)
                    .filter(|entry| entry.expires_at_us > now_us)
                    .map(|entry| &entry.state);
                algorithm::evaluate(&check.policy, check.cost, stored, now_us)
            })
            .collect();
        let allowed = evaluations.iter().all(|e| e.fits);
        if allowed {
            for (check, evaluation) in checks.iter().zip(&evaluations) {
                let entry = Entry::after(evaluation, now_us);
                match entries.by_key.get_mut(&check.key) {
                    Some(stored) => *stored = entry,
                    None => {
                        entries.by_key.insert(check.key.clone(), entry);
                    }
                }
            }
        }
        let policies = checks
            .iter()
            .zip(&evaluations)
            .map(|(check, e)| {
                let outcome = if allowed { e.admitted } else { e.denied };
                PolicyDecision::new(check.policy.clone(), outcome)
            })
            .collect();
        Decision { allowed, policies }
    }
}

impl Entry {
    /// What an admitted evaluation leaves stored.
    fn after(evaluation: &Evaluation, now_us: u64) -> Self {
        Entry {
            state: evaluation.next,
            expires_at_us: now_us + evaluation.ttl_ms * 1000,
        }
    }
}

impl Entries {
    /// One policy, the usual case: one lookup of its key serves the read and the write.
    fn decide_one(&mut self, check: &Check, now_us: u64) -> Decision {
        let slot = self.by_key.get_mut(&check.key);
        let stored = slot
            .as_deref()
            .filter(|entry| entry.expires_at_us > now_us)
            .map(|entry| &entry.state);
        let evaluation = algorithm::evaluate(&check.policy, check.cost, stored, now_us);
        if evaluation.fits {
            let entry = Entry::after(&evaluation, now_us);
            match slot {
                Some(stored) => *stored = entry,
                None => {
                    self.by_key.insert(check.key.clone(), entry);
                }
            }
        }
        let outcome = if evaluation.fits {
            evaluation.admitted
        } else {
            evaluation.denied
        };
        Decision {
            allowed: evaluation.fits,
            policies: vec![PolicyDecision::new(check.policy.clone(), outcome)],
        }
    }

    /// Drops expired entries once the map has doubled since the last sweep.
    fn sweep(&mut self, now_us: u64) {
        if self.by_key.len() < self.sweep_at {
            return;
        }
        self.by_key.retain(|_, entry| entry.expires_at_us > now_us);
        self.sweep_at = (self.by_key.len() * 2).max(MIN_SWEEP_LEN);
    }
}

impl Store for MemoryStore {
    fn decide<'a>(&'a self, checks: &'a [Check], clock: Clock) -> StoreFuture<'a, Decision> {
        let decision = self.decide_at(checks, micros(clock));
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn decide_now(&self, checks: &[Check], clock: Clock) -> Option<Result<Decision, StoreError>> {
        Some(Ok(self.decide_at(checks, micros(clock))))
    }

    fn ready<'a>(&'a self, _probe: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The time `clock` names, in Unix microseconds.
fn micros(clock: Clock) -> u64 {
    match clock {
        Clock::Store => unix_micros(SystemTime::now()),
        Clock::At(ms) => ms * 1000,
    }
}

fn unix_micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Policy;
    use std::sync::Arc;

    fn check(key: &str) -> Check {
        let policy: Policy = "p: 1 per 1s".parse().unwrap();
        Check::new(key.into(), Arc::new(policy))
    }

    /// Expired entries are evicted, so memory is bounded by the callers active in one window.
    #[test]
    fn expired_entries_are_evicted() {
        let store = MemoryStore::new();
        for i in 0..5_000 {
            store.decide_at(&[check(&format!("k{i}"))], 10_000_000);
        }
        assert_eq!(store.len(), 5_000);
        for i in 0..5_000 {
            store.decide_at(&[check(&format!("n{i}"))], 11_000_000);
        }
        assert!(
            store.len() < 8_000,
            "the first window's 5,000 entries should have been swept, {} remain",
            store.len()
        );
    }
}
