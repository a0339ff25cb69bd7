//! The worker: pulls from the queue's durable consumer, runs up to `batchSize` deliveries at once
//! through an [`Executor`], resumes by itself after connection loss, and on stop drains cleanly.
//!
//! Every message the worker asks for has a free slot waiting for it: a pull request takes its
//! slots with it (semaphore permits) and hands one to each message it delivers, so messages are
//! never buffered beyond what the worker can run at once and none waits for a slot while its
//! `ackWait` runs. To keep the pipe full, a new pull goes out as soon as half the slots are free,
//! while earlier pulls are still open; a lone worker with one free slot and nothing open pulls at
//! once. Each pull expires after [`PULL_EXPIRY`], so a request lost to a server restart or a
//! network fault costs a few seconds at most.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind};
use futures::{
    stream::{self, BoxStream, SelectAll},
    StreamExt,
};
use tokio::{
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};

use crate::{
    connection::Connection,
    error::Result,
    executor::{settle_confirmed, Executor, Handler},
    topology::{self, Consumer},
};

/// How long one pull request waits at the server for messages.
pub const PULL_EXPIRY: Duration = Duration::from_secs(2);
/// How long a stopping worker keeps listening for messages already sent to its open pull requests.
const STOP_GRACE: Duration = Duration::from_millis(200);
/// The longest pause between attempts to pull after errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(2);

/// A running worker of one queue.
pub struct Worker {
    stop: watch::Sender<bool>,
    run: tokio::task::JoinHandle<StopReport>,
}

/// How a worker's shutdown went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Deliveries still running when `shutdownTimeout` ran out; the server redelivers them after
    /// `ackWait`.
    pub abandoned: usize,
}

impl Worker {
    /// Creates (or updates) the shared durable consumer and starts pulling.
    pub async fn start(connection: Connection, handler: Arc<dyn Handler>) -> Result<Self> {
        let consumer =
            topology::ensure_consumer(&connection.jetstream, connection.config()).await?;
        let (stop, stopped) = watch::channel(false);
        let batch_size = connection.config().batch_size as usize;
        let pull_loop = PullLoop {
            executor: Executor::new(connection.clone(), handler),
            slots: Arc::new(Semaphore::new(batch_size)),
            pull_threshold: batch_size.div_ceil(2),
            connection,
            consumer,
            stopped,
            pulls: SelectAll::new(),
            running: JoinSet::new(),
        };
        let run = tokio::spawn(pull_loop.run());
        Ok(Worker { stop, run })
    }

    /// Stops pulling, hands back messages that arrive meanwhile, and waits (up to
    /// `shutdownTimeout`) for the deliveries in flight to settle.
    pub async fn stop(self) -> StopReport {
        let _ = self.stop.send(true);
        self.run.await.unwrap_or_else(|err| {
            tracing::warn!("worker task ended abnormally: {err}");
            StopReport::default()
        })
    }
}

/// What an open pull request yields: a message with the slot it runs in, or its end.
// Messages are the common case and move straight into a task: boxing them would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Pulled {
    Message(jetstream::Message, OwnedSemaphorePermit),
    Ended(Result<(), async_nats::Error>),
}

struct PullLoop {
    connection: Connection,
    consumer: Consumer,
    executor: Executor,
    slots: Arc<Semaphore>,
    /// How many free slots a pull waits for while another pull is open.
    pull_threshold: usize,
    stopped: watch::Receiver<bool>,
    pulls: SelectAll<BoxStream<'static, Pulled>>,
    running: JoinSet<()>,
}

