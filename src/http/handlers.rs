use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::http::AppState;
use crate::middleware::extract::OwnedFacts;

/// The original example's endpoint: the caller's name as a JSON string, or `null` when the
/// request names nobody (the same rule the limiter applies).
pub async fn user(State(state): State<AppState>, request: Request) -> Json<Option<String>> {
    let facts = OwnedFacts::of(&request, &state.identity);
    let caller = facts
        .borrow()
        .user
        .map(|name| String::from_utf8_lossy(name).into_owned());
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
