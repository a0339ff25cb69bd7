//! One delivery, start to end: decode the envelope, run the handler while keeping the task alive
//! with progress heartbeats, then settle it: ack on success, a retry on a failure that has
//! attempts left, otherwise dead-letter (confirmed) and only then terminate.
//!
//! # Attempts and deliveries
//!
//! An attempt is a handler run that ended with an outcome. A retry is stored again as a new
//! message whose envelope counts the attempts made and says when it may run (`not_before_ms`),
//! then the failed one is acknowledged ([`Executor::retry`]); a delivery before that time is
//! handed back without a handler run. So the server's delivery count only ever counts
//! deliveries that ended without an outcome — a worker or server that died, a lost connection, a
//! failover, a task handed back unstarted at shutdown — and those have a budget of their own,
//! [`MAX_STALLED_DELIVERIES`] (BullMQ's `maxStalledCount`): a task that keeps stopping its
//! workers is dead-lettered as `deliveriesExhausted`, and a handler run again after its worker
//! died is the "at least once" of the README.
//!
//! NAKs and TERMs wait for the server's confirmation. A success ack does not while the worker
//! runs: a lost ack means a redelivery after `ackWait` whether it was confirmed or not, and the
//! confirmation would double the server's messages per task. They are sent in bursts ([`super::acks`]). Once the worker is stopping, acks
//! are confirmed too, so `disconnect()` resolves only when the server has them (and closing the
//! connection flushes the acks sent before).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, AckKind};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::{
    cancelling::{
        self,
        watch::{Attempted, Cancels},
        Answer, Mark,
    },
    config::{backoff::Backoff, Config},
    dead_letters::write::{self as dead_letter, Failed, Origin},
    envelope::{DeadLetterReason, EnvelopeError, FailedAttempt, Task},
    history::{self, Ending, Record},
    logging::shorten,
    nats::{ack_wait::HeartbeatPace, connection::Connection},
    observe::{events::DEAD_LETTERED, AttemptInfo, Clock, Ended},
    producer::{Outgoing, Publisher},
    schedules,
    worker::{
        abort::{AbortCell, AbortReason},
        acks::AckSender,
    },
};

/// How long a worker waits for the server to confirm an ack, NAK or TERM.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest error of a failed attempt a retried task carries (`getTask`'s `failures`).
const MAX_RETRY_ERROR: usize = 1_024;
/// The failed attempts a retried task carries at most (the last ones).
const MAX_FAILED_KEPT: usize = 20;
/// What a retry copy may add to the task besides its error (counts, times, headers).
const RETRY_HEADROOM: usize = 512;
/// Deliveries of one message that may end without an outcome (its worker died or lost its
/// connection, a failover lost it, it was handed back unstarted) before it is dead-lettered as
/// `deliveriesExhausted`.
pub const MAX_STALLED_DELIVERIES: u64 = 5;

/// One attempt at a task, as the handler gets it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The task as it was enqueued.
    pub task: Task,
    /// Which attempt this is, from 1.
    pub number: u64,
    /// The most attempts the task gets (`1 + maxRetries`).
    pub max: u64,
    /// Where the task was routed and its priority, on queues with a subject tree or priorities.
    pub route: Option<Box<crate::layout::Route>>,
    /// Why the attempt was ended before its handler settled, once it was: the handler's
    /// `task.signal` is aborted with it.
    pub abort: AbortCell,
}

/// What a handler decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: the task is acked and removed.
    Success,
    /// Done, returning a result — JSON text, or why the handler's value has none — which the
    /// task's record keeps when the queue records results (`options.results`); otherwise as
    /// [`Outcome::Success`].
    Returned(std::result::Result<String, String>),
    /// Failed: retried while attempts remain and `retry` is true, else dead-lettered.
    Failure(Failure),
    /// The task can never be handled as it is (its data is not JSON, or its metadata is not a
    /// JSON object): dead-lettered at once with reason `invalidData`, without further attempts.
    InvalidData(Failure),
    /// The handler gave the attempt back without starting it ([`Handler::release_unstarted`]):
    /// handed back to the server at once (a NAK without delay), so another worker gets it now.
    NotStarted,
}

