//! The Protobuf envelope (`proto/protoqueue/v1/envelope.proto`): what one task and one dead letter
//! look like on the wire, and their encoding and checked decoding.

use bytes::Bytes;
use prost::Message as _;

/// The types generated from `proto/protoqueue/v1/envelope.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/protoqueue.v1.rs"));
}

pub use proto::{
    Backoff as BackoffEnvelope, BackoffType, DeadLetter, DeadLetterReason, FailedAttempt, Task,
};

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
    /// When its life began, as cancel marks see it ([`crate::cancelling`]): its enqueue, or its
    /// last requeue from the dead-letter stream (a new life, which an earlier cancel does not
    /// reach).
    pub fn life_began(&self) -> i64 {
        self.enqueued_at_ms.max(self.requeued_at_ms)
    }

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
            ..Task::default()
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
    fn a_plain_task_is_encoded_as_before_and_the_new_fields_round_trip() {
        let plain = Task::create(
            "id".into(),
            Bytes::from_static(b"{}"),
            JSON,
            Bytes::new(),
            7,
        );
        // Version 1, id, data, content type, enqueue time: nothing of fields 20-22.
        let mut legacy = vec![
            0x08, 0x01, 0x12, 0x02, b'i', b'd', 0x1a, 0x02, b'{', b'}', 0x22,
        ];
        legacy.push(JSON.len() as u8);
        legacy.extend_from_slice(JSON.as_bytes());
        legacy.extend_from_slice(&[0x30, 0x07]);
        assert_eq!(plain.to_bytes().as_ref(), legacy.as_slice());

        let mut own = plain.clone();
        own.max_retries = Some(0);
        own.custom_id = true;
        own.backoff = Some(BackoffEnvelope {
            r#type: BackoffType::Exponential as i32,
            delay_ms: 100,
            max_delay_ms: Some(1_000),
            jitter: 0.5,
        });
        own.trace_context = crate::trace_context::checked(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("k=v"),
        );
        assert_eq!(Task::decode_checked(&own.to_bytes()), Ok(own));
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

    mod decoder_properties {
        use proptest::prelude::*;

        use super::*;

        fn valid_envelope() -> Vec<u8> {
            Task::create(
                "0190a0b0-0000-7000-8000-000000000000".into(),
                Bytes::from_static(b"{\"to\":\"a@example.com\",\"n\":[1,2,3]}"),
                JSON,
                Bytes::from_static(b"{\"priority\":1}"),
                1_700_000_000_000,
            )
            .to_bytes()
            .to_vec()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            /// Arbitrary bytes never panic: they decode or are rejected.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_048)) {
                let _ = Task::decode_checked(&bytes);
            }

            /// A valid envelope with bytes overwritten, inserted or cut: never a panic, and a
            /// result that decodes is a version-1 task with an id.
            #[test]
            fn corrupted_envelopes_never_panic(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8)
            ) {
                let mut bytes = valid_envelope();
                for (at, byte, kind) in edits {
                    if bytes.is_empty() {
                        break;
                    }
                    let i = at.index(bytes.len());
                    match kind {
                        0 => bytes[i] = byte,
                        1 => bytes.insert(i, byte),
                        _ => bytes.truncate(i),
                    }
                }
                if let Ok(task) = Task::decode_checked(&bytes) {
                    prop_assert_eq!(task.version, VERSION);
                    prop_assert!(!task.id.is_empty());
                }
            }
        }
    }
}
