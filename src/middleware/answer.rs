//! What a verdict makes of a request, whichever way it reached tollgate: let it through and mark
//! the response it gets, or answer it at once.

use axum::http::StatusCode;
use axum::response::Response;

use crate::decision::Decision;
use crate::limiter::{Degraded, Verdict};
use crate::middleware::headers::{self, HeaderMode};
use crate::middleware::response;

/// What the limiter's verdict makes of a request.
#[derive(Debug)]
pub enum Answer {
    /// Let it through; the response it gets then carries the admission's headers.
    Pass(Admission),
    /// Answer at once with this response: a denial, a 401 or a 503.
    Now(Response),
}

/// Why a request was let through: no decision (nothing applied, or `on_error = "allow"`), or a
/// decision that admitted it, made by the store or by the local fallback.
#[derive(Debug)]
pub struct Admission(Option<(Decision, bool)>);

impl Admission {
    /// Adds to the admitted request's response the rate-limit headers `header_mode` shows, and
    /// `X-RateLimit-Degraded: local` beside them when the local fallback decided.
    pub fn mark(&self, response: &mut Response, header_mode: HeaderMode) {
        let Some((decision, local)) = &self.0 else {
            return;
        };
        header_mode.admitted(response.headers_mut(), decision);
        if *local && header_mode.shows_quota(true) {
            headers::mark_degraded(response.headers_mut());
        }
    }
}

/// The answer to `verdict`: a denial has `deny_status` (429, or 403 for a proxy that takes only
/// that) with the headers `header_mode` shows.
pub fn answer(verdict: Verdict, header_mode: HeaderMode, deny_status: StatusCode) -> Answer {
    let (decision, local) = match verdict {
        Verdict::Unlimited | Verdict::Degraded(Degraded::Allow) => {
            return Answer::Pass(Admission(None))
        }
        Verdict::Degraded(Degraded::Deny) => return Answer::Now(response::store_unavailable()),
        Verdict::Unidentified => return Answer::Now(response::unidentified()),
        Verdict::Decided(decision) => (decision, false),
        Verdict::Degraded(Degraded::Local(decision)) => (decision, true),
    };
    if decision.allowed {
        return Answer::Pass(Admission(Some((decision, local))));
    }
    // Debug, not info: a flood of denials must not flood the logs.
    tracing::debug!(
        policy = decision.tightest().map(|p| p.policy.name().as_str()),
        retry_after_ms = decision.retry_after().as_millis() as u64,
        local,
        "denied"
    );
    let mut response = response::denied(&decision, header_mode, deny_status);
    if local && header_mode.shows_quota(false) {
        headers::mark_degraded(response.headers_mut());
    }
    Answer::Now(response)
}
