//! The id index: producer-chosen task ids (`enqueue({ id })`) deduplicated for as long as the
//! task is stored, not only within the stream's 2-minute duplicate window.
//!
//! Beside the task stream, a stream `<streamName>_IDS` holds one marker per id, on the subject
//! `protoqueue.ids.<streamName>.<id as hex>` (one message per subject). Enqueueing a task with an
//! id:
//!
//! 1. writes the marker "pending" with `Nats-Expected-Last-Subject-Sequence: 0` (create-only:
//!    of two producers racing, exactly one succeeds);
//! 2. publishes the task (its id is still its `Nats-Msg-Id`, so a re-send is stored once);
//! 3. rewrites the marker to "stored at sequence S" (expecting the marker it wrote).
//!
//! When step 1 finds a marker, the id is taken if the marker is pending and younger than
//! `enqueueTimeout` plus [`PENDING_MARGIN`] (another producer is storing it right now), or if it
//! names a sequence the task stream still holds (the task waits or runs): the enqueue then stores
//! nothing and resolves with the id. Otherwise the marker is stale (its task was acked or
//! dead-lettered, or a producer died between steps 1 and 3) and is replaced, again expecting the
//! marker that was read, so one producer wins. Workers remove the marker of a task they acked or
//! dead-lettered when it still names that task; correctness never depends on it (a stale marker
//! is recognised by its sequence), it only keeps the index small.
//!
//! Tasks without an id never touch the index; the stream is created on the first enqueue with an
//! id. What is not covered: a producer that dies after the task was stored (step 2) but before
//! step 3 leaves a pending marker; once that is older than `enqueueTimeout` it counts as stale,
//! and the same id enqueued more than 2 minutes after the first store is stored again.

use std::time::Duration;

use async_nats::{
    header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
    jetstream::{
        self,
        context::PublishErrorKind,
        stream::{self, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy, StorageType},
    },
    HeaderMap,
};
use bytes::Bytes;

use crate::{
    config::Config,
    envelope,
    error::{Error, Result},
    nats::connection::Connection,
    producer::{Outgoing, Publisher},
};

/// How much older than `enqueueTimeout` a pending marker must be to count as stale (clocks of
/// producers differ a little).
pub const PENDING_MARGIN: Duration = Duration::from_secs(5);
/// How often an enqueue retries when other producers keep replacing the marker it read.
const MAX_ROUNDS: usize = 8;

/// The id index's stream: one message per id subject, kept until removed.
pub fn stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: config.id_index_stream(),
        subjects: vec![format!("{}*", config.id_index_prefix())],
        retention: RetentionPolicy::Limits,
        max_messages_per_subject: 1,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: config.replicas,
        description: Some(format!(
            "Protoqueue ids of stream {} (enqueue with your own id)",
            config.stream_name
        )),
        ..Default::default()
    }
}

/// The marker subject of `id`: its bytes as hex, so any id is one subject token.
pub fn subject(config: &Config, id: &str) -> String {
    let mut subject = config.id_index_prefix();
    subject.reserve(id.len() * 2);
    for byte in id.bytes() {
        subject.push_str(&format!("{byte:02x}"));
    }
    subject
}

/// What a marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// A producer is storing the task since this time (ms since the epoch).
    Pending(i64),
    /// The task is stored at this sequence of the task stream.
    Stored(u64),
}

impl Marker {
    fn to_bytes(self) -> Bytes {
        Bytes::from(match self {
            Marker::Pending(ms) => format!("p{ms}"),
            Marker::Stored(seq) => format!("s{seq}"),
        })
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        match text.split_at_checked(1)? {
            ("p", ms) => ms.parse().ok().map(Marker::Pending),
            ("s", seq) => seq.parse().ok().map(Marker::Stored),
            _ => None,
        }
    }
}

/// Why a marker was not written.
enum Refused {
    /// Another marker is there (or not the one expected).
    Taken,
    /// The index stream does not exist yet.
    NoStream,
}

/// Publishes a task whose producer chose its id: stores nothing and resolves with the id when a
/// task with that id is stored (see the module documentation).
pub(crate) async fn publish(publisher: &Publisher<'_>, message: Outgoing) -> Result<String> {
    let connection = publisher.connection();
    let config = connection.config();
    let subject = subject(config, &message.id);
    let mut expected = 0;
    let mut created = false;
    for _ in 0..MAX_ROUNDS {
        let pending = Marker::Pending(envelope::now_ms());
        match write(connection, &subject, expected, pending).await? {
            Ok(marker) => return store(publisher, message, &subject, marker).await,
            Err(Refused::NoStream) if !created => {
                ensure_stream(connection).await?;
                created = true;
            }
            Err(Refused::NoStream) => {
                return Err(Error::Nats(format!(
                    "the id index stream {:?} is missing",
                    config.id_index_stream()
                )))
            }
            Err(Refused::Taken) => match read(connection, &subject).await? {
                // Removed meanwhile: create it again.
                None => expected = 0,
                Some((sequence, marker)) => {
                    if is_taken(connection, marker).await? {
                        tracing::debug!(id = %message.id, "task id already stored; nothing enqueued");
                        return Ok(message.id);
                    }
                    expected = sequence;
                }
            },
        }
    }
    Err(Error::Nats(format!(
        "task id {:?}: other producers kept changing its marker; try again",
        message.id
    )))
}

