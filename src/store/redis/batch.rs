//! Decisions in flight together share one EVALSHA.
//!
//! fred writes every EVALSHA to the socket at once, in a system call of its own, and Redis
//! answers each on its own. So a decision costs both processes a write, a wake-up and a script
//! call, whatever else is in flight. The batcher gathers the decisions that the requests being
//! served made at the same moment, and sends them as one call of the decide script, which
//! decides each on its own, in order (lua/decide.lua).
//!
//! A lone decision waits for nothing: the batcher only lets the requests already woken with it
//! run first (one turn of the scheduler), then sends what they gave it.

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{call_of, Caller, Mode, Part, Reply};
use crate::store::{Clock, StoreError};

/// The most decisions one call carries, so that no call holds Redis for long: a fixed-window
/// decision costs Redis a few microseconds.
pub const MAX_DECISIONS: usize = 64;

/// Hands decisions to the task that sends them; cheap to clone.
#[derive(Clone)]
pub(super) struct Batcher {
    jobs: mpsc::UnboundedSender<Job>,
}

/// One decision waiting for its call.
struct Job {
    part: Part,
    deadline: Instant,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

impl Batcher {
    /// Starts the task that gathers decisions and sends them through `caller`. It ends when
    /// the last `Batcher` is dropped.
    pub(super) fn start(caller: Caller) -> Batcher {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(gather(caller, queue));
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
/// sends everything queued by then (up to [`MAX_DECISIONS`] a call) without waiting for the
/// answer.
async fn gather(caller: Caller, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        tokio::task::yield_now().await;
        let mut jobs = vec![first];
        loop {
            if jobs.len() == MAX_DECISIONS {
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

/// Sends `jobs` as one call and answers each with its part of the reply.
///
/// A decision whose request has gone (timed out or disconnected) is left out, so it is never
/// counted. The call's deadline is the earliest of its decisions', so fred never writes the
/// call after any of them has been given up.
async fn send(caller: Caller, jobs: Vec<Job>) {
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    let Some(deadline) = jobs.iter().map(|j| j.deadline).min() else {
        return;
    };
    let parts: Vec<&Part> = jobs.iter().map(|j| &j.part).collect();
    let call = || call_of(Clock::Store, Mode::Decide, &parts);
    let reply = caller.eval(call, Mode::Decide, deadline).await;
    drop(parts);
    match reply {
        Ok(values) => {
            let mut values = values.into_iter();
            for job in jobs {
                let read = Reply::read(&mut values, job.part.policies);
                let _ = job.reply.send(read);
            }
        }
        Err(error) => {
            for job in jobs {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}
