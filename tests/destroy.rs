//! Deleting a queue (`destroy()`, the command line's `delete`) against a real nats-server: every
//! stream of the queue goes, a queue its workers use is refused unless forced, and the queue
//! made again afterwards starts empty.

mod common;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use common::*;
use protoqueue::{admin::schedules::Recurring, Failure, NewTask, Outcome, Queue};

async fn stream_names(server: &NatsServer) -> Vec<String> {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let mut names: Vec<String> = futures::StreamExt::collect::<Vec<_>>(js.stream_names())
        .await
        .into_iter()
        .map(|name| name.expect("a stream name"))
        .collect();
    names.sort();
    names
}

fn config() -> protoqueue::Config {
    let mut config = test_config();
    config.schedules = true;
    config.max_retries = 0;
    config
}

/// A queue holding some of everything: waiting tasks, a dead letter, an own id, a delayed task
/// and a recurring one.
async fn a_full_queue(server: &NatsServer, config: &protoqueue::Config) {
    let queue = Arc::new(Queue::new(config.clone()));
    queue.connect(Some(&server.url())).await.expect("connect");
    let rejecting = Queue::new(config.clone());
    rejecting
        .connect(Some(&server.url()))
        .await
        .expect("connect");
    rejecting
        .process(handler(|_| async {
            Outcome::Failure(Failure::new("rejected"))
        }))
        .await
        .expect("process");
    queue.enqueue(task("{}")).await.expect("to reject");
    eventually("a dead letter", Duration::from_secs(10), || async {
        (queue.stats().await.ok()?.dead_lettered == 1).then_some(())
    })
    .await;
    rejecting.disconnect().await;
    queue
        .enqueue_batch(vec![
            task("{}"),
            NewTask {
                id: Some("invoice-7".into()),
                ..task("{}")
            },
            task("{}").at(protoqueue::envelope::now_ms() + 3_600_000),
        ])
        .await
        .expect("enqueue");
    let every = Recurring::from_json(&serde_json::json!({ "every": 60_000 })).expect("spec");
    queue
        .schedule("hourly", &every, task("{}"))
        .await
        .expect("schedule");
    queue.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_deletes_every_stream_of_the_queue_and_connect_makes_it_anew() {
    let server = NatsServer::start().await;
    let config = config();
    a_full_queue(&server, &config).await;
    // A worker ran: its record's stream is the queue's too.
    let streams = vec![
        config.stream_name.clone(),
        config.dead_letter_stream(),
        config.id_index_stream(),
        config.workers_stream(),
        config.cancels_stream(),
    ];
    let mut sorted = streams.clone();
    sorted.sort();
    assert_eq!(stream_names(&server).await, sorted);

    let queue = Queue::new(config.clone());
    queue.connect(Some(&server.url())).await.expect("connect");
    assert_eq!(queue.destroy(false).await.expect("destroy"), streams);
    assert_eq!(stream_names(&server).await, Vec::<String>::new());
    assert_eq!(
        queue.stats().await.map_err(|e| e.code()).err(),
        Some("ERR_PQ_NOT_CONNECTED"),
        "destroy disconnects"
    );
    assert_eq!(
        queue.destroy(false).await.map_err(|e| e.code()).err(),
        Some("ERR_PQ_NOT_CONNECTED")
    );

    queue.connect(Some(&server.url())).await.expect("again");
    let stats = queue.stats().await.expect("stats");
    assert_eq!(
        (
            stats.messages,
            stats.dead_lettered,
            stats.delayed,
            stats.recurring
        ),
        (0, 0, 0, 0),
        "made anew, empty"
    );
    // An id of the destroyed queue is free.
    let id = queue
        .enqueue(NewTask {
            id: Some("invoice-7".into()),
            ..task("{}")
        })
        .await
        .expect("enqueue");
    assert_eq!(id, "invoice-7");
    assert_eq!(queue.stats().await.expect("stats").messages, 1);
    queue.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_workers_run_is_refused_unless_forced() {
    let server = NatsServer::start().await;
    let config = config();
    let worker = Queue::new(config.clone());
    worker.connect(Some(&server.url())).await.expect("connect");
    worker
        .process(handler(|_| async { Outcome::Success }))
        .await
        .expect("process");

    // This object's own worker.
    let err = worker.destroy(false).await.expect_err("refused");
    assert_eq!(err.code(), "ERR_PQ_QUEUE_IN_USE");
    assert!(err.to_string().contains("disconnect() it first"), "{err}");

    // Another process's worker (its pull requests wait on the consumer).
    let operator = Queue::new(config.clone());
    operator
        .connect(Some(&server.url()))
        .await
        .expect("connect");
    let err = eventually("the worker seen", Duration::from_secs(10), || async {
        operator.destroy(false).await.err()
    })
    .await;
    assert_eq!(err.code(), "ERR_PQ_QUEUE_IN_USE");
    assert!(err.to_string().contains("pull requests waiting"), "{err}");
    assert_eq!(
        stream_names(&server).await.len(),
        4,
        "nothing deleted (tasks, dead letters, worker records, cancel marks)"
    );

    // Its workers stopped, it goes.
    worker.disconnect().await;
    let deleted = eventually(
        "the worker's requests gone",
        Duration::from_secs(40),
        || async { operator.destroy(false).await.ok() },
    )
    .await;
    assert_eq!(deleted.len(), 4, "{deleted:?}");
    assert!(stream_names(&server).await.is_empty());
}

/// Forced, the queue goes with what it held, this object's worker stopped first. A worker of
/// another process still running makes the queue again, empty, when its pulls fail (as its
/// `connect()` would): stopping the workers is what keeps a queue gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_it_goes_with_what_it_held_while_workers_run() {
    let server = NatsServer::start().await;
    let config = config();
    let own = Queue::new(config.clone());
    own.connect(Some(&server.url())).await.expect("connect");
    own.process(handler(|_| async { Outcome::Success }))
        .await
        .expect("process");
    own.pause().await.expect("pause");
    own.enqueue_batch(numbered_tasks(100))
        .await
        .expect("enqueue");
    let deleted = own.destroy(true).await.expect("forced");
    assert_eq!(deleted.len(), 4, "{deleted:?}");
    assert!(
        stream_names(&server).await.is_empty(),
        "its own stopped worker made nothing again"
    );
    assert_eq!(
        own.stats().await.map_err(|e| e.code()).err(),
        Some("ERR_PQ_NOT_CONNECTED")
    );

    let other = Queue::new(config.clone());
    other.connect(Some(&server.url())).await.expect("connect");
    other
        .process(handler(|_| async { Outcome::Success }))
        .await
        .expect("process");
    let operator = Queue::new(config.clone());
    operator
        .connect(Some(&server.url()))
        .await
        .expect("connect");
    operator
        .enqueue_batch(numbered_tasks(10))
        .await
        .expect("enqueue");
    operator.pause().await.expect("pause");
    operator.destroy(true).await.expect("forced");
    operator.connect(Some(&server.url())).await.expect("again");
    let stats = operator.stats().await.expect("stats");
    assert_eq!(
        (stats.messages, stats.paused),
        (0, false),
        "what it held is gone"
    );
    operator.disconnect().await;
    tokio::time::timeout(Duration::from_secs(30), other.disconnect())
        .await
        .expect("the other worker stops");
}
