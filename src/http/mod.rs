//! The `tollgate` service: its router, its handlers, and the server loop.

mod access_log;
mod handlers;
pub mod routes;
pub mod server;
mod signals;

use std::future::Future;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::caller::Identity;
use crate::limiter::Limiter;
use crate::middleware::headers::HeaderMode;
use crate::middleware::RateLimitLayer;

pub use server::ServerSettings;
pub use signals::run_until_signalled;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The limiter, for `/readyz` to ask its store.
    pub limiter: Arc<Limiter>,
    /// How callers are named; `/user` echoes the identity header.
    pub identity: Arc<Identity>,
}

/// The service's routes: `/user` behind the limiter, with the rate-limit headers on the
/// responses `header_mode` names; `/healthz` and `/readyz` not limited.
pub fn router(state: AppState, header_mode: HeaderMode) -> Router {
    let limit = RateLimitLayer::new(state.limiter.clone())
        .identity(state.identity.clone())
        .headers(header_mode);
    // On the method router, not the path's: a 405 (`POST /user`) is answered before the
    // limiter and spends no quota, as a 404 never reaches it.
    Router::new()
        .route(routes::USER, get(handlers::user).route_layer(limit))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .with_state(state)
        .layer(axum::middleware::from_fn(access_log::access_log))
}

/// Serves `router` on `listener` with the default [`ServerSettings`] until `shutdown`
/// completes, then drains open connections for at most the default grace (10 s).
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router, ServerSettings::default(), shutdown).await
}

/// Serves `router` on `listener` under `settings` (timeouts, connection cap, shutdown grace)
/// until `shutdown` completes, then drains open connections for at most the grace, so one stuck
/// connection cannot keep the process alive.
pub async fn run_with(
    listener: TcpListener,
    router: Router,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router, settings, shutdown).await
}
