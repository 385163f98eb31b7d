//! The service's handlers: `/user`, `/healthz`, `/readyz` and `/metrics`.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::http::AppState;

/// The original example's endpoint: the caller's name as a JSON string, or `null` when the
/// request names nobody (the same rule the limiter applies).
pub async fn user(State(state): State<AppState>, request: Request) -> Json<Option<String>> {
    let (parts, _) = request.into_parts();
    let caller = state
        .identity
        .user(&parts)
        .map(|name| String::from_utf8_lossy(name).into_owned());
    Json(caller)
}

/// 200 while the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when a decision would be made by the store, writing; 503 with a one-line JSON reason
/// when it would not (an open breaker, a store that cannot write). Both name the circuit
/// breaker's state, as it stands after the check, which may have been its probe.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ready = state.limiter.ready().await;
    let breaker = state.limiter.breaker_state().as_str();
    match ready {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "breaker": breaker })),
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "unavailable", "reason": error.to_string(), "breaker": breaker }),
            ),
        ),
    }
}

/// Prometheus text: decisions, store latency and errors, the breaker.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = state.limiter.metrics().render(
            state.limiter.counts(),
            state.limiter.breaker_state().as_str(),
        );
        if let Some(rls) = &state.rls_metrics {
            rls.render(&mut text);
        }
        if let Some(reloads) = &state.reloads {
            reloads.render(&mut text);
        }
        text
    })
}
