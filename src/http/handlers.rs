use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use crate::http::AppState;
use crate::middleware::extract;

/// The original example's endpoint: the caller's name as a JSON string, or `null` when the
/// request names nobody (the same rule the limiter applies).
pub async fn user(State(state): State<AppState>, headers: HeaderMap) -> Json<Option<String>> {
    let caller = extract::caller(&headers, &state.identity.header)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    Json(caller)
}

/// 200 while the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the store can decide; 503 with a one-line JSON reason when it cannot.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.limiter.store().ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": error.to_string() })),
        ),
    }
}
