//! The tower layer that puts a [`Limiter`](crate::limiter::Limiter) in front of an axum service.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{body::Body, http::Request, routing::get, Router};
//! use tollgate::{Limiter, MemoryStore, Policy, RateLimitLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let policy: Policy = "per_hour: 3 per 1h".parse().unwrap();
//! let limiter = Limiter::new(Arc::new(MemoryStore::new()), vec![policy]);
//! let app = Router::new()
//!     .route("/user", get(|| async { "hello" }))
//!     .layer(RateLimitLayer::new(Arc::new(limiter)));
//!
//! let joe = || Request::get("/user").header("x-user", "joe").body(Body::empty()).unwrap();
//! for _ in 0..3 {
//!     assert_eq!(app.clone().oneshot(joe()).await.unwrap().status(), 200);
//! }
//! assert_eq!(app.oneshot(joe()).await.unwrap().status(), 429);
//! # }
//! ```

pub mod answer;
pub mod headers;
mod layer;
pub mod response;
mod service;

pub use layer::RateLimitLayer;
pub use service::{RateLimit, ResponseFuture};
