//! Reading the dead letters of a queue: one pass over the dead-letter stream, oldest first, that
//! keeps only what the caller asked for.
//!
//! The stream is read with an ordered consumer (the dead-letter stream has Limits retention, so
//! a reading consumer beside the dead-letter workers' is allowed): the server sends the letters
//! in batches, so reading ten thousand letters takes a few dozen requests, not ten thousand, and
//! what is held at once is one batch plus the letters kept (where the server refuses a new
//! consumer, they are read one request each). Letters are stored by sequence only,
//! so finding the letters of a task id reads every letter once; only the matches are kept.

use std::collections::HashSet;

use async_nats::jetstream::{
    consumer::pull::{Ordered, OrderedConfig},
    stream::{ConsumerErrorKind, RawMessageErrorKind, Stream},
};
use futures::StreamExt;
use prost::Message as _;

use crate::{
    envelope::{DeadLetter, DeadLetterReason},
    error::{Error, Result},
    nats::{self, connection::Connection},
};

/// A dead letter as stored, with its place in the dead-letter stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    /// Its sequence number in the dead-letter stream.
    pub sequence: u64,
    /// The dead letter.
    pub letter: DeadLetter,
}

/// Which dead letters an operation applies to: all when empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only the letters stored at these sequences of the dead-letter stream (one letter each,
    /// read directly: no walk over the others).
    pub sequences: Option<HashSet<u64>>,
    /// Only the letters of these task ids.
    pub ids: Option<HashSet<String>>,
    /// Only the letters with this reason.
    pub reason: Option<DeadLetterReason>,
    /// At most this many letters, oldest first.
    pub limit: Option<u64>,
}

impl Filter {
    /// Whether the letter stored at `sequence` is one this filter picks (the limit aside).
    pub fn matches(&self, sequence: u64, letter: &DeadLetter) -> bool {
        let id = letter.task.as_ref().map(|task| task.id.as_str());
        self.sequences
            .as_ref()
            .is_none_or(|sequences| sequences.contains(&sequence))
            && self.reason.is_none_or(|reason| letter.reason() == reason)
            && self
                .ids
                .as_ref()
                .is_none_or(|ids| id.is_some_and(|id| ids.contains(id)))
    }

    /// Whether it picks every letter.
    pub fn is_everything(&self) -> bool {
        *self == Filter::default()
    }
}

/// Letters the server sends per pull, at most: what a walk holds at once besides its matches.
pub const READ_BATCH: usize = 256;

/// How long a walk waits for the next letter before it asks the stream whether one is left to
/// come (letters removed by someone else while it walks are never delivered).
const IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// One pass over the letters stored when it began, oldest first.
pub(crate) struct Walk {
    /// `None` once nothing is left to read.
    messages: Option<Reader>,
    /// The reading consumer's name, removed by [`Walk::finish`].
    consumer: Option<String>,
    /// The last sequence of the stream when the walk began: later letters are not read.
    last_sequence: u64,
    last_seen: u64,
    /// The consumer said nothing is left after `last_seen`, before `last_sequence`: the
    /// stream's leader is asked before the next read ([`Walk::next`]).
    ask_leader: bool,
    /// How many messages the stream held when the walk began.
    pub(crate) total: u64,
}

/// How a walk reads: through an ordered consumer (one pass, no request per letter), or — where
/// the stream takes no new consumer (a client without the permission, a stream made by another
/// tool with `max_consumers` reached) — one message request per letter.
enum Reader {
    Consumer(Box<Ordered>),
    OneByOne { next: u64 },
}

/// A message of the walk: its sequence and its letter (`None`: it does not decode as one).
pub(crate) type Read = (u64, Option<DeadLetter>);

