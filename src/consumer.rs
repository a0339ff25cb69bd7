//! The worker: pulls from the queue's durable consumer, runs up to `batchSize` deliveries at once
//! through an [`Executor`], resumes by itself after connection loss, and on stop drains cleanly.
//!
//! Each pull asks for exactly as many messages as there are free slots and expires after
//! [`PULL_EXPIRY`], so a lost pull request (server restart, network fault) costs a few seconds at
//! most and messages are never buffered beyond what the worker can run at once.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::{
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

use crate::{
    connection::Connection,
    error::Result,
    executor::{settle_confirmed, Executor, Handler},
    topology::{self, Consumer},
};

/// How long one pull request waits at the server for messages.
pub const PULL_EXPIRY: Duration = Duration::from_secs(2);
/// How long a stopping worker keeps listening for messages already sent to its open pull request.
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
        let pull_loop = PullLoop {
            executor: Executor::new(connection.clone(), handler),
            slots: Arc::new(Semaphore::new(connection.config().batch_size as usize)),
            connection,
            consumer,
            stopped,
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

struct PullLoop {
    connection: Connection,
    consumer: Consumer,
    executor: Executor,
    slots: Arc<Semaphore>,
    stopped: watch::Receiver<bool>,
    running: JoinSet<()>,
}

impl PullLoop {
    async fn run(mut self) -> StopReport {
        let mut errors = 0u32;
        while !*self.stopped.borrow() {
            let first = tokio::select! {
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = stop_requested(&mut self.stopped) => break,
            };
            match self.pull(first).await {
                Ok(()) => errors = 0,
                Err(err) => {
                    errors += 1;
                    let backoff = (Duration::from_millis(100) * errors).min(MAX_ERROR_BACKOFF);
                    tracing::warn!("pull failed ({err}); retrying in {}ms", backoff.as_millis());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop_requested(&mut self.stopped) => break,
                    }
                    self.recover_consumer().await;
                }
            }
            while self.running.try_join_next().is_some() {}
        }
        self.shut_down().await
    }

    /// One pull request for as many messages as there are free slots; each message is run as
    /// it arrives. Returns when the request is fulfilled or expires (or on stop, after handing
    /// back what still arrives for it).
    async fn pull(&mut self, first: OwnedSemaphorePermit) -> Result<(), async_nats::Error> {
        let wanted = self.slots.available_permits() + 1;
        let mut batch = self
            .consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRY)
            .messages()
            .await?;
        let mut first = Some(first);
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = stop_requested(&mut self.stopped) => break,
            };
            let message = match next {
                None => return Ok(()),
                Some(Err(err)) => return Err(err),
                Some(Ok(message)) => message,
            };
            let permit = match first.take() {
                Some(permit) => permit,
                None => self.slots.clone().acquire_owned().await?,
            };
            let executor = self.executor.clone();
            self.running.spawn(async move {
                executor.execute(message).await;
                drop(permit);
            });
        }
        // Stopping with a pull request open: messages already on their way may still arrive.
        // Hand each back at once so another worker gets it now rather than after `ackWait`.
        // Dropping the batch then unsubscribes, and the server does not deliver to a pull
        // request nobody listens to any more.
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = batch.next() => match next {
                    Some(Ok(message)) => self.hand_back(message).await,
                    _ => break,
                },
                _ = &mut grace => break,
            }
        }
        Ok(())
    }

    async fn hand_back(&self, message: jetstream::Message) {
        settle_confirmed(&self.connection, &message, AckKind::Nak(None)).await;
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
