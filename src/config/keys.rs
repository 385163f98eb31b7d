//! The Redis keys that `tollgate key` prints and `tollgate inspect` reads: each policy's key for
//! one caller, named exactly as requests are keyed under these settings.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Method};

use super::Settings;
use crate::caller::{address, RequestFacts};
use crate::limiter::Limiter;
use crate::policy::PolicyName;
use crate::scope::Dimension;
use crate::store::{Check, MemoryStore};

/// A policy whose key needs a client address or a route that was not given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unkeyed {
    /// The policy's name.
    pub policy: PolicyName,
    /// What the policy is keyed by, as configured.
    pub by: Vec<String>,
}

impl fmt::Display for Unkeyed {
    /// The line `tollgate key` prints on stderr, naming the flags that would name the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "# {}: keyed by {:?}; pass --ip and/or --route to see its key",
            self.policy, self.by
        )
    }
}

impl Settings {
    /// Each policy's key, in configuration order, for a caller named `user` (or, for a policy
    /// keyed by a header, with that header's value `user`), from `ip`, on
    /// `route` (the pattern, like `/user`); a policy keyed by an address or a route not given
    /// is [`Unkeyed`].
    pub fn caller_keys(
        &self,
        user: &str,
        ip: Option<IpAddr>,
        route: Option<&str>,
    ) -> Vec<Result<String, Unkeyed>> {
        self.caller_checks(user, ip, route)
            .into_iter()
            .map(|check| check.map(|check| check.key))
            .collect()
    }

    /// Each policy's check for the caller [`Settings::caller_keys`] names: its key and its
    /// policy, costing the policy's cost.
    pub fn caller_checks(
        &self,
        user: &str,
        ip: Option<IpAddr>,
        route: Option<&str>,
    ) -> Vec<Result<Check, Unkeyed>> {
        // The limiter names keys; its store is never asked, so the memory store stands in.
        let limiter = Limiter::new(Arc::new(MemoryStore::new()), self.policies.clone())
            .with_keys(self.key_builder())
            .with_on_missing(self.on_missing);
        // A policy keyed by a header names its bucket by the header's value as a user's is named
        // by the user: `tollgate key <api key>` names both.
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(user) {
            for policy in &self.policies {
                for dimension in policy.scope().by.dimensions() {
                    if let Dimension::Header(name) = dimension {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
        }
        let facts = RequestFacts {
            user: Some(user.as_bytes()),
            ip: ip.map(|ip| address::bucket(ip, self.identity.ipv6_prefix)),
            method: Method::GET,
            path: route.unwrap_or("/").into(),
            route: Some(route.unwrap_or("/")),
            headers: &headers,
            host: None,
        };
        limiter
            .policies()
            .iter()
            .map(|policy| {
                let by = policy.scope().by.dimensions();
                // Without --route, "/" stands in and would name a key for a route not asked for.
                let needs_route = by.contains(&Dimension::Route) && route.is_none();
                limiter
                    .key_of(policy, &facts)
                    .filter(|_| !needs_route)
                    .map(|key| Check::new(key, policy.clone()))
                    .ok_or_else(|| Unkeyed {
                        policy: policy.name().clone(),
                        by: by.iter().map(ToString::to_string).collect(),
                    })
            })
            .collect()
    }
}
