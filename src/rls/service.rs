//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`: a request's descriptors
//! matched to rules, decided all or nothing by the limiter, and answered with a status per
//! descriptor, the rate-limit headers and, over the limit, `Retry-After` and the JSON body.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue};
use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeader;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use tonic::Status;

use super::metrics::{self, RlsMetrics};
use super::plan::{Plan, Planned};
use super::{Descriptor, Domains, Override, Unit};
use crate::decision::{Decision, PolicyDecision};
use crate::limiter::{Degraded, Limiter, Verdict};
use crate::middleware::headers::{self as rate_headers, HeaderMode};
use crate::middleware::response;
use crate::store::Check;

/// Envoy's rate limit service over one limiter and the configured domains.
#[derive(Clone, Debug)]
pub struct RlsService {
    limiter: Arc<Limiter>,
    domains: Arc<Domains>,
    header_mode: HeaderMode,
    metrics: Arc<RlsMetrics>,
}

impl RlsService {
    /// The service deciding `domains`' descriptors with `limiter`, whose unscoped policies must
    /// include theirs; its answers carry the headers `header_mode` shows.
    pub fn new(limiter: Arc<Limiter>, domains: Arc<Domains>, header_mode: HeaderMode) -> Self {
        RlsService {
            metrics: Arc::new(RlsMetrics::new(&domains)),
            limiter,
            domains,
            header_mode,
        }
    }

    /// Goes on counting in `previous`'s counters, as a reload's service does: a rule that keeps
    /// its domain and name keeps its counts.
    pub fn continuing(mut self, previous: &RlsMetrics) -> Self {
        self.metrics = Arc::new(previous.regrouped(&self.domains));
        self
    }

    /// Its counters, for `/metrics`.
    pub fn metrics(&self) -> Arc<RlsMetrics> {
        self.metrics.clone()
    }

    /// Decides one request, as `ShouldRateLimit` answers it, within `deadline` when the caller
    /// gave one.
    pub async fn decide(
        &self,
        request: RateLimitRequest,
        deadline: Option<Duration>,
    ) -> Result<RateLimitResponse, Status> {
        if request.domain.is_empty() {
            return Err(Status::invalid_argument("domain must not be empty"));
        }
        if request.descriptors.is_empty() {
            return Err(Status::invalid_argument("descriptors must not be empty"));
        }
        if request.descriptors.len() > MAX_DESCRIPTORS {
            return Err(Status::invalid_argument(format!(
                "{} descriptors: at most {MAX_DESCRIPTORS} are decided in one request",
                request.descriptors.len()
            )));
        }
        // Envoy's hits_addend: 0, the default, is 1; a descriptor's own, even 0, wins.
        let request_cost = u64::from(request.hits_addend.max(1));
        let costs: Vec<u64> = request
            .descriptors
            .iter()
            .map(|d| d.hits_addend.map_or(request_cost, |hits| hits.value))
            .collect();
        let descriptors = request
            .descriptors
            .into_iter()
            .enumerate()
            .map(|(i, d)| descriptor(i, d))
            .collect::<Result<Vec<_>, _>>()?;
        let matched = self.domains.limits(&request.domain, &descriptors);
        let plan = Plan::new(&self.limiter, matched, &costs);
        let verdict = if plan.blocked() {
            None
        } else {
            Some(
                self.limiter
                    .decide(
                        plan.checks.clone(),
                        |probe| plan.write_probe(probe),
                        deadline.map(store_budget),
                    )
                    .await,
            )
        };
        let (answer, codes) = self.answer(&plan, verdict)?;
        if !self.domains.has_domain(&request.domain) {
            self.metrics.unknown_domain();
        }
        self.count(&request.domain, &plan, &codes);
        Ok(answer)
    }

