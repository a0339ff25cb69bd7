//! Publishing tasks: every task is encoded, size-checked, published with its id as the
//! `Nats-Msg-Id` (so a re-send is stored once) and confirmed by JetStream before the call
//! resolves. Tasks with the producer's own id take more steps, written in
//! [`crate::lifecycle::enqueue`], which also holds the entry points (`enqueue`, `enqueue_batch`).
//!
//! A delayed task (`run_at`) is published the same way, as a schedule message on its own subject
//! (see [`crate::schedules`]); plain tasks take the same path as before, unchanged.
//!
//! A batch is checked whole before anything is sent, then pipelined: up to [`PUBLISH_WINDOW`]
//! publishes are in flight at once and every acknowledgement is awaited. A publish that gets no
//! answer (outage, leader election) is re-sent with the same id until `enqueueTimeout` runs out.

use std::time::Duration;

use async_nats::header::{NATS_SCHEDULE, NATS_SCHEDULE_TARGET};
use async_nats::jetstream::{
    self,
    context::{PublishAckFuture, PublishErrorKind},
    message::PublishMessage,
    publish::PublishAck,
    ErrorCode,
};
use bytes::Bytes;
use futures::{stream::FuturesOrdered, StreamExt};
use tokio::time::Instant;

use crate::{
    config::{backoff::Backoff, Config},
    envelope::{self, Task},
    error::{Error, Result, API_TIMEOUT},
    hops::{self, Hop},
    nats::connection::Connection,
    schedules,
};

/// Publishes of one batch in flight at once (and ids claimed at once, [`crate::ids`]).
pub const PUBLISH_WINDOW: usize = 1_024;
/// What the `Nats-Msg-Id` header adds to a message, besides the id itself.
const HEADER_OVERHEAD: usize = 64;
/// Pause before re-sending a publish that got no answer.
const RESEND_DELAY: Duration = Duration::from_millis(250);

/// A task to enqueue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewTask {
    /// The payload (JSON text for tasks from JavaScript).
    pub data: Bytes,
    /// A JSON object of user metadata, or empty.
    pub metadata: Bytes,
    /// When the task becomes available to workers, ms since the epoch; `None`: at once. Needs
    /// `options.schedules`. A time in the past makes it available at once.
    pub run_at: Option<i64>,
    /// The producer's own task id ([`validate_task_id`]); `None`: a new UUIDv7.
    pub id: Option<String>,
    /// The task's own `maxRetries`; `None`: the worker's option applies.
    pub max_retries: Option<u32>,
    /// The task's own retry backoff; `None`: the worker's option applies.
    pub backoff: Option<Backoff>,
    /// The W3C trace context of the enqueueing code ([`crate::trace_context::checked`]).
    pub trace: Option<Box<crate::envelope::proto::TraceContext>>,
    /// How `data` is encoded ([`crate::content_type::validate`]); `None`: JSON.
    pub content_type: Option<String>,
    /// The task's name in a queue of several task types
    /// ([`crate::content_type::validate_name`]); `None`: none.
    pub name: Option<String>,
    /// The task's priority, 1 (most urgent) to 10, on a queue with `options.priorities`;
    /// `None`: the default ([`crate::layout::DEFAULT_PRIORITY`]).
    pub priority: Option<u8>,
    /// The subject the task is routed to, in the queue's subject tree (`subject: '<root>.>'`);
    /// `None`: the queue's subject (the tree's root).
    pub subject: Option<String>,
}

impl NewTask {
    /// This task, available to workers at `run_at` (ms since the epoch).
    pub fn at(self, run_at: i64) -> Self {
        NewTask {
            run_at: Some(run_at),
            ..self
        }
    }
}

/// A task's own `maxRetries`: an integer from 0 to 2^32 − 1.
pub fn checked_max_retries(n: f64) -> Result<u32> {
    if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(Error::InvalidTask(format!(
            "task.maxRetries must be an integer from 0 to {}, got {n}",
            u32::MAX
        )))
    }
}

/// The longest task id a producer may choose, in bytes.
pub const MAX_TASK_ID_LEN: usize = 256;

