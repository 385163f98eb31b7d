//! The in-process store: one instance's counts in memory, at most `memory.max_callers` of them,
//! swept of expired entries on a timer that gives their memory back.
//!
//! The map is split into [`SHARDS`] shards, each behind its own mutex. A decision locks the one
//! shard its key hashes to (the shards of all its keys, in order, for several policies), so it
//! costs one lock and one lookup, as a single map would. The sweeper visits one shard per tick,
//! every shard once per [`SWEEP_PERIOD`], so a sweep step holds up only the decisions that fall
//! in that shard, for the time it takes to sweep a 256th of the store; it shrinks the shard's
//! table once it is mostly empty, so the memory goes back to the allocator.
//!
//! # At the cap
//!
//! A decision that would create an entry while `max_callers` entries are held first sweeps
//! expired entries (one such sweep per [`SWEEP_PERIOD`] in the whole store): those of the shards
//! it holds, and of every other shard when no timer sweeps the store. If the store is still
//! full, it is denied without being tracked: its policies report nothing remaining and a retry
//! after [`FULL_RETRY_AFTER`], by when the sweeper has visited every shard. A live entry is
//! never evicted, so a caller already tracked keeps exactly its limit, and no caller can shed
//! its count by flooding the store with new names. A shadow policy never denies, so its new
//! entry takes what room is left or goes untracked, and the other policies decide alone.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashbrown::HashTable;

use crate::algorithm::{self, Evaluation, Outcome, State};
use crate::decision::{Decision, PolicyDecision};
use crate::log_throttle::LogThrottle;
use crate::store::{Check, Clock, Store, StoreCounts, StoreError, StoreFuture};

mod sweep;

/// The entries a memory store holds at most unless told otherwise: `memory.max_callers`.
pub const DEFAULT_MAX_CALLERS: usize = 1_000_000;

/// How many shards the map is split into: a power of two, so a hash picks one with a mask.
pub const SHARDS: usize = 256;

/// How long the sweeper takes to visit every shard once, one shard per tick.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// The wait given to a new caller refused because the store is full: by then the sweeper has
/// visited every shard, so any entry expired now has made room.
pub const FULL_RETRY_AFTER: Duration = SWEEP_PERIOD;

/// Counts in process memory: exact for one instance, not shared between instances.
///
/// Made inside a tokio runtime, or first deciding inside one, it sweeps itself on a timer; the
/// timer task holds only a weak reference, so it ends with the store, and it stops while the
/// store is empty. Outside a runtime, expired entries are swept only when the store is full.
pub struct MemoryStore {
    shared: Arc<Shared>,
    /// The most entries held at once.
    max_callers: usize,
}

/// What the store and its sweeper share.
struct Shared {
    shards: Box<[Shard]>,
    /// One keyed hash picks the shard and places the key in its table.
    hasher: RandomState,
    /// Entries held across all shards, live or not yet swept: the cap's count.
    len: AtomicUsize,
    /// Decisions refused because the store was full.
    full: AtomicU64,
    /// Whether a sweeper task is running.
    sweeping: AtomicBool,
    /// The latest time a decision named itself (`Clock::At`), in Unix microseconds, or 0: a store
    /// driven by an explicit clock (the tests) is swept by that clock, not the wall clock.
    explicit_now_us: AtomicU64,
    /// When a full store last swept itself, in Unix microseconds, so that a flood of new
    /// callers at the cap sweeps it at most once per [`SWEEP_PERIOD`], not once a request.
    full_swept_at_us: AtomicU64,
    /// A full store warns at most once a second.
    full_warnings: LogThrottle,
}

/// One shard, on a cache line of its own so that two cores locking neighbours do not contend.
#[repr(align(64))]
struct Shard(Mutex<Table>);

struct Table {
    slots: HashTable<Slot>,
}

