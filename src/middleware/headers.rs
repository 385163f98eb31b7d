//! Renders a [`Decision`] as response headers.
//!
//! - `RateLimit-Policy` and `RateLimit`, Structured Field lists with one item per policy, as in
//!   draft-ietf-httpapi-ratelimit-headers-11: `"per_minute";q=3;w=60` and `"per_minute";r=0;t=42`.
//! - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds), describing the
//!   policy closest to exhaustion: the names GitHub and most clients know.
//! - On denials only, `Retry-After` (whole seconds, rounded up, at least 1) and the original
//!   example's `X-Rate-Limit` (the limit).

use std::cell::RefCell;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::decision::{Decision, PolicyDecision};
use crate::policy::Policy;

/// `RateLimit-Policy`: the quota policies that applied.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of each policy's quota.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit`: the tightest policy's quota.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: what is left of the tightest policy's quota.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: seconds until the tightest policy's window ends.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `X-Rate-Limit`: the limit, on denials, as the original FastAPI example sent it.
pub const X_RATE_LIMIT: HeaderName = HeaderName::from_static("x-rate-limit");

/// Which responses carry the rate-limit headers: the `headers` setting.
///
/// The quota headers tell every client its limit and what is left of it. Some services would
/// rather not say (a public API watched by scrapers), and some would rather not pay for five
/// headers on every admitted response; the original example sent them on its 429s only.
/// `X-RateLimit-Degraded` goes wherever the quota headers go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderMode {
    /// Every limited response carries the quota headers; a denial adds `Retry-After` and
    /// `X-Rate-Limit`.
    #[default]
    All,
    /// Only denials carry headers, all of them; admitted responses carry none.
    Denials,
    /// Only denials carry a header, `Retry-After`: no response tells a client its quota.
    RetryAfter,
}

impl HeaderMode {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [HeaderMode; 3] = [HeaderMode::All, HeaderMode::Denials, HeaderMode::RetryAfter];

    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderMode::All => "all",
            HeaderMode::Denials => "denials",
            HeaderMode::RetryAfter => "retry_after",
        }
    }

    /// Whether an admitted (`allowed`) or denied response carries the quota headers.
    pub fn shows_quota(self, allowed: bool) -> bool {
        match self {
            HeaderMode::All => true,
            HeaderMode::Denials => !allowed,
            HeaderMode::RetryAfter => false,
        }
    }

    /// Adds to an admitted response the headers this mode shows.
    pub fn admitted(self, headers: &mut HeaderMap, decision: &Decision) {
        if self.shows_quota(true) {
            apply(headers, decision);
        }
    }

    /// Adds to a denial the headers this mode shows.
    pub fn denied(self, headers: &mut HeaderMap, decision: &Decision) {
        if self.shows_quota(false) {
            apply_denial(headers, decision);
        } else {
            retry_after(headers, decision);
        }
    }
}

/// Adds the headers every limited response carries, admitted or denied.
pub fn apply(headers: &mut HeaderMap, decision: &Decision) {
    quota(headers, decision);
}

/// [`apply`], returning the tightest policy the headers cite, so a denial need not find it
/// again.
fn quota<'d>(headers: &mut HeaderMap, decision: &'d Decision) -> Option<&'d PolicyDecision> {
    // Shadow policies show in no header: with only those, there is no quota to show.
    let tightest = decision.tightest()?;
    headers.insert(RATELIMIT_POLICY, policy_list(decision));
    headers.insert(RATELIMIT, quota_list(decision));
    headers.insert(X_RATELIMIT_LIMIT, limit(tightest));
    headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(tightest.remaining));
    headers.insert(
        X_RATELIMIT_RESET,
        HeaderValue::from(secs_ceil(tightest.reset_after)),
    );
    Some(tightest)
}

/// `X-RateLimit-Degraded: local`: a degraded response, decided by the local fallback because the
/// store could not decide.
pub const X_RATELIMIT_DEGRADED: HeaderName = HeaderName::from_static("x-ratelimit-degraded");

/// Marks a response decided by the local fallback (`on_error = "local"`).
pub fn mark_degraded(headers: &mut HeaderMap) {
    headers.insert(X_RATELIMIT_DEGRADED, HeaderValue::from_static("local"));
}

/// Adds what a denial carries on top of [`apply`].
pub fn apply_denial(headers: &mut HeaderMap, decision: &Decision) {
    let tightest = quota(headers, decision);
    retry_after(headers, decision);
    if let Some(tightest) = tightest {
        headers.insert(X_RATE_LIMIT, limit(tightest));
    }
}

/// `Retry-After`: when the denied request would be admitted.
fn retry_after(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(decision.retry_after())),
    );
}

/// Whole seconds for `Retry-After`: rounded up, so a client that waits is admitted, and at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    secs_ceil(wait).max(1)
}