/// Why a task is dead-lettered, and when its last attempt started (for its record; `None`
/// when no handler ran it).
struct Verdict {
    reason: DeadLetterReason,
    failure: Failure,
    started_at: Option<i64>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Failure {
    /// A message for people.
    pub error: String,
    /// Extra information as a JSON object, or empty.
    pub details: Bytes,
    /// `false` sends the task to the dead-letter stream at once, without further attempts.
    pub retry: bool,
    /// The wait before the next attempt, chosen by the handler's side (a JavaScript `backoff`
    /// function); `None`: the task's or the queue's backoff decides.
    pub retry_delay: Option<Duration>,
}

impl Failure {
    /// A retryable failure with a message.
    pub fn new(error: impl Into<String>) -> Self {
        Failure {
            error: error.into(),
            details: Bytes::new(),
            retry: true,
            retry_delay: None,
        }
    }
}

/// How a task is retried (its own `maxRetries` and `backoff` from the envelope, else the
/// queue's), and whether its id has a marker in the id index ([`crate::ids`]).
#[derive(Debug, Clone, Copy)]
struct TaskPolicy {
    /// The producer chose the id: remove its marker once the task is settled for good.
    custom_id: bool,
    /// The most attempts (`1 + maxRetries`).
    max: u64,
    /// The task's own backoff, if it has one.
    backoff: Option<Backoff>,
}

impl TaskPolicy {
    fn of(task: &Task, config: &Config) -> Self {
        TaskPolicy {
            custom_id: task.custom_id,
            max: task
                .max_retries
                .map_or_else(|| config.max_deliveries(), |n| 1 + u64::from(n)),
            backoff: task.backoff.as_ref().and_then(Backoff::from_envelope),
        }
    }

