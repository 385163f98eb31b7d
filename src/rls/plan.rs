//! From a request's matched descriptors to the checks the limiter decides together, and back
//! from each check to the descriptor it came from.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};

use super::{Limits, Matched, Unit};
use crate::limiter::Limiter;
use crate::policy::Policy;
use crate::rls::Rule;
use crate::store::Check;

/// What one request asks of the limiter: every matched descriptor's checks, decided all or
/// nothing, and what each descriptor is answered with.
#[derive(Debug, Default)]
pub struct Plan {
    /// The checks of every descriptor that counts, each key once.
    pub checks: Vec<Check>,
    /// Per descriptor of the request, in order.
    pub descriptors: Vec<Planned>,
}

/// What one descriptor of a request comes to.
#[derive(Debug)]
pub enum Planned {
    /// No rule: OK, with no limit to report.
    Unmatched,
    /// `unlimited: true`: OK, never counted.
    Unlimited(Arc<Rule>),
    /// `requests_per_unit: 0`: over the limit (unless shadow), never counted.
    Blocked {
        /// The rule, for its name.
        rule: Arc<Rule>,
        /// The unit written beside the 0.
        unit: Unit,
        /// Whether the block only reports.
        shadow: bool,
    },
    /// Counted: its rule, and the positions of its checks in [`Plan::checks`].
    Counted {
        /// The rule, for its name.
        rule: Arc<Rule>,
        /// Positions in [`Plan::checks`], one per policy of the rule.
        checks: Vec<usize>,
    },
}

impl Plan {
    /// The plan for `matched` (one per descriptor, as [`super::Domains::limits`] gives them),
    /// each descriptor costing what `costs` says.
    ///
    /// Two descriptors with the same entries count in one bucket: their checks of one policy
    /// become one check costing both, as the store must see each key once per decision.
    pub fn new(limiter: &Limiter, matched: Vec<Option<Matched>>, costs: &[u64]) -> Self {
        let mut plan = Plan {
            checks: Vec::with_capacity(matched.len()),
            descriptors: Vec::with_capacity(matched.len()),
        };
        for (matched, &cost) in matched.into_iter().zip(costs) {
            let Some(Matched { rule, bucket }) = matched else {
                plan.descriptors.push(Planned::Unmatched);
                continue;
            };
            let planned = match rule.limits() {
                Limits::Unlimited => Planned::Unlimited(rule),
                &Limits::Block { unit, shadow } => Planned::Blocked { rule, unit, shadow },
                Limits::Count(policies) => {
                    let checks = policies
                        .iter()
                        .map(|policy| {
                            plan.add(limiter.key_for(bucket.as_bytes(), policy), policy, cost)
                        })
                        .collect();
                    Planned::Counted { rule, checks }
                }
            };
            plan.descriptors.push(planned);
        }
        plan
    }

    /// Adds a check of `policy` under `key`, or adds `cost` to the check already there, and
    /// returns its position.
    fn add(&mut self, key: String, policy: &Arc<Policy>, cost: u64) -> usize {
        // Any cost above the capacity is denied alike: capped, no client-chosen cost can wrap
        // an integer in the store or make a retry time too large to read.
        let most = policy.capacity().saturating_add(1);
        // By key alone: two overrides of one unit on the same entries are one counter.
        if let Some(at) = self.checks.iter().position(|check| check.key == key) {
            let check = &mut self.checks[at];
            check.cost = check.cost.saturating_add(cost).min(most);
            return at;
        }
        self.checks.push(Check {
            key,
            policy: policy.clone(),
            cost: cost.min(most),
        });
        self.checks.len() - 1
    }

    /// Whether a block that is not shadow applies: the request is over the limit without
    /// asking the store, and nothing is spent anywhere.
    pub fn blocked(&self) -> bool {
        self.descriptors
            .iter()
            .any(|d| matches!(d, Planned::Blocked { shadow: false, .. }))
    }

    /// What the denial cache keys this request's checks by: each key's digest, its cost, limit
    /// and window, so that an override's limit, which keeps the key, never meets another's.
    ///
    /// A digest, not the key: keys run to about 110 bytes, and a probe over the cache's bound
    /// is never cached, which would leave a route of five descriptors without the cache.
    pub fn write_probe(&self, probe: &mut Vec<u8>) -> bool {
        for check in &self.checks {
            probe.extend_from_slice(&digest(&check.key));
            for number in [
                check.cost,
                check.policy.limit(),
                check.policy.window().as_millis(),
            ] {
                probe.extend_from_slice(&number.to_be_bytes());
            }
        }
        !self.checks.is_empty()
    }
}

/// 128 bits of a key, under two hashers keyed at random for this process, so that no client can
/// choose descriptors whose keys meet in the denial cache.
fn digest(key: &str) -> [u8; 16] {
    static HASHERS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (a, b) = HASHERS.get_or_init(|| (RandomState::new(), RandomState::new()));
    let mut out = [0; 16];
    out[..8].copy_from_slice(&a.hash_one(key).to_be_bytes());
    out[8..].copy_from_slice(&b.hash_one(key).to_be_bytes());
    out
}
