//! Live configuration: the service reloads its configuration on SIGHUP and when a file it was
//! read from changes, without dropping a connection or a count.
//!
//! A reload reads and validates the whole configuration first; a mistake is logged as startup
//! reports it, counted, and changes nothing. A good one is built into new routes over the same
//! store, breaker and counters ([`setup::successor`]), and swapped in: each request runs on the
//! routes current when it arrived, so it is decided and answered under one configuration. The
//! keys only a restart changes ([`Settings::keep_restart_only`]) keep their running values, with
//! a warning. Each generation's denial cache is its own, so no denial outlives the policies that
//! decided it.
//!
//! - `status`: the reload counters and the live configuration's digest, for `/metrics`;
//! - `watch`: what sets a reload off: SIGHUP, and the watched files' contents changing.

mod status;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fred::prelude::Client;

use crate::config::Settings;
use crate::http::LiveRouter;
use crate::limiter::Limiter;
use crate::rls::metrics::RlsMetrics;
use crate::setup::{self, Extras};
use crate::store::StoreError;

pub use status::{Outcome, ReloadStatus};
pub use watch::WATCH_EVERY;

/// The target of these logs: operators' filters may name it.
const LOG_TARGET: &str = "tollgate::reload";

/// What the service serves, swapped by each reload.
#[derive(Debug)]
pub struct Served {
    /// The HTTP routes.
    pub http: LiveRouter,
    /// Envoy's rate limit service, and where to serve it, when `rls.listen` is set.
    pub rls: Option<(SocketAddr, LiveRouter)>,
}

/// Reloads the configuration into the routes it serves.
#[derive(Debug)]
pub struct Reloader {
    /// The `--config` argument, resolved again by each load, as at startup.
    file: Option<PathBuf>,
    /// The configuration serving now: the last one applied, with the startup values of the
    /// keys only a restart changes.
    running: Settings,
    /// The limiter serving now, which the next one succeeds.
    limiter: Arc<Limiter>,
    /// The store's Redis client, for each generation's reset watch.
    client: Option<Client>,
    http: LiveRouter,
    rls: Option<LiveRouter>,
    rls_metrics: Option<Arc<RlsMetrics>>,
    status: Arc<ReloadStatus>,
    signals: watch::Hangup,
    /// The watched files' fingerprint when `running` was read.
    seen: Vec<u8>,
    /// Whether `running` was read from a file, which must then still be there to reload.
    file_read: bool,
    /// The fingerprint of the configuration last applied, as read (secrets included).
    loaded: Vec<u8>,
    /// Why the last reload was refused, while the running configuration is not the latest.
    refused: Option<String>,
}

impl Reloader {
    /// Builds what `settings` describe and the reloader that will replace it; `file` is the
    /// `--config` argument `settings` were loaded with.
    pub async fn start(
        settings: Settings,
        file: Option<PathBuf>,
    ) -> Result<(Served, Reloader), StoreError> {
        // Heard from now on: SIGHUP's default action would end the process.
        let signals = watch::Hangup::new();
        // Read now, right after `settings` were loaded, not when the watch first runs: a change
        // made while Redis connects must still count as a change.
        let seen = watch::fingerprint_now(&settings.watched());
        let file_read = settings.file().is_some_and(|f| f.is_file());
        let loaded = settings.fingerprint();
        let status = Arc::new(ReloadStatus::new(settings.digest()));
        let (store, client) = setup::store(&settings).await?;
        let limiter = Arc::new(setup::limiter_over(store, &settings, client.as_ref()));
        let extras = Extras {
            reloads: Some(status.clone()),
            rls_metrics: None,
        };
        let services = setup::assemble(&settings, limiter.clone(), &extras);
        let http = LiveRouter::new(services.router);
        let mut rls_metrics = None;
        let rls = match services.rls {
            None => None,
            Some((listen, service)) => {
                rls_metrics = Some(service.metrics());
                Some((listen, LiveRouter::new(crate::rls::router(service).await)))
            }
        };
        tracing::info!(
            target: LOG_TARGET,
            sha256 = %status.digest(),
            watched = ?settings.watched(),
            "configuration loaded; reloaded on SIGHUP and when a watched file changes"
        );
        let reloader = Reloader {
            file,
            running: settings,
            limiter,
            client,
            http: http.clone(),
            rls: rls.as_ref().map(|(_, router)| router.clone()),
            rls_metrics,
            status,
            signals,
            seen,
            file_read,
            loaded,
            refused: None,
        };
        Ok((Served { http, rls }, reloader))
    }

