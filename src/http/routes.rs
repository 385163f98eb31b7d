//! The routes the service limits, and the policy route patterns that match none of them.

use axum::http::Method;

use crate::policy::Policy;
use crate::scope::RoutePattern;

/// The original example's endpoint, the one route behind the limiter.
pub const USER: &str = "/user";

/// Every method and path the limiter sees: `GET /user`, and `HEAD /user`, which axum answers
/// with the GET handler.
pub const LIMITED: [(Method, &str); 2] = [(Method::GET, USER), (Method::HEAD, USER)];

/// Liveness: 200 while the process is up.
pub const HEALTHZ: &str = "/healthz";

/// Readiness: 200 when the store would decide, writing.
pub const READYZ: &str = "/readyz";

/// The counters, in Prometheus text.
pub const METRICS: &str = "/metrics";

/// The service's own routes, which the forward-auth endpoint may not take.
pub const SERVICE_PATHS: [&str; 4] = [USER, HEALTHZ, READYZ, METRICS];

/// Each pattern, in a policy's `routes` or `costs`, that matches none of the [`LIMITED`]
/// routes, with its policy's name: such a pattern limits or costs nothing.
pub fn unserved_patterns(policies: &[Policy]) -> Vec<(&str, &RoutePattern)> {
    let serves = |pattern: &RoutePattern| {
        LIMITED
            .iter()
            .any(|(method, path)| pattern.matches(method, path))
    };
    policies
        .iter()
        .flat_map(|policy| {
            let costs = policy.scope().costs.iter().map(|(pattern, _)| pattern);
            policy
                .scope()
                .routes
                .iter()
                .chain(costs)
                .filter(move |pattern| !serves(pattern))
                .map(move |pattern| (policy.name().as_str(), pattern))
        })
        .collect()
}

/// Warns once at startup of each pattern [`unserved_patterns`] finds, since a typo such as
/// `"GET /usr"` would otherwise limit nothing without a word.
pub fn warn_of_unserved_patterns(policies: &[Policy]) {
    for (policy, pattern) in unserved_patterns(policies) {
        tracing::warn!(
            policy,
            %pattern,
            served = "GET /user",
            "this route pattern matches no route tollgate limits, so it applies to nothing"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::tests::policy_on;
    use crate::scope::Dimension;

    /// A misspelt or foreign pattern, in `routes` or in `costs`, is found with its policy; the
    /// patterns that match `GET /user` or `HEAD /user` are not.
    #[test]
    fn patterns_matching_no_limited_route_are_found() {
        let user = || vec![Dimension::User];
        let typo = policy_on(
            "typo: 3 per 1m",
            user(),
            &["GET /usr", "/user", "HEAD /user"],
            &[],
        );
        let costly = policy_on(
            "costly: 3 per 1m",
            user(),
            &["GET /user"],
            &[("POST /export", 2), ("/*", 1)],
        );
        let policies = [typo, costly];
        let found: Vec<(&str, String)> = unserved_patterns(&policies)
            .into_iter()
            .map(|(policy, pattern)| (policy, pattern.to_string()))
            .collect();
        assert_eq!(
            found,
            [
                ("typo", "GET /usr".to_owned()),
                ("costly", "POST /export".to_owned())
            ]
        );
    }
}
