//! The worker: pulls from the queue's durable consumer, runs up to `batchSize` deliveries at once
//! through an [`Executor`], resumes by itself after connection loss, and on stop drains cleanly.
//!
//! A worker holds at most `batchSize` running tasks plus its prefetch allowance ([`Prefetch`]):
//! delivered and waiting for a free slot, or requested ([`Puller`] reserves room for every
//! message it asks for). The prefetched ones hide the round trip of the next pull: when a handler
//! finishes, the next task is already here. While one waits for a slot, progress heartbeats keep
//! its `ackWait` from running out. A handler that queues attempts itself (the JavaScript binding,
//! which then starts the next task without a round trip through Rust) is handed every task at
//! once; the worker keeps each alive until its outcome comes back. To keep the pipe full, a new
//! pull goes out as soon as half the room is free, while earlier pulls are still open; a worker
//! with nothing requested pulls for one message at once.
//!
//! A stopping worker pulls no more but still runs every task delivered to it (running, prefetched,
//! or arriving for requests still open), within `shutdownTimeout`: every delivery counts towards a
//! task's attempts, so handing a task back would cost it one. It then unsubscribes its inbox (the
//! server does not deliver to a request nobody listens to). What the worker still holds unstarted
//! when `shutdownTimeout` runs out is handed back at once; tasks still with the handler are
//! abandoned, and redelivered after `ackWait`.

pub mod abort;
pub mod acks;
pub mod batching;
pub mod deliveries;
pub mod executor;
pub mod handoff;
pub mod letters;
pub mod prefetch;
pub mod pull;
pub mod rate;

use std::{collections::VecDeque, sync::Arc, time::Duration};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use tokio::{
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};

use crate::{
    cancelling::watch::Cancels,
    error::{Error, Result},
    layout::Lane,
    nats::ack_wait::{self, HeartbeatPace},
    nats::connection::Connection,
    nats::topology,
    observe::remote::Broadcast,
    presence::{Beacon, Identity},
    worker::acks::AckSender,
    worker::deliveries::Deliveries,
    worker::executor::{settle_confirmed, Executor, Handler},
    worker::letters::{LetterExecutor, LetterHandler},
    worker::prefetch::Prefetch,
    worker::pull::{Pulled, Puller},
    worker::rate::RateWindow,
};

pub use deliveries::Held;

/// How long a stopping worker keeps its inbox for messages already sent to its open pull requests.
const STOP_GRACE: Duration = Duration::from_millis(200);
/// How long a stopping worker waits for its queued acks to be handed to the client.
pub const ACKS_SENT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a stopping worker may take past `shutdownTimeout` to hand back what it holds.
pub const OVERRUN: Duration = Duration::from_secs(1);
/// How long a worker whose `shutdownTimeout` ran out waits for its handler to give back the
/// tasks it has not started, and then for their NAKs (twice this fits in [`OVERRUN`]).
const RELEASE_TIMEOUT: Duration = Duration::from_millis(400);
/// The longest pause between attempts to pull after errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(2);

/// A running worker of one queue.
pub struct Worker {
    /// The stop request: when `shutdownTimeout` runs out for this stop.
    stop: watch::Sender<Option<Instant>>,
    run: tokio::task::JoinHandle<StopReport>,
    /// The success-ack sender; it ends once every delivery is done with it.
    acks_sent: tokio::task::JoinHandle<()>,
    shutdown_timeout: Duration,
    /// Keeps this worker's record on the server while it runs ([`presence`]).
    beacon: Beacon,
    /// The worker's slots, and how many there are: those taken are the deliveries it holds.
    slots: (Arc<Semaphore>, usize),
    /// Sends its events to listeners in other processes while any listen.
    broadcast: Option<Broadcast>,
    /// The attempts its handlers run (a task worker's), with the cancel marks that reach them.
    cancels: Option<Arc<Cancels>>,
}

/// How a worker's shutdown went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Deliveries still running when `shutdownTimeout` ran out; the server redelivers them after
    /// `ackWait`.
    pub abandoned: usize,
}

impl Worker {
    /// The attempts this task worker's handlers run; `None` for a dead-letter worker.
    pub fn running(&self) -> Option<&Arc<Cancels>> {
        self.cancels.as_ref()
    }

    /// Creates the shared durable consumer (or checks it), makes its `ack_wait` this worker's
    /// `ackWait` ([`crate::nats::ack_wait`]) and starts pulling.
    pub async fn start(connection: Connection, handler: Arc<dyn Handler>) -> Result<Self> {
        Self::start_part(connection, handler, None).await
    }

