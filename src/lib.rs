//! tollgate: a rate limiter for HTTP services, deciding atomically inside Redis with Lua scripts.
//!
//! It is a service you run (`tollgate`) and a tower layer you embed in an axum app.
//!
//! # Layout
//! - [`policy`]: [`Policy`], validated: name, algorithm, limit, window, cost, and whether it
//!   is a shadow policy, which only reports what it would have denied.
//! - [`decision`]: [`Decision`], the one currency from the store to headers and logs.
//! - [`key`]: the one place that names Redis keys, `<prefix>:{<sha256 hex>}:<policy>`.
//! - [`algorithm`]: the Rust reference of each algorithm, which the Lua scripts must match.
//! - [`store`]: the [`Store`] trait and its backends, [`RedisStore`] (Lua, EVALSHA, NOSCRIPT
//!   reload; in `store/redis/`, the script's call and reply, the calls per hash tag, the
//!   connections and their health, and the shared calls) and [`MemoryStore`] (one instance,
//!   capped, swept on a timer).
//! - [`limiter`]: caller to keys to store to [`Verdict`]: the [`Limiter`] and its `check`
//!   (`limiter/mod.rs`); the keys and the denial cache's probe, from one encoding of the
//!   request's names (`keys.rs`); the failure modes and the local fallback (`failure.rs`); the
//!   circuit breaker ([`limiter::breaker`]) and the cache of recent denials
//!   ([`limiter::denial_cache`]).
//! - [`scope`]: what a policy applies to: its routes, who shares a bucket (`by`), route costs.
//! - [`caller`]: who sent a request and what the limiter knows of it: [`caller::Identity`]
//!   (the identity header, `on_missing`), [`caller::RequestFacts`] (`facts.rs`), and the
//!   client address behind trusted proxies, grouped for IPv6 ([`caller::address`]).
//! - [`middleware`]: [`RateLimitLayer`], which turns verdicts into 429s and headers.
//! - [`metrics`]: the counters behind `/metrics`, in Prometheus text.
//! - [`rls`]: Envoy's rate limit descriptors: envoyproxy/ratelimit's YAML files and
//!   tollgate's `[rls]` rules, loaded into [`rls::Domains`] and matched to a request's
//!   descriptors exactly as ratelimit matches them, decided by the limiter and served over
//!   gRPC (`service.rs`, `server.rs`).
//! - [`setup`]: the store, the limiter and the whole app that [`Settings`] describe, for the
//!   service and library users.
//! - [`http`]: the service's router, handlers and server loop, run until a signal; the
//!   routers are swappable ([`http::LiveRouter`]).
//! - [`reload`]: live configuration: SIGHUP and watched files reload it, validated first,
//!   swapped between requests, over the same store, breaker and counters.
//! - [`config`]: figment layering and validation into [`Settings`], and what `check-config`
//!   and `key` print from them.
//! - [`command`]: what the operator's commands share: their Redis and their errors.
//! - [`inspect`]: what `tollgate inspect` reads: each policy's standing for one caller, from
//!   Redis, spending nothing.
//! - [`reset`]: `tollgate reset`, a caller's counts deleted, and each instance's watch of the
//!   marker that has it forget its cached denials.
//! - [`telemetry`]: log setup; `log_throttle` lets a hot-path log line through once a second.
//!
//! The Lua scripts live in `lua/` and are embedded in the binary.
#![warn(missing_docs)]

pub mod algorithm;
pub mod caller;
pub mod command;
pub mod config;
pub mod decision;
pub mod http;
pub mod inspect;
pub mod key;
pub mod limiter;
#[cfg(test)]
mod log_capture;
mod log_throttle;
pub mod metrics;
pub mod middleware;
pub mod policy;
pub mod reload;
pub mod reset;
pub mod rls;
pub mod scope;
pub mod setup;
pub mod store;
pub mod telemetry;

/// The README's Rust examples, compiled and run as doctests so they cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The configuration guide's Rust examples, compiled as doctests so they cannot drift either.
#[cfg(doctest)]
#[doc = include_str!("../docs/configuration.md")]
pub struct ConfigurationDoctests;

pub use config::{ConfigError, Settings};
pub use decision::{Decision, PolicyDecision};
pub use key::KeyBuilder;
pub use limiter::{Limiter, OnError, Verdict};
pub use middleware::{headers::HeaderMode, RateLimitLayer};
pub use policy::{Algorithm, Policy, PolicyName, Window};
pub use store::{Clock, MemoryStore, RedisStore, Store, StoreError};
