//! One call of the decide script: its KEYS and ARGV, the EVALSHA (with the reload after
//! NOSCRIPT), and the reading of its reply into decisions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;

use super::connection::redis_error;
use super::DECIDE_LUA;
use crate::algorithm::Outcome;
use crate::decision::{Decision, PolicyDecision};
use crate::policy::Algorithm;
use crate::store::{Check, Clock, StoreError};

/// The client and the script: one EVALSHA, with the script loaded again after NOSCRIPT.
#[derive(Clone)]
pub(super) struct ScriptRunner {
    /// The connections, taken in turn.
    pub(super) pool: Pool,
    /// `DECIDE_LUA`, by its SHA-1.
    pub(super) script: Script,
    /// EVALSHA calls issued, retries included.
    pub(super) calls: Arc<AtomicU64>,
    /// How often Redis had lost the script (NOSCRIPT) and it was loaded again.
    pub(super) reloads: Arc<AtomicU64>,
}

impl ScriptRunner {
    /// Runs the decide script through `pool`, with nothing counted yet.
    pub(super) fn new(pool: Pool) -> ScriptRunner {
        ScriptRunner {
            pool,
            script: Script::from_lua(DECIDE_LUA),
            calls: Arc::new(AtomicU64::new(0)),
            reloads: Arc::new(AtomicU64::new(0)),
        }
    }

    /// One EVALSHA of the decide script; `call` gives its KEYS and ARGV, and is asked again for
    /// the retry after NOSCRIPT.
    ///
    /// fred gets the time left until `deadline` as the command's own timeout, so a command that
    /// times out is never written later. A refund is never retried: giving back twice would
    /// admit more than the limit.
    pub(super) async fn eval(
        &self,
        call: impl Fn() -> (Vec<Key>, Vec<Value>),
        mode: Mode,
        deadline: Instant,
    ) -> Result<Vec<Value>, StoreError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StoreError::Timeout(Duration::ZERO));
        }
        // fred's `evalsha_with_reload`, spelled out so that reloads can be counted.
        let client = self.pool.next();
        let evalsha = |timeout: Duration| {
            let (keys, args) = call();
            self.calls.fetch_add(1, Ordering::Relaxed);
            // Boxed: fred's EVALSHA future is about 7 KB, and inline it would make every future
            // that awaits a call that large; the batcher's task for each shared call would copy
            // it in and out of its task cell, several times a call.
            Box::pin(async move {
                let options = Options {
                    timeout: Some(timeout),
                    max_attempts: (mode == Mode::Refund).then_some(1),
                    ..Options::default()
                };
                client
                    .with_options(&options)
                    .evalsha::<Vec<Value>, _, _, _>(self.script.sha1().clone(), keys, args)
                    .await
            })
        };
        match evalsha(left).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                // Boxed for the same reason as the EVALSHA: it is as large.
                Box::pin(self.script.load(client))
                    .await
                    .map_err(redis_error)?;
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StoreError::Timeout(Duration::ZERO));
                }
                evalsha(left).await
            }
            reply => reply,
        }
        .map_err(redis_error)
    }
}

/// One decision's part of a call: its keys, and its values in ARGV (see lua/decide.lua).
pub(super) struct Part {
    /// The key of each of its checks, in KEYS: one per policy.
    pub(super) keys: Vec<Key>,
    /// Its number of checks, then five values for each (six in a refund), in ARGV.
    pub(super) args: Vec<Value>,
}

impl Part {
    /// The part for the checks at `members`; `receipts`, one per member, for a refund.
    pub(super) fn new(checks: &[Check], members: &[usize], receipts: Option<&[u64]>) -> Part {
        Part {
            keys: script_keys(checks, members),
            args: script_args(checks, members, receipts),
        }
    }

    /// How many policies it decides, so how many its part of the reply reports.
    pub(super) fn policies(&self) -> usize {
        self.keys.len()
    }
}