    /// Starts a worker of part of the queue's subject tree (`subjects`: filters within it, see
    /// [`crate::layout::checked_part`]) with the durable consumer(s) of that part, or of the
    /// whole queue (`None`), as [`Worker::start`] does.
    pub async fn start_part(
        connection: Connection,
        handler: Arc<dyn Handler>,
        subjects: Option<&[String]>,
    ) -> Result<Self> {
        let config = connection.config();
        let lanes = match subjects {
            Some(subjects) => {
                let filters = crate::layout::checked_part(config, subjects)?;
                crate::layout::part_lanes(config, &filters)
            }
            None => crate::layout::task_lanes(config),
        };
        let queues_attempts = handler.queues_attempts();
        let prefetch = connection.config().effective_prefetch();
        let identity = Identity {
            kind: "tasks",
            subjects: subjects.map(<[String]>::to_vec),
            batch_size: config.batch_size,
        };
        // Read the marks made so far before the first task arrives, and learn whether anyone
        // listens to the queue's events.
        let cancels = Cancels::start(connection.clone()).await;
        crate::history::running::serve(connection.clone(), Arc::downgrade(&cancels)).await;
        let broadcast = Broadcast::start(connection.clone()).await;
        let mut worker = Self::start_lane(
            connection,
            lanes,
            identity,
            prefetch,
            queues_attempts,
            |connection, acks, pace| {
                Arc::new(Executor::new(
                    connection,
                    handler,
                    acks,
                    pace,
                    Some(cancels.clone()),
                ))
            },
        )
        .await?;
        worker.broadcast = Some(broadcast);
        worker.cancels = Some(cancels);
        Ok(worker)
    }

    /// Starts a dead-letter worker: the same pull loop over the dead-letter stream's shared
    /// consumer, with no prefetch, running each letter through a [`LetterExecutor`].
    pub async fn start_dead_letters(
        connection: Connection,
        handler: Arc<dyn LetterHandler>,
    ) -> Result<Self> {
        let lane = Lane::dead_letters(connection.config());
        let identity = Identity {
            kind: "deadLetters",
            subjects: None,
            batch_size: connection.config().batch_size,
        };
        Self::start_lane(
            connection,
            vec![lane],
            identity,
            0,
            false,
            |connection, _, pace| Arc::new(LetterExecutor::new(connection, handler, pace)),
        )
        .await
    }

    /// Starts the pull loop over the consumers of `lanes`, most urgent first (one, or one per
    /// priority level).
    async fn start_lane(
        connection: Connection,
        lanes: Vec<Lane>,
        identity: Identity,
        prefetch: u32,
        queues_attempts: bool,
        deliveries: impl FnOnce(Connection, AckSender, HeartbeatPace) -> Arc<dyn Deliveries>,
    ) -> Result<Self> {
        // Every consumer follows this worker's `ackWait`; the heartbeats follow the default
        // level's (all of them are set alike by the same workers).
        let mut pace = None;
        for lane in &lanes {
            let consumer =
                topology::ensure_lane(&connection.jetstream, connection.config(), lane).await?;
            let adopted = ack_wait::adopt(&connection, lane, consumer).await?;
            if pace.is_none() || lane.consumer == crate::config::CONSUMER_NAME {
                pace = Some(adopted);
            }
        }
        let pace = pace.ok_or_else(|| Error::Nats("a worker needs a consumer".into()))?;
        if lanes[0].tasks {
            crate::admin::control::inherit_pause(&connection, &lanes).await?;
        }
        let puller = Puller::open(connection.clone(), &lanes)
            .await
            .map_err(|err| Error::nats("subscribing the worker's inbox", err))?;
        let (stop, stopped) = watch::channel(None);
        let config = connection.config();
        let shutdown_timeout = config.shutdown_timeout;
        let prefetch = Prefetch::new(config.batch_size, prefetch);
        let batch_size = config.batch_size as usize;
        // A worker with several consumers keeps a waiting request on each when idle.
        let room = (batch_size + prefetch.max()).max(lanes.len());
        // A handler that queues attempts itself gets every task the worker holds at once.
        let slots = if queues_attempts { room } else { batch_size };
        let (acks, acks_sent) = AckSender::start(connection.client.clone());
        let rate = lanes[0]
            .tasks
            .then_some(config.rate_limit)
            .flatten()
            .map(RateWindow::new);
        let slot_permits = Arc::new(Semaphore::new(slots));
        let beacon = Beacon::start(connection.clone(), identity, slot_permits.clone(), slots).await;
        let held = (slot_permits.clone(), slots);
        let pull_loop = PullLoop {
            rate,
            executor: deliveries(connection.clone(), acks, pace.clone()),
            pace,
            room: Arc::new(Semaphore::new(room)),
            room_size: room,
            slots: slot_permits,
            batch_size,
            prefetch,
            waiting: VecDeque::new(),
            connection,
            lanes,
            puller,
            stopped,
            running: JoinSet::new(),
        };
        let run = tokio::spawn(pull_loop.run());
        Ok(Worker {
            stop,
            run,
            acks_sent,
            shutdown_timeout,
            beacon,
            slots: held,
            broadcast: None,
            cancels: None,
        })
    }

