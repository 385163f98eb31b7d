use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

/// Logs one line per request: method, path, status and latency.
///
/// Denials (429) are logged at debug, not info, so an attack cannot flood the logs.
pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The route pattern, not the raw path, so log queries can group requests by endpoint.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        tracing::debug!(%method, path, route, status, latency_us, "request");
    } else {
        tracing::info!(%method, path, route, status, latency_us, "request");
    }
    response
}
