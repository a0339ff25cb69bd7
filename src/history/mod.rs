//! The task history: what became of each finished task — its result, or why it failed — kept on
//! the server for `options.results.ttl`, so any process can wait for a task (`waitFor`) or look
//! it up (`getTask`).
//!
//! Beside the task stream, a stream `<streamName>_HISTORY` holds one record per task on the
//! subject `protoqueue.history.<streamName>.<id as hex>` (the newest kept: a task that ran again
//! after a requeue has one record). Each record carries its own time to live (`Nats-TTL`,
//! nats-server ≥ 2.11). Workers write it before they acknowledge the task, so a waiter never
//! misses an outcome: a worker that dies in between runs the task again and writes it again.
//! A record that cannot be written never holds a task back: the task completes, and the failure
//! is logged.

pub mod layout;
pub mod lookup;
pub mod waiters;

pub use layout::{id_of, stream_config, subject, MARK_HISTORY, RESULTS_SINCE};

use std::time::Duration;

use async_nats::{
    jetstream::stream::{self, LastRawMessageErrorKind},
    HeaderMap,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    config::Config,
    error::{Error, Result},
    nats::connection::Connection,
};

/// The header giving a message its own time to live.
const TTL_HEADER: &str = "Nats-TTL";
/// What a record takes besides the result, at most (id, times, error text are bounded).
const RECORD_OVERHEAD: usize = 16 * 1024;

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Ending {
    /// Its handler succeeded.
    Completed,
    /// It failed for good and went to the dead-letter stream.
    DeadLettered,
    /// It was cancelled (`cancel(id)`) while waiting, retrying or running.
    Cancelled,
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
}

/// A field that is present is `Some`, even when it is `null` (a handler may return `null`).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// Writes `record` before its task is acknowledged, kept for `options.results.ttl`. A result
/// too large for the server is left out and said so (the task still completes). Errors are the
/// caller's to log: a record never holds its task back.
pub async fn write(connection: &Connection, mut record: Record) -> Result<()> {
    let config = connection.config();
    let Some(ttl) = config.results_ttl else {
        return Ok(());
    };
    let limit = connection.max_payload();
    if let Some(result) = &record.result {
        let size = result.get().len();
        if size + RECORD_OVERHEAD > limit {
            record.result = None;
            record.result_error = Some(format!(
                "the result is {size} bytes; the server takes messages of at most {limit} bytes \
                 (max_payload), so it was not kept"
            ));
        }
    }
    let payload = serde_json::to_vec(&record).map_err(|err| Error::Nats(err.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(TTL_HEADER, ttl_value(ttl).as_str());
    connection
        .jetstream
        .publish_with_headers(subject(config, &record.id), headers, payload.into())
        .await
        .map_err(|err| Error::nats("writing the task's record", err))?
        .await
        .map_err(|err| Error::nats("writing the task's record", err))?;
    Ok(())
}

/// A `Nats-TTL` value: whole seconds, rounded up (the server's unit).
fn ttl_value(ttl: Duration) -> String {
    format!("{}s", ttl.as_millis().div_ceil(1000))
}

/// The record of task `id`; `None` when there is none (never finished, expired, or the queue
/// keeps no history). Asks the stream's leader, which has every record stored so far (a waiter
/// relies on that: see [`waiters`]).
pub async fn read(connection: &Connection, id: &str) -> Result<Option<Record>> {
    let config = connection.config();
    let stream = connection
        .jetstream
        .get_stream_no_info(config.history_stream())
        .await
        .map_err(|err| Error::request("reading the task's record", err))?;
    match stream
        .get_last_raw_message_by_subject(&subject(config, id))
        .await
    {
        Ok(message) => Ok(parse(&message.payload)),
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

/// Removes task `id`'s record from `history` (its task was requeued: its outcome is to come
/// again, and a waiter must wait for that one).
pub async fn forget(history: &stream::Stream, config: &Config, id: &str) -> Result<()> {
    history
        .purge()
        .filter(subject(config, id))
        .await
        .map_err(|err| Error::nats("removing the task's record", err))?;
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
    use super::*;

    #[test]
    fn ids_round_trip_through_their_subject() {
        let config = Config::new("S", "s").expect("config");
        for id in ["plain", "order-42", "a b.c*>", "ünïcödé", ""] {
            let subject = subject(&config, id);
            assert!(!subject[config.history_prefix().len()..].contains(['.', '*', '>', ' ']));
            assert_eq!(id_of(&config, &subject).as_deref(), Some(id));
        }
        assert_eq!(id_of(&config, "protoqueue.history.S.zz"), None);
        assert_eq!(id_of(&config, "protoqueue.history.S.abc"), None);
        assert_eq!(id_of(&config, "elsewhere.6869"), None);
    }

    #[test]
    fn ttls_are_whole_seconds_rounded_up() {
        assert_eq!(ttl_value(Duration::from_millis(1_000)), "1s");
        assert_eq!(ttl_value(Duration::from_millis(1_001)), "2s");
        assert_eq!(ttl_value(Duration::from_secs(3_600)), "3600s");
    }
}