/// A producer's own task id: 1 to [`MAX_TASK_ID_LEN`] bytes, no whitespace or control
/// characters (it travels as the `Nats-Msg-Id` header, and is shown in logs).
pub fn validate_task_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_TASK_ID_LEN {
        return Err(Error::InvalidTask(format!(
            "a task id must be 1 to {MAX_TASK_ID_LEN} bytes long, got {} bytes",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidTask(format!(
            "a task id may not contain whitespace or control characters, got {c:?}"
        )));
    }
    Ok(())
}

/// The header naming the task a message holds, when `Nats-Msg-Id` does not.
pub const ID_HEADER: &str = "Protoqueue-Id";

/// One encoded message, ready to publish.
pub(crate) struct Outgoing {
    pub(crate) id: String,
    /// The `Nats-Msg-Id` when it is not the id (a task with its own id: [`crate::ids::message_id`]).
    pub(crate) message_id: Option<String>,
    payload: Bytes,
    /// Set for a delayed task: published as a schedule on its own subject.
    delayed: Option<Box<Delayed>>,
    /// The producer chose the id: it is deduplicated through the id index ([`crate::ids`]).
    pub(crate) custom_id: bool,
    /// Where the task is stored, when not on the publisher's subject (a priority level).
    subject: Option<String>,
    /// Whether it names its id in [`ID_HEADER`] (a delayed task always does).
    pub(crate) id_header: bool,
}

/// Where and when a delayed task's schedule goes.
struct Delayed {
    subject: String,
    /// The `Nats-Schedule` header: `@at <RFC 3339>`.
    schedule: String,
    /// When it is due, ms since the epoch ([`schedules::DUE_HEADER`]).
    due: String,
}

/// Publishes tasks without ids of their own, pipelined; resolves to their ids in input order
/// once every one is stored, or fails with the first failure (the tasks acknowledged before it
/// stay enqueued).
pub(crate) async fn publish_all(
    publisher: &Publisher<'_>,
    outgoing: Vec<Outgoing>,
) -> Result<Vec<String>> {
    let mut in_flight = FuturesOrdered::new();
    let mut ids = Vec::with_capacity(outgoing.len());
    for message in outgoing {
        while in_flight.len() >= PUBLISH_WINDOW {
            if let Some(result) = in_flight.next().await {
                ids.push(result?);
            }
        }
        let sent = publisher.send(&message).await?;
        in_flight.push_back(publisher.confirm(message, sent));
    }
    while let Some(result) = in_flight.next().await {
        ids.push(result?);
    }
    Ok(ids)
}

/// Publishes tasks (without ids of their own) that were given together but stand alone (single
/// `enqueue` calls of one event-loop turn): each is published (pipelined with the others) and
/// confirmed on its own, so one bad or unconfirmed task fails only itself. Results are in input
/// order.
pub(crate) async fn publish_each(
    publisher: &Publisher<'_>,
    encoded: Vec<Result<Outgoing>>,
) -> Vec<Result<String>> {
    let mut results: Vec<Option<Result<String>>> = Vec::with_capacity(encoded.len());
    let mut in_flight = FuturesOrdered::new();
    hops::mark(Hop::Connected);
    for (index, message) in encoded.into_iter().enumerate() {
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                results.push(Some(Err(err)));
                continue;
            }
        };
        while in_flight.len() >= PUBLISH_WINDOW {
            if let Some((at, result)) = in_flight.next().await {
                results[at] = Some(result);
            }
        }
        results.push(None);
        match publisher.send(&message).await {
            Ok(sent) => {
                let confirmed = publisher.confirm(message, sent);
                in_flight.push_back(async move {
                    let result = confirmed.await;
                    hops::mark(Hop::Acked);
                    (index, result)
                })
            }
            Err(err) => results[index] = Some(Err(err)),
        }
        hops::mark(Hop::Handed);
    }
    while let Some((at, result)) = in_flight.next().await {
        results[at] = Some(result);
    }
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(Error::Nats("enqueue lost its result".into()))))
        .collect()
}

/// Encodes every task, or fails with the first that cannot be (nothing is sent then).
pub(crate) fn encode_all(connection: &Connection, tasks: Vec<NewTask>) -> Result<Vec<Outgoing>> {
    encode_each(connection, tasks).collect()
}