/// Each part's answer from a call's reply. A part that cannot be read, or values left over,
/// mean the reply and the call disagree, so no part can be trusted: all of them fail. A
/// decision's own error (its text in the reply) fails that decision alone.
pub(super) fn read_call(values: Vec<Value>, parts: &[&Part]) -> Vec<Result<Reply, StoreError>> {
    let failed = |why: String| all_failed(&StoreError::Reply(why), parts.len());
    let mut values = values.into_iter();
    let mut answers = Vec::with_capacity(parts.len());
    for part in parts {
        let answer = Reply::read(&mut values, part.policies());
        if let Err(StoreError::Reply(why)) = &answer {
            return failed(format!("a call of {} decisions: {why}", parts.len()));
        }
        answers.push(answer);
    }
    match values.next() {
        None => answers,
        Some(extra) => failed(format!("{extra:?} after the last decision of the call")),
    }
}

/// `error` as the answer of each of the `n` decisions of a call.
pub(super) fn all_failed(error: &StoreError, n: usize) -> Vec<Result<Reply, StoreError>> {
    (0..n).map(|_| Err(error.clone())).collect()
}

/// KEYS and ARGV of one call carrying `parts`, all in `mode`.
pub(super) fn call_of(clock: Clock, mode: Mode, parts: &[&Part]) -> (Vec<Key>, Vec<Value>) {
    let keys = parts.iter().map(|p| p.keys.len()).sum();
    let args = parts.iter().map(|p| p.args.len()).sum::<usize>() + 2;
    let (mut keys, mut args) = (Vec::with_capacity(keys), Vec::with_capacity(args));
    args.push(match clock {
        Clock::Store => Value::from_static_str(""),
        Clock::At(ms) => Value::from((ms * 1000) as i64),
    });
    args.push(Value::from_static_str(mode.as_str()));
    for part in parts {
        keys.extend_from_slice(&part.keys);
        args.extend_from_slice(&part.args);
    }
    (keys, args)
}

/// KEYS of the decide script: the key of each check at `members`.
fn script_keys(checks: &[Check], members: &[usize]) -> Vec<Key> {
    members
        .iter()
        .map(|&i| Key::from(checks[i].key.as_str()))
        .collect()
}

/// One decision's ARGV in the decide script (see lua/decide.lua): the number of checks at
/// `members`, then for each its algorithm, cost, the algorithm's two parameters and shadow, and
/// its receipt in a refund. Only what the algorithm reads: each value costs Redis to pass.
fn script_args(checks: &[Check], members: &[usize], receipts: Option<&[u64]>) -> Vec<Value> {
    let stride = if receipts.is_some() { 6 } else { 5 };
    let mut args: Vec<Value> = Vec::with_capacity(1 + stride * members.len());
    args.push(Value::Integer(members.len() as i64));
    let integer = |n: u64| Value::Integer(n as i64);
    for (n, &i) in members.iter().enumerate() {
        let policy = &checks[i].policy;
        let (first, second) = match policy.algorithm() {
            Algorithm::TokenBucket => (policy.emission_us(), policy.capacity_us()),
            Algorithm::FixedWindow | Algorithm::SlidingWindow => {
                (policy.limit(), policy.window().as_millis())
            }
        };
        args.push(Value::from_static_str(policy.algorithm().as_str()));
        args.push(integer(checks[i].cost));
        args.push(integer(first));
        args.push(integer(second));
        args.push(integer(u64::from(policy.shadow())));
        if let Some(receipts) = receipts {
            args.push(integer(receipts[n]));
        }
    }
    args
}

/// What the script is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Consume every policy's cost if all admit.
    Decide,
    /// Give back what a `Decide` consumed (by its receipts), then report without consuming.
    Refund,
    /// Report without consuming.
    Peek,
    /// Write one key with a TTL and delete it: the readiness probe.
    Ready,
}

impl Mode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Mode::Decide => "decide",
            Mode::Refund => "refund",
            Mode::Peek => "peek",
            Mode::Ready => "ready",
        }
    }
}

/// One decision's part of the script's reply:
/// `{ allowed, remaining_i, reset_after_ms_i, retry_after_ms_i, receipt_i, … }`, or the text of
/// the error that failed it.
pub(super) struct Reply {
    pub(super) allowed: bool,
    pub(super) per_policy: Vec<(Outcome, u64)>,
}

