//! The task history: what became of each finished task — its result, or why it failed — kept on
//! the server for `options.results.ttl`, so any process can wait for a task (`waitFor`) or look
//! it up (`getTask`).
//!
//! Beside the task stream, a stream `<streamName>_HISTORY` holds one record per task and ending
//! on the subject `protoqueue.history.<streamName>.<ending>.<id as hex>` (a task that ran again
//! after a requeue has its old record removed). Which endings are recorded, and for how long:
//! `options.results: { ttl }` records every ending; `options.keepCompleted` and
//! `options.keepFailed` (`{ age?, count? }`) record completed, and dead-lettered or cancelled,
//! tasks. Each record carries its own time to live (`Nats-TTL`, nats-server ≥ 2.11); a count is
//! kept by purging all but the newest records of the ending (JetStream's purge with `keep`),
//! by each worker at most once a second. Workers write a record before they
//! acknowledge the task, so a waiter never misses an outcome: a worker that dies in between
//! runs the task again and writes it again. A record that cannot be written never holds a task
//! back: the task completes, and the failure is logged.

pub mod layout;
pub mod listing;
pub mod lookup;
pub mod queued;
pub mod running;
pub mod waiters;
pub mod writer;

pub use layout::{
    any_subject, ending_filter, id_of, stream_config, subject, MARK_HISTORY, RESULTS_SINCE,
};
pub use writer::Writer;

use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    config::{Config, Keep},
    error::{Error, Result},
    nats::connection::Connection,
};

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Ending {
    /// Its handler succeeded.
    Completed,
    /// It failed for good and went to the dead-letter stream.
    DeadLettered,
    /// It was cancelled (`cancel(id)`) while waiting, retrying or running.
    Cancelled,
    /// It was dead-lettered, then requeued: its outcome is to come. Written over its old
    /// record when that cannot be removed (a history stream that denies purges); stands for no
    /// record.
    Requeued,
}

impl Ending {
    /// The endings a record tells.
    pub const ALL: [Ending; 3] = [Ending::Completed, Ending::DeadLettered, Ending::Cancelled];

    /// Its token in record subjects.
    pub fn token(self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::DeadLettered | Ending::Requeued => "deadLettered",
            Ending::Cancelled => "cancelled",
        }
    }

    /// The ending a subject token names.
    pub fn of_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|ending| ending.token() == token)
    }

    /// The option that keeps the records, and the tasks, of this ending: `keepCompleted` or
    /// `keepFailed`.
    fn keep_option(self, config: &Config) -> Option<Keep> {
        match self {
            Ending::Completed => config.keep_completed,
            Ending::DeadLettered | Ending::Cancelled | Ending::Requeued => config.keep_failed,
        }
    }

    /// How `config`'s workers keep records of this ending; `None`: they write none.
    pub fn kept(self, config: &Config) -> Option<Keep> {
        match (self.keep_option(config), config.results_ttl) {
            (None, None) => None,
            (None, ttl) => Some(Keep {
                age: ttl,
                count: None,
            }),
            (Some(keep), ttl) => Some(Keep {
                age: keep.age.or(ttl),
                count: keep.count,
            }),
        }
    }
}

/// What became of a task, as its record says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: String,
    pub state: Ending,
    /// Attempts made, the last included.
    pub attempts: u64,
    /// When it was enqueued, ms since the epoch (the producer's clock).
    pub enqueued_at: i64,
    /// When its last attempt started, ms since the epoch (the worker's clock).
    pub started_at: i64,
    /// When it ended, ms since the epoch (the worker's clock).
    pub finished_at: i64,
    /// What the handler returned with its success, as JSON (`null` included: a result).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub result: Option<Box<RawValue>>,
    /// Why a result the handler returned is not here (too large for the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_error: Option<String>,
    /// The last attempt's error, for a task that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it was dead-lettered (`retriesExhausted`, `rejected`, `invalidData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The task as it was stored (its envelope, base64): its data, metadata and name, kept by
    /// `keepCompleted` / `keepFailed` (not by `results` alone); left out when the record would
    /// not fit the server's `max_payload` with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

