//! The forward-auth endpoint: a proxy (nginx, Traefik, Caddy, HAProxy) asks whether to let a
//! request through, and tollgate decides for that request, described by the proxy's headers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;

use super::AppState;
use crate::caller::{peer, RequestFacts};
use crate::middleware::answer::{answer, Answer};

/// Where proxies ask, and how a denial is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardAuth {
    /// The endpoint's path, like `/check`; any method is a question about another request.
    pub path: String,
    /// A denial's status: 429, or 403 for nginx's `auth_request`, which turns any status but
    /// 2xx, 401 and 403 into a 500.
    pub deny_status: StatusCode,
    /// Whether the forwarded method and path are believed from any peer, not only from
    /// `identity.trusted_proxies`.
    pub trust_any_peer: bool,
}

impl ForwardAuth {
    /// A denial's status unless configured otherwise.
    pub const DEFAULT_DENY_STATUS: StatusCode = StatusCode::TOO_MANY_REQUESTS;
}

/// Decides for the request the proxy describes: 200 with an empty body to let it through, with
/// the rate-limit headers `headers` shows; a denial, 401 or 503 otherwise, which the proxy passes
/// to its client.
pub async fn check(state: AppState, settings: Arc<ForwardAuth>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let limiter = &state.limiter;
    let with_address = limiter.needs_address();
    // The forwarded method and path are the proxy's word: a client reaching tollgate directly
    // could otherwise name any route, and spend or dodge another route's policy.
    let believed = settings.trust_any_peer
        || peer(&parts).is_some_and(|peer| state.identity.proxies.trusts(peer));
    let verdict = {
        let facts = RequestFacts::forwarded(&parts, &state.identity, with_address, believed);
        limiter.check(&facts).await
    };
    match answer(verdict, state.header_mode, settings.deny_status) {
        Answer::Now(response) => response,
        Answer::Pass(admission) => {
            let mut response = Response::new(Body::empty());
            admission.mark(&mut response, state.header_mode);
            response
        }
    }
}
