//! Envoy's rate limit service as routes, with the standard gRPC health service beside it, for
//! the service's own server loop: HTTP/2 cleartext on its own port, under the same connection
//! cap, timers and shutdown grace as the HTTP port.

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::SERVICE_NAME;
use tonic::service::Routes;
use tonic::Status;
use tonic_health::ServingStatus;

use super::grpc::{self, SHOULD_RATE_LIMIT};
use super::RlsService;

/// The gRPC routes of `service` and of the health service, which says it is serving; any
/// other method is answered UNIMPLEMENTED, as gRPC servers answer.
///
/// Envoy's deadline (`grpc-timeout`, 20 ms unless its filter says otherwise) is the service's
/// to keep: see [`RlsService::decide`].
pub async fn router(service: RlsService) -> Router {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    Router::new()
        .route(SHOULD_RATE_LIMIT, post(grpc::should_rate_limit))
        .with_state(service)
        .merge(Routes::new(health).into_axum_router())
        .fallback(|| async { Status::unimplemented("no such method").into_http::<Body>() })
}
