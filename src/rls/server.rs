//! Envoy's rate limit service as routes, with the standard gRPC health service beside it, for
//! the service's own server loop: HTTP/2 cleartext on its own port, under the same connection
//! cap, timers and shutdown grace as the HTTP port.

use axum::Router;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tonic::service::Routes;

use super::RlsService;

/// The gRPC routes of `service` and of the health service, which says it is serving.
///
/// Envoy's deadline (`grpc-timeout`, 20 ms unless its filter says otherwise) is the service's
/// to keep: see [`RlsService::decide`].
pub async fn router(service: RlsService) -> Router {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<RateLimitServiceServer<RlsService>>()
        .await;
    Routes::new(health)
        .add_service(RateLimitServiceServer::new(service))
        .into_axum_router()
}
