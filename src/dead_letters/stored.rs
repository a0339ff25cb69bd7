//! Reading the dead letters of a queue.

use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use prost::Message as _;

use crate::{
    envelope::DeadLetter,
    error::{Error, Result},
    nats::connection::Connection,
};

/// A dead letter as stored, with its place in the dead-letter stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    /// Its sequence number in the dead-letter stream.
    pub sequence: u64,
    /// The dead letter.
    pub letter: DeadLetter,
}

/// Reads (without removing) up to `limit` dead letters, oldest first. A stored message that does
/// not decode as a `DeadLetter` is skipped with a warning.
pub async fn list(connection: &Connection, limit: usize) -> Result<Vec<StoredDeadLetter>> {
    let config = connection.config();
    let stream = stream(connection).await?;
    let subject = config.dead_letter_subject();
    let mut letters = Vec::new();
    let mut next = 1;
    while letters.len() < limit {
        let Some(message) =
            crate::nats::next_on_subject(&stream, &subject, next, "reading dead letters").await?
        else {
            break;
        };
        next = message.sequence + 1;
        match DeadLetter::decode(message.payload) {
            Ok(letter) => letters.push(StoredDeadLetter {
                sequence: message.sequence,
                letter,
            }),
            Err(err) => tracing::warn!(
                seq = message.sequence,
                "skipping an undecodable dead letter: {err}"
            ),
        }
    }
    Ok(letters)
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
