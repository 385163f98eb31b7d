//! The tower layer that puts a [`Limiter`](crate::limiter::Limiter) in front of an axum service.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use tollgate::{Limiter, MemoryStore, RateLimitLayer, Policy};
//!
//! # async fn demo() {
//! let policy: Policy = "per_minute: 3 per 1m".parse().unwrap();
//! let limiter = Limiter::new(Arc::new(MemoryStore::new()), vec![policy]);
//! let app: Router = Router::new()
//!     .route("/user", get(|| async { "hello" }))
//!     .layer(RateLimitLayer::new(Arc::new(limiter)));
//! # }
//! ```

pub mod headers;
mod layer;
pub mod response;
mod service;

pub use layer::RateLimitLayer;
pub use service::{RateLimit, ResponseFuture};