    /// The reload counters and the live configuration's digest.
    pub fn status(&self) -> &Arc<ReloadStatus> {
        &self.status
    }

    /// Reads the configuration again and, if it is valid and differs, serves it from the next
    /// request on; `trigger` (`signal`, `file`) is logged, and the outcome counted.
    pub async fn reload(&mut self, trigger: &'static str) -> Outcome {
        self.attempt(trigger, false).await
    }

    /// [`Reloader::reload`]; when `quiet`, an outcome that says nothing new (the same refusal
    /// again, or nothing changed) is neither logged nor counted, for the loads the watch makes
    /// on its own account.
    async fn attempt(&mut self, trigger: &'static str, quiet: bool) -> Outcome {
        let outcome = match self.load().await {
            Err(error) => {
                let repeated = self.refused.as_deref() == Some(error.as_str());
                if quiet && repeated {
                    return Outcome::Rejected;
                }
                tracing::error!(
                    target: LOG_TARGET,
                    trigger,
                    "configuration not reloaded: {error}; the running configuration keeps serving"
                );
                self.refused = Some(error);
                Outcome::Rejected
            }
            Ok(settings) => {
                self.refused = None;
                if settings.fingerprint() == self.loaded {
                    if quiet {
                        return Outcome::Unchanged;
                    }
                    tracing::info!(target: LOG_TARGET, trigger, "configuration unchanged");
                    Outcome::Unchanged
                } else {
                    self.apply(settings, trigger).await;
                    Outcome::Applied
                }
            }
        };
        self.status.counted(outcome);
        outcome
    }

    /// The configuration as it reads now, validated, or why it cannot serve.
    async fn load(&self) -> Result<Settings, String> {
        // Once read from a file, always from that file: without it the configuration would be
        // the defaults, and a file deleted, emptied by a failed write, or caught between a
        // ConfigMap's versions must not put the default policy in place of the operator's.
        let (file, required) = match self.running.file().filter(|_| self.file_read) {
            Some(file) => (Some(file.to_owned()), true),
            None => (self.file.clone(), false),
        };
        let loaded = tokio::task::spawn_blocking(move || {
            if let Some(file) = file.as_deref().filter(|_| required) {
                match std::fs::read_to_string(file) {
                    Err(_) if !file.is_file() => {
                        return Err(format!(
                            "{}: the configuration file is gone",
                            file.display()
                        ))
                    }
                    Ok(text) if text.trim().is_empty() => {
                        return Err(format!(
                            "{}: the configuration file is empty",
                            file.display()
                        ))
                    }
                    _ => {}
                }
            }
            Settings::load_again(file.as_deref()).map_err(|error| error.to_string())
        });
        loaded.await.map_err(|error| error.to_string())?
    }

    /// Serves `settings` from the next request on.
    async fn apply(&mut self, mut settings: Settings, trigger: &'static str) {
        self.loaded = settings.fingerprint();
        let digest = settings.digest();
        let pending = settings.keep_restart_only(&self.running);
        for key in &pending {
            tracing::warn!(
                target: LOG_TARGET,
                key,
                "{key} changed, but only a restart applies it: the running value is kept"
            );
        }
        for warning in &settings.warnings {
            tracing::warn!(target: LOG_TARGET, "{warning}");
        }
        let limiter = Arc::new(setup::successor(
            &self.limiter,
            &settings,
            self.client.as_ref(),
        ));
        let extras = Extras {
            reloads: Some(self.status.clone()),
            rls_metrics: self.rls_metrics.clone(),
        };
        let services = setup::assemble(&settings, limiter.clone(), &extras);
        if let (Some(live), Some((_, service))) = (&self.rls, services.rls) {
            self.rls_metrics = Some(service.metrics());
            live.replace(crate::rls::router(service).await);
        }
        self.http.replace(services.router);
        self.limiter = limiter;
        self.file_read = settings.file().is_some_and(|f| f.is_file());
        self.running = settings;
        self.status.applied(digest, pending.len());
        tracing::info!(
            target: LOG_TARGET,
            trigger,
            generation = self.status.generation(),
            sha256 = %self.status.digest(),
            policies = self.running.policies.len(),
            "configuration reloaded"
        );
    }
}