    /// The wait before the attempt after failed attempt `attempt`.
    fn delay_after(&self, attempt: u64, failure: &Failure, config: &Config) -> Duration {
        failure.retry_delay.unwrap_or_else(|| {
            self.backoff
                .unwrap_or_else(|| config.retry_backoff())
                .delay_after(attempt)
        })
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs tasks: implemented by the JavaScript binding (calling the user's handler) and by tests.
pub trait Handler: Send + Sync + 'static {
    /// Handles one attempt. The future must finish; a future that outlives `taskTimeout` is
    /// dropped and counted as a failed attempt.
    fn handle(&self, attempt: Attempt) -> BoxFuture<Outcome>;

    /// [`Handler::handle`], also telling when the handler really started the attempt (a
    /// queueing handler may hold it a while first), for the metrics and events; `None` means
    /// at the hand-over.
    fn handle_timed(&self, attempt: Attempt) -> BoxFuture<(Outcome, Option<Instant>)> {
        let handled = self.handle(attempt);
        Box::pin(async move { (handled.await, None) })
    }

    /// Whether the handler runs at most `batchSize` attempts at once by itself, queueing the
    /// rest in order. The worker then hands it every task it holds, prefetched ones too, as
    /// they arrive, instead of holding them until a slot is free. `taskTimeout` and heartbeats
    /// then count from the hand-over.
    fn queues_attempts(&self) -> bool {
        false
    }

    /// Whether the handler applies `taskTimeout` itself, counted from when each attempt really
    /// starts (a queueing handler may hold attempts before starting them). The executor then
    /// keeps only the heartbeats.
    fn times_attempts(&self) -> bool {
        false
    }

    /// Gives back every attempt it holds but has not started: each resolves with
    /// [`Outcome::NotStarted`], and none of them starts afterwards. Called when `shutdownTimeout`
    /// runs out. The default holds nothing back.
    fn release_unstarted(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

/// An attempt handed to the handler.
struct Handed {
    id: String,
    policy: TaskPolicy,
    handled: BoxFuture<(Outcome, Option<Instant>)>,
    /// When it was handed over.
    at: Instant,
    enqueued_at_ms: i64,
    /// What its headers say of its id's marker, if it has its own id (`fired`: its marker names
    /// a delayed task's schedule, [`crate::ids::fired`]).
    stamp: Option<crate::ids::Stamp>,
    /// The pointing of that marker at this task, running beside the handler.
    pointing: Option<tokio::task::JoinHandle<()>>,
    /// Why the handler was stopped, once it was (shared with the handler).
    abort: AbortCell,
    /// Its registration with the worker's cancel marks: a mark for it arrives here.
    entered: Option<cancelling::watch::Entered>,
}

/// Why a delivery is dead-lettered without reaching the handler.
enum Refused {
    /// The message is not a task envelope.
    InvalidEnvelope(crate::envelope::EnvelopeError),
    /// The task's deliveries without an outcome exceeded [`MAX_STALLED_DELIVERIES`], or it has
    /// no attempt left; with its attempts allowed.
    DeliveriesExhausted(Box<Task>, u64),
    /// A retry delivered before its time: handed back for the time that is left, no attempt.
    Early(Duration),
    /// The task was cancelled (`cancel(id)`) before this delivery.
    Cancelled(Box<Task>, Mark),
}

/// How a delivery ended, from the worker's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Handled successfully and acked.
    Acked,
    /// Failed and handed back for a later attempt.
    Retried,
    /// Stored on the dead-letter stream and removed from the queue.
    DeadLettered,
    /// Cancelled (`cancel(id)`) and removed from the queue.
    Cancelled,
    /// Not settled (the server did not confirm): the server redelivers it after `ackWait`.
    Unconfirmed,
}

/// Runs deliveries of one queue through one handler. Shared (in an `Arc`) by every running
/// delivery of a worker.
pub struct Executor {
    connection: Connection,
    handler: Arc<dyn Handler>,
    acks: AckSender,
    /// Set when the worker stops: from then on success acks wait for the server too.
    confirm_acks: AtomicBool,
    /// The heartbeat interval, following the consumer's `ack_wait`.
    pace: HeartbeatPace,
    /// The queue's cancel marks, as this worker follows them.
    cancels: Option<Arc<Cancels>>,
    /// Writes this worker's task records, and keeps them to their counts.
    records: history::Writer,
}

impl Executor {
    /// An executor for a connected queue; success acks go through `acks`, heartbeats follow
    /// `pace`, cancel marks come from `cancels` (none: tasks are not cancelled).
    pub fn new(
        connection: Connection,
        handler: Arc<dyn Handler>,
        acks: AckSender,
        pace: HeartbeatPace,
        cancels: Option<Arc<Cancels>>,
    ) -> Self {
        Executor {
            connection,
            handler,
            acks,
            confirm_acks: AtomicBool::new(false),
            pace,
            cancels,
            records: history::Writer::default(),
        }
    }

    /// Asks the handler to give back what it holds unstarted ([`Handler::release_unstarted`]).
    pub fn release_unstarted(&self) -> BoxFuture<()> {
        self.handler.release_unstarted()
    }

    /// Makes every later success ack wait for the server's confirmation, as a stopping worker
    /// needs.
    pub fn confirm_acks(&self) {
        self.confirm_acks.store(true, Ordering::SeqCst);
    }

    /// Handles one delivery to the end. The handler is given the task before this returns, so
    /// deliveries passed here one after another reach the handler in that order, whenever the
    /// returned futures run. `slot` (the worker's room for one running handler) is released as
    /// soon as the handler is done, so the next task can start while this one's acknowledgement
    /// is still on its way.
    pub fn execute<Slot: Send + 'static>(
        self: Arc<Self>,
        message: jetstream::Message,
        slot: Slot,
    ) -> BoxFuture<()> {
        let mut origin = origin_of(&message);
        match self.start_handler(&message, &mut origin) {
            // The future of the common path is `finish`'s alone (an async block around it would
            // hold its arguments twice): it is copied into the heap once for every task.
            Ok(mut handed) => {
                if handed.stamp.is_some_and(|stamp| stamp.fired) {
                    // A delayed task's marker names its schedule: point it at this task (off the
                    // handler's path; until then the id counts as taken anyway).
                    let connection = self.connection.clone();
                    let (id, sequence) = (handed.id.clone(), origin.stream_sequence);
                    handed.pointing = Some(tokio::spawn(async move {
                        crate::ids::fired(&connection, &id, sequence).await
                    }));
                }
                Box::pin(self.finish(message, origin, handed, slot))
            }
            Err(refused) => {
                drop(slot);
                Box::pin(async move {
                    self.refuse(message, origin, refused).await;
                })
            }
        }
    }

    /// Decodes the task and hands it to the handler, or says why it will not be handled. Sets
    /// `origin.attempts` to the attempt this delivery is.
    fn start_handler(
        &self,
        message: &jetstream::Message,
        origin: &mut Origin,
    ) -> Result<Handed, Refused> {
        let task = decode(message).map_err(Refused::InvalidEnvelope)?;
        // Registered with the cancel marks as it starts, unless one covers it.
        let route = crate::layout::route_of(self.connection.config(), &message.subject);
        let attempted = Attempted {
            number: u64::from(task.attempts_made) + 1,
            enqueued_at: task.enqueued_at_ms,
            priority: route.as_ref().and_then(|route| route.priority),
        };
        let entered = match &self.cancels {
            Some(cancels) => match cancels.enter(&task.id, task.life_began(), attempted) {
                Ok(entered) => Some(entered),
                Err(mark) => {
                    origin.attempts = u64::from(task.attempts_made);
                    return Err(Refused::Cancelled(Box::new(task), mark));
                }
            },
            None => None,
        };
        let policy = TaskPolicy::of(&task, self.connection.config());
        let max = policy.max;
        let wait = task.not_before_ms.saturating_sub(crate::envelope::now_ms());
        if wait > 0 {
            return Err(Refused::Early(Duration::from_millis(wait.unsigned_abs())));
        }
        // A retry may have been delivered once before its time (and handed back): that delivery
        // had no outcome to wait for.
        let expected = 1 + u64::from(task.not_before_ms > 0);
        let stalled = origin.deliveries.saturating_sub(expected);
        let made = u64::from(task.attempts_made);
        origin.attempts = made + 1;
        if stalled > MAX_STALLED_DELIVERIES || made >= max {
            return Err(Refused::DeliveriesExhausted(Box::new(task), max));
        }
        let id = task.id.clone();
        let enqueued_at_ms = task.enqueued_at_ms;
        let stamp = policy
            .custom_id
            .then(|| crate::ids::Stamp::of(&id, message.headers.as_ref()));
        tracing::debug!(%id, attempt = origin.attempts, "handling task");
        let abort = AbortCell::default();
        let at = Instant::now();
        let handled = self.handler.handle_timed(Attempt {
            task,
            number: origin.attempts,
            max,
            route: route.map(Box::new),
            abort: abort.clone(),
        });
        Ok(Handed {
            id,
            policy,
            handled,
            at,
            enqueued_at_ms,
            stamp,
            pointing: None,
            abort,
            entered,
        })
    }

    /// Dead-letters a delivery that was not handed to the handler.
    async fn refuse(
        &self,
        message: jetstream::Message,
        origin: Origin,
        refused: Refused,
    ) -> Settlement {
        match refused {
            Refused::InvalidEnvelope(err) => {
                tracing::info!(
                    seq = origin.stream_sequence,
                    "dead-lettering a message that is not a task: {err}"
                );
                let raw = Failed::Raw(message.payload.clone());
                let failure = Failure {
                    error: err.to_string(),
                    ..Failure::default()
                };
                let reason = DeadLetterReason::InvalidEnvelope;
                self.dead_letter(
                    &message,
                    raw,
                    &origin,
                    0,
                    Verdict {
                        reason,
                        failure,
                        started_at: None,
                    },
                )
                .await
            }
            Refused::Early(wait) => {
                self.settle(&message, AckKind::Nak(Some(wait)), Settlement::Retried)
                    .await
            }
            Refused::Cancelled(task, mark) => {
                let stamp = task
                    .custom_id
                    .then(|| crate::ids::Stamp::of(&task.id, message.headers.as_ref()));
                let clock = Clock {
                    enqueued_at_ms: task.enqueued_at_ms,
                    started: Instant::now(),
                };
                let max = TaskPolicy::of(&task, self.connection.config()).max;
                let settled =
                    Box::pin(self.cancelled(&message, &origin, &task.id, &clock, (&mark, max)))
                        .await;
                if let (Some(stamp), Settlement::Cancelled) = (stamp, settled) {
                    let sequence = origin.stream_sequence;
                    Box::pin(crate::ids::release(
                        &self.connection,
                        &task.id,
                        sequence,
                        stamp,
                    ))
                    .await;
                }
                settled
            }
            Refused::DeliveriesExhausted(task, max) => {
                let failure = Failure::new(format!(
                    "delivered {} times, {} of them without a result (allowed: \
                     {MAX_STALLED_DELIVERIES}); the workers holding it stopped or lost their \
                     connection ({} of {max} attempts made)",
                    origin.deliveries,
                    origin.deliveries.saturating_sub(1),
                    origin.attempts.saturating_sub(1),
                ));
                let reason = DeadLetterReason::DeliveriesExhausted;
                self.dead_letter(
                    &message,
                    Failed::Task(task),
                    &origin,
                    max,
                    Verdict {
                        reason,
                        failure,
                        started_at: None,
                    },
                )
                .await
            }
        }
    }

    /// Waits for the handler's outcome, then settles the delivery.
    async fn finish<Slot>(
        self: Arc<Self>,
        message: jetstream::Message,
        origin: Origin,
        handed: Handed,
        slot: Slot,
    ) {
        let Handed {
            id,
            policy,
            handled,
            at,
            enqueued_at_ms,
            stamp,
            pointing,
            abort,
            entered,
        } = handed;
        let mut started = None;
        let handled = async {
            let (outcome, at) = handled.await;
            started = at;
            outcome
        };
        let run = self.run_with_heartbeats(&message, handled);
        // A cancel mark for this task stops its handler, unless the handler settled first.
        let ended = match entered.as_ref() {
            Some(entered) => {
                // The reason is set before the handler's future is dropped (which tells it). The
                // registry hands an attempt only the marks of its own task id.
                let told = async {
                    let mark = entered.told().await;
                    abort.set(AbortReason::Cancelled);
                    mark
                };
                tokio::select! {
                    biased;
                    outcome = run => Ok(outcome),
                    mark = told => Err(mark),
                }
            }
            None => Ok(run.await),
        };
        if let Some(entered) = &entered {
            entered.settling();
        }
        drop(slot);
        if let Some(pointing) = pointing {
            // Settle once the marker names this task, so the release (or a retry's move) reads
            // the pointed marker: on an R3 cluster, a pointing still in flight while the release
            // removed the scheduled marker was stored after that removal, and its look again
            // found the task still stored (the ack was still queued) — a marker left behind.
            pointing.await.ok();
        }
        let clock = Clock {
            enqueued_at_ms,
            started: started.unwrap_or(at),
        };
        let sequence = origin.stream_sequence;
        // A success settles inline; the other outcomes, which may publish a dead letter or wait
        // for the server's confirmation, in a future of their own, so the future of every task
        // in flight is not sized for them.
        let recording = Ending::Completed.kept(self.connection.config()).is_some();
        let settled = match ended {
            Ok(Outcome::Success | Outcome::Returned(_)) if !recording => {
                self.succeeded(&message, &origin, &id, policy.max, &clock)
                    .await
            }
            Ok(outcome) => {
                Box::pin(self.settle_outcome(message, origin, &id, policy, outcome, &clock)).await
            }
            Err(mark) => {
                let cancel = (&mark, policy.max);
                Box::pin(self.cancelled(&message, &origin, &id, &clock, cancel)).await
            }
        };
        if let Some(stamp) = stamp {
            if matches!(
                settled,
                Settlement::Acked | Settlement::DeadLettered | Settlement::Cancelled
            ) {
                Box::pin(crate::ids::release(&self.connection, &id, sequence, stamp)).await;
            }
        }
        if let Some(entered) = entered {
            if let Some(mark) = entered.try_told() {
                // The mark came as the handler settled: the task ended first, unless it is to
                // run again (its next delivery is refused as cancelled).
                let answer = match settled {
                    Settlement::Retried | Settlement::Unconfirmed | Settlement::Cancelled => {
                        Answer::Cancelled
                    }
                    Settlement::Acked | Settlement::DeadLettered => Answer::Finished,
                };
                Box::pin(cancelling::answer(&self.connection, &mark, answer)).await;
            }
        }
    }

    /// Ends a cancelled task (`cancel(id)`): its record says so (`options.results`), the server
    /// removes it (TERM: no retry, no dead letter), its canceller hears it and its mark goes.
    async fn cancelled(
        &self,
        message: &jetstream::Message,
        origin: &Origin,
        id: &str,
        clock: &Clock,
        (mark, max): (&Mark, u64),
    ) -> Settlement {
        tracing::info!(%id, attempts = origin.attempts, "task cancelled");
        if Ending::Cancelled.kept(self.connection.config()).is_some() {
            let times = (origin.attempts, clock.enqueued_at_ms, clock.started_ms());
            let record = Record::cancelled(self.connection.config(), id, times, &message.payload);
            self.record(record).await;
        }
        let settled = self
            .settle(message, AckKind::Term, Settlement::Cancelled)
            .await;
        // Not confirmed: redelivered, and refused then as cancelled (the mark stays until then).
        cancelling::answer(&self.connection, mark, Answer::Cancelled).await;
        if settled == Settlement::Cancelled {
            cancelling::forget(&self.connection, id).await;
        }
        let info = || attempt_info(origin, id, max);
        self.connection
            .observer()
            .attempt_ended(info, clock, Ended::Cancelled);
        settled
    }

    /// Acks, retries or dead-letters a delivery after its handler's `outcome`.
    async fn settle_outcome(
        &self,
        message: jetstream::Message,
        origin: Origin,
        id: &str,
        policy: TaskPolicy,
        outcome: Outcome,
        clock: &Clock,
    ) -> Settlement {
        let config = self.connection.config();
        let observer = self.connection.observer();
        let max = policy.max;
        let info = || attempt_info(&origin, id, max);
        match outcome {
            Outcome::Success => {
                self.record_completed(&message, &origin, id, clock, None)
                    .await;
                self.succeeded(&message, &origin, id, max, clock).await
            }
            Outcome::Returned(result) => {
                self.record_completed(&message, &origin, id, clock, Some(result))
                    .await;
                self.succeeded(&message, &origin, id, max, clock).await
            }
            Outcome::NotStarted => {
                tracing::debug!(%id, "task handed back unstarted");
                self.settle(&message, AckKind::Nak(None), Settlement::Retried)
                    .await
            }
            Outcome::InvalidData(failure) => {
                tracing::info!(%id, "task cannot be handled, dead-lettering: {}", failure.error);
                let reason = DeadLetterReason::InvalidData;
                self.dead_letter_handled(&message, &origin, max, reason, failure, clock)
                    .await
            }
            Outcome::Failure(failure) if failure.retry && origin.attempts < max => {
                tracing::debug!(%id, attempt = origin.attempts, "task failed, will retry: {}", shorten(&failure.error));
                let delay = policy.delay_after(origin.attempts, &failure, config);
                let ended = Ended::Failed {
                    error: &failure.error,
                    retry_delay: Some(delay),
                };
                observer.attempt_ended(info, clock, ended);
                self.retry(
                    &message,
                    &origin,
                    (id, &failure.error, clock.started_ms()),
                    policy.custom_id,
                    delay,
                )
                .await
            }
            Outcome::Failure(failure) => {
                let reason = if failure.retry {
                    DeadLetterReason::RetriesExhausted
                } else {
                    DeadLetterReason::Rejected
                };
                tracing::info!(%id, attempts = origin.attempts, "task failed for good, dead-lettering: {}", shorten(&failure.error));
                let ended = Ended::Failed {
                    error: &failure.error,
                    retry_delay: None,
                };
                observer.attempt_ended(info, clock, ended);
                self.dead_letter_handled(&message, &origin, max, reason, failure, clock)
                    .await
            }
        }
    }

    /// Dead-letters a task its handler ran. The handler took the task; it is decoded again (it
    /// was before) rather than every task copied for the few that fail for good.
    async fn dead_letter_handled(
        &self,
        message: &jetstream::Message,
        origin: &Origin,
        max: u64,
        reason: DeadLetterReason,
        failure: Failure,
        clock: &Clock,
    ) -> Settlement {
        let task = match decode(message) {
            Ok(task) => Failed::Task(Box::new(task)),
            Err(_) => Failed::Raw(message.payload.clone()),
        };
        let verdict = Verdict {
            reason,
            failure,
            started_at: Some(clock.started_ms()),
        };
        self.dead_letter(message, task, origin, max, verdict).await
    }

    /// Stores the task again for its next attempt, counting the attempt just made and due after
    /// `delay`, then acknowledges the failed delivery. The copy's `Nats-Msg-Id` names this
    /// message (`retry:<stream>:<sequence>`): if the worker dies before the ack, the redelivered
    /// message's retry is stored once. When the copy cannot be stored, the delivery is handed
    /// back with the delay instead (the attempt then counts as a stalled delivery). The copy
    /// adds the attempt (started at `started_ms`, its `error` shortened) to the failed ones it
    /// carries, the last [`MAX_FAILED_KEPT`] (all left out when the task would not fit the
    /// server's `max_payload` with them), for `getTask` to tell.
    async fn retry(
        &self,
        message: &jetstream::Message,
        origin: &Origin,
        (id, error, started_ms): (&str, &str, i64),
        custom_id: bool,
        delay: Duration,
    ) -> Settlement {
        let stored = async {
            let mut task =
                decode(message).map_err(|err| crate::error::Error::Nats(err.to_string()))?;
            task.attempts_made = u32::try_from(origin.attempts).unwrap_or(u32::MAX);
            let now = crate::envelope::now_ms();
            let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            task.not_before_ms = now.saturating_add(delay_ms).max(1);
            task.failed_attempts.push(FailedAttempt {
                number: task.attempts_made,
                started_at_ms: started_ms,
                failed_at_ms: now,
                error: crate::dead_letters::write::shortened(error, MAX_RETRY_ERROR),
            });
            let over = task.failed_attempts.len().saturating_sub(MAX_FAILED_KEPT);
            task.failed_attempts.drain(..over);
            if prost::Message::encoded_len(&task) + RETRY_HEADROOM > self.connection.max_payload() {
                task.failed_attempts.clear();
            }
            let mut copy = Outgoing::checked(
                task.id.clone(),
                task.to_bytes(),
                self.connection.max_payload(),
            )?;
            copy.stored_again_as(
                format!("retry:{}:{}", origin.stream, origin.stream_sequence),
                self.connection.max_payload(),
            );
            Publisher::to(&self.connection, message.subject.to_string())
                .publish_ack(&copy)
                .await
        };
        match Box::pin(stored).await {
            Ok(ack) => {
                if custom_id {
                    let stamp = crate::ids::Stamp::of(id, message.headers.as_ref());
                    crate::ids::moved(
                        &self.connection,
                        id,
                        origin.stream_sequence,
                        stamp,
                        ack.sequence,
                    )
                    .await;
                }
                self.settle(message, AckKind::Ack, Settlement::Retried)
                    .await
            }
            Err(err) => {
                tracing::warn!(%id, "retry not stored ({err}); handing the task back instead");
                self.settle(message, AckKind::Nak(Some(delay)), Settlement::Retried)
                    .await
            }
        }
    }

    /// Settles a success: acks it and tells the observer.
    async fn succeeded(
        &self,
        message: &jetstream::Message,
        origin: &Origin,
        id: &str,
        max: u64,
        clock: &Clock,
    ) -> Settlement {
        tracing::debug!(%id, "task succeeded");
        let settled = self.ack(message, id).await;
        let ended = match settled {
            Settlement::Acked => Ended::Completed,
            _ => Ended::Unsettled,
        };
        let info = || attempt_info(origin, id, max);
        self.connection.observer().attempt_ended(info, clock, ended);
        settled
    }

    /// Records a completed task in the task history (`options.results`), before its ack: a
    /// waiter never misses it (a worker that dies in between runs the task again). A record that
    /// cannot be written is logged; the task completes all the same.
    async fn record_completed(
        &self,
        message: &jetstream::Message,
        origin: &Origin,
        id: &str,
        clock: &Clock,
        result: Option<std::result::Result<String, String>>,
    ) {
        if Ending::Completed.kept(self.connection.config()).is_none() {
            return;
        }
        let (result, result_error) = match result {
            None => (None, None),
            Some(Ok(json)) => match RawValue::from_string(json) {
                Ok(json) => (Some(json), None),
                Err(err) => (
                    None,
                    Some(format!(
                        "the result is not JSON ({err}), so it was not kept"
                    )),
                ),
            },
            Some(Err(why)) => (None, Some(why)),
        };
        let record = Record {
            id: id.to_owned(),
            state: Ending::Completed,
            attempts: origin.attempts,
            enqueued_at: clock.enqueued_at_ms,
            started_at: clock.started_ms(),
            finished_at: crate::envelope::now_ms(),
            result,
            result_error,
            error: None,
            reason: None,
            task: history::kept_task(
                self.connection.config(),
                Ending::Completed,
                &message.payload,
            ),
        };
        self.record(record).await;
    }

    /// Writes `record` (when the queue keeps records of its ending), logging a failure.
    async fn record(&self, record: Record) {
        if record.state.kept(self.connection.config()).is_none() {
            return;
        }
        if let Some(error) = &record.result_error {
            tracing::warn!(id = %record.id, "{error}");
        }
        let id = record.id.clone();
        if let Err(err) = self.records.write(&self.connection, record).await {
            self.records.refused(&id, &err);
        }
    }

    /// Acks a success: confirmed once the worker is stopping, otherwise queued for the next burst.
    async fn ack(&self, message: &jetstream::Message, id: &str) -> Settlement {
        if self.confirm_acks.load(Ordering::SeqCst) {
            return self.settle(message, AckKind::Ack, Settlement::Acked).await;
        }
        let queued = message
            .reply
            .clone()
            .is_some_and(|reply| self.acks.ack(reply));
        if queued {
            Settlement::Acked
        } else {
            tracing::warn!(%id, "ack not sent; the server will redeliver");
            Settlement::Unconfirmed
        }
    }

    /// Runs the handler with heartbeats ([`keep_alive`]), bounded by `taskTimeout` unless the
    /// handler times its attempts itself.
    async fn run_with_heartbeats(
        &self,
        message: &jetstream::Message,
        handled: impl Future<Output = Outcome>,
    ) -> Outcome {
        let timeout =
            (!self.handler.times_attempts()).then_some(self.connection.config().task_timeout);
        keep_alive(message, handled, self.pace.clone(), timeout).await
    }

    /// Stores a dead letter, then terminates the original. If the dead letter cannot be stored,
    /// the original is handed back instead, so it is never dropped.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        failed: Failed,
        origin: &Origin,
        max: u64,
        verdict: Verdict,
    ) -> Settlement {
        let Verdict {
            reason,
            failure,
            started_at,
        } = verdict;
        let observer = self.connection.observer();
        // Its record (with `options.results`): waiters learn it failed, and why.
        let record = match &failed {
            Failed::Task(task)
                if Ending::DeadLettered
                    .kept(self.connection.config())
                    .is_some() =>
            {
                let now = crate::envelope::now_ms();
                Some(Record {
                    id: task.id.clone(),
                    state: Ending::DeadLettered,
                    attempts: origin.attempts,
                    enqueued_at: task.enqueued_at_ms,
                    started_at: started_at.unwrap_or(now),
                    finished_at: now,
                    result: None,
                    result_error: None,
                    error: Some(failure.error.clone()),
                    reason: Some(crate::observe::metrics::reason_name(reason).to_owned()),
                    task: history::kept_task(
                        self.connection.config(),
                        Ending::DeadLettered,
                        &task.to_bytes(),
                    ),
                })
            }
            _ => None,
        };
        // Copied only for listeners: the letter takes the originals.
        let told = observer.wants(DEAD_LETTERED).then(|| {
            let id = match &failed {
                Failed::Task(task) => Some(task.id.clone()),
                Failed::Raw(_) => None,
            };
            (id, failure.error.clone())
        });
        let stored = dead_letter::publish(
            &self.connection,
            failed,
            origin,
            reason,
            failure.error,
            failure.details,
        )
        .await;
        match stored {
            Ok(()) => {
                if let Some(record) = record {
                    self.record(record).await;
                }
                let (id, error) = told.unwrap_or_default();
                let info = || AttemptInfo {
                    id,
                    attempt: origin.attempts,
                    max_attempts: max,
                    sequence: origin.stream_sequence,
                };
                observer.dead_lettered(info, reason, &error);
                self.settle(message, AckKind::Term, Settlement::DeadLettered)
                    .await
            }
            Err(err) => {
                tracing::warn!("dead letter not stored ({err}); the task stays on the queue");
                let delay = Some(self.connection.config().retry_delay);
                self.settle(message, AckKind::Nak(delay), Settlement::Retried)
                    .await;
                Settlement::Unconfirmed
            }
        }
    }

    /// Sends an ack, NAK or TERM and waits for the server to confirm it.
    pub(crate) async fn settle(
        &self,
        message: &jetstream::Message,
        kind: AckKind,
        settled: Settlement,
    ) -> Settlement {
        // Boxed: most deliveries end with a queued ack and never reach this state.
        if Box::pin(settle_confirmed(&self.connection, message, kind)).await {
            settled
        } else {
            Settlement::Unconfirmed
        }
    }
}

fn attempt_info(origin: &Origin, id: &str, max: u64) -> AttemptInfo {
    AttemptInfo {
        id: Some(id.to_owned()),
        attempt: origin.attempts,
        max_attempts: max,
        sequence: origin.stream_sequence,
    }
}

/// Waits for `handled`, sending a progress heartbeat at `pace` (a third of `ackWait`, or of the
/// consumer's shorter `ack_wait`: [`HeartbeatPace`]) so a long handler keeps its delivery, and
/// giving up after `timeout` (`taskTimeout`) when there is one. One timer serves both.
pub(crate) async fn keep_alive(
    message: &jetstream::Message,
    handled: impl Future<Output = Outcome>,
    mut pace: HeartbeatPace,
    timeout: Option<Duration>,
) -> Outcome {
    let mut last_beat = tokio::time::Instant::now();
    // Without a timeout, far enough never to come: only heartbeats wake the timer.
    let deadline = last_beat + timeout.unwrap_or(Duration::from_secs(86_400 * 365 * 30));
    let timer = tokio::time::sleep_until(deadline.min(last_beat + pace.interval()));
    tokio::pin!(timer, handled);
    loop {
        tokio::select! {
            outcome = &mut handled => return outcome,
            () = &mut timer => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Outcome::Failure(Failure::new(format!(
                        "handler did not settle within taskTimeout ({}ms)",
                        timeout.unwrap_or_default().as_millis()
                    )));
                }
                // Boxed: only long handlers send heartbeats.
                if let Err(err) = Box::pin(message.ack_with(AckKind::Progress)).await {
                    tracing::warn!("progress heartbeat not sent: {err}");
                }
                last_beat = now;
                timer.as_mut().reset(deadline.min(now + pace.interval()));
            }
            // A shorter interval applies from the last heartbeat (at once if already due).
            () = pace.changed() => {
                timer.as_mut().reset(deadline.min(last_beat + pace.interval()));
            }
        }
    }
}

