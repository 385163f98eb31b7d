//! Live configuration: the service reloads its configuration on SIGHUP and when a file it was
//! read from changes, without dropping a connection or a count.
//!
//! A reload reads and validates the whole configuration first; a mistake is logged as startup
//! reports it, counted, and changes nothing. A good one is built into new routes over the same
//! store, breaker and counters ([`setup::successor`]), and swapped in: each request runs on the
//! routes current when it arrived, so it is decided and answered under one configuration. The
//! keys in [`RESTART_ONLY`](crate::config::RESTART_ONLY) keep their running values, with a
//! warning. Each generation's denial cache is its own, so no denial outlives the policies
//! that decided it.
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
        };
        Ok((Served { http, rls }, reloader))
    }

    /// The reload counters and the live configuration's digest.
    pub fn status(&self) -> &Arc<ReloadStatus> {
        &self.status
    }

    /// Reads the configuration again and, if it is valid and differs, serves it from the next
    /// request on; `trigger` (`signal`, `file`) is logged.
    pub async fn reload(&mut self, trigger: &'static str) -> Outcome {
        let outcome = self.try_reload(trigger).await;
        self.status.counted(outcome);
        outcome
    }

    async fn try_reload(&mut self, trigger: &'static str) -> Outcome {
        // Without its file, the configuration would fall back to the defaults: a file deleted,
        // or caught between a ConfigMap's versions, must not lift every limit.
        if let Some(gone) = self
            .running
            .file()
            .filter(|f| self.file_read && !f.is_file())
        {
            tracing::error!(
                target: LOG_TARGET,
                trigger,
                file = %gone.display(),
                "configuration not reloaded: the configuration file is gone; the running \
                 configuration keeps serving"
            );
            return Outcome::Rejected;
        }
        let file = self.file.clone();
        let loaded = tokio::task::spawn_blocking(move || Settings::load(file.as_deref())).await;
        let mut settings = match loaded {
            Ok(Ok(settings)) => settings,
            Ok(Err(error)) => {
                tracing::error!(
                    target: LOG_TARGET,
                    trigger,
                    "configuration not reloaded: {error}; the running configuration keeps serving"
                );
                return Outcome::Rejected;
            }
            Err(error) => {
                tracing::error!(target: LOG_TARGET, trigger, %error, "configuration not reloaded");
                return Outcome::Rejected;
            }
        };
        let digest = settings.digest();
        if digest == self.status.digest() {
            tracing::info!(target: LOG_TARGET, trigger, "configuration unchanged");
            return Outcome::Unchanged;
        }
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
        Outcome::Applied
    }
}