/// Encodes each task on its own: one result per task, in order.
pub(crate) fn encode_each(
    connection: &Connection,
    tasks: Vec<NewTask>,
) -> impl Iterator<Item = Result<Outgoing>> + '_ {
    let config = connection.config();
    let max = connection.max_payload();
    let now = envelope::now_ms();
    tasks.into_iter().map(move |task| {
        let custom_id = task.id.is_some();
        let id = match task.id {
            Some(id) => {
                validate_task_id(&id)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let run_at = task.run_at;
        let subject = match (task.priority, task.subject) {
            (None, None) => None,
            (priority, routed) => {
                let routed = match routed {
                    Some(subject) => crate::layout::routed(config, &subject)?,
                    None => config.subject.clone(),
                };
                let level = match priority {
                    Some(level) => crate::layout::checked_priority(config, f64::from(level))?,
                    None => crate::layout::DEFAULT_PRIORITY,
                };
                Some(crate::layout::stored_subject(config, &routed, level))
                    .filter(|subject| *subject != config.subject)
            }
        };
        let content_type = match &task.content_type {
            Some(content_type) => {
                crate::content_type::validate(content_type)?;
                content_type.as_str()
            }
            None => envelope::JSON,
        };
        let mut envelope = Task::create(id.clone(), task.data, content_type, task.metadata, now);
        if let Some(name) = task.name {
            crate::content_type::validate_name(&name)?;
            envelope.name = name;
        }
        envelope.custom_id = custom_id;
        envelope.max_retries = task.max_retries;
        envelope.backoff = task.backoff.map(Into::into);
        envelope.trace_context = task.trace;
        let mut message = Outgoing::checked(id, envelope.to_bytes(), max)?;
        message.custom_id = custom_id;
        message.subject = subject;
        match run_at {
            None => Ok(message),
            Some(at) => message.delayed(config, at, max),
        }
    })
}

impl Outgoing {
    /// Whether it is published as a delayed task's schedule.
    pub(crate) fn is_delayed(&self) -> bool {
        self.delayed.is_some()
    }

    /// Stores it under `message_id` (not its id), naming its id in [`ID_HEADER`] when the
    /// server's `max_payload` leaves room for it (a task stored again: a retry, a requeue).
    pub(crate) fn stored_again_as(&mut self, message_id: String, max_payload: usize) {
        let size = self.payload.len() + HEADER_OVERHEAD * 2 + message_id.len() + self.id.len();
        self.id_header = size <= max_payload;
        self.message_id = Some(message_id);
    }

    /// A message with its id, refused when it would exceed the server's `max_payload`.
    pub(crate) fn checked(id: String, payload: Bytes, max_payload: usize) -> Result<Self> {
        let size = payload.len() + HEADER_OVERHEAD + id.len();
        if size > max_payload {
            return Err(Error::PayloadTooLarge {
                size,
                max: max_payload,
            });
        }
        Ok(Outgoing {
            id,
            message_id: None,
            payload,
            delayed: None,
            custom_id: false,
            subject: None,
            id_header: false,
        })
    }

    /// This message as a delayed task's schedule, due at `at` (ms since the epoch).
    fn delayed(mut self, config: &Config, at: i64, max_payload: usize) -> Result<Self> {
        schedules::require_enabled(config, "a task with delay or runAt")?;
        if at <= envelope::now_ms() {
            // Due already (`delay: 0`, a past `runAt`): stored as a task at once, not left to
            // the server's next schedule pass.
            return Ok(self);
        }
        let subject = schedules::delayed_subject(config, &self.id);
        let schedule = format!("@at {}", schedules::rfc3339(at));
        let size = self.payload.len()
            + HEADER_OVERHEAD * 4
            + self.id.len() * 2
            + subject.len()
            + schedule.len()
            + self.subject.as_ref().unwrap_or(&config.subject).len();
        if size > max_payload {
            return Err(Error::PayloadTooLarge {
                size,
                max: max_payload,
            });
        }
        let due = at.to_string();
        self.delayed = Some(Box::new(Delayed {
            subject,
            schedule,
            due,
        }));
        Ok(self)
    }
}

/// Publishes to one subject until one deadline, re-sending what the server does not confirm.
pub(crate) struct Publisher<'a> {
    connection: &'a Connection,
    subject: String,
    timeout: Duration,
    deadline: Instant,
}

impl<'a> Publisher<'a> {
    /// A publisher to the queue's subject, bounded by `enqueueTimeout` from now.
    pub(crate) fn new(connection: &'a Connection) -> Self {
        let config = connection.config();
        Self::to(connection, config.subject.clone())
    }

    /// A publisher to any subject of the connection, bounded by `enqueueTimeout` from now.
    pub(crate) fn to(connection: &'a Connection, subject: String) -> Self {
        let timeout = connection.config().enqueue_timeout;
        Publisher {
            connection,
            subject,
            timeout,
            deadline: Instant::now() + timeout,
        }
    }

    /// Publishes one message and waits for its acknowledgement.
    pub(crate) async fn publish(&self, message: Outgoing) -> Result<String> {
        let sent = self.send(&message).await?;
        self.confirm(message, sent).await
    }