impl Table {
    /// Adds `key`, which the table does not hold, at `hash` (from `shared`'s hasher).
    fn insert(&mut self, shared: &Shared, hash: u64, key: &str, entry: Entry) {
        let slot = Slot {
            key: key.into(),
            entry,
        };
        self.slots
            .insert_unique(hash, slot, |s| shared.hash(&s.key));
    }
}

struct Slot {
    key: Box<str>,
    entry: Entry,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    state: State,
    /// Unix microseconds at which the entry stops mattering: the memory store's TTL.
    expires_at_us: u64,
}

/// What a new caller's policies report when the store is full: nothing left, come back after
/// [`FULL_RETRY_AFTER`].
const FULL: Outcome = Outcome {
    remaining: 0,
    reset_after_ms: FULL_RETRY_AFTER.as_millis() as u64,
    retry_after_ms: FULL_RETRY_AFTER.as_millis() as u64,
};

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .field("max_callers", &self.max_callers)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store holding at most [`DEFAULT_MAX_CALLERS`] entries; inside a tokio runtime,
    /// its sweeper starts with its first entry.
    pub fn new() -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Shard(Mutex::new(Table {
                    slots: HashTable::new(),
                }))
            })
            .collect();
        MemoryStore {
            shared: Arc::new(Shared {
                shards,
                hasher: RandomState::new(),
                len: AtomicUsize::new(0),
                full: AtomicU64::new(0),
                sweeping: AtomicBool::new(false),
                explicit_now_us: AtomicU64::new(0),
                full_swept_at_us: AtomicU64::new(0),
                full_warnings: LogThrottle::new(Duration::from_secs(1)),
            }),
            max_callers: DEFAULT_MAX_CALLERS,
        }
    }

    /// Holds at most `max_callers` entries (one per caller and policy).
    pub fn with_max_callers(mut self, max_callers: NonZeroUsize) -> Self {
        self.max_callers = max_callers.get();
        self
    }

    /// The most entries the store holds.
    pub fn max_callers(&self) -> usize {
        self.max_callers
    }

    /// How many entries are held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed)
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many decisions were refused because the store was full.
    pub fn full_count(&self) -> u64 {
        self.shared.full.load(Ordering::Relaxed)
    }

    /// The time `clock` names, in Unix microseconds; an explicit time also becomes the
    /// sweeper's clock.
    fn now_us(&self, clock: Clock) -> u64 {
        match clock {
            Clock::Store => unix_micros(SystemTime::now()),
            Clock::At(ms) => {
                let now_us = (ms * 1000).max(1);
                self.shared
                    .explicit_now_us
                    .fetch_max(now_us, Ordering::Relaxed);
                now_us
            }
        }
    }

    fn decide_at(&self, checks: &[Check], now_us: u64) -> Decision {
        let (decision, created) = match checks {
            [check] => self.decide_one(check, now_us),
            _ => self.decide_many(checks, now_us),
        };
        // Read only when this decision made an entry, so a tracked caller's decision never
        // touches it.
        if created && !self.shared.sweeping.load(Ordering::SeqCst) {
            Shared::start_sweeper(&self.shared);
        }
        decision
    }

    /// One policy, the usual case: one lock, and one lookup of its key serves the read and the
    /// write. Also returns whether an entry was created.
    fn decide_one(&self, check: &Check, now_us: u64) -> (Decision, bool) {
        let shared = &*self.shared;
        let hash = shared.hash(&check.key);
        let mut table = shared.lock(hash);
        let slot = table.slots.find_mut(hash, |s| *s.key == *check.key);
        let stored = slot
            .as_deref()
            .filter(|slot| slot.entry.expires_at_us > now_us)
            .map(|slot| &slot.entry.state);
        let evaluation = algorithm::evaluate(&check.policy, check.cost, stored, now_us);
        let mut created = false;
        // A check that costs 0 (Envoy's check-only descriptor) reports and writes nothing.
        if evaluation.fits && check.cost > 0 {
            let entry = Entry::after(&evaluation, now_us);
            match slot {
                Some(slot) => slot.entry = entry,
                None => {
                    let held = (std::slice::from_mut(&mut table), &[shard_of(hash)][..]);
                    if self.make_room(held, 1, now_us) {
                        table.insert(shared, hash, &check.key, entry);
                        created = true;
                    } else if !check.policy.shadow() {
                        drop(table);
                        let policies = vec![PolicyDecision::new(check.policy.clone(), FULL)];
                        return (self.refused(policies), false);
                    }
                    // A shadow policy never denies, so at the cap it goes untracked instead.
                }
            }
        }
        let outcome = if evaluation.fits {
            evaluation.admitted
        } else {
            evaluation.denied
        };
        let decision = Decision {
            // A shadow policy that does not fit admits all the same, having consumed nothing.
            allowed: evaluation.fits || check.policy.shadow(),
            policies: vec![PolicyDecision::new(check.policy.clone(), outcome)],
        };
        (decision, created)
    }

    /// Several policies, all or nothing: the shards of all their keys are locked together, in
    /// shard order so that two decisions never wait on each other. Also returns whether an
    /// entry was created.
    fn decide_many(&self, checks: &[Check], now_us: u64) -> (Decision, bool) {
        let shared = &*self.shared;
        let hashes: Vec<u64> = checks.iter().map(|c| shared.hash(&c.key)).collect();
        let mut shards: Vec<usize> = hashes.iter().map(|&h| shard_of(h)).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut tables: Vec<MutexGuard<'_, Table>> =
            shards.iter().map(|&i| shared.lock_shard(i)).collect();
        let table_of = |hash: u64| {
            shards
                .binary_search(&shard_of(hash))
                .expect("every key's shard is locked")
        };
        let found = |tables: &[MutexGuard<'_, Table>], check: &Check, hash: u64| {
            tables[table_of(hash)]
                .slots
                .find(hash, |s| *s.key == *check.key)
                .map(|slot| slot.entry)
        };
        let evaluations: Vec<Evaluation> = checks
            .iter()
            .zip(&hashes)
            .map(|(check, &hash)| {
                let stored = found(&tables, check, hash).filter(|e| e.expires_at_us > now_us);
                algorithm::evaluate(
                    &check.policy,
                    check.cost,
                    stored.as_ref().map(|e| &e.state),
                    now_us,
                )
            })
            .collect();
        // Only the policies that are not shadow decide; a shadow policy that does not fit is
        // left as it stands, and the others consume as if it were absent.
        let allowed = evaluations
            .iter()
            .zip(checks)
            .all(|(e, check)| e.fits || check.policy.shadow());
        let mut created = false;
        if allowed {
            let untracked = |tables: &[MutexGuard<'_, Table>]| {
                checks
                    .iter()
                    .zip(&hashes)
                    .zip(&evaluations)
                    .filter(|&((check, &hash), e)| {
                        e.fits
                            && check.cost > 0
                            && !check.policy.shadow()
                            && found(tables, check, hash).is_none()
                    })
                    .count()
            };
            // A sweep at the cap may remove an expired entry of these very keys, which then
            // needs room of its own: count again after it. Only the policies that decide need
            // room; a shadow policy's new entry takes what room is left, or goes untracked.
            let mut needed = untracked(&tables);
            let mut room = needed == 0 || self.reserve(needed);
            if !room && self.sweep_when_full((&mut tables, &shards), now_us) {
                needed = untracked(&tables);
                room = needed == 0 || self.reserve(needed);
            }
            if !room {
                let policies = checks
                    .iter()
                    .zip(&hashes)
                    .zip(&evaluations)
                    .map(|((check, &hash), e)| {
                        let outcome = match found(&tables, check, hash) {
                            None if !check.policy.shadow() => FULL,
                            _ => e.denied,
                        };
                        PolicyDecision::new(check.policy.clone(), outcome)
                    })
                    .collect();
                drop(tables);
                return (self.refused(policies), false);
            }
            let mut inserted = 0;
            for ((check, &hash), evaluation) in checks.iter().zip(&hashes).zip(&evaluations) {
                if !evaluation.fits || check.cost == 0 {
                    continue;
                }
                let entry = Entry::after(evaluation, now_us);
                let table = &mut tables[table_of(hash)];
                match table.slots.find_mut(hash, |s| *s.key == *check.key) {
                    Some(slot) => slot.entry = entry,
                    None if check.policy.shadow() => {
                        if self.reserve(1) {
                            table.insert(shared, hash, &check.key, entry);
                            created = true;
                        }
                    }
                    None => {
                        table.insert(shared, hash, &check.key, entry);
                        inserted += 1;
                    }
                }
            }
            // Two checks of one key reserve twice but insert once.
            if needed > inserted {
                shared.len.fetch_sub(needed - inserted, Ordering::Relaxed);
            }
            created |= inserted > 0;
        }
        let policies = checks
            .iter()
            .zip(&evaluations)
            .map(|(check, e)| {
                let outcome = if allowed && e.fits {
                    e.admitted
                } else {
                    e.denied
                };
                PolicyDecision::new(check.policy.clone(), outcome)
            })
            .collect();
        (Decision { allowed, policies }, created)
    }

    /// Counts `n` new entries against the cap, or, at the cap, sweeps the store and tries once
    /// more. False when the store is still full.
    fn make_room(&self, held: Held<'_, '_>, n: usize, now_us: u64) -> bool {
        self.reserve(n) || (self.sweep_when_full(held, now_us) && self.reserve(n))
    }

    /// Counts `n` new entries against the cap, unless they would exceed it.
    fn reserve(&self, n: usize) -> bool {
        // SeqCst, with the sweeper's stop: a new entry either finds the sweeper running or
        // starts one.
        self.shared
            .len
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |len| {
                (len + n <= self.max_callers).then_some(len + n)
            })
            .is_ok()
    }

    /// A denial for a caller the full store could not track, counted and warned about.
    fn refused(&self, policies: Vec<PolicyDecision>) -> Decision {
        self.shared.full.fetch_add(1, Ordering::Relaxed);
        if self.shared.full_warnings.ready() {
            tracing::warn!(
                max_callers = self.max_callers,
                "the memory store is full: new callers are denied until entries expire \
                 (memory.max_callers)"
            );
        }
        Decision {
            allowed: false,
            policies,
        }
    }
}

