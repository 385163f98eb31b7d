//! The responses the limiter answers with instead of calling the service.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::decision::Decision;
use crate::middleware::headers;

/// The body of a denial, the original example's word for word.
pub const DENIED_DETAIL: &str = "User Rate Limit Exceeded";

/// The body of a 503 under `on_error = "deny"`.
pub const UNAVAILABLE_DETAIL: &str = "Rate limiter unavailable: the store could not decide";

/// 429 with `{"detail":"User Rate Limit Exceeded"}` and every rate-limit header.
pub fn too_many_requests(decision: &Decision) -> Response {
    let mut response = detail(StatusCode::TOO_MANY_REQUESTS, DENIED_DETAIL);
    headers::apply_denial(response.headers_mut(), decision);
    response
}

/// 503 with a JSON reason and `Retry-After: 1`, when the store failed under `on_error = "deny"`.
pub fn store_unavailable() -> Response {
    let mut response = detail(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_DETAIL);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The body of a 401 under `identity.on_missing = "deny"`.
pub const UNIDENTIFIED_DETAIL: &str = "Missing caller identity: this route is limited per user";

/// 401 with a JSON reason, when a policy keyed by user applies and the request names nobody.
pub fn unidentified() -> Response {
    detail(StatusCode::UNAUTHORIZED, UNIDENTIFIED_DETAIL)
}

fn detail(status: StatusCode, detail: &str) -> Response {
    (status, Json(serde_json::json!({ "detail": detail }))).into_response()
}
