//! The names a queue is known by on the server: the consumers' durable names, the subject
//! prefixes of what lives beside the tasks, and the rules stream names and subjects follow.

use crate::{config::json::invalid, error::Result};

/// The durable consumer shared by every worker of a queue.
pub const CONSUMER_NAME: &str = "protoqueue-workers";
/// The durable consumer shared by every dead-letter worker (`processDLQ()`) of a queue.
pub const DEAD_LETTER_CONSUMER_NAME: &str = "protoqueue-dlq-workers";

/// Longest stream name accepted, in bytes (JetStream allows 255; the dead-letter suffix must still
/// fit).
pub const MAX_STREAM_NAME_LEN: usize = 255 - DEAD_LETTER_SUFFIX.len();
/// Longest subject accepted, in bytes. The server refuses a protocol line longer than its
/// `max_control_line` (4096 bytes by default) and drops the connection; a publish line carries the
/// subject and a reply inbox, a delivery carries the subject and an ack subject naming the stream,
/// and the consumer's create request carries the subject in its own subject. 1024 leaves room for
/// all of them.
pub const MAX_SUBJECT_LEN: usize = 1024;
pub(crate) const DEAD_LETTER_SUFFIX: &str = "_DLQ";
pub(crate) const DEAD_LETTER_SUBJECT_PREFIX: &str = "protoqueue.dlq.";
pub(crate) const SCHEDULE_SUBJECT_PREFIX: &str = "protoqueue.sched.";

/// `prefix` followed by `id`'s bytes as hex: any task id as one subject token (the id index's
/// markers, the task history's records).
pub fn id_subject(prefix: String, id: &str) -> String {
    let mut subject = prefix;
    subject.reserve(id.len() * 2);
    for byte in id.bytes() {
        subject.push_str(&format!("{byte:02x}"));
    }
    subject
}

/// The task id [`id_subject`] made `subject` from, after `prefix`; `None` for a subject that is
/// not one.
pub fn id_in_subject(prefix: &str, subject: &str) -> Option<String> {
    let hex = subject.strip_prefix(prefix)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// JetStream stream name rules: printable, no whitespace, no `.`, `*`, `>`, path separators.
pub fn validate_stream_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("streamName must not be empty".into()));
    }
    if name.len() > MAX_STREAM_NAME_LEN {
        return Err(invalid(format!(
            "streamName is {} bytes long; at most {MAX_STREAM_NAME_LEN} are allowed",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(invalid(format!(
            "streamName {name:?} contains {c:?}; stream names may not contain whitespace, \
             '.', '*', '>', '/' or '\\'"
        )));
    }
    Ok(())
}

/// A subject tasks can be published to: dot-separated non-empty tokens, no wildcards, no
/// whitespace, not in the server's reserved `$` namespace.
pub fn validate_publish_subject(field: &str, subject: &str) -> Result<()> {
    if subject.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(invalid(format!(
            "{field} is {} bytes long; at most {MAX_SUBJECT_LEN} are allowed",
            subject.len()
        )));
    }
    if let Some(c) = subject
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(format!(
            "{field} {subject:?} contains {c:?}; subjects have no whitespace"
        )));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(invalid(format!(
                "{field} {subject:?} has an empty token; write tokens separated by single dots, \
                 e.g. \"tasks.email\""
            )));
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Err(invalid(format!(
                "{field} {subject:?} contains a wildcard; a queue's subject must be a concrete \
                 subject, or a subject tree ending in '.>' such as \"tasks.email.>\""
            )));
        }
    }
    if subject.starts_with('$') {
        return Err(invalid(format!(
            "{field} {subject:?} is in the server's reserved '$' namespace"
        )));
    }
    Ok(())
}