impl Walk {
    /// Starts a walk over `letters` (the queue's dead-letter stream, its info as opened), the
    /// server sending at most `batch` letters per pull.
    pub(crate) async fn start(
        connection: &Connection,
        letters: &Stream,
        batch: usize,
    ) -> Result<Walk> {
        let state = &letters.cached_info().state;
        let mut walk = Walk {
            messages: None,
            consumer: None,
            last_sequence: state.last_sequence,
            last_seen: 0,
            ask_leader: false,
            total: state.messages,
        };
        if state.messages == 0 {
            return Ok(walk);
        }
        let created = letters
            .create_consumer(OrderedConfig {
                filter_subject: connection.config().dead_letter_subject(),
                max_batch: batch.clamp(1, READ_BATCH) as i64,
                ..Default::default()
            })
            .await;
        let reader = match created {
            Ok(reader) => reader,
            // Refused by the server (not an outage): read one letter at a time instead.
            Err(err) if matches!(err.kind(), ConsumerErrorKind::JetStream(_)) => {
                tracing::debug!("reading dead letters one by one: {err}");
                walk.messages = Some(Reader::OneByOne { next: 1 });
                return Ok(walk);
            }
            Err(err) => return Err(Error::nats("reading the dead-letter stream", err)),
        };
        walk.consumer = Some(reader.cached_info().name.clone());
        let messages = reader
            .messages()
            .await
            .map_err(|err| Error::nats("reading the dead-letter stream", err))?;
        walk.messages = Some(Reader::Consumer(Box::new(messages)));
        Ok(walk)
    }

    /// The next letter, or `None` when every letter stored when the walk began was read (or
    /// removed meanwhile). Cancel-safe: a call dropped before it returns loses nothing.
    pub(crate) async fn next(
        &mut self,
        connection: &Connection,
        letters: &Stream,
    ) -> Result<Option<Read>> {
        loop {
            let messages = match self.messages.as_mut() {
                None => return Ok(None),
                Some(Reader::OneByOne { next }) => {
                    let subject = connection.config().dead_letter_subject();
                    let what = "reading the dead-letter stream";
                    let found = nats::next_on_subject(letters, &subject, *next, what).await?;
                    let Some(message) = found.filter(|m| m.sequence <= self.last_sequence) else {
                        self.messages = None;
                        return Ok(None);
                    };
                    *next = message.sequence + 1;
                    return Ok(Some((
                        message.sequence,
                        decoded(message.sequence, message.payload),
                    )));
                }
                Some(Reader::Consumer(_)) if self.ask_leader => {
                    let (after, until) = (self.last_seen, self.last_sequence);
                    if !letter_left(connection, letters, after, until).await? {
                        self.messages = None;
                        return Ok(None);
                    }
                    self.ask_leader = false;
                    continue;
                }
                Some(Reader::Consumer(messages)) => messages,
            };
            let message = match tokio::time::timeout(IDLE, messages.next()).await {
                Ok(Some(message)) => {
                    message.map_err(|err| Error::nats("reading the dead-letter stream", err))?
                }
                Ok(None) => {
                    self.messages = None;
                    return Ok(None);
                }
                Err(_idle) => {
                    let (after, until) = (self.last_seen, self.last_sequence);
                    if !letter_left(connection, letters, after, until).await? {
                        self.messages = None;
                    }
                    continue;
                }
            };
            let info = message
                .info()
                .map_err(|err| Error::nats("reading a dead letter", err))?;
            let (sequence, left) = (info.stream_sequence, info.pending);
            if sequence > self.last_sequence {
                // Stored after the walk began (the last one then was removed meanwhile).
                self.messages = None;
                return Ok(None);
            }
            self.last_seen = sequence;
            if sequence >= self.last_sequence {
                self.messages = None;
            } else if left == 0 {
                // The letters after it were removed meanwhile — or, on a cluster, the consumer
                // reads a replica that is still catching up (a restarted server, a new leader):
                // its count is its own. (Found by the lifecycle model on an R3 cluster: a letter
                // the stream held was not listed.)
                self.ask_leader = true;
            }
            return Ok(Some((sequence, decoded(sequence, message.payload.clone()))));
        }
    }
}

impl Walk {
    /// Removes the reading consumer now rather than when the server finds it idle (30 s later):
    /// a dashboard reading letters every second would keep dozens. Best effort.
    pub(crate) async fn finish(mut self, letters: &Stream) {
        self.messages = None;
        if let Some(name) = self.consumer.take() {
            if let Err(err) = letters.delete_consumer(&name).await {
                tracing::debug!(consumer = %name, "removing a dead-letter reader: {err}");
            }
        }
    }
}