impl PullLoop {
    async fn run(mut self) -> StopReport {
        let mut errors = 0u32;
        let mut paused_until: Option<Instant> = None;
        loop {
            let wanted = if self.pulls.is_empty() {
                1
            } else {
                self.pull_threshold
            };
            let paused = paused_until.is_some_and(|until| Instant::now() < until);
            let resume_at = paused_until.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                _ = stop_requested(&mut self.stopped) => break,
                Some(pulled) = self.pulls.next(), if !self.pulls.is_empty() => match pulled {
                    Pulled::Message(message, slot) => {
                        let executor = self.executor.clone();
                        self.running.spawn(async move {
                            executor.execute(message, slot).await;
                        });
                    }
                    Pulled::Ended(Ok(())) => errors = 0,
                    Pulled::Ended(Err(err)) => {
                        errors += 1;
                        let backoff = (Duration::from_millis(100) * errors).min(MAX_ERROR_BACKOFF);
                        tracing::warn!("pull failed ({err}); retrying in {}ms", backoff.as_millis());
                        paused_until = Some(Instant::now() + backoff);
                        self.recover_consumer().await;
                    }
                },
                _ = tokio::time::sleep_until(resume_at), if paused => paused_until = None,
                claimed = self.slots.clone().acquire_many_owned(wanted as u32), if !paused => {
                    let Ok(mut slots) = claimed else { break };
                    // Take every slot that is free now, not just the minimum.
                    let free = self.slots.available_permits() as u32;
                    if let Ok(more) = self.slots.clone().try_acquire_many_owned(free) {
                        slots.merge(more);
                    }
                    self.open_pull(slots).await;
                }
            }
            while self.running.try_join_next().is_some() {}
        }
        self.executor.confirm_acks();
        self.hand_back_late_arrivals().await;
        self.shut_down().await
    }

    /// Sends one pull request for as many messages as `slots` holds. Its messages (each with one
    /// of the slots) and its end arrive through `self.pulls`; slots it did not use are freed when
    /// it ends.
    async fn open_pull(&mut self, slots: OwnedSemaphorePermit) {
        let requested = slots.num_permits();
        let batch = self
            .consumer
            .batch()
            .max_messages(requested)
            .expires(PULL_EXPIRY)
            .messages()
            .await;
        let batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                self.pulls
                    .push(stream::once(async move { Pulled::Ended(Err(err.into())) }).boxed());
                return;
            }
        };
        let pull = stream::unfold(Some((batch, slots)), |state| async move {
            let (mut batch, mut slots) = state?;
            match batch.next().await {
                Some(Ok(message)) => {
                    let Some(slot) = slots.split(1) else {
                        // A pull never delivers more than it asked for; should it, hand it back.
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        return Some((Pulled::Ended(Ok(())), None));
                    };
                    Some((Pulled::Message(message, slot), Some((batch, slots))))
                }
                Some(Err(err)) => Some((Pulled::Ended(Err(err)), None)),
                None => Some((Pulled::Ended(Ok(())), None)),
            }
        });
        self.pulls.push(pull.boxed());
    }

    /// Stopping with pull requests open: messages already on their way may still arrive. Hand
    /// each back at once so another worker gets it now rather than after `ackWait`. Dropping the
    /// pulls then unsubscribes, and the server does not deliver to a pull request nobody listens
    /// to any more.
    async fn hand_back_late_arrivals(&mut self) {
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        while !self.pulls.is_empty() {
            tokio::select! {
                pulled = self.pulls.next() => match pulled {
                    Some(Pulled::Message(message, _slot)) => {
                        settle_confirmed(&self.connection, &message, AckKind::Nak(None)).await;
                    }
                    Some(Pulled::Ended(_)) => {}
                    None => break,
                },
                _ = &mut grace => break,
            }
        }
        self.pulls = SelectAll::new();
    }

    /// After a failed pull the consumer (or its stream) may be gone, e.g. after a server lost its
    /// store: create it again. Errors here just mean the server is still unreachable.
    async fn recover_consumer(&mut self) {
        let config = self.connection.config();
        if let Err(err) = topology::ensure_streams(&self.connection.jetstream, config).await {
            tracing::debug!("streams not reachable yet: {err}");
            return;
        }
        match topology::ensure_consumer(&self.connection.jetstream, config).await {
            Ok(consumer) => self.consumer = consumer,
            Err(err) => tracing::debug!("consumer not reachable yet: {err}"),
        }
    }

    async fn shut_down(mut self) -> StopReport {
        let timeout = self.connection.config().shutdown_timeout;
        let drained = tokio::time::timeout(timeout, async {
            while self.running.join_next().await.is_some() {}
        })
        .await;
        let abandoned = self.running.len();
        if drained.is_err() {
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

/// Resolves once a stop is requested. A worker whose [`Worker`] handle was dropped without a stop
/// (its JavaScript object was garbage-collected) keeps running: only an explicit stop ends it.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    if stopped.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
