//! The `tollgate` service: its router, its handlers, and the server loop.

mod access_log;
mod forward_auth;
mod handlers;
mod live;
pub mod routes;
pub mod server;
mod signals;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;

use crate::caller::Identity;
use crate::limiter::Limiter;
use crate::middleware::headers::HeaderMode;
use crate::middleware::RateLimitLayer;
use crate::reload::ReloadStatus;
use crate::rls::metrics::RlsMetrics;

pub use forward_auth::ForwardAuth;
pub use live::LiveRouter;
pub use routes::SERVICE_PATHS;
pub use server::ServerSettings;
pub use signals::run_until_signalled;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The limiter, for `/readyz` to ask its store.
    pub limiter: Arc<Limiter>,
    /// How callers are named; `/user` echoes the identity header.
    pub identity: Arc<Identity>,
    /// Which responses carry the rate-limit headers.
    pub header_mode: HeaderMode,
    /// The forward-auth endpoint, when configured.
    pub forward_auth: Option<Arc<ForwardAuth>>,
    /// Envoy's rate limit service's counters, when it is served.
    pub rls_metrics: Option<Arc<RlsMetrics>>,
    /// The reload counters and the live configuration's digest, when the service reloads.
    pub reloads: Option<Arc<ReloadStatus>>,
}

/// The service's routes: `/user` behind the limiter, with the rate-limit headers on the
/// responses `state.header_mode` names, and the forward-auth endpoint when configured;
/// `/healthz`, `/readyz` and `/metrics` not limited.
pub fn router(state: AppState) -> Router {
    let limit = RateLimitLayer::new(state.limiter.clone())
        .identity(state.identity.clone())
        .headers(state.header_mode);
    // On the method router, not the path's: a 405 (`POST /user`) is answered before the
    // limiter and spends no quota, as a 404 never reaches it.
    let mut router = Router::new()
        .route(routes::USER, get(handlers::user).route_layer(limit))
        .route(routes::HEALTHZ, get(handlers::healthz))
        .route(routes::READYZ, get(handlers::readyz))
        .route(routes::METRICS, get(handlers::metrics));
    if let Some(settings) = state.forward_auth.clone() {
        let path = settings.path.clone();
        let endpoint = any(move |State(state): State<AppState>, request: Request| {
            forward_auth::check(state, settings.clone(), request)
        });
        router = router.route(&path, endpoint);
    }
    router
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
