//! What sets a reload off: SIGHUP, and a change to the contents of a watched file.
//!
//! Files are polled, not watched through inotify: Kubernetes updates a mounted ConfigMap by
//! swapping the `..data` symlink, which an inotify watch on the file never hears of, and an
//! editor may write a new file over the old one. Reading the contents catches every way, for a
//! few small reads a second.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Reloader;
use crate::config::hash_files;

/// How often the watched files are read unless `reload.watch_interval` says otherwise.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How long a changed file must stay the same before it is loaded, so that a file caught
/// half-written is not refused for the half.
const SETTLE: Duration = Duration::from_millis(200);

/// The longest a reload waits for the watched files to settle.
const MOST_SETTLING: Duration = Duration::from_secs(2);

impl Reloader {
    /// Reloads on every SIGHUP and whenever a watched file changes, until the process ends.
    ///
    /// While the last reload was refused, each tick also loads the configuration again,
    /// quietly: a mistake may be fixed in a file the running configuration does not name (a
    /// descriptor file the refused one added).
    pub async fn run(mut self) {
        let mut paths = self.running.watched();
        let mut seen = std::mem::take(&mut self.seen);
        let mut every = self.running.watch_interval;
        let mut tick = every.map(ticking);
        // Whether the watched files changed with the last reload: a change made to the new ones
        // while it loaded is looked for at the next tick.
        let mut recheck = false;
        loop {
            let signalled = tokio::select! {
                () = self.signals.next() => true,
                () = next_tick(&mut tick) => false,
            };
            let mut now = fingerprint(paths.clone()).await;
            if signalled || now != seen {
                now = settled(&paths, now).await;
            }
            if signalled {
                self.reload("signal").await;
            } else if now != seen {
                self.reload("file").await;
            } else if self.refused.is_some() || recheck {
                self.attempt("file", true).await;
            } else {
                continue;
            }
            recheck = false;
            seen = now;
            let watched = self.running.watched();
            if watched != paths {
                paths = watched;
                seen = fingerprint(paths.clone()).await;
                recheck = true;
            }
            if self.running.watch_interval != every {
                every = self.running.watch_interval;
                tick = every.map(ticking);
            }
        }
    }
}

/// The watched files' fingerprint, `now` at first, once it holds for [`SETTLE`], or after [`MOST_SETTLING`]
/// whatever it is: a file rewritten without pause must not hold every reload back.
async fn settled(paths: &[PathBuf], mut now: Vec<u8>) -> Vec<u8> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < MOST_SETTLING {
        tokio::time::sleep(SETTLE).await;
        let again = fingerprint(paths.to_vec()).await;
        if again == now {
            break;
        }
        now = again;
    }
    now
}

/// A timer that ticks `every`, later rather than in bursts when a reload held it up.
fn ticking(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// The next tick, or never when the watch is off.
async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A digest of the watched files' names and contents, read off the runtime's threads.
async fn fingerprint(paths: Vec<PathBuf>) -> Vec<u8> {
    let read = tokio::task::spawn_blocking(move || fingerprint_now(&paths));
    read.await.unwrap_or_default()
}

/// A digest of the files at `paths`: their names and contents.
pub(super) fn fingerprint_now(paths: &[PathBuf]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash_files(&mut hash, paths);
    hash.finalize().to_vec()
}

/// SIGHUP, registered once for the life of the reloader.
#[derive(Debug)]
pub(super) struct Hangup {
    #[cfg(unix)]
    stream: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    pub(super) fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Hangup {
                stream: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    /// Completes on the next SIGHUP; never where none can be heard.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(stream) = &mut self.stream {
            stream.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}
