//! The responses the limiter answers with instead of calling the service.

use std::sync::OnceLock;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use crate::decision::Decision;
use crate::middleware::headers::HeaderMode;

/// The body of a denial, the original example's word for word.
pub const DENIED_DETAIL: &str = "User Rate Limit Exceeded";

/// The body of a 503 under `on_error = "deny"`.
pub const UNAVAILABLE_DETAIL: &str = "Rate limiter unavailable: the store could not decide";

/// A denial: `status` (429, or 403 for nginx's `auth_request`) with
/// `{"detail":"User Rate Limit Exceeded"}` and the rate-limit headers `header_mode` shows.
pub fn denied(decision: &Decision, header_mode: HeaderMode, status: StatusCode) -> Response {
    let mut response = DENIED.response(status);
    header_mode.denied(response.headers_mut(), decision);
    response
}

/// A denial's JSON body, `{"detail":"User Rate Limit Exceeded"}`, for answers that are not
/// HTTP responses (Envoy's `raw_body`).
pub fn denied_body() -> Bytes {
    DENIED.json().clone()
}

/// 503 with a JSON reason and `Retry-After: 1`, when the store failed under `on_error = "deny"`.
pub fn store_unavailable() -> Response {
    let mut response = UNAVAILABLE.response(StatusCode::SERVICE_UNAVAILABLE);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The body of a 401 under `identity.on_missing = "deny"`.
pub const UNIDENTIFIED_DETAIL: &str = "Missing caller identity: this route is limited per user";

/// 401 with a JSON reason, when a policy keyed by user applies and the request names nobody.
pub fn unidentified() -> Response {
    UNIDENTIFIED.response(StatusCode::UNAUTHORIZED)
}

/// A JSON body `{"detail": TEXT}`, serialized on first use and shared after: the texts are
/// constants, and a flood of denials is the response most worth making cheap.
struct Detail {
    text: &'static str,
    json: OnceLock<Bytes>,
}

impl Detail {
    const fn new(text: &'static str) -> Self {
        Detail {
            text,
            json: OnceLock::new(),
        }
    }

    /// The JSON body, `{"detail": TEXT}`.
    fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            serde_json::to_vec(&serde_json::json!({ "detail": self.text }))
                .expect("a string serializes")
                .into()
        })
    }

    /// The response with this body and its JSON content type.
    fn response(&self, status: StatusCode) -> Response {
        let mut response = Response::new(Body::from(self.json().clone()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

static DENIED: Detail = Detail::new(DENIED_DETAIL);
static UNAVAILABLE: Detail = Detail::new(UNAVAILABLE_DETAIL);
static UNIDENTIFIED: Detail = Detail::new(UNIDENTIFIED_DETAIL);
