//! Cancelling a task that is not delayed (`cancel(id)`): waiting, retrying or running, from any
//! process.
//!
//! Beside the task stream, a stream `<streamName>_CANCELS` holds one **cancel mark** per task
//! id on the subject `protoqueue.cancels.<streamName>.<id as hex>`: "cancel the task with this
//! id enqueued before `at`". Every worker follows the marks ([`watch::Cancels`]): a task marked
//! when a worker takes it ends `cancelled` without running; a task marked while its handler runs
//! has its handler's `task.signal` aborted and ends `cancelled` — unless its handler settled
//! first: whichever the worker holding it sees first decides, so a task ends in exactly one of
//! the two. A cancelled task is terminated (never retried, never dead-lettered); with
//! `options.results` its record says `cancelled`.
//!
//! Marks are kept [`MARK_KEPT`]: a task still waiting after that runs. A mark is compared with
//! when the task's life began ([`crate::envelope::Task::life_began`]: its enqueue, the
//! producer's clock, or its last requeue from the dead letters): a task enqueued again with the
//! same own id after the cancel, or requeued after it, is a new task, not cancelled.
//!
//! `cancel(id)` asks the live workers ([`crate::presence`]) through the mark: each answers once,
//! on an inbox the mark names, whether it cancelled the task or does not hold it.

pub mod watch;

use std::time::Duration;

use async_nats::jetstream::stream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{
    config::{
        names::{id_in_subject, id_subject},
        Config,
    },
    error::{Error, Result},
    nats::connection::Connection,
    shape::side_stream,
};

/// [`crate::shape::MARKER_KEY`]'s value on a cancels stream.
pub const MARK_CANCELS: &str = "cancels";
/// How long a cancel mark is kept: a task cancelled while waiting that is still waiting after
/// this long runs after all.
pub const MARK_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most marks kept (the oldest go first): a bound on what every worker holds in memory.
pub const MAX_MARKS: i64 = 1_000_000;
/// How long `cancel()` waits for the live workers' answers. A worker that was killed is still
/// listed for a while and never answers: the cancel then answers after this long.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The cancels stream of `config`'s queue: one mark per task subject, kept [`MARK_KEPT`].
pub fn stream_config(config: &Config) -> stream::Config {
    stream::Config {
        max_messages: MAX_MARKS,
        max_age: MARK_KEPT,
        ..side_stream(
            config,
            config.cancels_stream(),
            config.cancels_prefix(),
            MARK_CANCELS,
            "cancel requests",
        )
    }
}

/// The mark subject of task `id`.
pub fn subject(config: &Config, id: &str) -> String {
    id_subject(config.cancels_prefix(), id)
}

/// The task id of a mark subject; `None` for a subject that is not one.
pub fn id_of(config: &Config, subject: &str) -> Option<String> {
    id_in_subject(&config.cancels_prefix(), subject)
}

/// A cancel request, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    pub id: String,
    /// When it was made, ms since the epoch (the canceller's clock): tasks of this id enqueued
    /// up to then are cancelled.
    pub at: i64,
    /// Where workers answer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

impl Mark {
    /// Whether it cancels a task of its id whose life began at `since`
    /// ([`crate::envelope::Task::life_began`]).
    pub fn covers(&self, since: i64) -> bool {
        since <= self.at
    }
}

/// A worker's answer to a mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Answer {
    /// It held the task and ended it cancelled (or will, at its next delivery: a retry).
    Cancelled,
    /// It held the task, but the task ended first (completed or dead-lettered).
    Finished,
    /// It does not hold the task.
    NotHere,
}

/// Sends `answer` to the canceller of `mark`, if it still listens (best effort).
pub async fn answer(connection: &Connection, mark: &Mark, answer: Answer) {
    let Some(reply) = &mark.reply else { return };
    let Ok(payload) = serde_json::to_vec(&answer) else {
        return;
    };
    if let Err(err) = connection
        .client
        .publish(reply.clone(), payload.into())
        .await
    {
        tracing::debug!(id = %mark.id, "cancel answer not sent: {err}");
    }
}

/// Creates the cancels stream, or finds it; with `createStreams: false`, only finds it.
pub async fn ensure_stream(connection: &Connection) -> Result<Option<stream::Stream>> {
    let config = connection.config();
    if config.create_streams {
        let stream = connection
            .jetstream
            .get_or_create_stream(stream_config(config))
            .await
            .map_err(|err| Error::nats("creating the cancels stream", err))?;
        return Ok(Some(stream));
    }
    crate::nats::stream_if_exists(
        &connection.jetstream,
        config.cancels_stream(),
        "opening the cancels stream",
    )
    .await
}

/// What became of a cancel request the workers were asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A worker cancelled the task (running, or marked for its next delivery).
    Cancelled,
    /// A worker held it, but it ended first.
    Finished,
    /// No worker holds it: it is waiting, or ended, or unknown (the mark stays for a waiting one).
    NotHeld,
}

