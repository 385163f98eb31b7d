//! [`RateLimitLayer`]: the configuration that wraps services in [`RateLimit`].

use std::sync::Arc;

use axum::http::HeaderName;
use tower::Layer;

use crate::caller::Identity;
use crate::limiter::Limiter;
use crate::middleware::headers::HeaderMode;
use crate::middleware::service::MissingPeer;
use crate::middleware::RateLimit;

/// Wraps services in [`RateLimit`]; cheap to clone, it holds only configuration.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
    /// How callers are named: `X-User` and no trusted proxies unless set.
    identity: Arc<Identity>,
    /// Which responses carry the rate-limit headers: all limited ones unless set.
    header_mode: HeaderMode,
    /// Shared by the services it makes, so a missing `ConnectInfo` is reported once.
    missing_peer: Arc<MissingPeer>,
}

impl RateLimitLayer {
    /// A layer that names callers by the `X-User` header.
    pub fn new(limiter: Arc<Limiter>) -> Self {
        RateLimitLayer {
            limiter,
            identity: Arc::new(Identity::default()),
            header_mode: HeaderMode::default(),
            missing_peer: Arc::default(),
        }
    }

    /// Names callers by `header` instead.
    pub fn identity_header(mut self, header: HeaderName) -> Self {
        Arc::make_mut(&mut self.identity).header = header;
        self
    }

    /// Names callers as `identity` says: header, trusted proxies, IPv6 grouping.
    pub fn identity(mut self, identity: impl Into<Arc<Identity>>) -> Self {
        self.identity = identity.into();
        self
    }

    /// Puts the rate-limit headers only on the responses `header_mode` names.
    pub fn headers(mut self, header_mode: HeaderMode) -> Self {
        self.header_mode = header_mode;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.limiter.clone(), self.identity.clone())
            .headers(self.header_mode)
            .reporting_to(self.missing_peer.clone())
    }
}
