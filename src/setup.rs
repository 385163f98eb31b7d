//! Building a store and a limiter from [`Settings`]: what the service runs, and what a library
//! user calls to limit their own routes with the same configuration.

use std::sync::Arc;

use axum::Router;

use crate::config::Settings;
use crate::http::{router, routes, AppState};
use crate::limiter::Limiter;
use crate::store::redis::Connections;
use crate::store::{MemoryStore, RedisStore, Store, StoreError};

/// The whole service for `settings`, ready to serve: here rather than in [`crate::http`], so
/// that the configuration, which holds the server's settings, need not be imported back.
pub async fn app(settings: &Settings) -> Result<Router, StoreError> {
    match &settings.forward_auth {
        // Proxies may ask about any route, so no pattern is unserved.
        Some(forward_auth) => tracing::info!(
            path = forward_auth.path,
            deny_status = forward_auth.deny_status.as_u16(),
            "serving forward-auth: proxies ask about their requests here"
        ),
        None => routes::warn_of_unserved_patterns(&settings.policies),
    }
    let state = AppState {
        limiter: Arc::new(limiter(settings).await?),
        identity: Arc::new(settings.identity.clone()),
        header_mode: settings.headers,
        forward_auth: settings.forward_auth.clone().map(Arc::new),
    };
    Ok(router(state))
}

/// Builds the store and limiter that `settings` describe.
///
/// Connecting to Redis never fails for an unreachable server: the service starts and serves
/// under `redis.on_error` until Redis answers.
pub async fn limiter(settings: &Settings) -> Result<Limiter, StoreError> {
    let store: Arc<dyn Store> = match &settings.redis {
        Some(redis) => {
            tracing::info!(
                url = %redis.redacted_url(),
                connections = settings.connections,
                max_batch = settings.max_batch,
                "using the redis store"
            );
            Arc::new(
                RedisStore::connect_with(
                    redis.client_config(),
                    settings.timeout,
                    Connections {
                        count: settings.connections,
                        max_batch: settings.max_batch,
                    },
                )
                .await?,
            )
        }
        None => {
            tracing::info!(
                "using the in-memory store: limits are per instance; set redis.url \
                 (TOLLGATE_REDIS__URL) to share them across instances"
            );
            Arc::new(MemoryStore::new().with_max_callers(settings.max_callers))
        }
    };
    if settings.policies.is_empty() {
        tracing::warn!("no [[policies]] are configured: nothing is limited");
    }
    Ok(Limiter::new(store, settings.policies.clone())
        .with_keys(settings.key_builder())
        .with_on_error(settings.on_error)
        .with_on_missing(settings.on_missing)
        .with_breaker(settings.breaker_failures, settings.breaker_cool_down)
        .with_local_divisor(settings.local_divisor)
        .with_local_max_callers(settings.max_callers)
        .with_denial_cache(settings.denial_cache))
}
