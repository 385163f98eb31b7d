//! Sweeping the memory store of expired entries: the timer that visits one shard per tick, and
//! the sweep a full store makes before it refuses a new caller.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use super::{unix_micros, Held, MemoryStore, Shared, Table, SHARDS, SWEEP_PERIOD};

impl MemoryStore {
    /// At the cap, at most once per [`SWEEP_PERIOD`]: sweeps the shards `held` by this decision,
    /// and, when no timer sweeps the store, every other shard not locked at this moment, so that
    /// expired entries make room before a new caller is refused. Whether it swept.
    pub(super) fn sweep_when_full(&self, (tables, held): Held<'_, '_>, now_us: u64) -> bool {
        let shared = &*self.shared;
        let last = shared.full_swept_at_us.load(Ordering::Relaxed);
        let due = last == 0 || now_us >= last + SWEEP_PERIOD.as_micros() as u64;
        // One decision sweeps; the others refuse at once rather than wait for it.
        if !due
            || shared
                .full_swept_at_us
                .compare_exchange(last, now_us, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        for table in tables.iter_mut() {
            shared.sweep(table, now_us);
        }
        // With the timer running, every other shard is swept within the period anyway, and
        // sweeping them all here could hold this request up for as long as freeing a million
        // entries takes.
        if shared.sweeping.load(Ordering::SeqCst) {
            return true;
        }
        for i in (0..SHARDS).filter(|i| !held.contains(i)) {
            // Never wait for a lock while holding one: a shard in use is left to the timer.
            let mut table = match shared.shards[i].0.try_lock() {
                Ok(table) => table,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => continue,
            };
            shared.sweep(&mut table, now_us);
        }
        true
    }

    /// Sweeps every shard of expired entries at once, as of `now` (Unix milliseconds), as the
    /// sweeper does one shard at a time.
    #[cfg(test)]
    pub(super) fn sweep_all(&self, now_ms: u64) {
        for i in 0..SHARDS {
            self.shared
                .sweep(&mut self.shared.lock_shard(i), now_ms * 1000);
        }
    }
}

impl Shared {
    /// Drops the expired entries of `table`, and shrinks its table once it is at most a quarter
    /// full, so a flood's memory goes back to the allocator once it has passed.
    pub(super) fn sweep(&self, table: &mut Table, now_us: u64) {
        let before = table.slots.len();
        table.slots.retain(|slot| slot.entry.expires_at_us > now_us);
        let after = table.slots.len();
        if after < before {
            self.len.fetch_sub(before - after, Ordering::Relaxed);
        }
        // Half full after shrinking, so that a shard that hovers does not shrink and grow in
        // turn.
        if after * 4 <= table.slots.capacity() && table.slots.capacity() > 0 {
            table.slots.shrink_to(after * 2, |s| self.hash(&s.key));
        }
    }

    /// The time the sweeper sweeps by.
    fn sweep_clock_us(&self) -> u64 {
        match self.explicit_now_us.load(Ordering::Relaxed) {
            0 => unix_micros(SystemTime::now()),
            explicit => explicit,
        }
    }

    /// Spawns the sweeper on the current tokio runtime, if there is one and no sweeper runs.
    pub(super) fn start_sweeper(shared: &Arc<Shared>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if shared.sweeping.swap(true, Ordering::SeqCst) {
            return;
        }
        runtime.spawn(sweep_forever(Arc::downgrade(shared)));
    }
}

/// Sweeps one shard per tick, every shard once per [`SWEEP_PERIOD`], until the store is dropped
/// or empty (its next entry starts another sweeper).
async fn sweep_forever(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_PERIOD / SHARDS as u32);
    // After a stall, carry on at the usual pace rather than sweep in a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in (0..SHARDS).cycle() {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now_us = shared.sweep_clock_us();
        shared.sweep(&mut shared.lock_shard(i), now_us);
        if shared.len.load(Ordering::SeqCst) == 0 {
            shared.sweeping.store(false, Ordering::SeqCst);
            // An entry made since the load above saw the sweeper running and started none:
            // carry on for it, unless it started one after all.
            if shared.len.load(Ordering::SeqCst) == 0
                || shared.sweeping.swap(true, Ordering::SeqCst)
            {
                return;
            }
        }
    }
}