impl Reply {
    /// Reads the next decision's part, of `policies` policies, from a call's reply.
    pub(super) fn read(
        reply: &mut impl Iterator<Item = Value>,
        policies: usize,
    ) -> Result<Reply, StoreError> {
        let allowed = match reply.next() {
            Some(Value::Integer(allowed @ (0 | 1))) => allowed == 1,
            Some(Value::String(error)) => return Err(StoreError::Redis(error.to_string())),
            Some(Value::Bytes(error)) => {
                return Err(StoreError::Redis(String::from_utf8_lossy(&error).into()))
            }
            other => {
                return Err(StoreError::Reply(format!(
                    "{other:?} where a decision of {policies} policies begins"
                )))
            }
        };
        let mut number = || match reply.next() {
            Some(Value::Integer(n)) if n >= 0 => Ok(n as u64),
            other => Err(StoreError::Reply(format!(
                "{other:?} in a decision of {policies} policies"
            ))),
        };
        let mut per_policy = Vec::with_capacity(policies);
        for _ in 0..policies {
            let outcome = Outcome {
                remaining: number()?,
                reset_after_ms: number()?,
                retry_after_ms: number()?,
            };
            per_policy.push((outcome, number()?));
        }
        Ok(Reply {
            allowed,
            per_policy,
        })
    }

    pub(super) fn record(&self, members: &[usize], outcomes: &mut [Option<Outcome>]) {
        for (&i, (outcome, _)) in members.iter().zip(&self.per_policy) {
            outcomes[i] = Some(*outcome);
        }
    }

    /// The members at `members` that consumed their cost in an admitted "decide", with their
    /// receipts: all of them but a shadow policy that did not fit, which consumed nothing and
    /// so must not be refunded.
    pub(super) fn consumed(&self, members: &[usize]) -> (Vec<usize>, Vec<u64>) {
        members
            .iter()
            .zip(&self.per_policy)
            .filter(|(_, (outcome, _))| outcome.retry_after_ms == 0)
            .map(|(&i, (_, receipt))| (i, *receipt))
            .unzip()
    }
}

/// The decision over the policies whose outcome is known (a failed peek leaves one out).
pub(super) fn decision(
    checks: &[Check],
    allowed: bool,
    outcomes: Vec<Option<Outcome>>,
) -> Decision {
    let policies = checks
        .iter()
        .zip(outcomes)
        .filter_map(|(check, outcome)| Some(PolicyDecision::new(check.policy.clone(), outcome?)))
        .collect();
    Decision { allowed, policies }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part of `policies` checks; only its number of keys matters to reading the reply.
    fn part(policies: usize) -> Part {
        Part {
            keys: (0..policies).map(|_| Key::from("k")).collect(),
            args: Vec::new(),
        }
    }

    fn integers(values: &[i64]) -> Vec<Value> {
        values.iter().map(|&n| Value::Integer(n)).collect()
    }

    /// Each part is read on its own; a decision's error text fails that decision alone.
    #[test]
    fn each_part_is_read_on_its_own() {
        let mut values = integers(&[1, 9, 100, 0, 7]);
        values.push(Value::from("WRONGTYPE Operation against a key"));
        values.extend(integers(&[0, 0, 100, 100, 7, 4, 50, 0, 7]));
        let answers = read_call(values, &[&part(1), &part(1), &part(2)]);
        let first = answers[0].as_ref().unwrap();
        assert!(first.allowed);
        assert_eq!(first.per_policy[0].0.remaining, 9);
        assert!(matches!(&answers[1], Err(StoreError::Redis(m)) if m.starts_with("WRONGTYPE")));
        let third = answers[2].as_ref().unwrap();
        assert!(!third.allowed);
        assert_eq!(third.per_policy[1].0.remaining, 4);
    }

    /// A part that cannot be read shifts every later one, so every part fails, not only it.
    #[test]
    fn an_unreadable_part_fails_every_part() {
        let values = integers(&[1, 9, 100, 0, 1, 9, 100, 0, 7]);
        let answers = read_call(values, &[&part(1), &part(1)]);
        assert!(answers
            .iter()
            .all(|a| matches!(a, Err(StoreError::Reply(_)))));
    }

    /// Values left over mean the reply and the call disagree: every part fails.
    #[test]
    fn values_left_over_fail_every_part() {
        let values = integers(&[1, 9, 100, 0, 7, 1]);
        let answers = read_call(values, &[&part(1)]);
        assert!(matches!(&answers[0], Err(StoreError::Reply(_))));
    }
}
