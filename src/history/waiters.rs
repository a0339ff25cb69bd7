//! Waiting for tasks to end (`waitFor`): however many waiters a queue object has, one ordered
//! consumer of its history stream hears every record as workers write it, and hands each to
//! the waiters of its task. The consumer exists only while someone waits, and [`LINGER`] after
//! (the server removes it 30 s after the last pull).
//!
//! Why no record is missed: the consumer starts after the last record stored before the first
//! waiter came, and a waiter reads its task's record (from the stream leader) after it joined.
//! A record stored before a waiter joined is read; one stored after is delivered by the
//! consumer, which cannot deliver it before it is stored. (A core subscription would not do:
//! the server routes a message to subscribers before the stream stores it, so a record could
//! reach the server before the subscription and be stored after the read.) The ordered
//! consumer also picks up where it left off after a reconnect or a server restart.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use tokio::sync::{oneshot, Mutex};

use super::Record;
use crate::{
    error::{Error, Result},
    nats::connection::Connection,
};

/// How long the consumer outlives its last waiter: one waiter after the other (a sequential
/// `enqueueAndWait`) shares one consumer instead of making one each (the server keeps a
/// dropped one a while: a thousand a second would pile up).
const LINGER: Duration = Duration::from_secs(10);

type Senders = HashMap<String, Vec<(u64, oneshot::Sender<Record>)>>;

/// The waiters of one queue object.
#[derive(Clone)]
pub struct Waiters {
    connection: Connection,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    waiting: Senders,
    next: u64,
    /// Whether the listener runs (it ends when no one waits).
    listening: bool,
}

impl Waiters {
    pub fn new(connection: Connection) -> Self {
        Waiters {
            connection,
            inner: Arc::default(),
        }
    }

    /// Waits up to `timeout` for task `id`'s record: at once when it has one already.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Record> {
        let (token, mut receiver) = self.register(id).await?;
        let outcome = match super::read(&self.connection, id).await {
            Ok(Some(record)) => Ok(record),
            Ok(None) => match tokio::time::timeout(timeout, &mut receiver).await {
                Ok(Ok(record)) => Ok(record),
                Ok(Err(_)) => Err(Error::NotConnected),
                Err(_) => Err(Error::Timeout {
                    operation: format!("waiting for task {id:?}").into(),
                    after: timeout,
                    hint: " (it has not ended: waiting, delayed, running or retrying; or unknown)",
                }),
            },
            Err(err) => Err(err),
        };
        self.unregister(id, token).await;
        outcome
    }

    /// Adds a waiter for `id`, starting the listener when it is the first.
    async fn register(&self, id: &str) -> Result<(u64, oneshot::Receiver<Record>)> {
        let mut inner = self.inner.lock().await;
        if !inner.listening {
            let records = self.listen_from_now().await?;
            inner.listening = true;
            tokio::spawn(listen(self.clone(), records));
        }
        inner.next += 1;
        let token = inner.next;
        let (sender, receiver) = oneshot::channel();
        inner
            .waiting
            .entry(id.to_owned())
            .or_default()
            .push((token, sender));
        Ok((token, receiver))
    }

    /// An ordered consumer of every record stored from now on.
    async fn listen_from_now(&self) -> Result<async_nats::jetstream::consumer::pull::Ordered> {
        const LISTENING: &str = "listening for task records";
        let config = self.connection.config();
        let stream = match super::stream_of(&self.connection).await? {
            Some(stream) => stream,
            // Opened as it is (`createStreams: false`, the command line) or deleted since.
            None => {
                return Err(Error::ResultsOff(format!(
                    "queue {:?} keeps no task outcomes (no {:?} stream): its workers need \
                     options.results",
                    config.stream_name,
                    config.history_stream()
                )))
            }
        };
        let last = stream.cached_info().state.last_sequence;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: super::layout::every_record(config),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|err| Error::nats(LISTENING, err))?;
        consumer
            .messages()
            .await
            .map_err(|err| Error::nats(LISTENING, err))
    }

    async fn unregister(&self, id: &str, token: u64) {
        let mut inner = self.inner.lock().await;
        if let Some(senders) = inner.waiting.get_mut(id) {
            senders.retain(|(t, _)| *t != token);
            if senders.is_empty() {
                inner.waiting.remove(id);
            }
        }
    }

    /// Hands `record` to the waiters of its task.
    async fn deliver(&self, record: Record) {
        let senders = self.inner.lock().await.waiting.remove(&record.id);
        for (_, sender) in senders.into_iter().flatten() {
            let _ = sender.send(record.clone());
        }
    }
}

/// Hears records until no one waits, or the connection closes.
async fn listen(waiters: Waiters, mut records: async_nats::jetstream::consumer::pull::Ordered) {
    let config = waiters.connection.config().clone();
    let mut idle = tokio::time::interval(Duration::from_secs(1));
    let mut idle_since = None;
    loop {
        tokio::select! {
            message = records.next() => match message {
                // The subject says whose record it is; a record naming another task is not one.
                Some(Ok(message)) => match (super::id_of(&config, message.subject.as_str()), super::parse(&message.payload)) {
                    (Some((ending, id)), Some(record)) if record.id == id && record.state == ending => waiters.deliver(record).await,
                    // A requeued task's old record, marked: its outcome is to come.
                    (Some(_), Some(record)) if record.state == super::Ending::Requeued => {}
                    _ => tracing::debug!(subject = %message.subject, "skipping a message that is not a task record"),
                },
                // The ordered consumer recreates itself where it left off.
                Some(Err(err)) => tracing::debug!("listening for task records: {err}"),
                None => break,
            },
            _ = idle.tick() => {}
            () = waiters.connection.closed() => break,
        }
        let mut inner = waiters.inner.lock().await;
        if !inner.waiting.is_empty() {
            idle_since = None;
        } else if idle_since
            .get_or_insert_with(tokio::time::Instant::now)
            .elapsed()
            >= LINGER
        {
            // No one waited for a while: no consumer (the next waiter starts one).
            inner.listening = false;
            return;
        }
    }
    // The connection closed: dropping the senders answers the waiters `ERR_PQ_NOT_CONNECTED`.
    let mut inner = waiters.inner.lock().await;
    inner.listening = false;
    inner.waiting.clear();
}
