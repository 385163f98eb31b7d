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

use super::script::{all_failed, call_of, read_call, Mode, Part, Reply, ScriptRunner};
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
    /// Starts the task that gathers decisions and sends them through `runner`, at most
    /// `max_batch` a call. It ends when the last `Batcher` is dropped.
    pub(super) fn start(runner: ScriptRunner, max_batch: usize) -> Batcher {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(gather(runner, queue, max_batch));
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
async fn gather(runner: ScriptRunner, mut queue: mpsc::UnboundedReceiver<Job>, max_batch: usize) {
    while let Some(first) = queue.recv().await {
        tokio::task::yield_now().await;
        let mut jobs = vec![first];
        loop {
            if jobs.len() == max_batch {
                tokio::spawn(send(runner.clone(), std::mem::take(&mut jobs)));
            }
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            tokio::spawn(send(runner.clone(), jobs));
        }
    }
}

/// Sends `jobs` in one call (two, when some are near their deadline), and answers each with its
/// part of the reply; see [`triage`] for which jobs go where.
async fn send(runner: ScriptRunner, jobs: Vec<Job>) {
    let Triage {
        expired,
        hurried,
        rest,
    } = triage(jobs, Instant::now());
    for job in expired {
        let _ = job.reply.send(Err(StoreError::Timeout(Duration::ZERO)));
    }
    if !hurried.is_empty() {
        tokio::spawn(call(runner.clone(), hurried));
    }
    call(runner, rest).await;
}

/// The jobs of one gathering, sorted by what their deadlines allow at the moment of sending.
#[derive(Default)]
struct Triage {
    /// Past their deadline: answered with a timeout at once, never sent.
    expired: Vec<Job>,
    /// Less than a quarter of the most time left: a call of their own.
    hurried: Vec<Job>,
    /// The others: one call.
    rest: Vec<Job>,
}

/// Sorts `jobs` at `now`.
///
/// A decision whose request has gone (timed out or disconnected) is left out, so it is never
/// counted. A call's deadline is the earliest of its jobs', so that fred never writes it after
/// any of them has timed out; so that one decision near its deadline (one that waited long)
/// cannot cut short the time of the others, decisions with less than a quarter of the most time
/// left go in a call of their own.
fn triage(mut jobs: Vec<Job>, now: Instant) -> Triage {
    jobs.retain(|job| !job.reply.is_closed());
    let latest = jobs.iter().map(|j| j.deadline).max();
    let short = latest.map_or(now, |latest| {
        now + latest.saturating_duration_since(now) / 4
    });
    let mut triage = Triage {
        rest: Vec::with_capacity(jobs.len()),
        ..Triage::default()
    };
    for job in jobs {
        let to = if job.deadline <= now {
            &mut triage.expired
        } else if job.deadline < short {
            &mut triage.hurried
        } else {
            &mut triage.rest
        };
        to.push(job);
    }
    triage
}

/// Sends `live` (none expired) as one call, by the earliest of their deadlines, and answers
/// each.
async fn call(runner: ScriptRunner, live: Vec<Job>) {
    let Some(deadline) = live.iter().map(|j| j.deadline).min() else {
        return;
    };
    let parts: Vec<&Part> = live.iter().map(|j| &j.part).collect();
    let keys_and_args = || call_of(Clock::Store, Mode::Decide, &parts);
    let reply = runner.eval(keys_and_args, Mode::Decide, deadline).await;
    let answers = match reply {
        Ok(values) => read_call(values, &parts),
        Err(error) => all_failed(&error, live.len()),
    };
    for (job, answer) in live.into_iter().zip(answers) {
        let _ = job.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job due at `deadline`, and the receiver its request waits on.
    fn job(deadline: Instant) -> (Job, oneshot::Receiver<Result<Reply, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let part = Part {
            keys: Vec::new(),
            args: Vec::new(),
        };
        let job = Job {
            part,
            deadline,
            reply,
        };
        (job, answer)
    }

    /// The deadlines of `jobs`, in order.
    fn deadlines(jobs: &[Job]) -> Vec<Instant> {
        jobs.iter().map(|j| j.deadline).collect()
    }

    /// Jobs with about the same time left all go in one call.
    #[test]
    fn jobs_with_about_the_same_time_left_share_one_call() {
        let now = Instant::now();
        let at = [100, 80, 30].map(|ms| now + Duration::from_millis(ms));
        let (jobs, _answers): (Vec<_>, Vec<_>) = at.into_iter().map(job).unzip();
        let triage = triage(jobs, now);
        assert_eq!(deadlines(&triage.rest), at);
        assert!(triage.hurried.is_empty() && triage.expired.is_empty());
    }

    /// Jobs with under a quarter of the most time left get their own call; expired, none.
    #[test]
    fn jobs_near_or_past_their_deadline_are_set_apart() {
        let now = Instant::now();
        let ms = |ms| now + Duration::from_millis(ms);
        let (jobs, _answers): (Vec<_>, Vec<_>) = [ms(100), ms(24), ms(26), now, ms(1)]
            .into_iter()
            .map(job)
            .unzip();
        let triage = triage(jobs, now);
        assert_eq!(deadlines(&triage.rest), [ms(100), ms(26)]);
        assert_eq!(deadlines(&triage.hurried), [ms(24), ms(1)]);
        assert_eq!(deadlines(&triage.expired), [now]);
    }

    /// A job whose request has gone is in no call and gets no answer.
    #[test]
    fn jobs_whose_requests_have_gone_are_left_out() {
        let now = Instant::now();
        // Far later than the kept job's: counted, it would make the kept job hurried.
        let (gone, answer) = job(now + Duration::from_millis(1000));
        drop(answer);
        let (expired, answer) = job(now);
        drop(answer);
        let (kept, _answer) = job(now + Duration::from_millis(60));
        let triage = triage(vec![gone, expired, kept], now);
        assert_eq!(deadlines(&triage.rest), [now + Duration::from_millis(60)]);
        assert!(triage.hurried.is_empty() && triage.expired.is_empty());
    }

    /// The task spawned for each shared call stays small: tokio copies a task's future into
    /// its cell and out again, so fred's 7 KB EVALSHA future must stay boxed apart.
    #[test]
    fn a_shared_calls_task_is_small() {
        let task = send(super::super::tests::unconnected_runner(), Vec::new());
        let size = std::mem::size_of_val(&task);
        assert!(size < 1024, "{size} bytes");
    }

    /// `send` answers an expired job with a timeout.
    #[tokio::test]
    async fn an_expired_job_is_answered_with_a_timeout() {
        let (expired, answer) = job(Instant::now());
        send(super::super::tests::unconnected_runner(), vec![expired]).await;
        let answer = answer.await.expect("an answer");
        assert!(matches!(answer, Err(StoreError::Timeout(_))));
    }
}
