//! One NATS connection for many queues: queues of one process with the same servers, credentials
//! and TLS settings share a client; each keeps its own lifecycle.

mod common;

use protoqueue::lifecycle;

use std::{sync::Arc, time::Duration};

use common::*;
use protoqueue::{Connection, Error, Queue};

/// Generous bound for things that normally take milliseconds.
const SOON: Duration = Duration::from_secs(15);

async fn connected(server: &NatsServer) -> Arc<Queue> {
    let queue = Arc::new(Queue::new(test_config()));
    queue.connect(Some(&server.url())).await.expect("connect");
    queue
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_with_the_same_settings_share_one_client_and_the_last_close_ends_it() {
    let server = NatsServer::start().await;
    let a = connect(&test_config(), &server).await;
    let b = connect(&test_config(), &server).await;
    assert_eq!(a.client_id(), b.client_id(), "one client for both");

    // Another spelling of the address is other settings: its own client.
    let other = Connection::open(
        Arc::new(test_config()),
        &format!("nats://localhost:{}", server.port()),
    )
    .await
    .expect("connect by name");
    assert_ne!(other.client_id(), a.client_id());
    other.close().await;

    // Closing one leaves the other working; the closed one is closed for its own calls only.
    a.close().await;
    assert!(a.is_closed() && !b.is_closed());
    lifecycle::enqueue(&b, task("{}"))
        .await
        .expect("the other queue still enqueues");
    let closed = lifecycle::enqueue(&a, task("{}")).await;
    assert!(closed.is_err(), "a closed queue's enqueue fails");

    // The last one closes the client: a queue connecting while it closes gets a fresh one.
    let shared = b.client_id();
    let config = test_config();
    let (_, c) = tokio::join!(b.close(), connect(&config, &server));
    assert_ne!(c.client_id(), shared, "a new client after the last close");
    lifecycle::enqueue(&c, task("{}")).await.expect("enqueue");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_connecting_while_another_connects_waits_for_the_same_client() {
    let server = NatsServer::start().await;
    let connects = (0..8).map(|_| {
        let url = server.url();
        async move {
            Connection::open(Arc::new(test_config()), &url)
                .await
                .expect("connect")
        }
    });
    let connections = futures::future::join_all(connects).await;
    let first = connections[0].client_id();
    assert!(connections.iter().all(|c| c.client_id() == first));
    for connection in &connections {
        connection.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_queue_disconnects_while_the_other_keeps_enqueueing_and_processing() {
    let mut server = NatsServer::start().await;
    let leaving = connected(&server).await;
    let staying = connected(&server).await;
    let recorder = Recorder::new();
    staying
        .process(recording_success(&recorder, 0))
        .await
        .expect("process");
    let leaving_recorder = Recorder::new();
    leaving
        .process(recording_success(&leaving_recorder, 1))
        .await
        .expect("process");
    leaving.enqueue(task("{}")).await.expect("enqueue");
    leaving_recorder.wait_calls(1, SOON).await;

    assert_eq!(leaving.disconnect().await.abandoned, 0);
    assert_eq!(
        leaving.enqueue(task("{}")).await.map_err(|e| e.code()),
        Err(Error::NotConnected.code())
    );
    for _ in 0..5 {
        staying.enqueue(task("{}")).await.expect("still enqueues");
    }
    recorder.wait_calls(5, SOON).await;

    // The queue that left connects again (to the client the other still uses) and works.
    leaving.connect(Some(&server.url())).await.expect("again");
    leaving.enqueue(task("{}")).await.expect("enqueue again");

    // A server restart mid-way: both recover on the one client.
    server.restart().await;
    let enqueued = tokio::time::timeout(SOON, async {
        staying
            .enqueue(task("{}"))
            .await
            .expect("enqueue after restart");
        leaving
            .enqueue(task("{}"))
            .await
            .expect("enqueue after restart");
    })
    .await;
    assert!(enqueued.is_ok(), "both queues enqueue after a restart");
    recorder.wait_calls(6, SOON).await;
    staying.disconnect().await;
    leaving.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_without_close_release_the_client() {
    let server = NatsServer::start().await;
    let a = connect(&test_config(), &server).await;
    let b = a.clone();
    let id = a.client_id();
    // Clones (a worker's) keep the lease; the last one dropped ends it.
    drop(a);
    let c = connect(&test_config(), &server).await;
    assert_eq!(c.client_id(), id, "still shared while a clone lives");
    drop(b);
    drop(c);
    let d = connect(&test_config(), &server).await;
    assert_ne!(d.client_id(), id, "a new client once every user is gone");
    d.close().await;
}