    /// Hands one publish to the client (it is buffered while the connection is down).
    pub(crate) async fn send(&self, message: &Outgoing) -> Result<PublishAckFuture> {
        let mut publish = PublishMessage::build()
            .payload(message.payload.clone())
            .message_id(message.message_id.as_ref().unwrap_or(&message.id));
        // A task fired by a schedule (which drops `Nats-Msg-Id`) or stored again for a retry
        // names its id in a header of its own: `getTask` finds it in the stream.
        if message.id_header || message.delayed.is_some() {
            publish = publish.header(ID_HEADER, message.id.as_str());
        }
        let target = message.subject.as_ref().unwrap_or(&self.subject);
        let (subject, publish) = match &message.delayed {
            None => (target.clone(), publish),
            // The schedule's `Nats-Msg-Id` stores a re-sent enqueue once; its subject (one per
            // task, rolled up by the server) keeps a later re-send from adding a second one.
            Some(delayed) => (
                delayed.subject.clone(),
                publish
                    .header(NATS_SCHEDULE, delayed.schedule.as_str())
                    .header(NATS_SCHEDULE_TARGET, target.as_str())
                    .header(schedules::DUE_HEADER, delayed.due.as_str()),
            ),
        };
        if self.connection.is_closed() {
            return Err(self.cut_off());
        }
        let send = self.connection.jetstream.send_publish(subject, publish);
        match tokio::time::timeout_at(self.deadline, self.connection.unless_closed(send)).await {
            Ok(None) => Err(self.cut_off()),
            Ok(Some(Ok(ack))) => Ok(ack),
            Ok(Some(Err(_))) if self.connection.is_closed() => Err(self.cut_off()),
            Ok(Some(Err(err))) => Err(publish_error(err)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Awaits the acknowledgement of a sent publish, re-sending it (same id, so it is stored
    /// once) while the server does not answer, until the deadline.
    async fn confirm(&self, message: Outgoing, sent: PublishAckFuture) -> Result<String> {
        self.confirm_ack(&message, sent).await?;
        Ok(message.id)
    }

    /// Publishes one message and returns the server's acknowledgement (its stream sequence).
    pub(crate) async fn publish_ack(&self, message: &Outgoing) -> Result<PublishAck> {
        let sent = self.send(message).await?;
        self.confirm_ack(message, sent).await
    }

    /// The connection this publisher sends on.
    pub(crate) fn connection(&self) -> &'a Connection {
        self.connection
    }

    /// When this publisher gives up.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Awaits the acknowledgement of a sent publish, re-sending it while the server does not
    /// answer, until the deadline.
    pub(crate) async fn confirm_ack(
        &self,
        message: &Outgoing,
        mut sent: PublishAckFuture,
    ) -> Result<PublishAck> {
        loop {
            // The client bounds each wait by its own request timeout; a timer of ours as well
            // matters only when the deadline comes sooner (each timer set costs the runtime a
            // wake-up syscall, one per task).
            let confirmed = self
                .connection
                .unless_closed(std::future::IntoFuture::into_future(sent));
            let answer = if self.deadline.saturating_duration_since(Instant::now()) > API_TIMEOUT {
                Ok(confirmed.await)
            } else {
                tokio::time::timeout_at(self.deadline, confirmed).await
            };
            let err = match answer {
                Ok(None) => return Err(self.cut_off()),
                Ok(Some(Ok(ack))) => return Ok(ack),
                Ok(Some(Err(_))) if self.connection.is_closed() => return Err(self.cut_off()),
                Ok(Some(Err(err))) => err,
                Err(_) => return Err(self.timed_out()),
            };
            if !is_transient(err.kind()) {
                return Err(publish_error(err));
            }
            tracing::debug!(id = %message.id, "publish not confirmed ({err}); re-sending");
            tokio::time::sleep_until(self.deadline.min(Instant::now() + RESEND_DELAY)).await;
            sent = Box::pin(self.send(message)).await?;
        }
    }

    /// `disconnect()` closed the connection before the server confirmed: like a timeout, the
    /// message may still have been stored.
    fn cut_off(&self) -> Error {
        Error::Timeout {
            operation: "publish".into(),
            after: self
                .timeout
                .saturating_sub(self.deadline.saturating_duration_since(Instant::now())),
            hint: " waiting for JetStream to confirm, when disconnect() closed the connection \
                   (after shutdownTimeout); the task may still be stored",
        }
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            operation: "publish".into(),
            after: self.timeout,
            hint: " waiting for JetStream to confirm; is the NATS server reachable? \
                   (raise options.enqueueTimeout to wait longer)",
        }
    }
}

/// Errors that a re-send can cure: no answer, a broken connection, no stream leader for now.
fn is_transient(kind: PublishErrorKind) -> bool {
    matches!(
        kind,
        PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::StreamNotFound
    )
}

/// What a refused publish means for the user: too large (for the server's `max_payload`, or the
/// stream's `max_msg_size`), or any other NATS error.
fn publish_error(err: jetstream::context::PublishError) -> Error {
    let server_code = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code);
    match err.kind() {
        PublishErrorKind::MaxPayloadExceeded => Error::PayloadRefused(err.to_string()),
        _ if server_code == Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => {
            Error::PayloadRefused(err.to_string())
        }
        _ => Error::nats("publish failed", err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_over_max_payload_is_payload_too_large() {
        let err = jetstream::context::PublishError::new(PublishErrorKind::MaxPayloadExceeded);
        assert_eq!(publish_error(err).code(), "ERR_PQ_PAYLOAD_TOO_LARGE");
        let err = jetstream::context::PublishError::new(PublishErrorKind::Other);
        assert_eq!(publish_error(err).code(), "ERR_PQ_NATS");
    }
}
