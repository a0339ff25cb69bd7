//! Events heard anywhere (`options.events: 'queue'`) against a real nats-server: a listening
//! queue object hears what a worker on another connection decided, progress included; a worker
//! nobody listens to sends nothing.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use futures::StreamExt;
use protoqueue::{
    lifecycle,
    observe::events::{COMPLETED, FAILED, PROGRESS},
    Config, Connection, Failure, Outcome, Queue,
};

fn listening_config(config: &Config) -> Config {
    Config {
        events_from_queue: true,
        ..config.clone()
    }
}

/// The rows a listening object took so far, parsed.
fn rows(queue: &Queue) -> Vec<serde_json::Value> {
    serde_json::from_str::<Vec<serde_json::Value>>(&queue.observer().events.take_rows())
        .expect("rows")
}

#[tokio::test]
async fn a_listener_hears_a_worker_of_another_connection() {
    let server = NatsServer::start().await;
    let config = Config {
        max_retries: 0,
        ..test_config()
    };
    let listener = Queue::new(listening_config(&config));
    listener
        .connect(Some(&server.url()))
        .await
        .expect("connect");
    listener.set_events(COMPLETED | FAILED | PROGRESS).await;

    let worker_side = connect(&config, &server).await;
    let observer = worker_side.observer_arc();
    let worker = start_worker(
        &worker_side,
        handler(move |attempt| {
            let observer = observer.clone();
            async move {
                let progress =
                    serde_json::value::RawValue::from_string("{\"done\":1}".into()).expect("json");
                observer.progress(&attempt.task.id, &progress);
                if attempt.task.data.as_ref() == b"{\"fail\":true}" {
                    Outcome::Failure(Failure::new("declined"))
                } else {
                    Outcome::Success
                }
            }
        }),
    )
    .await;
    let producer = Connection::open_unshared(Arc::new(config.clone()), &server.url())
        .await
        .expect("producer");
    let ok = lifecycle::enqueue(&producer, task("{}"))
        .await
        .expect("enqueue");
    let failing = lifecycle::enqueue(&producer, task("{\"fail\":true}"))
        .await
        .expect("enqueue");

    let mut heard = Vec::new();
    eventually("the worker's events heard", Duration::from_secs(10), || {
        heard.extend(rows(&listener));
        let done = heard.iter().filter(|row| row[0] != 16).count() >= 2;
        async move { done.then_some(()) }
    })
    .await;
    let kinds: Vec<(u64, String)> = heard
        .iter()
        .map(|row| {
            (
                row[0].as_u64().unwrap_or(0),
                row[1].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(kinds.contains(&(1, ok.clone())), "{kinds:?}");
    assert!(kinds.contains(&(2, failing.clone())), "{kinds:?}");
    assert!(kinds.contains(&(16, ok)), "{kinds:?}");
    let progress = heard.iter().find(|row| row[0] == 16).expect("progress");
    assert_eq!(progress[2], serde_json::json!({"done": 1}));
    worker.stop().await;
    listener.disconnect().await;
}

#[tokio::test]
async fn a_worker_nobody_listens_to_sends_nothing() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    // A plain subscriber (not a listener: it says no hello) sees what would be sent.
    let client = async_nats::connect(server.url()).await.expect("client");
    let mut sent = client
        .subscribe(config.events_subject())
        .await
        .expect("subscribe");
    let recorder = Recorder::new();
    // Its own object listens to completions: they stay in this process.
    connection.observer().events.set_mask(COMPLETED);
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    lifecycle::enqueue_batch(&connection, numbered_tasks(20))
        .await
        .expect("enqueue");
    recorder.wait_calls(20, Duration::from_secs(10)).await;
    let nothing = tokio::time::timeout(Duration::from_millis(500), sent.next()).await;
    assert!(nothing.is_err(), "sent events nobody listens to");
    worker.stop().await;
}