impl Record {
    /// The task its record keeps, decoded; `None` when it keeps none (or not a task).
    pub fn task(&self) -> Option<crate::envelope::Task> {
        use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
        let bytes = BASE64.decode(self.task.as_deref()?).ok()?;
        crate::envelope::Task::decode_checked(&bytes).ok()
    }

    /// The record of task `id` (its stored `envelope`) ended by `cancel(id)` after `attempts`
    /// attempts, the last started at `started_at` ([`NEVER_STARTED`] for none).
    pub fn cancelled(
        config: &Config,
        id: &str,
        (attempts, enqueued_at, started_at): (u64, i64, i64),
        envelope: &[u8],
    ) -> Record {
        Record {
            id: id.to_owned(),
            state: Ending::Cancelled,
            attempts,
            enqueued_at,
            started_at,
            finished_at: crate::envelope::now_ms(),
            result: None,
            result_error: None,
            error: Some(CANCELLED_ERROR.to_owned()),
            reason: None,
            task: kept_task(config, Ending::Cancelled, envelope),
        }
    }
}

/// `envelope` as a record keeps it, when `config` keeps the tasks of `ending` with their records
/// (`keepCompleted` / `keepFailed`).
pub fn kept_task(config: &Config, ending: Ending, envelope: &[u8]) -> Option<String> {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    ending.keep_option(config).map(|_| BASE64.encode(envelope))
}

/// Records that `cancel(id)` ended task `id` before any worker ran it (a delayed task whose
/// schedule it removed; `envelope` is the task), when this queue object keeps cancelled tasks
/// (`options.results` or `keepFailed`): its waiters hear it, `getTask` tells it. Best effort: a
/// record that cannot be written is logged, and the task stays cancelled.
pub async fn cancelled_before_running(connection: &Connection, id: &str, envelope: &[u8]) {
    let config = connection.config();
    if Ending::Cancelled.kept(config).is_none() {
        return;
    }
    let enqueued_at = crate::envelope::Task::decode_checked(envelope)
        .map(|task| task.enqueued_at_ms)
        .unwrap_or_default();
    let record = Record::cancelled(config, id, (0, enqueued_at, NEVER_STARTED), envelope);
    let writer = Writer::default();
    if let Err(err) = writer.write(connection, record).await {
        writer.refused(id, &err);
    }
}

/// A record's `started_at` for a task no attempt of which started.
pub const NEVER_STARTED: i64 = 0;
/// A cancelled task's record's error.
const CANCELLED_ERROR: &str = "cancelled by cancel()";

/// A field that is present is `Some`, even when it is `null` (a handler may return `null`).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// The newest record of task `id`; `None` when there is none (never finished, expired,
/// requeued since, or the queue keeps no history). Asks the stream's leader, which has every
/// record stored so far (a waiter relies on that: see [`waiters`]).
pub async fn read(connection: &Connection, id: &str) -> Result<Option<Record>> {
    Ok(read_stored(connection, id)
        .await?
        .filter(|record| record.state != Ending::Requeued))
}

async fn read_stored(connection: &Connection, id: &str) -> Result<Option<Record>> {
    let config = connection.config();
    let stream = connection
        .jetstream
        .get_stream_no_info(config.history_stream())
        .await
        .map_err(|err| Error::request("reading the task's record", err))?;
    match stream
        .get_last_raw_message_by_subject(&any_subject(config, id))
        .await
    {
        Ok(message) => Ok(parse(&message.payload).filter(|record| record.id == id)),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        // No answer at all: the queue may keep no history (no stream), or the server is away.
        Err(err) => match stream_of(connection).await {
            Ok(None) => Ok(None),
            _ => Err(Error::nats("reading the task's record", err)),
        },
    }
}

