//! The worker: pulls from the queue's durable consumer, runs up to `batchSize` deliveries at once
//! through an [`Executor`], resumes by itself after connection loss, and on stop drains cleanly.
//!
//! Every message the worker asks for has a free slot waiting for it ([`Puller`]), so messages are
//! never buffered beyond what the worker can run at once and none waits for a slot while its
//! `ackWait` runs. To keep the pipe full, a new pull goes out as soon as half the slots are free,
//! while earlier pulls are still open; a worker with nothing requested pulls for one free slot at
//! once.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::AckKind;
use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
    time::Instant,
};

use crate::{
    acks::AckSender,
    connection::Connection,
    error::{Error, Result},
    executor::{settle_confirmed, Executor, Handler},
    pull::{Pulled, Puller},
    topology,
};

/// How long a stopping worker keeps listening for messages already sent to its open pull requests.
const STOP_GRACE: Duration = Duration::from_millis(200);
/// How long a stopping worker waits for its queued acks to be handed to the client.
const ACKS_SENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between attempts to pull after errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(2);

/// A running worker of one queue.
pub struct Worker {
    stop: watch::Sender<bool>,
    run: tokio::task::JoinHandle<StopReport>,
    /// The success-ack sender; it ends once every delivery is done with it.
    acks_sent: tokio::task::JoinHandle<()>,
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
        topology::ensure_consumer(&connection.jetstream, connection.config()).await?;
        let puller = Puller::open(connection.clone())
            .await
            .map_err(|err| Error::nats("subscribing the worker's inbox", err))?;
        let (stop, stopped) = watch::channel(false);
        let batch_size = connection.config().batch_size as usize;
        let (acks, acks_sent) = AckSender::start(connection.client.clone());
        let pull_loop = PullLoop {
            executor: Executor::new(connection.clone(), handler, acks),
            slots: Arc::new(Semaphore::new(batch_size)),
            pull_threshold: batch_size.div_ceil(2),
            connection,
            puller,
            stopped,
            running: JoinSet::new(),
        };
        let run = tokio::spawn(pull_loop.run());
        Ok(Worker {
            stop,
            run,
            acks_sent,
        })
    }

    /// Stops pulling, hands back messages that arrive meanwhile, and waits (up to
    /// `shutdownTimeout`) for the deliveries in flight to settle.
    pub async fn stop(self) -> StopReport {
        let _ = self.stop.send(true);
        let report = self.run.await.unwrap_or_else(|err| {
            tracing::warn!("worker task ended abnormally: {err}");
            StopReport::default()
        });
        // Acks queued by the last deliveries go out before the connection may close.
        if tokio::time::timeout(ACKS_SENT_TIMEOUT, self.acks_sent)
            .await
            .is_err()
        {
            tracing::warn!("queued acks not sent in time; the server will redeliver those tasks");
        }
        report
    }
}

struct PullLoop {
    connection: Connection,
    puller: Puller,
    executor: Executor,
    slots: Arc<Semaphore>,
    /// How many free slots a pull waits for while another pull is open.
    pull_threshold: usize,
    stopped: watch::Receiver<bool>,
    running: JoinSet<()>,
}

impl PullLoop {
    async fn run(mut self) -> StopReport {
        let mut errors = 0u32;
        let mut paused_until: Option<Instant> = None;
        loop {
            let wanted = if self.puller.outstanding() == 0 {
                1
            } else {
                self.pull_threshold
            };
            let paused = paused_until.is_some_and(|until| Instant::now() < until);
            let resume_at = paused_until.unwrap_or_else(Instant::now);
            let failure = tokio::select! {
                biased;
                _ = stop_requested(&mut self.stopped) => break,
                pulled = self.puller.next(), if !self.puller.is_closed() => match pulled {
                    Pulled::Message(message, slot) => {
                        errors = 0;
                        let executor = self.executor.clone();
                        self.running.spawn(async move {
                            executor.execute(message, slot).await;
                        });
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
                    Pulled::Failed(reason) => Some(reason),
                },
                _ = tokio::time::sleep_until(resume_at), if paused => {
                    paused_until = None;
                    None
                }
                claimed = self.slots.clone().acquire_many_owned(wanted as u32), if !paused => {
                    let Ok(mut slots) = claimed else { break };
                    // Take every slot that is free now, not just the minimum.
                    let free = self.slots.available_permits() as u32;
                    if let Ok(more) = self.slots.clone().try_acquire_many_owned(free) {
                        slots.merge(more);
                    }
                    self.puller.request(slots).await.err().map(|err| err.to_string())
                }
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
        self.executor.confirm_acks();
        self.hand_back_late_arrivals().await;
        self.shut_down().await
    }

    /// Stopping with pull requests open: messages already on their way may still arrive. Hand
    /// each back at once so another worker gets it now rather than after `ackWait`. Dropping the
    /// puller then unsubscribes its inbox, and the server does not deliver to a pull request
    /// nobody listens to any more.
    async fn hand_back_late_arrivals(&mut self) {
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        while self.puller.outstanding() > 0 {
            tokio::select! {
                pulled = self.puller.next() => match pulled {
                    Pulled::Message(message, _) | Pulled::Unrequested(message) => {
                        settle_confirmed(&self.connection, &message, AckKind::Nak(None)).await;
                    }
                    Pulled::Status => {}
                    Pulled::Failed(_) => break,
                },
                _ = &mut grace => break,
            }
        }
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
        if let Err(err) = topology::ensure_consumer(&self.connection.jetstream, config).await {
            tracing::debug!("consumer not reachable yet: {err}");
            return;
        }
        if self.puller.is_closed() {
            match Puller::open(self.connection.clone()).await {
                Ok(puller) => self.puller = puller,
                Err(err) => tracing::debug!("inbox not subscribed yet: {err}"),
            }
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