/// What a policy's headers say whatever the request, rendered once per thread and policy and
/// then shared by every response that cites it (its saving is in BENCHMARKS.md).
struct Rendered {
    /// Held, not only compared by address: a dropped policy's address could be reused.
    policy: Arc<Policy>,
    /// Its `RateLimit-Policy` item when it is the only policy: `"per_minute";q=3;w=60`.
    item: HeaderValue,
    /// Its limit, for `X-RateLimit-Limit` and `X-Rate-Limit`.
    limit: HeaderValue,
}

/// How many policies' values a thread keeps, more than most configurations hold (each
/// policy, and its divided version under `on_error = "local"`). Past it, policies are rendered
/// afresh each time rather than evicting one another in turn.
const RENDERED_PER_THREAD: usize = 16;

thread_local! {
    static RENDERED: RefCell<Vec<Rendered>> = const { RefCell::new(Vec::new()) };
}

impl Rendered {
    fn of(policy: &Arc<Policy>) -> Self {
        // Rendered as a decision citing the policy alone is, by the same code.
        let cited = PolicyDecision::new(policy.clone(), Default::default());
        Rendered {
            policy: policy.clone(),
            item: render_policy_list(std::slice::from_ref(&cited)),
            limit: HeaderValue::from(cited.limit),
        }
    }

    /// Calls `f` with `p`'s rendered values, or returns `None` when they are not what `p`
    /// reports (a decision built by hand may cite a limit other than its policy's) or the
    /// thread keeps no more policies.
    fn with<R>(p: &PolicyDecision, f: impl FnOnce(&Rendered) -> R) -> Option<R> {
        if p.limit != p.policy.capacity() {
            return None;
        }
        RENDERED.with_borrow_mut(|memo| {
            let at = match memo.iter().position(|r| Arc::ptr_eq(&r.policy, &p.policy)) {
                Some(at) => at,
                None if memo.len() < RENDERED_PER_THREAD => {
                    memo.push(Rendered::of(&p.policy));
                    memo.len() - 1
                }
                None => return None,
            };
            Some(f(&memo[at]))
        })
    }
}

/// The limit `p` reports, as a header value.
fn limit(p: &PolicyDecision) -> HeaderValue {
    Rendered::with(p, |r| r.limit.clone()).unwrap_or_else(|| HeaderValue::from(p.limit))
}

fn secs_ceil(duration: Duration) -> u64 {
    (duration.as_millis() as u64).div_ceil(1000)
}

/// `"per_minute";q=3;w=60, "per_day";q=1000;w=86400`, shadow policies left out.
fn policy_list(decision: &Decision) -> HeaderValue {
    // A lone policy is not shadow: `apply` shows no header for a decision without a limiting one.
    if let [p] = decision.policies.as_slice() {
        if let Some(item) = Rendered::with(p, |r| r.item.clone()) {
            return item;
        }
    }
    render_policy_list(decision.limiting())
}

fn render_policy_list<'a>(policies: impl IntoIterator<Item = &'a PolicyDecision>) -> HeaderValue {
    sf_list(policies, |list, p| {
        write!(list, ";q={};w={}", p.limit, p.policy.quota_window_secs())
            .expect("a String takes any text");
    })
}

/// `"per_minute";r=0;t=42, "per_day";r=990;t=3600`, shadow policies left out.
fn quota_list(decision: &Decision) -> HeaderValue {
    sf_list(decision.limiting(), |list, p| {
        write!(list, ";r={};t={}", p.remaining, secs_ceil(p.reset_after))
            .expect("a String takes any text");
    })
}

