//! Dead-lettering: a task that will not be tried again is stored, with why it failed, on the
//! queue's dead-letter stream (`<streamName>_DLQ`, subject `protoqueue.dlq.<streamName>`).
//!
//! A dead letter is published and confirmed *before* the original is removed from the queue, and
//! its `Nats-Msg-Id` names the original *message* (its stream and sequence), so a re-send after a
//! crash in between is stored once, while every new message of the same task (requeued, or
//! enqueued again with its own id) that fails gets a letter of its own: the dead-letter stream's
//! duplicate window only ever catches a true re-send ([`letter_message_id`]).

use bytes::Bytes;

use crate::{
    envelope::{self, DeadLetter, DeadLetterReason, Task},
    error::Result,
    nats::connection::Connection,
    producer::{Outgoing, Publisher},
};

/// Where a failed message came from, as the server told the worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The stream the message was read from.
    pub stream: String,
    /// Its subject.
    pub subject: String,
    /// Its sequence number in the stream.
    pub stream_sequence: u64,
    /// Which attempt of the task this delivery is, from 1 (attempts a handler made before, plus
    /// this one); for a message that is not a task, its deliveries.
    pub attempts: u64,
    /// How many times the server delivered this message.
    pub deliveries: u64,
}

/// What failed: a decoded task, or bytes that were not a valid envelope.
#[derive(Debug, Clone)]
pub enum Failed {
    /// A task whose handling failed for good.
    Task(Box<Task>),
    /// A message that could not be decoded.
    Raw(Bytes),
}

/// Publishes a dead letter and waits until JetStream has stored it.
pub async fn publish(
    connection: &Connection,
    failed: Failed,
    origin: &Origin,
    reason: DeadLetterReason,
    error: String,
    details: Bytes,
) -> Result<()> {
    let message_id = letter_message_id(origin);
    let (task, raw) = match failed {
        // The task as it was enqueued: the letter counts its attempts itself.
        Failed::Task(mut task) => {
            task.attempts_made = 0;
            task.not_before_ms = 0;
            task.failed_attempts.clear();
            (Some(*task), Bytes::new())
        }
        Failed::Raw(raw) => (None, raw),
    };
    let letter = DeadLetter {
        task,
        raw,
        reason: reason as i32,
        error,
        details,
        attempts: u32::try_from(origin.attempts).unwrap_or(u32::MAX),
        failed_at_ms: envelope::now_ms(),
        stream: origin.stream.clone(),
        subject: origin.subject.clone(),
        stream_sequence: origin.stream_sequence,
        data_dropped: false,
    };
    let max = connection.max_payload();
    let payload = fitted(letter, max);
    let subject = connection.config().dead_letter_subject();
    let message = Outgoing::checked(message_id, payload, max)?;
    Publisher::to(connection, subject).publish(message).await?;
    Ok(())
}

/// The `Nats-Msg-Id` of the letter of the message at `origin`: one per stored message, so a
/// re-sent letter of the same delivery is stored once and a letter of any other message (the same
/// task requeued, or its id used again) is never taken for a re-send.
pub fn letter_message_id(origin: &Origin) -> String {
    format!("dlq:{}:{}", origin.stream, origin.stream_sequence)
}

/// Room left in `max_payload` for the message id header and the protocol.
const HEADROOM: usize = 256;
/// Appended to the error of a dead letter whose task lost its data and metadata to fit.
const DATA_DROPPED: &str =
    " [protoqueue: the task's data and metadata were dropped to fit the server's max_payload]";

/// The dead letter's bytes, cut down until they fit in `max_payload`. A dead letter carries the
/// original plus an error, so it can be larger than any task the server accepted: it is never
/// refused for its size. First the raw bytes, the details and a very long error go; if the task
/// itself is close to `max_payload`, its data and metadata go too. The task id, reason, attempts
/// and origin always survive, so the record of the failure does.
fn fitted(mut letter: DeadLetter, max_payload: usize) -> Bytes {
    let budget = max_payload.saturating_sub(HEADROOM);
    let payload = letter.to_bytes();
    if payload.len() <= budget {
        return payload;
    }
    letter.raw = Bytes::new();
    letter.details = Bytes::new();
    truncate_on_char_boundary(&mut letter.error, (budget / 4).min(4_096));
    let payload = letter.to_bytes();
    if payload.len() <= budget {
        return payload;
    }
    if let Some(task) = letter.task.as_mut() {
        task.data = Bytes::new();
        task.metadata = Bytes::new();
        letter.error.push_str(DATA_DROPPED);
        letter.data_dropped = true;
    }
    letter.to_bytes()
}

/// Whether the letter's task lost its data and metadata to fit `max_payload`: the
/// `data_dropped` field, or, in letters written before it existed, the note in the error.
pub fn data_was_dropped(letter: &DeadLetter) -> bool {
    letter.data_dropped
        || letter.task.as_ref().is_some_and(|task| {
            task.data.is_empty() && task.metadata.is_empty() && letter.error.ends_with(DATA_DROPPED)
        })
}

/// `text`, shortened to at most `max` bytes without splitting a character.
pub fn shortened(text: &str, max: usize) -> String {
    let mut text = text.to_owned();
    truncate_on_char_boundary(&mut text, max);
    text
}

/// Shortens a string to at most `max` bytes without splitting a character.
fn truncate_on_char_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{data_was_dropped, fitted, truncate_on_char_boundary, DATA_DROPPED, HEADROOM};
    use crate::envelope::{DeadLetter, Task, JSON};

    #[test]
    fn a_dead_letter_of_a_task_near_max_payload_still_fits() {
        let max = 4_096;
        let data = Bytes::from(vec![b'x'; 3_900]);
        let task = Task::create("t-1".into(), data, JSON, Bytes::new(), 1);
        let letter = DeadLetter {
            task: Some(task),
            error: "e".repeat(2_000),
            details: Bytes::from(vec![b'd'; 2_000]),
            attempts: 4,
            ..DeadLetter::default()
        };
        let payload = fitted(letter, max);
        assert!(payload.len() + HEADROOM <= max, "{} bytes", payload.len());
        let kept: DeadLetter = prost::Message::decode(payload).expect("a dead letter");
        assert_eq!(kept.task.as_ref().map(|t| t.id.as_str()), Some("t-1"));
        assert_eq!(kept.attempts, 4);
        assert!(kept.data_dropped, "the letter says its data was dropped");
        assert!(data_was_dropped(&kept));
        // A letter from before the field existed says so only in its error.
        let old = DeadLetter {
            data_dropped: false,
            ..kept.clone()
        };
        assert!(old.error.ends_with(DATA_DROPPED) && data_was_dropped(&old));

        let details = Bytes::from_static(b"{}");
        let small = DeadLetter {
            error: "e".into(),
            details,
            data_dropped: false,
            ..kept
        };
        assert_eq!(fitted(small.clone(), max), small.to_bytes(), "kept whole");
        assert!(!data_was_dropped(&small));
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut text = "ééé".to_string(); // 2 bytes each
        truncate_on_char_boundary(&mut text, 3);
        assert_eq!(text, "é");
        let mut short = "ok".to_string();
        truncate_on_char_boundary(&mut short, 3);
        assert_eq!(short, "ok");
    }
}