    /// Stops pulling and runs what the worker holds, within `shutdownTimeout` from now.
    pub async fn stop(self) -> StopReport {
        let deadline = Instant::now() + self.shutdown_timeout;
        self.stop_by(deadline).await
    }

    /// Asks the worker to stop within `shutdownTimeout` from now, without waiting.
    pub fn request_stop(&self) {
        self.request_stop_by(Instant::now() + self.shutdown_timeout);
    }

    /// Asks the worker to stop by `deadline` without waiting: it pulls no more from now on.
    /// A later [`Worker::stop_by`] keeps the first deadline.
    pub fn request_stop_by(&self, deadline: Instant) {
        self.stop.send_if_modified(|stop| {
            let first = stop.is_none();
            if first {
                *stop = Some(deadline);
            }
            first
        });
    }

    /// Stops pulling, runs what the worker holds until `deadline`, then hands back what has not
    /// started and abandons what still runs. Returns by `deadline` plus [`OVERRUN`] and
    /// [`ACKS_SENT_TIMEOUT`], even when the server is unreachable (the worker's task is then cut short).
    pub async fn stop_by(mut self, deadline: Instant) -> StopReport {
        self.request_stop_by(deadline);
        let report = match tokio::time::timeout_at(deadline + OVERRUN, &mut self.run).await {
            Ok(Ok(report)) => report,
            Ok(Err(err)) => {
                tracing::warn!("worker task ended abnormally: {err}");
                StopReport::default()
            }
            Err(_) => {
                tracing::warn!("the worker did not stop by shutdownTimeout (is the server reachable?); cutting it short");
                self.run.abort();
                // What it still held is abandoned (redelivered after `ackWait`).
                let (slots, total) = &self.slots;
                StopReport {
                    abandoned: total.saturating_sub(slots.available_permits()),
                }
            }
        };
        // Acks queued by the last deliveries go out before the connection may close.
        if tokio::time::timeout(ACKS_SENT_TIMEOUT, self.acks_sent)
            .await
            .is_err()
        {
            tracing::warn!("queued acks not sent in time; the server will redeliver those tasks");
        }
        self.beacon.stop().await;
        report
    }
}

struct PullLoop {
    connection: Connection,
    /// The consumers it pulls from, most urgent first.
    lanes: Vec<Lane>,
    puller: Puller,
    /// Shared by every running delivery (one `Arc` clone per task).
    executor: Arc<dyn Deliveries>,
    /// Room for every message the worker may hold (`batchSize` plus the largest prefetch, and
    /// at least one per consumer): requested, waiting for a slot, or running.
    room: Arc<Semaphore>,
    /// The permits of `room`.
    room_size: usize,
    /// Room for running handlers: `batchSize`, or all the room when the handler queues attempts
    /// itself.
    slots: Arc<Semaphore>,
    batch_size: usize,
    prefetch: Arc<Prefetch>,
    /// Prefetched messages waiting for a slot, with their room and rank (priority level): most
    /// urgent first, in delivery order within a rank.
    waiting: VecDeque<(Message, OwnedSemaphorePermit, u8)>,
    stopped: watch::Receiver<Option<Instant>>,
    running: JoinSet<()>,
    /// The heartbeat interval, following the consumer's `ack_wait`.
    pace: HeartbeatPace,
    /// `options.rateLimit`: the deliveries within the last window.
    rate: Option<RateWindow>,
}

/// Where a stopping worker is in its shutdown.
struct Stopping {
    /// When `shutdownTimeout` runs out.
    deadline: Instant,
    /// When the inbox is unsubscribed even if pull requests are still open.
    grace_until: Instant,
    unsubscribed: bool,
}