/// Marks task `id` cancelled and asks the live task workers whether they hold it; also the
/// mark's time.
pub async fn mark(connection: &Connection, id: &str) -> Result<(Asked, i64)> {
    const MARKING: &str = "cancelling the task";
    let config = connection.config();
    if ensure_stream(connection).await?.is_none() {
        // `createStreams: false` and no worker of this version ever ran: nothing to cancel.
        return Ok((Asked::NotHeld, crate::envelope::now_ms()));
    }
    let workers = crate::presence::task_workers(connection).await?;
    let inbox = connection.client.new_inbox();
    let mut answers = connection
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|err| Error::nats(MARKING, err))?;
    let mark = Mark {
        id: id.to_owned(),
        at: crate::envelope::now_ms(),
        reply: Some(inbox),
    };
    let payload = serde_json::to_vec(&mark).map_err(|err| Error::Nats(err.to_string()))?;
    crate::nats::elections::while_unavailable("cancel()", || async {
        connection
            .jetstream
            .publish(subject(config, id), payload.clone().into())
            .await
            .map_err(|err| Error::nats(MARKING, err))?
            .await
            .map_err(|err| Error::nats(MARKING, err))
    })
    .await?;
    let mut not_here = 0;
    let mut asked = Asked::NotHeld;
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    while not_here < workers {
        let message = match tokio::time::timeout_at(deadline, answers.next()).await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => break,
        };
        match serde_json::from_slice::<Answer>(&message.payload) {
            Ok(Answer::Cancelled) => return Ok((Asked::Cancelled, mark.at)),
            Ok(Answer::Finished) => asked = Asked::Finished,
            Ok(Answer::NotHere) => not_here += 1,
            Err(err) => tracing::debug!("skipping a cancel answer that is not one: {err}"),
        }
    }
    Ok((asked, mark.at))
}

/// Cancels task `id` wherever it is (`cancel(id)`): `true` when it will not complete — a delayed
/// task removed before its time, a running task stopped, a task with its own id marked while
/// it waits or waits for a retry (the id index knows it is there); `false` when that cannot be
/// said: it ended first, or nothing is known of it. The mark stays either way, so a task with a
/// generated id (which no index knows) still waiting, or a delayed task firing as it is
/// cancelled, ends cancelled when a worker takes it.
pub async fn cancel(connection: &Connection, id: &str) -> Result<bool> {
    use crate::admin::schedules::{cancel_delayed, Unscheduled};
    crate::producer::validate_task_id(id)?;
    if cancel_delayed(connection, id).await? == Unscheduled::Removed {
        return Ok(true);
    }
    let (asked, at) = mark(connection, id).await?;
    let cancelled = match asked {
        Asked::Cancelled => true,
        Asked::Finished => false,
        // No worker runs it. An own id still held is a task that will be taken (and refused):
        // a worker releases the id of a task it completed before it stops listening for marks.
        Asked::NotHeld => crate::ids::held(connection, id).await?,
    };
    if cancelled {
        // Its own id is free at once, also while the task waits to be refused.
        crate::ids::cancelled(connection, id, at).await;
    }
    Ok(cancelled)
}

/// The newest cancel mark of task `id`, if one is kept (none when the queue has no cancels
/// stream).
pub async fn mark_of(connection: &Connection, id: &str) -> Result<Option<Mark>> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    const READING: &str = "reading the task's cancel mark";
    let config = connection.config();
    let Some(stream) =
        crate::nats::stream_if_exists(&connection.jetstream, config.cancels_stream(), READING)
            .await?
    else {
        return Ok(None);
    };
    match stream
        .get_last_raw_message_by_subject(&subject(config, id))
        .await
    {
        Ok(message) => Ok(serde_json::from_slice::<Mark>(&message.payload)
            .ok()
            .filter(|mark| mark.id == id)),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(Error::nats(READING, err)),
    }
}

/// Removes the mark of task `id` once it was acted on (best effort: marks expire).
pub async fn forget(connection: &Connection, id: &str) {
    let config = connection.config();
    let removal = crate::nats::purge_subject(
        &connection.jetstream,
        config.cancels_stream(),
        &subject(config, id),
        "removing a cancel mark",
    )
    .await;
    if let Err(err) = removal {
        tracing::debug!(%id, "cancel mark not removed (it expires): {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_covers_tasks_enqueued_up_to_its_time() {
        let mark = Mark {
            id: "a".into(),
            at: 1_000,
            reply: None,
        };
        assert!(mark.covers(999));
        assert!(mark.covers(1_000));
        assert!(!mark.covers(1_001));
    }

    #[test]
    fn marks_and_answers_round_trip() {
        let config = Config::new("S", "s").expect("config");
        for id in ["plain", "a b.c*>", "ünï"] {
            assert_eq!(id_of(&config, &subject(&config, id)).as_deref(), Some(id));
        }
        let text = serde_json::to_string(&Answer::NotHere).expect("json");
        assert_eq!(text, "\"notHere\"");
        let mark: Mark = serde_json::from_str(r#"{"id":"x","at":5}"#).expect("mark");
        assert_eq!(mark.reply, None);
    }
}
