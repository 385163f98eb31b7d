//! The access log: one line per request, with its method, path, route, status and latency.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Level;

/// The most of a path an access line carries: a client may send tens of kilobytes of path,
/// and each such request must not write that much log.
const MAX_LOGGED_PATH: usize = 256;

/// `path`, cut at [`MAX_LOGGED_PATH`] bytes on a character boundary and marked with its full
/// length when cut.
fn capped(path: &str) -> String {
    if path.len() <= MAX_LOGGED_PATH {
        return path.to_owned();
    }
    let cut = path.floor_char_boundary(MAX_LOGGED_PATH);
    format!("{}…({} bytes)", &path[..cut], path.len())
}

/// Logs one line per request: method, path, status and latency.
///
/// Denials (429) are logged at debug, not info, so an attack cannot flood the logs.
pub async fn access_log(request: Request, next: Next) -> Response {
    // At `warn` and above, neither the info line nor a denial's debug line would be kept: then
    // nothing is copied or timed for them.
    if !tracing::enabled!(Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = capped(request.uri().path());
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::log_capture::logged;

    /// A 65,000-byte path writes a line of well under a kilobyte, which still shows the path's
    /// start and its length.
    #[test]
    fn a_long_path_is_capped_in_the_line() {
        let app = Router::new().layer(axum::middleware::from_fn(access_log));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let path = format!("/{}", "é".repeat(32_500));
        let text = logged("info", || {
            let request = Request::get(&path).body(Body::empty()).unwrap();
            let response = runtime.block_on(app.oneshot(request)).unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
        });
        let line = text.lines().find(|l| l.contains("request")).unwrap();
        assert!(line.len() < 1024, "a {}-byte line", line.len());
        assert!(line.contains("/éé"), "{line}");
        assert!(line.contains(&format!("({} bytes)", path.len())), "{line}");
    }

    /// At `info` a request leaves one line with its route and status; at `warn`, none.
    #[test]
    fn one_line_per_request_at_info_and_none_at_warn() {
        for (filter, expected) in [("info", 1), ("warn", 0)] {
            let app = Router::new()
                .route("/user/{id}", get(|| async { "ok" }))
                .layer(axum::middleware::from_fn(access_log));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let text = logged(filter, || {
                let request = Request::get("/user/7").body(Body::empty()).unwrap();
                let response = runtime.block_on(app.oneshot(request)).unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            });
            let logged: Vec<&str> = text.lines().filter(|l| l.contains("request")).collect();
            assert_eq!(logged.len(), expected, "{filter}: {text}");
            if let Some(line) = logged.first() {
                assert!(line.contains("route=\"/user/{id}\""), "{line}");
                assert!(line.contains("status=200"), "{line}");
            }
        }
    }
}