impl PullLoop {
    async fn run(mut self) -> StopReport {
        let mut errors = 0u32;
        let mut paused_until: Option<Instant> = None;
        let mut stopping: Option<Stopping> = None;
        let mut heartbeat = heartbeat_timer(self.pace.interval());
        loop {
            if let Some(stop) = stopping.as_mut() {
                let answered = self.puller.outstanding() == 0 || Instant::now() >= stop.grace_until;
                if !stop.unsubscribed && answered && !self.puller.is_closed() {
                    self.puller.unsubscribe().await;
                    stop.unsubscribed = true;
                }
                if self.puller.is_closed() && self.waiting.is_empty() {
                    break;
                }
            }
            // The room beyond the current allowance stays unused: claim it along with what a
            // pull waits for, and give it back.
            let allowed = (self.batch_size + self.prefetch.allowance()).max(self.lanes.len());
            let unused = self.room_size - allowed;
            let wanted = unused
                + if self.puller.outstanding() == 0 {
                    1
                } else {
                    allowed.div_ceil(2)
                };
            // With a rate limit, a pull asks for no more than the window has room for.
            let outstanding = self.puller.outstanding();
            let rate_room = self
                .rate
                .as_mut()
                .map(|rate| rate.room(Instant::now(), outstanding));
            let rate_full = rate_room == Some(0);
            let rate_room_at = self
                .rate
                .as_ref()
                .and_then(RateWindow::next_room_at)
                .filter(|_| rate_full);
            let paused = paused_until.is_some_and(|until| Instant::now() < until);
            let resume_at = paused_until.unwrap_or_else(Instant::now);
            let deadline = stopping.as_ref().map(|stop| stop.deadline);
            let grace = stopping
                .as_ref()
                .filter(|stop| !stop.unsubscribed)
                .map(|stop| stop.grace_until);
            let failure = tokio::select! {
                biased;
                deadline = stop_requested(&mut self.stopped), if stopping.is_none() => {
                    self.executor.confirm_acks();
                    let now = Instant::now();
                    stopping = Some(Stopping {
                        deadline,
                        grace_until: now + STOP_GRACE,
                        unsubscribed: false,
                    });
                    None
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
                _ = tokio::time::sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => None,
                pulled = self.puller.next(), if !self.puller.is_closed() => match pulled {
                    Pulled::Message(message, room, rank) => {
                        errors = 0;
                        if let Some(rate) = self.rate.as_mut() {
                            rate.delivered(Instant::now());
                        }
                        self.arrived(message, room, rank);
                        None
                    }
                    Pulled::Unrequested(message) => {
                        let connection = self.connection.clone();
                        self.running.spawn(async move {
                            settle_confirmed(&connection, &message, AckKind::Nak(None)).await;
                        });
                        None
                    }
                    Pulled::Status => None,
                    // A stopping worker's inbox ends when it has unsubscribed.
                    Pulled::Failed(_) if stopping.is_some() => None,
                    Pulled::Failed(reason) => Some(reason),
                },
                slot = self.slots.clone().acquire_owned(), if !self.waiting.is_empty() => {
                    if let (Ok(slot), Some((message, room, _))) = (slot, self.waiting.pop_front()) {
                        self.start(message, room, slot);
                    }
                    None
                }
                _ = heartbeat.tick(), if !self.waiting.is_empty() => {
                    self.keep_waiting_alive().await;
                    None
                }
                () = self.pace.changed() => {
                    heartbeat = heartbeat_timer(self.pace.interval());
                    None
                }
                _ = tokio::time::sleep_until(resume_at), if paused => {
                    paused_until = None;
                    None
                }
                // The window has room again (the loop then pulls).
                _ = tokio::time::sleep_until(rate_room_at.unwrap_or_else(Instant::now)), if rate_room_at.is_some() => None,
                claimed = self.room.clone().acquire_many_owned(wanted as u32), if !paused && !rate_full && stopping.is_none() => {
                    let Ok(mut room) = claimed else { break };
                    // Take all the room that is free now, not just the minimum.
                    let free = self.room.available_permits() as u32;
                    if let Ok(more) = self.room.clone().try_acquire_many_owned(free) {
                        room.merge(more);
                    }
                    drop(room.split(unused));
                    if let Some(limit) = rate_room {
                        let excess = (room.num_permits()).saturating_sub(limit);
                        drop(room.split(excess));
                    }
                    self.puller.request(room).await.err().map(|err| err.to_string())
                }
            };
            // Requests a worker with several consumers queued while reading its inbox.
            let failure = match self.puller.flush().await {
                Err(err) if failure.is_none() && stopping.is_none() => Some(err.to_string()),
                _ => failure,
            };
            if let Some(reason) = failure {
                errors += 1;
                let backoff = (Duration::from_millis(100) * errors).min(MAX_ERROR_BACKOFF);
                tracing::warn!(
                    "pull failed ({reason}); retrying in {}ms",
                    backoff.as_millis()
                );
                paused_until = Some(Instant::now() + backoff);
                self.recover().await;
            }
            while self.running.try_join_next().is_some() {}
        }
        self.hand_back_unstarted().await;
        let deadline = stopping.map_or_else(Instant::now, |stop| stop.deadline);
        self.shut_down(deadline).await
    }

    /// A message arrived: it starts now if a slot is free and none waits before it, otherwise it
    /// waits for a slot.
    fn arrived(&mut self, message: Message, room: OwnedSemaphorePermit, rank: u8) {
        self.prefetch.record_size(message.payload.len());
        if self.waiting.is_empty() {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                self.start(message, room, slot);
                return;
            }
        }
        // Before every less urgent one (ranks are all 0 without priorities).
        let mut at = self.waiting.len();
        while at > 0 && self.waiting[at - 1].2 > rank {
            at -= 1;
        }
        self.waiting.insert(at, (message, room, rank));
    }

