//! Building a store and a limiter from [`Settings`]: what the service runs, and what a library
//! user calls to limit their own routes with the same configuration.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use fred::prelude::Client;

use crate::config::Settings;
use crate::http::{router, routes, AppState};
use crate::limiter::Limiter;
use crate::policy::Policy;
use crate::reload::ReloadStatus;
use crate::rls::metrics::RlsMetrics;
use crate::rls::{Limits, RlsService};
use crate::store::redis::Connections;
use crate::store::{MemoryStore, RedisStore, Store, StoreError};

/// What the service serves: its HTTP routes and, when `rls.listen` is set, Envoy's rate limit
/// service, both deciding with one limiter.
#[derive(Debug)]
pub struct Services {
    /// The HTTP routes: `/user`, forward-auth, `/healthz`, `/readyz`, `/metrics`.
    pub router: Router,
    /// Envoy's rate limit service, and where to serve it.
    pub rls: Option<(SocketAddr, RlsService)>,
}

/// The whole HTTP service for `settings`, ready to serve.
pub async fn app(settings: &Settings) -> Result<Router, StoreError> {
    Ok(services(settings).await?.router)
}

/// Everything the service serves for `settings`: here rather than in [`crate::http`], so that
/// the configuration, which holds the server's settings, need not be imported back.
pub async fn services(settings: &Settings) -> Result<Services, StoreError> {
    let limiter = Arc::new(limiter(settings).await?);
    Ok(assemble(settings, limiter, &Extras::default()))
}

/// What a reload's services carry over from the running ones, or a first start has none of.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// The reload counters and the live configuration's hash, for `/metrics`.
    pub reloads: Option<Arc<ReloadStatus>>,
    /// Envoy's rate limit service's counters, to go on counting in.
    pub rls_metrics: Option<Arc<RlsMetrics>>,
}

/// The routes and Envoy's rate limit service that `settings` describe, deciding with `limiter`.
pub fn assemble(settings: &Settings, limiter: Arc<Limiter>, extras: &Extras) -> Services {
    match &settings.forward_auth {
        // Proxies may ask about any route, so no pattern is unserved.
        Some(forward_auth) => tracing::info!(
            path = forward_auth.path,
            deny_status = forward_auth.deny_status.as_u16(),
            "serving forward-auth: proxies ask about their requests here"
        ),
        None => routes::warn_of_unserved_patterns(&settings.policies),
    }
    let rls = settings.rls.listen.map(|listen| {
        let domains = settings.rls.domains.clone();
        tracing::info!(
            %listen,
            domains = domains.names().count(),
            rules = domains.rules().len(),
            "serving Envoy's rate limit service"
        );
        let service = RlsService::new(limiter.clone(), domains, settings.headers);
        let service = match &extras.rls_metrics {
            Some(previous) => service.continuing(previous),
            None => service,
        };
        (listen, service)
    });
    let state = AppState {
        limiter,
        identity: Arc::new(settings.identity.clone()),
        header_mode: settings.headers,
        forward_auth: settings.forward_auth.clone().map(Arc::new),
        rls_metrics: rls.as_ref().map(|(_, service)| service.metrics()),
        reloads: extras.reloads.clone(),
    };
    Services {
        router: router(state),
        rls,
    }
}

/// Builds the store and limiter that `settings` describe.
///
/// Connecting to Redis never fails for an unreachable server: the service starts and serves
/// under `redis.on_error` until Redis answers.
///
/// On Redis, with the denial cache on, it also starts the task through which `tollgate reset`
/// clears that cache (see [`crate::reset::watch`]); the task ends when the limiter is dropped.
pub async fn limiter(settings: &Settings) -> Result<Limiter, StoreError> {
    let (store, client) = store(settings).await?;
    Ok(limiter_over(store, settings, client.as_ref()))
}

/// The limiter that `settings` describe over `store`, as [`store`] returned it with `client`.
pub fn limiter_over(
    store: Arc<dyn Store>,
    settings: &Settings,
    client: Option<&Client>,
) -> Limiter {
    let limiter = Limiter::new(store, settings.policies.clone())
        .with_breaker(settings.breaker_failures, settings.breaker_cool_down)
        .with_local_max_callers(settings.max_callers);
    configured(limiter, settings, client)
}

/// The limiter for a reloaded `settings`, in `previous`'s place: the same store, breaker, local
/// fallback and counters (see [`Limiter::successor`]); `client` is the store's Redis client,
/// for the reset watch, as [`store`] returned it.
pub fn successor(previous: &Limiter, settings: &Settings, client: Option<&Client>) -> Limiter {
    let limiter = previous.successor(settings.policies.clone(), descriptor_policies(settings));
    configured(limiter, settings, client)
}

/// The store that `settings` describe and, on Redis, its client.
pub async fn store(settings: &Settings) -> Result<(Arc<dyn Store>, Option<Client>), StoreError> {
    match &settings.redis {
        Some(redis) => {
            tracing::info!(
                url = %redis.redacted_url(),
                connections = settings.connections,
                max_batch = settings.max_batch,
                "using the redis store"
            );
            let store = RedisStore::connect_with(
                redis.client_config(),
                settings.timeout,
                Connections {
                    count: settings.connections,
                    max_batch: settings.max_batch,
                },
            )
            .await?;
            let client = store.client().clone();
            Ok((Arc::new(store), Some(client)))
        }
        None => {
            tracing::info!(
                "using the in-memory store: limits are per instance; set redis.url \
                 (TOLLGATE_REDIS__URL) to share them across instances"
            );
            let store = MemoryStore::new().with_max_callers(settings.max_callers);
            Ok((Arc::new(store), None))
        }
    }
}

/// `limiter` with what `settings` say may change on a reload, and the reset watch on its
/// denial cache.
fn configured(limiter: Limiter, settings: &Settings, client: Option<&Client>) -> Limiter {
    if settings.policies.is_empty() {
        tracing::warn!("no [[policies]] are configured: nothing is limited");
    }
    let limiter = limiter
        .with_unscoped(descriptor_policies(settings))
        .with_keys(settings.key_builder())
        .with_on_error(settings.on_error)
        .with_on_missing(settings.on_missing)
        .with_local_divisor(settings.local_divisor)
        .with_denial_cache(settings.denial_cache);
    if let (Some(client), Some(cache)) = (client, limiter.denial_cache()) {
        tokio::spawn(crate::reset::watch(
            client.clone(),
            settings.key_prefix.clone(),
            Arc::downgrade(cache),
        ));
    }
    limiter
}

/// The policies of Envoy's rules, each once: Envoy's descriptors are decided by the same
/// limiter as HTTP requests, with one breaker, one denial cache, one set of metrics.
fn descriptor_policies(settings: &Settings) -> Vec<Arc<Policy>> {
    let mut descriptor_policies: Vec<Arc<Policy>> = Vec::new();
    for (_, rule) in settings.rls.domains.rules() {
        if let Limits::Count(policies) = rule.limits() {
            for policy in policies {
                if !descriptor_policies.iter().any(|p| Arc::ptr_eq(p, policy)) {
                    descriptor_policies.push(policy.clone());
                }
            }
        }
    }
    descriptor_policies
}