/// The letter a stored message holds; `None` (with a warning) when it does not decode as one.
fn decoded(sequence: u64, payload: bytes::Bytes) -> Option<DeadLetter> {
    match DeadLetter::decode(payload) {
        Ok(letter) => Some(letter),
        Err(err) => {
            tracing::warn!(seq = sequence, "skipping an undecodable dead letter: {err}");
            None
        }
    }
}

/// Whether a letter stored after `last_seen`, up to `last_sequence`, is still stored. (A free
/// function: a `Walk` holds a consumer stream that is not `Sync`.)
async fn letter_left(
    connection: &Connection,
    letters: &Stream,
    last_seen: u64,
    last_sequence: u64,
) -> Result<bool> {
    let subject = connection.config().dead_letter_subject();
    let next = nats::next_on_subject(
        letters,
        &subject,
        last_seen + 1,
        "reading the dead-letter stream",
    )
    .await?;
    Ok(next.is_some_and(|message| message.sequence <= last_sequence))
}

/// Reads (without removing) up to `limit` dead letters, oldest first. A stored message that does
/// not decode as a `DeadLetter` is skipped with a warning.
pub async fn list(connection: &Connection, limit: usize) -> Result<Vec<StoredDeadLetter>> {
    find(connection, &Filter::default(), limit).await
}

/// Reads (without removing) up to `limit` of the dead letters `filter` picks (its own `limit`,
/// if any, applies too), oldest first, in one pass over the stream; only those are kept. A
/// stored message that does not decode as a `DeadLetter` is skipped with a warning.
pub async fn find(
    connection: &Connection,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<StoredDeadLetter>> {
    let limit = filter.limit.map_or(limit, |own| {
        limit.min(usize::try_from(own).unwrap_or(usize::MAX))
    });
    let mut found = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    if let Some(sequences) = &filter.sequences {
        let mut sorted: Vec<u64> = sequences.iter().copied().collect();
        sorted.sort_unstable();
        for sequence in sorted {
            if found.len() >= limit {
                break;
            }
            if let Some(stored) = get(connection, sequence).await? {
                if filter.matches(sequence, &stored.letter) {
                    found.push(stored);
                }
            }
        }
        return Ok(found);
    }
    let letters = stream(connection).await?;
    // Without a filter every letter read is kept: pull no more than are wanted.
    let batch = if filter.is_everything() {
        limit
    } else {
        READ_BATCH
    };
    let mut walk = Walk::start(connection, &letters, batch).await?;
    while found.len() < limit {
        let Some((sequence, letter)) = walk.next(connection, &letters).await? else {
            break;
        };
        if let Some(letter) = letter.filter(|letter| filter.matches(sequence, letter)) {
            found.push(StoredDeadLetter { sequence, letter });
        }
    }
    walk.finish(&letters).await;
    Ok(found)
}

/// Reads (without removing) the dead letter stored at `sequence`; `None` when there is none
/// there (removed, or never stored) or it does not decode as a `DeadLetter`.
pub async fn get(connection: &Connection, sequence: u64) -> Result<Option<StoredDeadLetter>> {
    let config = connection.config();
    let stream = stream(connection).await?;
    let message = match stream.get_raw_message(sequence).await {
        Ok(message) => message,
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(err) => return Err(Error::request("reading a dead letter", err)),
    };
    if message.subject.as_str() != config.dead_letter_subject() {
        return Ok(None);
    }
    match DeadLetter::decode(message.payload) {
        Ok(letter) => Ok(Some(StoredDeadLetter { sequence, letter })),
        Err(err) => {
            tracing::warn!(seq = sequence, "an undecodable dead letter: {err}");
            Ok(None)
        }
    }
}

/// The queue's dead-letter stream.
pub(crate) async fn stream(connection: &Connection) -> Result<Stream> {
    connection
        .jetstream
        .get_stream(connection.config().dead_letter_stream())
        .await
        .map_err(|e| Error::request("opening the dead-letter stream", e))
}

/// Deletes the letter at `sequence`; `false` when it was gone already (removed by another
/// operator or dead-letter worker meanwhile).
pub(crate) async fn remove(connection: &Connection, sequence: u64) -> Result<bool> {
    let stream = connection.config().dead_letter_stream();
    crate::nats::delete_message(&connection.jetstream, &stream, sequence).await
}