    /// The answer to `plan`, decided as `verdict` (`None` for a block, never asked), and each
    /// descriptor's code as counted (`None` for one not decided).
    fn answer(
        &self,
        plan: &Plan,
        verdict: Option<Verdict>,
    ) -> Result<(RateLimitResponse, Vec<Option<metrics::Code>>), Status> {
        let (decision, degraded) = match verdict {
            None => return Ok(blocked(plan)),
            Some(Verdict::Decided(decision)) => (Some(decision), false),
            Some(Verdict::Degraded(Degraded::Local(decision))) => (Some(decision), true),
            Some(Verdict::Degraded(Degraded::Deny)) => {
                // Envoy's failure_mode_deny decides, as for any failure of this service.
                return Err(Status::unavailable(response::UNAVAILABLE_DETAIL));
            }
            Some(
                Verdict::Degraded(Degraded::Allow) | Verdict::Unlimited | Verdict::Unidentified,
            ) => (None, false),
        };
        let outcomes = decision
            .as_ref()
            .map(|decision| aligned(&plan.checks, decision));
        let statuses: Vec<DescriptorStatus> = plan
            .descriptors
            .iter()
            .map(|planned| status(planned, outcomes.as_deref()))
            .collect();
        let codes = plan
            .descriptors
            .iter()
            .zip(&statuses)
            .map(|(planned, status)| {
                let shadow_over = match planned {
                    Planned::Counted { checks, .. } => checks.iter().any(|&i| {
                        let outcome = outcomes
                            .as_deref()
                            .and_then(|o| o.get(i).copied().flatten());
                        outcome.is_some_and(|p| p.policy.shadow() && !p.allowed)
                    }),
                    Planned::Blocked { shadow, .. } => *shadow,
                    _ => false,
                };
                Some(counted(status, shadow_over))
            })
            .collect();
        let mut answer = RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses,
            ..RateLimitResponse::default()
        };
        let Some(decision) = decision else {
            return Ok((answer, codes));
        };
        let mut headers = HeaderMap::new();
        if decision.allowed {
            self.header_mode.admitted(&mut headers, &decision);
        } else {
            answer.overall_code = Code::OverLimit as i32;
            self.header_mode.denied(&mut headers, &decision);
            headers.insert(header::CONTENT_TYPE, JSON);
            answer.raw_body = response::denied_body().to_vec();
        }
        if degraded {
            rate_headers::mark_degraded(&mut headers);
        }
        answer.response_headers_to_add = envoy_headers(&headers);
        Ok((answer, codes))
    }

    /// Counts each descriptor's code under its domain and rule.
    fn count(&self, domain: &str, plan: &Plan, codes: &[Option<metrics::Code>]) {
        for (planned, code) in plan.descriptors.iter().zip(codes) {
            match (planned, code) {
                (Planned::Unmatched, _) => self.metrics.unmatched(),
                (
                    Planned::Unlimited(rule)
                    | Planned::Blocked { rule, .. }
                    | Planned::Counted { rule, .. },
                    Some(code),
                ) => self.metrics.answered(domain, rule.name().as_str(), *code),
                (_, None) => {}
            }
        }
    }
}

/// What the store is given of the caller's `deadline`: most of it, so that the failure mode
/// still answers before the caller gives up (a fifth is kept, from 1 to 10 ms).
fn store_budget(deadline: Duration) -> Duration {
    let kept = (deadline / 5).clamp(Duration::from_millis(1), Duration::from_millis(10));
    deadline.saturating_sub(kept)
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The most descriptors one request may carry: an Envoy route sends one per `rate_limits`
/// entry, a handful, while a client of the port could send thousands for one store call.
pub const MAX_DESCRIPTORS: usize = 64;

/// The most entries one descriptor may carry: one per action of a `rate_limits` entry.
pub const MAX_ENTRIES: usize = 32;

/// Descriptor `i` of a request, as the rules are matched to it.
fn descriptor(i: usize, descriptor: RateLimitDescriptor) -> Result<Descriptor, Status> {
    if descriptor.entries.len() > MAX_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "descriptors[{i}]: {} entries: at most {MAX_ENTRIES}",
            descriptor.entries.len()
        )));
    }
    if descriptor.is_negative_hits {
        return Err(Status::invalid_argument(format!(
            "descriptors[{i}]: is_negative_hits (a refund) is not supported"
        )));
    }
    let limit = match &descriptor.limit {
        None => None,
        Some(limit) => {
            let unit = RateLimitUnit::try_from(limit.unit)
                .ok()
                .and_then(unit_of)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "descriptors[{i}].limit.unit: {} is not a unit of time",
                        limit.unit
                    ))
                })?;
            Some(Override {
                requests_per_unit: limit.requests_per_unit,
                unit,
            })
        }
    };
    Ok(Descriptor {
        entries: descriptor
            .entries
            .into_iter()
            .map(|entry| (entry.key, entry.value))
            .collect(),
        limit,
    })
}

