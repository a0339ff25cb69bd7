//! The task history (`options.results`) against a real nats-server: workers record how tasks
//! end, before their ack; a waiter on another connection hears it, or reads it when it came
//! late; a failure for good is recorded with its reason; a requeue forgets the old record.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use protoqueue::{
    dead_letters::redrive,
    history::{self, lookup, waiters::Waiters, Ending},
    lifecycle, Config, Connection, Failure, Outcome,
};

fn recording_config() -> Config {
    Config {
        results_ttl: Some(Duration::from_secs(3_600)),
        max_retries: 0,
        ..test_config()
    }
}

#[tokio::test]
async fn records_reach_waiters_and_lookups_from_another_connection() {
    let server = NatsServer::start().await;
    let config = recording_config();
    let worker_side = connect(&config, &server).await;
    let producer = Connection::open_unshared(Arc::new(config.clone()), &server.url())
        .await
        .expect("producer");
    let waiters = Waiters::new(producer.clone());

    let id = lifecycle::enqueue(&producer, task("{\"n\":1}"))
        .await
        .expect("enqueue");
    let waiting = {
        let waiters = waiters.clone();
        let id = id.clone();
        tokio::spawn(async move { waiters.wait(&id, Duration::from_secs(10)).await })
    };
    let worker = start_worker(
        &worker_side,
        handler(|attempt| async move {
            if attempt.task.data.as_ref() == b"{\"n\":1}" {
                Outcome::Returned(Ok("{\"sum\":42}".into()))
            } else {
                Outcome::Failure(Failure {
                    retry: false,
                    ..Failure::new("declined")
                })
            }
        }),
    )
    .await;
    let record = waiting.await.expect("joined").expect("record");
    assert_eq!(record.state, Ending::Completed);
    assert_eq!(
        record.result.as_ref().map(|json| json.get()),
        Some("{\"sum\":42}")
    );
    assert_eq!(record.attempts, 1);

    // A waiter that comes after the record reads it.
    let late = waiters
        .wait(&id, Duration::from_millis(1))
        .await
        .expect("read");
    assert_eq!(late.finished_at, record.finished_at);

    // A failure for good: recorded with its reason, and found by lookup.
    let failing = lifecycle::enqueue(&producer, task("{\"n\":2}"))
        .await
        .expect("enqueue");
    let record = waiters
        .wait(&failing, Duration::from_secs(10))
        .await
        .expect("record");
    assert_eq!(
        (
            record.state,
            record.error.as_deref(),
            record.reason.as_deref()
        ),
        (Ending::DeadLettered, Some("declined"), Some("rejected"))
    );
    let found = lookup::get(&producer, &failing)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.state, lookup::State::DeadLettered);

    // Requeued: the old record is gone, the new outcome is waited for.
    worker.stop().await;
    let requeued = redrive::requeue(&producer, &Default::default(), |_| {})
        .await
        .expect("requeue");
    assert_eq!(requeued, 1);
    assert!(history::read(&producer, &failing)
        .await
        .expect("read")
        .is_none());
    let timed_out = waiters.wait(&failing, Duration::from_millis(200)).await;
    assert_eq!(
        timed_out.err().map(|err| err.code()),
        Some("ERR_PQ_TIMEOUT")
    );
}

#[tokio::test]
async fn a_queue_without_results_writes_no_records() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let worker = start_worker(
        &connection,
        handler(|_| async { Outcome::Returned(Ok("1".into())) }),
    )
    .await;
    let id = lifecycle::enqueue(&connection, task("{}"))
        .await
        .expect("enqueue");
    wait_stats(&connection, 0, 0, Duration::from_secs(10)).await;
    worker.stop().await;
    assert!(history::read(&connection, &id)
        .await
        .expect("read")
        .is_none());
    assert!(history::stream_of(&connection)
        .await
        .expect("stream")
        .is_none());
}

/// A record of task `id` that completed with `result`.
fn completed(id: &str, result: &str) -> history::Record {
    history::Record {
        id: id.to_owned(),
        state: Ending::Completed,
        attempts: 1,
        enqueued_at: 1,
        started_at: 2,
        finished_at: 3,
        result: serde_json::value::RawValue::from_string(result.to_owned()).ok(),
        result_error: None,
        error: None,
        reason: None,
        task: None,
    }
}

#[tokio::test]
async fn records_written_together_are_each_stored_and_a_refused_group_fails_each_of_its_records() {
    let server = NatsServer::start().await;
    let config = recording_config();
    let connection = connect(&config, &server).await;
    let writer = history::Writer::default();

    // 600 records at once: written in groups (more than one group's most), each one stored.
    let ids: Vec<String> = (0..600).map(|n| format!("together-{n}")).collect();
    let written = futures::future::join_all(
        ids.iter()
            .map(|id| writer.write(&connection, completed(id, &format!("{{\"n\":\"{id}\"}}")))),
    )
    .await;
    assert!(written.iter().all(Result::is_ok), "{written:?}");
    for id in &ids {
        let record = history::read(&connection, id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(
            record.result.map(|json| json.get().to_owned()),
            Some(format!("{{\"n\":\"{id}\"}}"))
        );
    }

    // A history stream with room for 10 more, refusing the rest: a write that says it was stored
    // was, and those it refused say so.
    let client = async_nats::connect(server.url()).await.expect("client");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(config.history_stream())
        .await
        .expect("history stream");
    let mut full = stream.info().await.expect("info").config.clone();
    full.max_messages = 610;
    full.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    js.update_stream(full).await.expect("limited");
    let more: Vec<String> = (0..100).map(|n| format!("refused-{n}")).collect();
    let written = futures::future::join_all(
        more.iter()
            .map(|id| writer.write(&connection, completed(id, "true"))),
    )
    .await;
    let (stored, refused): (Vec<_>, Vec<_>) =
        more.iter().zip(&written).partition(|(_, w)| w.is_ok());
    assert!(refused.len() >= 90, "{} refused", refused.len());
    for (id, _) in stored {
        assert!(
            history::read(&connection, id)
                .await
                .expect("read")
                .is_some(),
            "{id} said stored"
        );
    }
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        610,
        "full, nothing beyond"
    );
}
