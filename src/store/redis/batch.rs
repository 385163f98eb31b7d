//! Decisions in flight together share one EVALSHA.
//!
//! fred writes every EVALSHA to the socket at once, in a system call of its own, and Redis
//! answers each on its own. So a decision costs both processes a write, a wake-up and a script
//! call, whatever else is in flight. The batcher gathers the decisions that the requests being
//! served made at the same moment, and sends them as one call of the decide script, which
//! decides each on its own, in order (lua/decide.lua).
//!
//! A lone decision waits for nothing but one turn: the batcher lets the requests already woken
//! with it run first, then sends what they gave it. The batcher's task runs on the runtime that
//! connected the store, as fred's own tasks do, so the store serves while that runtime runs.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{call_of, read_call, Caller, Mode, Part, Reply};
use crate::store::{Clock, StoreError};

/// Hands decisions to the task that sends them; cheap to clone.
#[derive(Clone)]
pub(super) struct Batcher {
    /// The gathering task's queue; unbounded, as each request waits on its own deadline.
    jobs: mpsc::UnboundedSender<Job>,
}

/// One decision waiting for its call.
struct Job {
    /// Its keys and values in the call.
    part: Part,
    /// When its request gives up: no call carrying it is sent after this.
    deadline: Instant,
    /// Where its answer goes; closed once its request has gone.
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

impl Batcher {
    /// Starts the task that gathers decisions and sends them through `caller`, at most
    /// `max_batch` a call. It ends when the last `Batcher` is dropped.
    pub(super) fn start(caller: Caller, max_batch: usize) -> Batcher {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(gather(caller, queue, max_batch));
        Batcher { jobs }
    }

    /// Decides `part` ("decide" mode, Redis's clock) in the next shared call.
    pub(super) async fn decide(&self, part: Part, deadline: Instant) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            part,
            deadline,
            reply,
        };
        if self.jobs.send(job).is_err() {
            return Err(StoreError::Connection("the redis store has stopped".into()));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Connection(
                "the redis store stopped before answering".into(),
            ))
        })
    }
}

/// Takes the decisions as they come: after the first, lets the tasks that are ready run, then
/// sends everything queued by then (up to `max_batch` a call) without waiting for the answer.
async fn gather(caller: Caller, mut queue: mpsc::UnboundedReceiver<Job>, max_batch: usize) {
    while let Some(first) = queue.recv().await {
        tokio::task::yield_now().await;
        let mut jobs = vec![first];
        loop {
            if jobs.len() == max_batch {
                tokio::spawn(send(caller.clone(), std::mem::take(&mut jobs)));
            }
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            tokio::spawn(send(caller.clone(), jobs));
        }
    }
}

/// Sends `jobs` in one call (two, when some are near their deadline), and answers each with its
/// part of the reply.
///
/// A decision whose request has gone (timed out or disconnected) before the call is sent is
/// left out, so it is never counted, and one whose deadline has passed is answered at once. The
/// call's deadline is the earliest of the others', so fred never writes the call after any of
/// them has timed out. So that one decision near its deadline (a request's second hash tag, or
/// one that waited long) cannot cut short the time of the others, decisions with less than a
/// quarter of the most time left go in a call of their own.
async fn send(caller: Caller, jobs: Vec<Job>) {
    let now = Instant::now();
    let mut live = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.reply.is_closed() {
            continue;
        }
        if job.deadline <= now {
            let _ = job.reply.send(Err(StoreError::Timeout(Duration::ZERO)));
            continue;
        }
        live.push(job);
    }
    let Some(latest) = live.iter().map(|j| j.deadline).max() else {
        return;
    };
    let short = now + (latest - now) / 4;
    if live.iter().any(|j| j.deadline < short) {
        let (hurried, rest): (Vec<Job>, Vec<Job>) =
            live.into_iter().partition(|j| j.deadline < short);
        tokio::spawn(call(caller.clone(), hurried));
        live = rest;
    }
    call(caller, live).await;
}

/// Sends `live` (none expired) as one call, by the earliest of their deadlines, and answers
/// each.
async fn call(caller: Caller, live: Vec<Job>) {
    let Some(deadline) = live.iter().map(|j| j.deadline).min() else {
        return;
    };
    let parts: Vec<&Part> = live.iter().map(|j| &j.part).collect();
    let keys_and_args = || call_of(Clock::Store, Mode::Decide, &parts);
    let reply = caller.eval(keys_and_args, Mode::Decide, deadline).await;
    let answers = match reply {
        Ok(values) => read_call(values, &parts),
        Err(error) => failed(&error, live.len()),
    };
    for (job, answer) in live.into_iter().zip(answers) {
        let _ = job.reply.send(answer);
    }
}

/// `error` as the answer of each of `n` jobs.
fn failed(error: &StoreError, n: usize) -> Vec<Result<Reply, StoreError>> {
    (0..n).map(|_| Err(error.clone())).collect()
}
