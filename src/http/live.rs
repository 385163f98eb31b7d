//! The router a listener serves, swappable while it serves: a reload builds a new router from the
//! new configuration and swaps it in, and each request runs on the router current when it
//! arrived, so a request decided under one configuration finishes under it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;

/// A router that a reload can replace; clones share it.
#[derive(Clone, Debug)]
pub struct LiveRouter(Arc<ArcSwap<Router>>);

impl LiveRouter {
    /// Serves `router` until it is replaced.
    pub fn new(router: Router) -> Self {
        LiveRouter(Arc::new(ArcSwap::from_pointee(router)))
    }

    /// The router for the next request: loaded per request, not per connection, so that a
    /// keep-alive connection opened before a reload is served by the new configuration.
    pub fn current(&self) -> Router {
        Router::clone(&self.0.load())
    }

    /// Serves `router` from the next request on; requests already running finish on the old one.
    pub fn replace(&self, router: Router) {
        self.0.store(Arc::new(router));
    }
}

impl From<Router> for LiveRouter {
    fn from(router: Router) -> Self {
        LiveRouter::new(router)
    }
}
