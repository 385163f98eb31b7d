//! [`RateLimit`]: the service that asks the limiter about each request, then answers or calls
//! the inner service.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use tower::Service;

use crate::caller::{Identity, RequestFacts};
use crate::limiter::Limiter;
use crate::middleware::answer::{answer, Answer};
use crate::middleware::headers::HeaderMode;

/// Checks each request against the limiter before it reaches `inner`.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
    identity: Arc<Identity>,
    /// Which responses carry the rate-limit headers.
    header_mode: HeaderMode,
    /// Says once that requests come without the peer address that some policy needs.
    missing_peer: Arc<MissingPeer>,
}

/// An app served without `ConnectInfo` limits nothing by address and believes no trusted
/// proxy, silently: this logs it once, at error, with the fix.
#[derive(Debug, Default)]
pub(crate) struct MissingPeer(AtomicBool);

impl MissingPeer {
    fn report(&self) {
        if !self.0.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "requests reach the rate limiter without the peer address, so policies keyed \
                 by ip and identity.trusted_proxies cannot work: serve the app with \
                 into_make_service_with_connect_info::<SocketAddr>()"
            );
        }
    }
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
            missing_peer: Arc::default(),
        }
    }

    /// Puts the rate-limit headers only on the responses `header_mode` names.
    pub fn headers(mut self, header_mode: HeaderMode) -> Self {
        self.header_mode = header_mode;
        self
    }

    /// Shares the layer's once-only report, so every route it wraps says it once in all.
    pub(crate) fn reporting_to(mut self, missing_peer: Arc<MissingPeer>) -> Self {
        self.missing_peer = missing_peer;
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
        let missing_peer = self.missing_peer.clone();
        Box::pin(async move {
            // The facts borrow the request's head while the store decides; split from the body,
            // which is not `Sync`, so the future stays `Send`.
            let (parts, body) = request.into_parts();
            let with_address = limiter.needs_address();
            if identity.lacks_peer(&parts, with_address) {
                missing_peer.report();
            }
            let verdict = {
                let facts = RequestFacts::of(&parts, &identity, with_address);
                limiter.check(&facts).await
            };
            let request = Request::from_parts(parts, body);
            match answer(verdict, header_mode, StatusCode::TOO_MANY_REQUESTS) {
                Answer::Now(response) => Ok(response),
                Answer::Pass(admission) => {
                    let mut response = inner.call(request).await?;
                    admission.mark(&mut response, header_mode);
                    Ok(response)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use crate::caller::address::{Cidr, Proxies};
    use crate::caller::Identity;
    use crate::limiter::tests::policy;
    use crate::log_capture::logged;
    use crate::policy::Policy;
    use crate::scope::Dimension;
    use crate::{Limiter, MemoryStore, RateLimitLayer};

    /// The errors logged while serving two requests to an app limited by `policies`, naming
    /// callers as `identity` says, with or without the peer address that `ConnectInfo` carries.
    fn errors_serving(policies: Vec<Policy>, identity: Identity, connect_info: bool) -> usize {
        let limiter = Limiter::new(std::sync::Arc::new(MemoryStore::new()), policies);
        let layer = RateLimitLayer::new(limiter.into()).identity(identity);
        let app = Router::new()
            .route("/user", get(|| async { "ok" }))
            .route("/other", get(|| async { "ok" }))
            .layer(layer);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let text = logged("error", || {
            for path in ["/user", "/other"] {
                let mut request = axum::http::Request::get(path).header("x-user", "joe");
                if connect_info {
                    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
                    request = request.extension(ConnectInfo(peer));
                }
                let request = request.body(Body::empty()).unwrap();
                runtime.block_on(app.clone().oneshot(request)).unwrap();
            }
        });
        text.lines()
            .filter(|line| line.contains("into_make_service_with_connect_info"))
            .count()
    }

    /// Served without `ConnectInfo`, a layer whose policies need the peer address (keyed by
    /// ip, or trusted proxies set) says so once, naming the fix; one that does not, or one
    /// served with it, says nothing.
    #[test]
    fn a_missing_peer_address_is_reported_once_when_needed() {
        let by_ip = || vec![policy("a: 9 per 1m", vec![Dimension::Ip])];
        let proxies = Identity {
            proxies: Proxies {
                trusted: vec![Cidr::parse("10.0.0.0/8").unwrap()],
                ..Proxies::default()
            },
            ..Identity::default()
        };
        let plain = Identity::default;
        assert_eq!(errors_serving(by_ip(), plain(), false), 1);
        assert_eq!(errors_serving(Vec::new(), proxies, false), 1);
        assert_eq!(errors_serving(by_ip(), plain(), true), 0);
        assert_eq!(errors_serving(Vec::new(), plain(), false), 0);
    }
}
