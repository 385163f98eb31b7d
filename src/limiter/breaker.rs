//! The circuit breaker in front of the store.
//!
//! After `failures` consecutive failures or timeouts it opens: for `cool_down`, requests are
//! decided by `on_error` at once, without paying the deadline each time. Then it is half-open:
//! one probe goes to the store; its success closes the breaker, its failure opens it again.
//! Each state change is logged once, and counted in the metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Decisions go to the store.
    Closed,
    /// The store failed repeatedly: `on_error` decides, without asking it.
    Open,
    /// The cool-down is over: one probe asks the store.
    HalfOpen,
}

impl BreakerState {
    /// Every state, in the order the metrics list them.
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    /// The name used in logs, `/readyz` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a request may ask the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Closed: ask the store.
    Pass,
    /// Half-open: this request is the probe.
    Probe,
    /// Open, or half-open with a probe under way: `on_error` decides.
    Reject,
}

/// Consecutive store failures that open the breaker unless configured otherwise.
pub const DEFAULT_FAILURES: u32 = 5;

/// The shortest time the breaker stays open: the configured default is this, or twice the
/// store's deadline when that is longer, so that one probe ends before the next may start.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_millis(500);

/// A circuit breaker; cheap to consult on every request.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cool_down: Duration,
    inner: Mutex<Inner>,
    /// Closed with no failure counted: the usual state, in which a request's admission and a
    /// success change nothing, so both are answered from this flag, without the lock or the
    /// clock. Written under the lock whenever the state or the count changes.
    healthy: AtomicBool,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    /// When the breaker last opened, or when the last probe started.
    since: Instant,
}

impl Breaker {
    /// Opens after `failures` consecutive failures, for `cool_down`.
    pub fn new(failures: u32, cool_down: Duration) -> Self {
        Breaker {
            failures: failures.max(1),
            cool_down,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                since: Instant::now(),
            }),
            healthy: AtomicBool::new(true),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Whether this request may ask the store. Returns the permit and, when this call changed
    /// the state, the new one.
    pub fn admit(&self) -> (Permit, Option<BreakerState>) {
        if self.healthy.load(Ordering::Acquire) {
            return (Permit::Pass, None);
        }
        self.admit_at(Instant::now())
    }

    /// Records how the store answered a request that had `permit`. Returns the new state when
    /// this changed it.
    pub fn record(&self, permit: Permit, ok: bool) -> Option<BreakerState> {
        if ok && self.healthy.load(Ordering::Acquire) {
            return None;
        }
        self.record_at(permit, ok, Instant::now())
    }

    fn admit_at(&self, now: Instant) -> (Permit, Option<BreakerState>) {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => (Permit::Pass, None),
            // A probe whose request vanished (its client went away) must not hold the breaker
            // half-open forever: after another cool-down, the next request probes again.
            BreakerState::Open | BreakerState::HalfOpen
                if now.duration_since(inner.since) >= self.cool_down =>
            {
                let changed =
                    (inner.state != BreakerState::HalfOpen).then_some(BreakerState::HalfOpen);
                inner.state = BreakerState::HalfOpen;
                inner.since = now;
                (Permit::Probe, changed)
            }
            BreakerState::Open | BreakerState::HalfOpen => (Permit::Reject, None),
        }
    }

    fn record_at(&self, permit: Permit, ok: bool, now: Instant) -> Option<BreakerState> {
        let mut inner = self.lock();
        let before = inner.state;
        if ok {
            inner.consecutive_failures = 0;
            inner.state = BreakerState::Closed;
        } else {
            inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
            let trips = match before {
                BreakerState::Closed => inner.consecutive_failures >= self.failures,
                BreakerState::HalfOpen => permit == Permit::Probe,
                BreakerState::Open => false,
            };
            if trips {
                inner.state = BreakerState::Open;
                inner.since = now;
            }
        }
        self.healthy.store(
            inner.state == BreakerState::Closed && inner.consecutive_failures == 0,
            Ordering::Release,
        );
        (inner.state != before).then_some(inner.state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the state whole: a poisoned lock still holds a valid state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed → open after N failures → half-open after the cool-down → closed on a good probe,
    /// or open again on a bad one.
    #[test]
    fn breaker_opens_probes_and_closes() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(breaker.record_at(Permit::Pass, false, t0), None);
        }
        assert_eq!(
            breaker.record_at(Permit::Pass, false, t0),
            Some(BreakerState::Open)
        );
        assert_eq!(
            breaker.admit_at(t0 + Duration::from_millis(999)).0,
            Permit::Reject
        );
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            breaker.admit_at(later),
            (Permit::Probe, Some(BreakerState::HalfOpen))
        );
        assert_eq!(
            breaker.admit_at(later).0,
            Permit::Reject,
            "one probe at a time"
        );
        assert_eq!(
            breaker.record_at(Permit::Probe, false, later),
            Some(BreakerState::Open)
        );
        let again = later + Duration::from_secs(1);
        assert_eq!(breaker.admit_at(again).0, Permit::Probe);
        assert_eq!(
            breaker.record_at(Permit::Probe, true, again),
            Some(BreakerState::Closed)
        );
        assert_eq!(breaker.admit_at(again).0, Permit::Pass);
    }

    /// A success resets the count: only consecutive failures open the breaker.
    #[test]
    fn only_consecutive_failures_count() {
        let breaker = Breaker::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        breaker.record_at(Permit::Pass, false, t0);
        breaker.record_at(Permit::Pass, true, t0);
        assert_eq!(breaker.record_at(Permit::Pass, false, t0), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    /// A probe that never reports does not hold the breaker half-open forever.
    #[test]
    fn a_lost_probe_is_replaced_after_a_cool_down() {
        let breaker = Breaker::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        breaker.record_at(Permit::Pass, false, t0);
        let probe = t0 + Duration::from_secs(1);
        assert_eq!(breaker.admit_at(probe).0, Permit::Probe);
        assert_eq!(
            breaker.admit_at(probe + Duration::from_millis(500)).0,
            Permit::Reject
        );
        assert_eq!(
            breaker.admit_at(probe + Duration::from_secs(1)).0,
            Permit::Probe
        );
    }

    /// The lock-free path agrees with the locked one: after a failure a success still resets
    /// the count, and only consecutive failures open the breaker.
    #[test]
    fn healthy_flag_follows_the_state() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        assert_eq!(breaker.admit(), (Permit::Pass, None));
        assert_eq!(breaker.record(Permit::Pass, false), None);
        assert_eq!(breaker.record(Permit::Pass, true), None);
        assert_eq!(breaker.record(Permit::Pass, false), None);
        assert_eq!(
            breaker.record(Permit::Pass, false),
            Some(BreakerState::Open)
        );
        assert_eq!(breaker.admit(), (Permit::Reject, None));
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}
