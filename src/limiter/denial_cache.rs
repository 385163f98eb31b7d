//! The denial cache: once the store has denied a caller, further identical requests
//! are denied in process until the moment the store said they could be retried, without a
//! store call.
//!
//! It is exact for what it serves: a denial consumes nothing, so nothing the caller does can
//! make the store admit them sooner, and others' requests only ever delay it. (One exception,
//! by a round trip, on Redis Cluster: a concurrent request's refund across hash tags can give
//! quota back early; the cache then keeps denying until the retry time it was given.) Entries
//! expire at that exact time, the cache holds a bounded number of them, and it is per process,
//! so a configuration change, which needs a restart, never serves a stale denial.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::decision::Decision;

/// The longest key the cache holds. A key carries the caller's names as sent (an identity header
/// can run to kilobytes), so without a bound a flood of long names would multiply the cache's
/// memory; a request with a longer key is simply never served from the cache.
pub const MAX_KEY_BYTES: usize = 512;

/// Recent denials by request shape (what its keys are made of, and its costs), each valid until
/// its retry time.
#[derive(Debug)]
pub struct DenialCache {
    capacity: usize,
    inner: Mutex<Inner>,
    /// The number of entries, kept beside the map so that a request can skip building its
    /// cache key, and the lock, while nothing is cached: the usual state.
    len: AtomicUsize,
    /// How many times the cache was cleared: a denial decided before a clear is not cached
    /// after it.
    generation: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<Box<[u8]>, Entry>,
    /// A full cache is swept of expired entries at most once a second, so a flood of denied
    /// callers costs O(1) per request, not a scan each.
    next_sweep: Instant,
}

#[derive(Debug, Clone)]
struct Entry {
    decision: Decision,
    /// When the store decided; headers count down from it.
    decided_at: Instant,
    /// When the store said a retry could be admitted: the entry's expiry.
    until: Instant,
}

