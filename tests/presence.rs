//! Live workers against a real nats-server: a started worker is listed from another connection
//! with where it runs, one that stops is gone at once, and records from other clients are skipped.

mod common;

use common::*;
use protoqueue::{admin::stats, presence, Outcome};

#[tokio::test]
async fn a_running_worker_is_listed_and_a_stopped_one_is_not() {
    let server = NatsServer::start().await;
    let config = test_config();
    let monitor = connect(&config, &server).await;
    assert!(presence::list(&monitor).await.expect("list").is_empty());
    assert_eq!(presence::count(&monitor).await.expect("count"), 0);

    let connection = connect(&config, &server).await;
    let worker = start_worker(&connection, handler(|_| async { Outcome::Success })).await;
    let listed = presence::list(&monitor).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let record = &listed[0];
    assert_eq!(
        (record.pid, record.kind.as_str(), record.batch_size),
        (std::process::id(), "tasks", config.batch_size)
    );
    assert_eq!(record.id.len(), 12);
    assert!(record.started_at <= record.seen_at);
    assert_eq!(stats::snapshot(&monitor).await.expect("stats").workers, 1);

    // Another client's junk on a worker subject is not a worker.
    let client = async_nats::connect(server.url()).await.expect("connect");
    client
        .publish(
            format!("{}junk", config.workers_prefix()),
            "{\"id\":1}".into(),
        )
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    assert_eq!(presence::list(&monitor).await.expect("list").len(), 1);

    worker.stop().await;
    let left = presence::list(&monitor).await.expect("list");
    assert!(
        left.is_empty(),
        "a stopped worker is gone at once: {left:?}"
    );
}
