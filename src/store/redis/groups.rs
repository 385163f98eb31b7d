//! Grouping a request's checks by hash tag, for Redis Cluster where a call's keys must share a
//! slot: one call per tag, in order, and the refund follow-up after a later group denies.

use std::time::Duration;

use tokio::time::Instant;

use super::script::{decision, Mode, Reply};
use super::{Dispatch, RedisStore, LOG_TARGET};
use crate::decision::Decision;
use crate::store::{Check, Clock, StoreError};

impl RedisStore {
    /// Decides `checks` all-or-nothing. Off a cluster, in one EVALSHA whatever their keys: a
    /// denial writes nothing. On a cluster, in one EVALSHA when they share a hash tag (always,
    /// for policies keyed by the same caller), else one per tag, in order, giving back what
    /// earlier calls consumed when a later one denies. Every decide call keeps one deadline.
    pub(super) async fn run(&self, checks: &[Check], clock: Clock) -> Result<Decision, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let groups = if self.clustered {
            hash_tag_groups(checks)
        } else {
            vec![(0..checks.len()).collect()]
        };
        let mut outcomes = vec![None; checks.len()];
        let mut consumed: Vec<(Vec<usize>, Vec<u64>)> = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let decide = self
                .dispatch
                .call(checks, group, Mode::Decide, None, clock, deadline);
            let reply = tokio::time::timeout_at(deadline, decide)
                .await
                .map_err(|_| StoreError::Timeout(self.timeout))??;
            reply.record(group, &mut outcomes);
            if reply.allowed {
                // Kept for the refunds a later group's denial would need; the last group has none.
                if g + 1 < groups.len() {
                    let (members, receipts) = reply.consumed(group);
                    if !members.is_empty() {
                        consumed.push((members, receipts));
                    }
                }
                continue;
            }
            // Denied, whatever happens next. With nothing consumed before it and no group after
            // it (always, off a cluster), there is nothing to give back or to read.
            if consumed.is_empty() && g + 1 == groups.len() {
                return Ok(decision(checks, false, outcomes));
            }
            // The refunds must run even if this request's future is dropped, so they go to a
            // task; its report only refines the headers.
            let follow_up = tokio::spawn(self.dispatch.clone().follow_up(
                checks.to_vec(),
                consumed,
                groups[g + 1..].to_vec(),
                clock,
                self.timeout,
            ));
            if let Ok(Ok(replies)) = tokio::time::timeout_at(deadline, follow_up).await {
                for (members, reply) in replies {
                    reply.record(&members, &mut outcomes);
                }
            }
            return Ok(decision(checks, false, outcomes));
        }
        Ok(decision(checks, true, outcomes))
    }
}

impl RedisStore {
    /// What `checks` stand at, read without spending anything: each policy's remaining quota,
    /// reset and wait for its cost, on Redis's clock. One "peek" call per hash tag, so it
    /// serves a cluster as well as a single Redis; `allowed` says whether all would admit.
    pub async fn peek(&self, checks: &[Check]) -> Result<Decision, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut outcomes = vec![None; checks.len()];
        let mut allowed = true;
        for group in hash_tag_groups(checks) {
            let call = self
                .dispatch
                .call(checks, &group, Mode::Peek, None, Clock::Store, deadline);
            let reply = tokio::time::timeout_at(deadline, call)
                .await
                .map_err(|_| StoreError::Timeout(self.timeout))
                .and_then(|reply| reply)
                .map_err(|e| self.explain(e))?;
            allowed &= reply.allowed;
            reply.record(&group, &mut outcomes);
        }
        Ok(decision(checks, allowed, outcomes))
    }
}

impl Dispatch {
    /// After a denial: refunds what the earlier groups consumed, then reads the later groups
    /// without consuming, each call within `timeout`. Returns what each call reported; a call
    /// that failed reports nothing (its refund may have happened in part, or not at all: errors
    /// count more).
    async fn follow_up(
        self,
        checks: Vec<Check>,
        consumed: Vec<(Vec<usize>, Vec<u64>)>,
        later: Vec<Vec<usize>>,
        clock: Clock,
        timeout: Duration,
    ) -> Vec<(Vec<usize>, Reply)> {
        let refunds = consumed
            .into_iter()
            .map(|(members, receipts)| (members, Mode::Refund, Some(receipts)));
        let peeks = later.into_iter().map(|members| (members, Mode::Peek, None));
        let mut replies = Vec::new();
        for (members, mode, receipts) in refunds.chain(peeks) {
            let deadline = Instant::now() + timeout;
            let call = self.call(
                &checks,
                &members,
                mode,
                receipts.as_deref(),
                clock,
                deadline,
            );
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(reply)) => replies.push((members, reply)),
                Ok(Err(error)) => {
                    let mode = mode.as_str();
                    tracing::warn!(target: LOG_TARGET, %error, mode, "follow-up failed")
                }
                Err(_) => {
                    tracing::warn!(target: LOG_TARGET, mode = mode.as_str(), "follow-up timed out")
                }
            }
        }
        replies
    }
}

/// The indices of `checks`, grouped by the hash tag of their keys, in order of first appearance.
fn hash_tag_groups(checks: &[Check]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, check) in checks.iter().enumerate() {
        let tag = hash_tag(&check.key);
        match groups.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, members)) => members.push(i),
            None => groups.push((tag, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// The `{...}` part of a key, which Redis Cluster hashes; the whole key when there is none.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let close = key[open + 1..].find('}')? + open + 1;
            (close > open + 1).then(|| &key[open + 1..close])
        })
        .unwrap_or(key)
}