/// Step 2 and 3: the marker at `marker` is ours; publish the task, then record its sequence.
async fn store(
    publisher: &Publisher<'_>,
    message: Outgoing,
    subject: &str,
    marker: u64,
) -> Result<String> {
    let connection = publisher.connection();
    let ack = match publisher.publish_ack(&message).await {
        Ok(ack) => ack,
        Err(err) => {
            // Not confirmed (it may still be stored: then the duplicate window covers a retry).
            if let Err(cleanup) = delete(connection, marker).await {
                tracing::debug!("pending marker not removed: {cleanup}");
            }
            return Err(err);
        }
    };
    match write(connection, subject, marker, Marker::Stored(ack.sequence)).await {
        Ok(Ok(_)) => {}
        // Only a producer that judged our pending marker stale replaces it; it then owns the id.
        Ok(Err(_)) => {
            tracing::warn!(id = %message.id, "the id's marker was replaced while its task was being stored")
        }
        Err(err) => {
            tracing::warn!(id = %message.id, "the id's marker was not updated ({err}); it counts as stale after enqueueTimeout")
        }
    }
    Ok(message.id)
}

/// Whether a marker still stands for a stored task (or one being stored).
async fn is_taken(connection: &Connection, marker: Option<Marker>) -> Result<bool> {
    let config = connection.config();
    match marker {
        Some(Marker::Pending(since)) => {
            let fresh = (config.enqueue_timeout + PENDING_MARGIN).as_millis() as i64;
            Ok(envelope::now_ms().saturating_sub(since) < fresh)
        }
        Some(Marker::Stored(sequence)) => {
            let stream = connection
                .jetstream
                .get_stream_no_info(&config.stream_name)
                .await
                .map_err(|e| Error::nats("opening the task stream", e))?;
            match stream.get_raw_message(sequence).await {
                Ok(_) => Ok(true),
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
                Err(err) => Err(Error::nats("looking up the task of an id", err)),
            }
        }
        // Not a marker Protoqueue wrote: replace it.
        None => Ok(false),
    }
}

/// Writes `marker` on `subject` if the subject's last message is `expected` (0: none); the
/// marker's sequence on success.
async fn write(
    connection: &Connection,
    subject: &str,
    expected: u64,
    marker: Marker,
) -> Result<std::result::Result<u64, Refused>> {
    let mut headers = HeaderMap::new();
    headers.insert(
        NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        expected.to_string().as_str(),
    );
    let sent = connection
        .jetstream
        .publish_with_headers(subject.to_owned(), headers, marker.to_bytes())
        .await
        .map_err(|e| Error::nats("writing an id marker", e))?;
    let answer = tokio::time::timeout(connection.config().enqueue_timeout, sent).await;
    match answer {
        Ok(Ok(ack)) => Ok(Ok(ack.sequence)),
        Ok(Err(err)) if err.kind() == PublishErrorKind::WrongLastSequence => {
            Ok(Err(Refused::Taken))
        }
        Ok(Err(err)) if err.kind() == PublishErrorKind::StreamNotFound => {
            Ok(Err(Refused::NoStream))
        }
        Ok(Err(err)) => Err(Error::nats("writing an id marker", err)),
        Err(_) => Err(Error::Timeout {
            operation: "publish",
            after: connection.config().enqueue_timeout,
            hint: " writing the marker of a task id; is the NATS server reachable?",
        }),
    }
}

/// The marker on `subject` (its sequence, and what it says if Protoqueue wrote it).
async fn read(connection: &Connection, subject: &str) -> Result<Option<(u64, Option<Marker>)>> {
    let stream = index_stream(connection).await?;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some((message.sequence, Marker::parse(&message.payload)))),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(Error::nats("reading an id marker", err)),
    }
}

async fn delete(connection: &Connection, sequence: u64) -> Result<()> {
    let stream = index_stream(connection).await?;
    stream
        .delete_message(sequence)
        .await
        .map_err(|e| Error::nats("removing an id marker", e))?;
    Ok(())
}

/// Removes the marker of the task with `id` that was stored at `sequence` and is now acked or
/// dead-lettered, if the marker still names it. Best effort: a marker left behind is stale.
pub async fn release(connection: &Connection, id: &str, sequence: u64) {
    let subject = subject(connection.config(), id);
    let result = async {
        if let Some((marker, Some(Marker::Stored(stored)))) = read(connection, &subject).await? {
            if stored == sequence {
                delete(connection, marker).await?;
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%id, "id marker not removed ({err}); it is stale and will be replaced");
    }
}

async fn index_stream(connection: &Connection) -> Result<jetstream::stream::Stream<()>> {
    connection
        .jetstream
        .get_stream_no_info(connection.config().id_index_stream())
        .await
        .map_err(|e| Error::nats("opening the id index stream", e))
}

async fn ensure_stream(connection: &Connection) -> Result<()> {
    connection
        .jetstream
        .get_or_create_stream(stream_config(connection.config()))
        .await
        .map_err(|e| Error::nats("creating the id index stream", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_junk_is_none() {
        for marker in [Marker::Pending(1_700_000_000_000), Marker::Stored(42)] {
            assert_eq!(Marker::parse(&marker.to_bytes()), Some(marker));
        }
        for junk in [&b""[..], b"x", b"p", b"sx", b"\xff", b"s-1"] {
            assert_eq!(Marker::parse(junk), None);
        }
    }

    #[test]
    fn any_id_is_one_subject_token() {
        let config = Config::new("S", "t").expect("valid");
        let subject = subject(&config, "a.b *>é");
        assert_eq!(subject, "protoqueue.ids.S.612e62202a3ec3a9");
        crate::config::validate_publish_subject("marker", &subject).expect("a valid subject");
    }
}