/// A unit of Envoy's override as tollgate's; `UNKNOWN` is none.
fn unit_of(unit: RateLimitUnit) -> Option<Unit> {
    Some(match unit {
        RateLimitUnit::Unknown => return None,
        RateLimitUnit::Second => Unit::Second,
        RateLimitUnit::Minute => Unit::Minute,
        RateLimitUnit::Hour => Unit::Hour,
        RateLimitUnit::Day => Unit::Day,
        RateLimitUnit::Month => Unit::Month,
        RateLimitUnit::Year => Unit::Year,
    })
}

/// The unit Envoy is told of, for a window of `millis`: the unit that long, else `UNKNOWN` (a
/// window of tollgate's own, like 90 s, has no unit in Envoy's protocol).
fn unit_of_window(millis: u64) -> rate_limit::Unit {
    let unit = Unit::ALL.into_iter().find(|u| u.seconds() * 1000 == millis);
    match unit {
        None => rate_limit::Unit::Unknown,
        Some(Unit::Second) => rate_limit::Unit::Second,
        Some(Unit::Minute) => rate_limit::Unit::Minute,
        Some(Unit::Hour) => rate_limit::Unit::Hour,
        Some(Unit::Day) => rate_limit::Unit::Day,
        Some(Unit::Week) => rate_limit::Unit::Week,
        Some(Unit::Month) => rate_limit::Unit::Month,
        Some(Unit::Year) => rate_limit::Unit::Year,
    }
}

/// One descriptor's status: its tightest policy that is not shadow (a shadow policy never shows
/// a denial), or OK with no limit when there is none or nothing was decided.
/// Each check's outcome in `decision`, which leaves out those it does not know (a failed peek
/// on a cluster). Matched by policy when it left some out; where two checks share a policy, which
/// one is missing cannot be told, and neither is reported.
fn aligned<'d>(checks: &[Check], decision: &'d Decision) -> Vec<Option<&'d PolicyDecision>> {
    if decision.policies.len() == checks.len() {
        return decision.policies.iter().map(Some).collect();
    }
    let shared = |i: usize| {
        let policy = &checks[i].policy;
        checks
            .iter()
            .filter(|c| Arc::ptr_eq(&c.policy, policy))
            .count()
            > 1
    };
    let mut known = decision.policies.iter().peekable();
    (0..checks.len())
        .map(|i| {
            let next = known.next_if(|p| Arc::ptr_eq(&p.policy, &checks[i].policy))?;
            (!shared(i)).then_some(next)
        })
        .collect()
}

fn status(planned: &Planned, outcomes: Option<&[Option<&PolicyDecision>]>) -> DescriptorStatus {
    let ok = DescriptorStatus {
        code: Code::Ok as i32,
        ..DescriptorStatus::default()
    };
    match planned {
        Planned::Unmatched => ok,
        Planned::Unlimited(_) => DescriptorStatus {
            // As ratelimit answers an unlimited descriptor.
            limit_remaining: u32::MAX,
            ..ok
        },
        Planned::Blocked { rule, unit, shadow } => DescriptorStatus {
            code: if *shadow { Code::Ok } else { Code::OverLimit } as i32,
            current_limit: Some(RateLimit {
                name: rule.name().to_string(),
                requests_per_unit: 0,
                unit: unit_of_window(unit.seconds() * 1000) as i32,
            }),
            limit_remaining: 0,
            duration_until_reset: Some(proto_duration(until_window_end(*unit))),
            ..DescriptorStatus::default()
        },
        Planned::Counted { rule, checks } => {
            let Some(outcomes) = outcomes else {
                return ok;
            };
            let tightest = checks
                .iter()
                .filter_map(|&i| outcomes.get(i).copied().flatten())
                .filter(|p| !p.policy.shadow())
                .min_by(tighter);
            let Some(tightest) = tightest else {
                return ok;
            };
            DescriptorStatus {
                code: if tightest.allowed {
                    Code::Ok
                } else {
                    Code::OverLimit
                } as i32,
                current_limit: Some(RateLimit {
                    name: rule.name().to_string(),
                    requests_per_unit: u32::try_from(tightest.limit).unwrap_or(u32::MAX),
                    unit: unit_of_window(tightest.policy.window().as_millis()) as i32,
                }),
                limit_remaining: u32::try_from(tightest.remaining).unwrap_or(u32::MAX),
                duration_until_reset: Some(proto_duration(tightest.reset_after)),
                ..DescriptorStatus::default()
            }
        }
    }
}