/// Sends an acknowledgement of any kind and waits (bounded) for the server's confirmation.
pub(crate) async fn settle_confirmed(
    connection: &Connection,
    message: &jetstream::Message,
    kind: AckKind,
) -> bool {
    let Some(reply) = message.reply.clone() else {
        tracing::warn!("message has no reply subject; cannot acknowledge it");
        return false;
    };
    let request = connection.client.request(reply, Bytes::from(kind));
    match tokio::time::timeout(SETTLE_TIMEOUT, request).await {
        Ok(Ok(_)) => true,
        Ok(Err(err)) => {
            tracing::warn!("acknowledgement not confirmed ({err}); the server will redeliver");
            false
        }
        Err(_) => {
            tracing::warn!("acknowledgement not confirmed in time; the server will redeliver");
            false
        }
    }
}

/// The task a delivery carries: its envelope, checked; a tick of a recurring schedule becomes
/// its own occurrence ([`schedules::occurrence`]).
fn decode(message: &jetstream::Message) -> Result<Task, EnvelopeError> {
    let task = Task::decode_checked(&message.payload)?;
    Ok(schedules::occurrence(
        task,
        message.headers.as_ref(),
        || match message.info() {
            Ok(info) => (
                info.stream_sequence,
                (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
            ),
            Err(_) => (0, crate::envelope::now_ms()),
        },
    ))
}

fn origin_of(message: &jetstream::Message) -> Origin {
    match message.info() {
        Ok(info) => {
            let deliveries = u64::try_from(info.delivered).unwrap_or(1).max(1);
            Origin {
                stream: info.stream.to_owned(),
                subject: message.subject.to_string(),
                stream_sequence: info.stream_sequence,
                attempts: deliveries,
                deliveries,
            }
        }
        Err(_) => Origin {
            subject: message.subject.to_string(),
            attempts: 1,
            deliveries: 1,
            ..Origin::default()
        },
    }
}
