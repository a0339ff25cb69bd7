//! The Protobuf envelope (`proto/protoqueue/v1/envelope.proto`): what one task and one dead letter
//! look like on the wire, and their encoding and checked decoding.

use bytes::Bytes;
use prost::Message as _;

/// The types generated from `proto/protoqueue/v1/envelope.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/protoqueue.v1.rs"));
}

pub use proto::{DeadLetter, DeadLetterReason, Task};

/// The envelope version this build writes and reads.
pub const VERSION: u32 = 1;
/// The content type of task data enqueued from JavaScript.
pub const JSON: &str = "application/json";

/// Why bytes are not a valid task envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not a Protobuf `protoqueue.v1.Task` at all.
    #[error("not a protoqueue.v1.Task envelope: {0}")]
    Malformed(String),
    /// A `Task` of a version this build does not know.
    #[error("envelope version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u32),
    /// A `Task` without an id.
    #[error("envelope has no task id")]
    MissingId,
}

impl Task {
    /// A version-1 task.
    pub fn create(
        id: String,
        data: Bytes,
        content_type: &str,
        metadata: Bytes,
        now_ms: i64,
    ) -> Self {
        Task {
            version: VERSION,
            id,
            data,
            content_type: content_type.to_owned(),
            metadata,
            enqueued_at_ms: now_ms,
        }
    }

    /// The envelope as bytes.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }

    /// Decodes and checks an envelope: it must be a `Task` of a known version with an id.
    pub fn decode_checked(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let task = Task::decode(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if task.version != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(task.version));
        }
        if task.id.is_empty() {
            return Err(EnvelopeError::MissingId);
        }
        Ok(task)
    }
}

impl DeadLetter {
    /// The dead letter as bytes.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_round_trips() {
        let task = Task::create(
            "id-1".into(),
            Bytes::from_static(b"{\"a\":1}"),
            JSON,
            Bytes::new(),
            42,
        );
        let decoded = Task::decode_checked(&task.to_bytes()).expect("valid envelope");
        assert_eq!(decoded, task);
    }

    #[test]
    fn junk_is_rejected() {
        assert!(matches!(
            Task::decode_checked(b"\xff\xff\xff\xff"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert_eq!(
            Task::decode_checked(b""),
            Err(EnvelopeError::UnsupportedVersion(0))
        );
        assert!(Task::decode_checked(b"{\"json\": true}").is_err());
    }

    #[test]
    fn wrong_version_and_missing_id_are_rejected() {
        let mut task = Task::create("x".into(), Bytes::new(), JSON, Bytes::new(), 0);
        task.version = 2;
        assert_eq!(
            Task::decode_checked(&task.to_bytes()),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
        task.version = VERSION;
        task.id.clear();
        assert_eq!(
            Task::decode_checked(&task.to_bytes()),
            Err(EnvelopeError::MissingId)
        );
    }

    #[test]
    fn truncated_envelopes_never_panic() {
        let task = Task::create(
            "0190a0b0-0000-7000-8000-000000000000".into(),
            Bytes::from(vec![b'x'; 300]),
            JSON,
            Bytes::from_static(b"{\"k\":\"v\"}"),
            1,
        );
        let bytes = task.to_bytes();
        for len in 0..bytes.len() {
            let _ = Task::decode_checked(&bytes[..len]);
        }
    }
}
