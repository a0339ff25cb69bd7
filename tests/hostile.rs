//! Hostile input: bytes published straight onto a queue's subject by another client. Each bad
//! message is dead-lettered raw with the reason, the handler never sees it, and the worker keeps
//! going.

mod common;

use protoqueue::lifecycle;

use async_nats::jetstream;
use bytes::Bytes;
use common::*;
use protoqueue::envelope::{self, DeadLetterReason, Task};

/// A valid envelope, for the corrupt variants below.
fn envelope_bytes(version: u32, id: &str) -> Bytes {
    let mut task = Task::create(
        id.into(),
        Bytes::from_static(b"{\"hello\":\"world\"}"),
        envelope::JSON,
        Bytes::new(),
        1,
    );
    task.version = version;
    task.to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_message_is_dead_lettered_with_its_reason() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let max_payload = connection.max_payload();

    let valid = envelope_bytes(envelope::VERSION, "0190a0b0-0000-7000-8000-000000000001");
    let bad: Vec<(&str, Bytes, &str)> = vec![
        (
            "text",
            Bytes::from_static(b"plain text, not protobuf"),
            "not a protoqueue.v1.Task",
        ),
        ("json", Bytes::from_static(b"{\"data\":{\"a\":1}}"), ""),
        ("empty", Bytes::new(), "version 0"),
        ("wrong version", envelope_bytes(2, "id-v2"), "version 2"),
        ("no id", envelope_bytes(envelope::VERSION, ""), "no task id"),
        (
            "truncated",
            valid.slice(..valid.len() - 5),
            "not a protoqueue.v1.Task",
        ),
        // As large as the server takes: the dead letter must still fit (it keeps what fits).
        (
            "oversized",
            Bytes::from(vec![0xff; max_payload - 200]),
            "not a protoqueue.v1.Task",
        ),
    ];
    let js = jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("plain client"),
    );
    for (name, payload, _) in &bad {
        js.publish(config.subject.clone(), payload.clone())
            .await
            .unwrap_or_else(|err| panic!("publish {name}: {err}"))
            .await
            .unwrap_or_else(|err| panic!("{name} stored: {err}"));
    }

    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    let letters = settled_with_dead_letters(&connection, bad.len() as u64).await;
    assert_eq!(recorder.count(), 0, "the handler never sees a bad message");

    for (sequence, (name, payload, error)) in bad.iter().enumerate() {
        let letter = letters
            .iter()
            .find(|letter| letter.stream_sequence == sequence as u64 + 1)
            .unwrap_or_else(|| panic!("no dead letter for {name}"));
        assert_eq!(letter.reason(), DeadLetterReason::InvalidEnvelope, "{name}");
        assert!(letter.task.is_none(), "{name}");
        assert!(letter.error.contains(error), "{name}: {:?}", letter.error);
        assert_eq!(letter.attempts, 1, "{name}");
        if *name == "oversized" {
            assert!(
                letter.raw.len() < payload.len() && payload.starts_with(&letter.raw),
                "the oversized message is kept as far as it fits"
            );
        } else {
            assert_eq!(&letter.raw, payload, "{name} kept byte for byte");
        }
    }

    // Still processing after all that.
    let id = lifecycle::enqueue(&connection, task(b"{\"after\":true}".to_vec()))
        .await
        .expect("enqueue");
    recorder
        .wait_calls(1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(recorder.events()[0].id(), id);
    worker.stop().await;
}
