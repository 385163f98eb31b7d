//! Serving Envoy's rate limit service on its own port, over HTTP/2 cleartext, with the
//! standard gRPC health service beside it.

use std::future::Future;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::RlsService;

/// Serves `service` on `listener` until `shutdown` completes, then lets the calls in flight
/// finish.
///
/// Envoy's deadline (`grpc-timeout`, 20 ms unless its filter says otherwise) is tonic's to keep:
/// a call still deciding when it passes is dropped, and a decision dropped before its store
/// call is never counted.
pub async fn serve(
    listener: TcpListener,
    service: RlsService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<RateLimitServiceServer<RlsService>>()
        .await;
    Server::builder()
        // Envoy's questions are small and many: sent at once, not held back to fill a packet.
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(RateLimitServiceServer::new(service))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}
