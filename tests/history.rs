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
