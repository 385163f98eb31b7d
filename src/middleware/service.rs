use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tower::Service;

use crate::limiter::{Limiter, OnError, Verdict};
use crate::middleware::extract::{Facts, Identity};
use crate::middleware::headers::{self, HeaderMode};
use crate::middleware::response;

/// Checks each request against the limiter before it reaches `inner`.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
    identity: Arc<Identity>,
    /// Which responses carry the rate-limit headers.
    header_mode: HeaderMode,
}

/// The future of a [`RateLimit`] call: the store's decision, then the inner service if admitted.
pub type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

impl<S> RateLimit<S> {
    /// Limits `inner` with `limiter`, naming callers as `identity` says, with the rate-limit
    /// headers on every limited response unless [`headers`](Self::headers) says otherwise.
    pub fn new(inner: S, limiter: Arc<Limiter>, identity: Arc<Identity>) -> Self {
        RateLimit {
            inner,
            limiter,
            identity,
            header_mode: HeaderMode::default(),
        }
    }

    /// Puts the rate-limit headers only on the responses `header_mode` names.
    pub fn headers(mut self, header_mode: HeaderMode) -> Self {
        self.header_mode = header_mode;
        self
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone is not ready; the one that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let identity = self.identity.clone();
        let header_mode = self.header_mode;
        Box::pin(async move {
            // The facts borrow the request's head while the store decides; split from the body,
            // which is not `Sync`, so the future stays `Send`.
            let (parts, body) = request.into_parts();
            let verdict = {
                let facts = Facts::of(&parts, &identity, limiter.needs_address());
                limiter.check(&facts.borrow()).await
            };
            let request = Request::from_parts(parts, body);
            let (decision, local) = match verdict {
                Verdict::Unlimited | Verdict::Degraded(OnError::Allow) => {
                    return inner.call(request).await
                }
                Verdict::Degraded(_) => return Ok(response::store_unavailable()),
                Verdict::Unidentified => return Ok(response::unidentified()),
                Verdict::Decided(decision) => (decision, false),
                Verdict::DecidedLocally(decision) => (decision, true),
            };
            let mut response = if decision.allowed {
                let mut response = inner.call(request).await?;
                header_mode.admitted(response.headers_mut(), &decision);
                response
            } else {
                // Debug, not info: a flood of denials must not flood the logs.
                tracing::debug!(
                    policy = decision.tightest().map(|p| p.policy.name().as_str()),
                    retry_after_ms = decision.retry_after().as_millis() as u64,
                    local,
                    "denied"
                );
                response::too_many_requests(&decision, header_mode)
            };
            if local && header_mode.shows_quota(decision.allowed) {
                headers::mark_degraded(response.headers_mut());
            }
            Ok(response)
        })
    }
}