    /// Runs a delivery in `slot`; its room and slot are freed when its handler is done.
    fn start(&mut self, message: Message, room: OwnedSemaphorePermit, slot: OwnedSemaphorePermit) {
        let executor = self.executor.clone();
        let held = self.prefetch.time((room, slot));
        self.running.spawn(executor.execute(message, held));
    }

    /// Sends a progress heartbeat for every message waiting for a slot, so none is redelivered
    /// while it waits (the interval is well inside `ackWait`).
    async fn keep_waiting_alive(&self) {
        for (message, _, _) in &self.waiting {
            if let Err(err) = message.ack_with(AckKind::Progress).await {
                tracing::warn!("progress heartbeat not sent: {err}");
            }
        }
    }

    /// Hands back, at once, every message this worker holds that has not started: another
    /// worker gets it now rather than after `ackWait`. Called when `shutdownTimeout` ran out, so
    /// the inbox is unsubscribed first (if it still is), or the server could deliver them straight
    /// back to this worker's open requests.
    async fn hand_back_unstarted(&mut self) {
        let mut unstarted: Vec<Message> = self
            .waiting
            .drain(..)
            .map(|(message, _, _)| message)
            .collect();
        if !self.puller.is_closed() {
            unstarted.extend(self.puller.close().await);
        }
        let naks = unstarted
            .iter()
            .map(|message| settle_confirmed(&self.connection, message, AckKind::Nak(None)));
        futures::future::join_all(naks).await;
    }

    /// After a failed pull the consumer (or its stream) may be gone, e.g. after a server lost its
    /// store: create it again, and subscribe the inbox again if its subscription ended. Errors
    /// here just mean the server is still unreachable.
    async fn recover(&mut self) {
        let config = self.connection.config();
        if let Err(err) = topology::ensure_streams(&self.connection.jetstream, config).await {
            tracing::debug!("streams not reachable yet: {err}");
            return;
        }
        for lane in &self.lanes {
            if let Err(err) = topology::ensure_lane(&self.connection.jetstream, config, lane).await
            {
                tracing::debug!("consumer not reachable yet: {err}");
                return;
            }
        }
        if self.puller.is_closed() {
            match Puller::open(self.connection.clone(), &self.lanes).await {
                Ok(puller) => self.puller = puller,
                Err(err) => tracing::debug!("inbox not subscribed yet: {err}"),
            }
        }
    }

    /// Waits until `deadline` for the running handlers, then abandons those still running.
    async fn shut_down(mut self, deadline: Instant) -> StopReport {
        let timeout = self.connection.config().shutdown_timeout;
        let drained = tokio::time::timeout_at(deadline, async {
            while self.running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // Tasks the handler holds unstarted go back to the server at once (NAK), not after
            // `ackWait`; only those still running are abandoned.
            let release = self.executor.release_unstarted();
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, release).await;
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, async {
                while self.running.join_next().await.is_some() {}
            })
            .await;
        }
        let abandoned = self.running.len();
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "shutdownTimeout ({}ms) ran out with handlers still running; their tasks will be \
                 redelivered after ackWait",
                timeout.as_millis()
            );
            self.running.abort_all();
        }
        StopReport { abandoned }
    }
}

/// Ticks every `interval`, from one interval from now.
fn heartbeat_timer(interval: Duration) -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(Instant::now() + interval, interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// Resolves, to the stop's deadline, once a stop is requested. A worker whose [`Worker`] handle
/// was dropped without a stop (its JavaScript object was garbage-collected) keeps running: only an
/// explicit stop ends it.
async fn stop_requested(stopped: &mut watch::Receiver<Option<Instant>>) -> Instant {
    let deadline = match stopped.wait_for(Option::is_some).await {
        Ok(deadline) => *deadline,
        Err(_) => None,
    };
    match deadline {
        Some(deadline) => deadline,
        None => std::future::pending().await,
    }
}
