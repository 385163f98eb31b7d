use std::sync::Arc;

use axum::http::HeaderName;
use tower::Layer;

use crate::limiter::Limiter;
use crate::middleware::RateLimit;

/// Wraps services in [`RateLimit`]; cheap to clone, it holds only configuration.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
    /// The request header that names the caller, `x-user` unless set.
    identity: HeaderName,
}

impl RateLimitLayer {
    /// A layer that names callers by the `X-User` header.
    pub fn new(limiter: Arc<Limiter>) -> Self {
        RateLimitLayer {
            limiter,
            identity: HeaderName::from_static("x-user"),
        }
    }

    /// Names callers by `header` instead.
    pub fn identity_header(mut self, header: HeaderName) -> Self {
        self.identity = header;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.limiter.clone(), self.identity.clone())
    }
}
