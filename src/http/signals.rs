//! Serving until signalled: the first SIGINT or SIGTERM drains open requests within the grace,
//! the next one ends serving at once.

use std::future::Future;

use tokio::net::TcpListener;

use super::{server, LiveRouter, ServerSettings};

/// The target of these logs: the binary logged them under its own name, which operators' log
/// filters may use.
const LOG_TARGET: &str = "tollgate";

/// Serves `router` on `listener` under `settings`, and `beside` (Envoy's rate limit service on
/// its own listener) when given, until a SIGINT or SIGTERM (ctrl-c elsewhere), then drains open
/// requests for at most the grace; a second signal ends serving at once, so an operator who
/// insists is not made to wait out the grace.
pub async fn run_until_signalled(
    listener: TcpListener,
    router: LiveRouter,
    settings: ServerSettings,
    beside: Option<(TcpListener, LiveRouter)>,
) -> std::io::Result<()> {
    let (first, second) = signals();
    tokio::select! {
        served = server::serve_all(listener, router, beside, settings, first) => served,
        () = second => {
            tracing::warn!(
                target: LOG_TARGET,
                "second signal: exiting without waiting for open requests"
            );
            Ok(())
        }
    }
}

/// Two futures: the first completes on the first SIGINT or SIGTERM, so open requests drain;
/// the second on the next one.
fn signals() -> (
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
) {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let (second_tx, second_rx) = tokio::sync::oneshot::channel::<()>();
    // Registered now, not in the task, so that no signal finds the default action in place.
    let mut signals = Signals::new();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!(target: LOG_TARGET, "shutting down; a second signal exits at once");
        let _ = first_tx.send(());
        signals.next().await;
        let _ = second_tx.send(());
    });
    let first = async move {
        let _ = first_rx.await;
    };
    let second = async move {
        let _ = second_rx.await;
    };
    (first, second)
}

/// SIGINT and SIGTERM, each registered once for the life of the process.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Completes on the next SIGINT or SIGTERM (ctrl-c elsewhere); never if none can be heard.
    async fn next(&mut self) {
        #[cfg(unix)]
        match &mut self.streams {
            Some((interrupt, terminate)) => tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            },
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
