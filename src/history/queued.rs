//! Finding a task that is still in the task stream — waiting, retrying or running — by its id.
//! Nothing is written for it at enqueue; the lookup pays:
//!
//! - a task with its own id: its marker in the id index names where it is stored ([`crate::ids`]);
//! - a generated id is a UUIDv7, which carries when it was made: the stream is read from a
//!   little before that time ([`direct::batch`]: 1,000 messages a request) until a message
//!   names the id — in `Nats-Msg-Id` when it was enqueued, in [`ID_HEADER`] when it was stored
//!   again for a retry or fired by its schedule — or the stream's end.

use std::time::Duration;

use async_nats::{header::NATS_MESSAGE_ID, jetstream::stream::RawMessageErrorKind, HeaderMap};

use crate::{
    envelope::Task,
    error::{Error, Result},
    nats::{
        connection::Connection,
        direct::{self, From},
    },
    producer::ID_HEADER,
};

/// How far before a generated id's time its task may be stored (the producer's clock runs ahead
/// of the server's by that much at most).
const CLOCK_SLACK: Duration = Duration::from_secs(10);
/// How long one lookup reads the stream at most (a backlog of millions after the id's time).
const SCAN_LIMIT: Duration = Duration::from_secs(10);
/// Messages read per request.
const SCAN_BATCH: usize = 1_000;

/// A task found in the task stream.
#[derive(Debug, Clone)]
pub struct Queued {
    pub task: Task,
    /// The stream subject it is stored on (its priority level's).
    pub subject: String,
}

/// Task `id` as the task stream holds it now; `None` when it does not (never enqueued, ended,
/// delayed, or purged). An id that is not a UUIDv7 is a producer's own: only its marker is read
/// (a delayed task of its own that fired a moment ago is found once a worker took it).
pub async fn find(connection: &Connection, id: &str) -> Result<Option<Queued>> {
    const FINDING: &str = "finding the task in its stream";
    let stream = connection.task_stream().await?;
    let sequence = match made_at(id) {
        None => crate::ids::stored_at(connection, id).await?,
        Some(_) => scan(connection, id).await?,
    };
    let Some(sequence) = sequence else {
        return Ok(None);
    };
    let message = match stream.get_raw_message(sequence).await {
        Ok(message) => message,
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(err) => return Err(Error::request(FINDING, err)),
    };
    Ok(Task::decode_checked(&message.payload)
        .ok()
        .filter(|task| task.id == id)
        .map(|task| Queued {
            task,
            subject: message.subject.to_string(),
        }))
}

/// The sequence of the task message that names the generated id `id`, reading the task stream
/// in batches from a little before the id's time to its end (schedules on the way are skipped:
/// a delayed task's schedule names its id too).
async fn scan(connection: &Connection, id: &str) -> Result<Option<u64>> {
    const SCANNING: &str = "looking for the task in its stream";
    let config = connection.config();
    let Some(made) = made_at(id) else {
        return Ok(None);
    };
    let mut from = From::Time(made - i64::try_from(CLOCK_SLACK.as_millis()).unwrap_or(0));
    let read = async {
        loop {
            let batch = direct::batch(
                &connection.jetstream,
                &config.stream_name,
                from,
                None,
                SCAN_BATCH,
                SCANNING,
            )
            .await?;
            let found = batch.iter().find(|stored| {
                names(Some(&stored.headers), id)
                    && crate::layout::holds_tasks(config, &stored.subject)
            });
            if let Some(found) = found {
                return Ok(Some(found.sequence));
            }
            match batch.last() {
                Some(last) => from = From::Sequence(last.sequence + 1),
                None => return Ok(None),
            }
        }
    };
    match tokio::time::timeout(SCAN_LIMIT, read).await {
        Ok(found) => found,
        Err(_) => {
            tracing::debug!(%id, "stopped looking for the task in its stream after {SCAN_LIMIT:?}");
            Ok(None)
        }
    }
}

/// Whether a message's headers name task `id`: in [`ID_HEADER`], or in `Nats-Msg-Id` as it is
/// (a generated id) or before a `:` (an own id's `<id>:<nonce>`, when a producer's own id is a
/// UUIDv7 too).
fn names(headers: Option<&HeaderMap>, id: &str) -> bool {
    let Some(headers) = headers else {
        return false;
    };
    let header = |name: &str| headers.get(name).map(|value| value.as_str());
    header(ID_HEADER) == Some(id)
        || header(NATS_MESSAGE_ID.as_ref()).is_some_and(|message_id| {
            message_id
                .strip_prefix(id)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
        })
}

/// When a generated id was made, ms since the epoch: a UUIDv7's timestamp.
pub fn made_at(id: &str) -> Option<i64> {
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    let (seconds, nanos) = uuid.get_timestamp()?.to_unix();
    i64::try_from(seconds)
        .ok()?
        .checked_mul(1_000)?
        .checked_add(i64::from(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_tells_when_it_was_made() {
        let before = crate::envelope::now_ms();
        let id = uuid::Uuid::now_v7().to_string();
        let made = made_at(&id).expect("a UUIDv7");
        assert!((before - 1..=crate::envelope::now_ms()).contains(&made));
        assert_eq!(made_at("order-42"), None);
        assert_eq!(
            made_at("9b2e4c1a-6f3d-4e8b-a2c7-5d1f0e9b3a64"),
            None,
            "a UUIDv4"
        );
    }

    #[test]
    fn headers_name_a_task_by_its_message_id_or_its_own_header() {
        let mut by_message_id = HeaderMap::new();
        by_message_id.insert(NATS_MESSAGE_ID, "a");
        let mut by_header = HeaderMap::new();
        by_header.insert(NATS_MESSAGE_ID, "retry:S:4");
        by_header.insert(ID_HEADER, "a");
        assert!(names(Some(&by_message_id), "a"));
        assert!(names(Some(&by_header), "a"));
        assert!(!names(Some(&by_header), "b"));
        assert!(!names(None, "a"));
        let mut own = HeaderMap::new();
        own.insert(NATS_MESSAGE_ID, "a:5f3e");
        assert!(names(Some(&own), "a"), "an own id's message id");
        assert!(!names(Some(&own), "a:5"));
        let mut longer = HeaderMap::new();
        longer.insert(NATS_MESSAGE_ID, "ab");
        assert!(!names(Some(&longer), "a"));
    }
}
