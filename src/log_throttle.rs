//! A lock-free gate for log lines on the hot path: an outage logs once a second, not once a
//! request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one event through per interval, without a lock, for log lines on the hot path.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    interval_ms: u64,
    started: Instant,
    /// Milliseconds since `started` of the last event let through; `u64::MAX` before the first.
    last_ms: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        LogThrottle {
            interval_ms: interval.as_millis() as u64,
            started: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether an event may pass now; at most one caller wins per interval.
    pub(crate) fn ready(&self) -> bool {
        self.ready_at(self.started.elapsed().as_millis() as u64)
    }

    fn ready_at(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now_ms.saturating_sub(last) >= self.interval_ms;
        due && self
            .last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The throttle lets the first event through, then one per interval.
    #[test]
    fn throttle_passes_one_event_per_interval() {
        let throttle = LogThrottle::new(Duration::from_secs(1));
        assert!(throttle.ready_at(5));
        assert!(!throttle.ready_at(6));
        assert!(!throttle.ready_at(1_004));
        assert!(throttle.ready_at(1_005));
        assert!(!throttle.ready_at(1_500));
    }
}
