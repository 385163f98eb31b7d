//! The reload counters and the live configuration's digest, for `/metrics`.
//!
//! - `tollgate_config_reloads_total{outcome}`: reloads by outcome: `applied`, `rejected` (the
//!   new configuration was refused and the running one kept), `unchanged` (nothing to apply).
//! - `tollgate_config_generation`: 1 at startup, one more with each applied reload.
//! - `tollgate_config_info{sha256}`: 1, labelled with the live configuration's digest
//!   ([`Settings::digest`](crate::Settings::digest)), so that every instance can be seen to
//!   run the same one.
//! - `tollgate_config_restart_pending`: how many keys the configuration as read sets
//!   differently from the running service, which only a restart applies.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A reload's outcome, as counted and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new configuration serves from the next request on.
    Applied,
    /// The new configuration was refused; the running one keeps serving.
    Rejected,
    /// The configuration read is the running one: nothing was swapped.
    Unchanged,
}

impl Outcome {
    /// Every outcome, in the order they are rendered.
    pub const ALL: [Outcome; 3] = [Outcome::Applied, Outcome::Rejected, Outcome::Unchanged];

    /// The outcome's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Rejected => "rejected",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// What `/metrics` reports of reloads; shared by every generation's routes.
#[derive(Debug)]
pub struct ReloadStatus {
    outcomes: [AtomicU64; 3],
    generation: AtomicU64,
    restart_pending: AtomicU64,
    digest: Mutex<String>,
}

impl ReloadStatus {
    /// The status of a service that started with the configuration of digest `digest`.
    pub fn new(digest: String) -> Self {
        ReloadStatus {
            outcomes: Default::default(),
            generation: AtomicU64::new(1),
            restart_pending: AtomicU64::new(0),
            digest: Mutex::new(digest),
        }
    }

    /// Counts a reload that ended in `outcome`.
    pub fn counted(&self, outcome: Outcome) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a configuration put live: its digest, and how many of its keys wait on a
    /// restart.
    pub fn applied(&self, digest: String, restart_pending: usize) {
        *self.digest.lock().unwrap_or_else(|e| e.into_inner()) = digest;
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.restart_pending
            .store(restart_pending as u64, Ordering::Relaxed);
    }

    /// The live configuration's digest.
    pub fn digest(&self) -> String {
        self.digest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many configurations have been live, the first one included.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Appends the reload metrics in Prometheus text.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP tollgate_config_reloads_total Configuration reloads, by outcome.\n\
             # TYPE tollgate_config_reloads_total counter\n",
        );
        for (outcome, count) in Outcome::ALL.iter().zip(&self.outcomes) {
            let _ = writeln!(
                out,
                "tollgate_config_reloads_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tollgate_config_generation Configurations live since startup, the first \
             included.\n# TYPE tollgate_config_generation gauge\ntollgate_config_generation {}",
            self.generation()
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_config_info The live configuration, by digest.\n\
             # TYPE tollgate_config_info gauge\ntollgate_config_info{{sha256=\"{}\"}} 1",
            self.digest()
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_config_restart_pending Keys set differently from the running \
             service, which only a restart applies.\n# TYPE tollgate_config_restart_pending \
             gauge\ntollgate_config_restart_pending {}",
            self.restart_pending.load(Ordering::Relaxed)
        );
    }
}