/// The queue's history stream, when it has one (a queue that ever kept results).
pub async fn stream_of(connection: &Connection) -> Result<Option<stream::Stream>> {
    let name = connection.config().history_stream();
    crate::nats::stream_if_exists(&connection.jetstream, name, "opening the task history").await
}

/// Removes task `id`'s records from `history` (its task was requeued: its outcome is to come
/// again, and a waiter must wait for that one). A stream that denies purges (made so by another
/// tool) gets a [`Ending::Requeued`] record written over the old one instead.
pub async fn forget(connection: &Connection, history: &stream::Stream, id: &str) -> Result<()> {
    const FORGETTING: &str = "removing the task's record";
    let config = connection.config();
    let Some(old) = read_stored(connection, id).await? else {
        return Ok(());
    };
    if old.state == Ending::Requeued {
        return Ok(());
    }
    let Err(err) = history.purge().filter(any_subject(config, id)).await else {
        return Ok(());
    };
    tracing::debug!(%id, "the task's record cannot be removed ({err}); marking it requeued");
    let requeued = Record {
        state: Ending::Requeued,
        result: None,
        result_error: None,
        ..old.clone()
    };
    let payload = serde_json::to_vec(&requeued).map_err(|err| Error::Nats(err.to_string()))?;
    connection
        .jetstream
        .publish(subject(config, old.state, id), payload.into())
        .await
        .map_err(|err| Error::nats(FORGETTING, err))?
        .await
        .map_err(|err| Error::nats(FORGETTING, err))?;
    Ok(())
}

/// A record from its payload; `None` (and a debug line) for one that is not a record.
pub(crate) fn parse(payload: &[u8]) -> Option<Record> {
    match serde_json::from_slice(payload) {
        Ok(record) => Some(record),
        Err(err) => {
            tracing::debug!("skipping a history message that is not a record: {err}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ids_and_endings_round_trip_through_their_subject() {
        let config = Config::new("S", "s").expect("config");
        for ending in Ending::ALL {
            for id in ["plain", "order-42", "a b.c*>", "ünïcödé", ""] {
                let subject = subject(&config, ending, id);
                let (_, hex) = subject[config.history_prefix().len()..]
                    .split_once('.')
                    .expect("an ending token");
                assert!(!hex.contains(['.', '*', '>', ' ']));
                assert_eq!(id_of(&config, &subject), Some((ending, id.to_owned())));
                assert!(crate::layout::subject_matches(
                    &any_subject(&config, id),
                    &subject
                ));
                assert!(crate::layout::subject_matches(
                    &ending_filter(&config, ending),
                    &subject
                ));
            }
        }
        assert_eq!(id_of(&config, "protoqueue.history.S.completed.zz"), None);
        assert_eq!(id_of(&config, "protoqueue.history.S.running.6869"), None);
        assert_eq!(id_of(&config, "protoqueue.history.S.6869"), None);
        assert_eq!(id_of(&config, "elsewhere.6869"), None);
    }

    #[test]
    fn each_ending_is_kept_as_the_options_say() {
        let mut config = Config::new("S", "s").expect("config");
        assert_eq!(Ending::Completed.kept(&config), None);
        config.keep_failed = Some(Keep {
            age: None,
            count: Some(10),
        });
        assert_eq!(
            Ending::Completed.kept(&config),
            None,
            "keepFailed keeps no completed task"
        );
        assert_eq!(
            Ending::Cancelled.kept(&config).and_then(|k| k.count),
            Some(10)
        );
        config.results_ttl = Some(Duration::from_secs(60));
        let kept = Ending::DeadLettered.kept(&config).expect("kept");
        assert_eq!(
            (kept.age, kept.count),
            (Some(Duration::from_secs(60)), Some(10))
        );
        config.keep_completed = Some(Keep {
            age: Some(Duration::from_secs(5)),
            count: None,
        });
        let kept = Ending::Completed.kept(&config).expect("kept");
        assert_eq!(
            (kept.age, kept.count),
            (Some(Duration::from_secs(5)), None),
            "its own age wins"
        );
    }
}