/// Orders a descriptor's policies tightest first: a denial, then the least share remaining.
fn tighter(a: &&PolicyDecision, b: &&PolicyDecision) -> std::cmp::Ordering {
    let share =
        |x: &PolicyDecision, y: &PolicyDecision| u128::from(x.remaining) * u128::from(y.limit);
    a.allowed
        .cmp(&b.allowed)
        .then(share(a, b).cmp(&share(b, a)))
}

/// A descriptor's code as counted: its status's, or that a shadow limit would have denied it.
fn counted(status: &DescriptorStatus, shadow_over: bool) -> metrics::Code {
    if status.code == Code::OverLimit as i32 {
        metrics::Code::OverLimit
    } else if shadow_over {
        metrics::Code::ShadowOverLimit
    } else {
        metrics::Code::Ok
    }
}

/// The answer when a block applies: over the limit with nothing spent, `Retry-After` the end
/// of the blocking unit's window, and the JSON body; other descriptors are not asked about,
/// say OK with no limit, and are not counted.
fn blocked(plan: &Plan) -> (RateLimitResponse, Vec<Option<metrics::Code>>) {
    let statuses: Vec<DescriptorStatus> = plan
        .descriptors
        .iter()
        .map(|planned| match planned {
            Planned::Blocked { .. } => status(planned, None),
            _ => DescriptorStatus {
                code: Code::Ok as i32,
                ..DescriptorStatus::default()
            },
        })
        .collect();
    let wait = plan
        .descriptors
        .iter()
        .filter_map(|planned| match planned {
            Planned::Blocked {
                unit,
                shadow: false,
                ..
            } => Some(until_window_end(*unit)),
            _ => None,
        })
        .max()
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(rate_headers::retry_after_secs(wait)),
    );
    headers.insert(header::CONTENT_TYPE, JSON);
    let codes = plan
        .descriptors
        .iter()
        .map(|planned| match planned {
            Planned::Blocked { shadow: false, .. } => Some(metrics::Code::OverLimit),
            Planned::Blocked { shadow: true, .. } => Some(metrics::Code::ShadowOverLimit),
            _ => None,
        })
        .collect();
    let answer = RateLimitResponse {
        overall_code: Code::OverLimit as i32,
        statuses,
        response_headers_to_add: envoy_headers(&headers),
        raw_body: response::denied_body().to_vec(),
        ..RateLimitResponse::default()
    };
    (answer, codes)
}

/// The time left in the current window of `unit`, aligned to the Unix epoch as the windows
/// are.
fn until_window_end(unit: Unit) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let window = unit.seconds() * 1000;
    Duration::from_millis(window - now % window)
}

/// A duration as protobuf writes one.
fn proto_duration(duration: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: duration.as_secs() as i64,
        nanos: duration.subsec_nanos() as i32,
    }
}

/// Headers as Envoy adds them: name and text value.
fn envoy_headers(headers: &HeaderMap) -> Vec<EnvoyHeader> {
    headers
        .iter()
        .map(|(name, value)| EnvoyHeader {
            key: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ..EnvoyHeader::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store gets most of the deadline, and the failure mode keeps time to answer.
    #[test]
    fn the_store_gets_most_of_the_deadline() {
        assert_eq!(
            store_budget(Duration::from_millis(20)),
            Duration::from_millis(16)
        );
        assert_eq!(
            store_budget(Duration::from_millis(2)),
            Duration::from_millis(1)
        );
        assert_eq!(
            store_budget(Duration::from_secs(1)),
            Duration::from_millis(990)
        );
        assert_eq!(store_budget(Duration::from_micros(500)), Duration::ZERO);
    }
}