impl DenialCache {
    /// A cache of at most `capacity` denials (at least 1).
    pub fn new(capacity: usize) -> Self {
        DenialCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                next_sweep: Instant::now(),
            }),
            len: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Drops every denial, as after `tollgate reset`: the next request of each caller asks the
    /// store.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        self.len.store(0, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times it was cleared, for [`DenialCache::insert_since`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The cached denial for the request whose key `write` writes (returning `false` when the
    /// request has none), as [`DenialCache::get`] finds it. The key is written into this
    /// thread's scratch buffer, so a lookup allocates nothing for it; a key too long to be
    /// held is not even hashed.
    pub fn lookup(
        &self,
        write: impl FnOnce(&mut Vec<u8>) -> bool,
        now: Instant,
    ) -> Option<Decision> {
        thread_local! {
            static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|key| {
            key.clear();
            (write(key) && key.len() <= MAX_KEY_BYTES).then(|| self.get(key, now))?
        })
    }

    /// The cached denial for `key` as of `now`, its waits shortened by the time since the store
    /// decided; `None` once the retry time has come.
    pub fn get(&self, key: &[u8], now: Instant) -> Option<Decision> {
        let mut inner = self.lock();
        let entry = inner.entries.get(key)?;
        if now >= entry.until {
            inner.entries.remove(key);
            self.len.store(inner.entries.len(), Ordering::Relaxed);
            return None;
        }
        let elapsed = now.duration_since(entry.decided_at);
        let mut decision = entry.decision.clone();
        for policy in &mut decision.policies {
            policy.retry_after = policy.retry_after.saturating_sub(elapsed);
            policy.reset_after = policy.reset_after.saturating_sub(elapsed);
        }
        Some(decision)
    }

    /// Remembers a denial made at `now` under `key`, until its retry time.
    pub fn insert(&self, key: Vec<u8>, decision: &Decision, now: Instant) {
        self.insert_since(key, decision, now, self.generation());
    }

    /// Remembers a denial as [`DenialCache::insert`] does, unless the cache was cleared since
    /// `generation`, when the store was asked: a reset must not be undone by a denial decided
    /// before it.
    pub fn insert_since(&self, key: Vec<u8>, decision: &Decision, now: Instant, generation: u64) {
        let wait = decision.retry_after();
        if decision.allowed || wait.is_zero() || key.len() > MAX_KEY_BYTES {
            return;
        }
        let mut inner = self.lock();
        if self.generation() != generation {
            return;
        }
        if inner.entries.len() >= self.capacity && now >= inner.next_sweep {
            inner.entries.retain(|_, entry| entry.until > now);
            inner.next_sweep = now + Duration::from_secs(1);
            self.len.store(inner.entries.len(), Ordering::Relaxed);
        }
        if inner.entries.len() >= self.capacity {
            // Full of live denials: this one goes to the store each time until room is made.
            return;
        }
        let entry = Entry {
            decision: decision.clone(),
            decided_at: now,
            until: now + wait,
        };
        inner.entries.insert(key.into_boxed_slice(), entry);
        self.len.store(inner.entries.len(), Ordering::Relaxed);
    }

    /// How many denials are held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no denial is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clear drops every denial, and a denial decided before it is not cached after it.
    #[test]
    fn a_clear_drops_denials_and_refuses_older_ones() {
        let cache = DenialCache::new(10);
        let t0 = Instant::now();
        let before = cache.generation();
        cache.insert(b"a".to_vec(), &denied(5_000), t0);
        assert!(cache.get(b"a", t0).is_some());
        cache.clear();
        assert!(cache.is_empty());
        assert!(cache.get(b"a", t0).is_none());
        cache.insert_since(b"b".to_vec(), &denied(5_000), t0, before);
        assert!(cache.get(b"b", t0).is_none(), "decided before the clear");
        cache.insert_since(b"c".to_vec(), &denied(5_000), t0, cache.generation());
        assert!(cache.get(b"c", t0).is_some());
    }
    use crate::decision::PolicyDecision;
    use crate::policy::Policy;
    use std::sync::Arc;

    fn denied(retry_ms: u64) -> Decision {
        let policy: Policy = "p: 1 per 1m".parse().unwrap();
        Decision {
            allowed: false,
            policies: vec![PolicyDecision {
                policy: Arc::new(policy),
                allowed: false,
                limit: 1,
                remaining: 0,
                retry_after: Duration::from_millis(retry_ms),
                reset_after: Duration::from_millis(retry_ms),
            }],
        }
    }

    /// A cached denial counts down, and expires at the exact retry time.
    #[test]
    fn denials_count_down_and_expire_on_time() {
        let cache = DenialCache::new(10);
        let t0 = Instant::now();
        cache.insert(b"k".to_vec(), &denied(2_000), t0);
        let later = cache.get(b"k", t0 + Duration::from_millis(1_500)).unwrap();
        assert_eq!(later.retry_after(), Duration::from_millis(500));
        assert!(cache.get(b"k", t0 + Duration::from_millis(1_999)).is_some());
        assert!(cache.get(b"k", t0 + Duration::from_millis(2_000)).is_none());
        assert!(cache.is_empty());
    }

    /// The cache never holds more than its capacity.
    #[test]
    fn the_cache_is_bounded() {
        let cache = DenialCache::new(3);
        let t0 = Instant::now();
        for i in 0..10 {
            cache.insert(format!("k{i}").into_bytes(), &denied(60_000), t0);
        }
        assert_eq!(cache.len(), 3);
        // Once the first denials have expired, room is made for new ones.
        let later = t0 + Duration::from_secs(61);
        cache.insert(b"fresh".to_vec(), &denied(1_000), later);
        assert!(cache.get(b"fresh", later).is_some());
    }

    /// A key longer than [`MAX_KEY_BYTES`] is never held, so long names cannot inflate the cache.
    #[test]
    fn long_keys_are_not_cached() {
        let cache = DenialCache::new(10);
        let t0 = Instant::now();
        let longest = vec![b'k'; MAX_KEY_BYTES];
        cache.insert(longest.clone(), &denied(1_000), t0);
        cache.insert(vec![b'k'; MAX_KEY_BYTES + 1], &denied(1_000), t0);
        assert_eq!(cache.len(), 1);
        assert!(cache
            .lookup(
                |key| {
                    key.extend_from_slice(&longest);
                    true
                },
                t0
            )
            .is_some());
    }

    /// The count kept beside the map follows inserts and expiries, so an empty cache is seen
    /// as empty and a held denial is never skipped.
    #[test]
    fn len_follows_inserts_and_expiries() {
        let cache = DenialCache::new(10);
        let t0 = Instant::now();
        assert!(cache.is_empty());
        cache.insert(b"a".to_vec(), &denied(1_000), t0);
        cache.insert(b"b".to_vec(), &denied(5_000), t0);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(b"a", t0 + Duration::from_millis(1_000)).is_none());
        assert_eq!(cache.len(), 1);
        assert!(cache.get(b"b", t0 + Duration::from_millis(4_999)).is_some());
        assert!(cache.get(b"b", t0 + Duration::from_millis(5_000)).is_none());
        assert!(cache.is_empty());
    }
}