impl Shared {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn lock(&self, hash: u64) -> MutexGuard<'_, Table> {
        self.lock_shard(shard_of(hash))
    }

    fn lock_shard(&self, i: usize) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave a half-written decision: each entry is
        // written whole, so the data is still consistent and the poison can be ignored.
        self.shards[i].0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shard tables a decision holds locked, and their shard numbers.
type Held<'a, 'g> = (&'a mut [MutexGuard<'g, Table>], &'a [usize]);

/// The shard a hash falls in: bits that hashbrown uses for neither the bucket nor the tag.
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize & (SHARDS - 1)
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

impl Store for MemoryStore {
    fn decide<'a>(&'a self, checks: &'a [Check], clock: Clock) -> StoreFuture<'a, Decision> {
        let decision = self.decide_at(checks, self.now_us(clock));
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn decide_now(&self, checks: &[Check], clock: Clock) -> Option<Result<Decision, StoreError>> {
        Some(Ok(self.decide_at(checks, self.now_us(clock))))
    }

    fn ready<'a>(&'a self, _probe: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn counts(&self) -> StoreCounts {
        StoreCounts {
            memory_entries: self.len() as u64,
            memory_full: self.full_count(),
            ..StoreCounts::default()
        }
    }
}

fn unix_micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests;