/// A Structured Field list with one item per policy: its name as a string, then `params`.
fn sf_list<'a>(
    policies: impl IntoIterator<Item = &'a PolicyDecision>,
    params: impl Fn(&mut String, &PolicyDecision),
) -> HeaderValue {
    let mut list = String::new();
    for p in policies {
        if !list.is_empty() {
            list.push_str(", ");
        }
        list.push('"');
        list.push_str(p.policy.name().as_str());
        list.push('"');
        params(&mut list, p);
    }
    // Policy names are restricted to header-safe ASCII when they are built.
    HeaderValue::try_from(list).expect("policy names are header-safe")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::PolicyDecision;
    use crate::policy::Policy;
    use std::sync::Arc;

    fn decision(remaining: u64, reset_ms: u64, retry_ms: u64) -> Decision {
        let policy: Policy = "per_minute: 3 per 1m".parse().unwrap();
        Decision {
            allowed: retry_ms == 0,
            policies: vec![PolicyDecision {
                policy: Arc::new(policy),
                allowed: retry_ms == 0,
                limit: 3,
                remaining,
                retry_after: Duration::from_millis(retry_ms),
                reset_after: Duration::from_millis(reset_ms),
            }],
        }
    }

    /// A denial carries every header, with seconds rounded up.
    #[test]
    fn denial_headers_render_as_specified() {
        let mut headers = HeaderMap::new();
        apply_denial(&mut headers, &decision(0, 41_001, 41_001));
        let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(get("ratelimit-policy"), "\"per_minute\";q=3;w=60");
        assert_eq!(get("ratelimit"), "\"per_minute\";r=0;t=42");
        assert_eq!(get("retry-after"), "42");
        assert_eq!(get("x-rate-limit"), "3");
        assert_eq!(get("x-ratelimit-limit"), "3");
        assert_eq!(get("x-ratelimit-remaining"), "0");
        assert_eq!(get("x-ratelimit-reset"), "42");
        assert_eq!(headers.len(), 7);
    }

    /// The single-policy decision a store reports for `policy`.
    fn citing(policy: &Arc<Policy>) -> Decision {
        let outcome = crate::algorithm::Outcome {
            remaining: 1,
            reset_after_ms: 1_000,
            retry_after_ms: 0,
        };
        Decision {
            allowed: true,
            policies: vec![PolicyDecision::new(policy.clone(), outcome)],
        }
    }

    /// `RateLimit-Policy` and `X-RateLimit-Limit` as [`apply`] writes them.
    fn policy_and_limit(decision: &Decision) -> (String, String) {
        let mut headers = HeaderMap::new();
        apply(&mut headers, decision);
        let get = |name| headers.get(name).unwrap().to_str().unwrap().to_owned();
        (get(RATELIMIT_POLICY), get(X_RATELIMIT_LIMIT))
    }

    /// A divided policy (same name, smaller limit) reports its own values, not its original's.
    #[test]
    fn each_policy_reports_its_own_limit() {
        let policy: Arc<Policy> = Arc::new("per_minute: 1000000 per 1m".parse().unwrap());
        let divided = Arc::new(policy.divided(4));
        for _ in 0..2 {
            assert_eq!(
                policy_and_limit(&citing(&policy)),
                ("\"per_minute\";q=1000000;w=60".into(), "1000000".into())
            );
            assert_eq!(
                policy_and_limit(&citing(&divided)),
                ("\"per_minute\";q=250000;w=60".into(), "250000".into())
            );
        }
    }

    /// A thread keeps a bounded number of policies, and those past it still report their own.
    #[test]
    fn more_policies_than_a_thread_keeps_still_report_their_own() {
        let policies: Vec<Arc<Policy>> = (1..=RENDERED_PER_THREAD as u64 + 4)
            .map(|i| Arc::new(format!("p{i}: {} per 1s", i * 5_000).parse().unwrap()))
            .collect();
        for _ in 0..2 {
            for (i, policy) in (1u64..).zip(&policies) {
                let limit = i * 5_000;
                assert_eq!(
                    policy_and_limit(&citing(policy)),
                    (format!("\"p{i}\";q={limit};w=1"), limit.to_string())
                );
            }
        }
        assert_eq!(RENDERED.with_borrow(Vec::len), RENDERED_PER_THREAD);
    }

    /// A decision built by hand with a limit other than its policy's reports the limit it cites.
    #[test]
    fn a_cited_limit_other_than_the_policys_is_reported_as_cited() {
        let mut decision = decision(1, 1_000, 0);
        decision.policies[0].limit = 5;
        assert_eq!(
            policy_and_limit(&decision),
            ("\"per_minute\";q=5;w=60".into(), "5".into())
        );
    }

    /// Each mode writes on admitted responses and on denials exactly what it promises, each
    /// header once.
    #[test]
    fn each_mode_shows_what_it_names() {
        let names = |map: &HeaderMap| -> Vec<String> {
            let mut names: Vec<_> = map.keys().map(|name| name.to_string()).collect();
            names.sort();
            names
        };
        let quota = [
            "ratelimit",
            "ratelimit-policy",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ];
        let denial = [&quota[..], &["retry-after", "x-rate-limit"]].concat();
        for (mode, admitted, denied) in [
            (HeaderMode::All, &quota[..], &denial[..]),
            (HeaderMode::Denials, &[][..], &denial[..]),
            (HeaderMode::RetryAfter, &[][..], &["retry-after"][..]),
        ] {
            let mut map = HeaderMap::new();
            mode.admitted(&mut map, &decision(1, 1_000, 0));
            assert_eq!(names(&map), admitted, "{mode:?} admitted");
            let mut map = HeaderMap::new();
            mode.denied(&mut map, &decision(0, 1_000, 1_000));
            let mut expected = denied.to_vec();
            expected.sort();
            assert_eq!(names(&map), expected, "{mode:?} denied");
            assert_eq!(map.len(), expected.len(), "{mode:?} count");
        }
    }

    /// Retry-After is never 0, even a millisecond before the window turns.
    #[test]
    fn retry_after_is_at_least_one_second() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
    }
}
