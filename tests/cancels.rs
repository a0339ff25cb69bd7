//! Cancelling tasks that are not delayed (`cancel(id)`) against a real nats-server: a running
//! task's handler is stopped from another connection, a waiting task never starts, a task
//! cancelled as it finishes ends in exactly one of the two, and a cancelled task is neither
//! retried nor dead-lettered.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use protoqueue::{
    cancelling,
    history::{self, Ending},
    lifecycle, Config, Connection, Failure, NewTask, Outcome,
};

fn recording_config() -> Config {
    Config {
        results_ttl: Some(Duration::from_secs(3_600)),
        ..test_config()
    }
}

async fn other_connection(config: &Config, server: &NatsServer) -> Connection {
    Connection::open_unshared(Arc::new(config.clone()), &server.url())
        .await
        .expect("another connection")
}

async fn record_of(connection: &Connection, id: &str) -> history::Record {
    eventually("the task's record", Duration::from_secs(10), || async {
        history::read(connection, id).await.expect("read")
    })
    .await
}

/// Counts how often its future is dropped unfinished (a stopped handler).
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_running_task_is_stopped_from_another_connection_and_ends_cancelled() {
    let server = NatsServer::start().await;
    let config = recording_config();
    let worker_side = connect(&config, &server).await;
    let canceller = other_connection(&config, &server).await;
    let started = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let worker = start_worker(&worker_side, {
        let (started, stopped) = (started.clone(), stopped.clone());
        handler(move |_| {
            started.fetch_add(1, Ordering::SeqCst);
            let guard = DropCount(stopped.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(120)).await;
                std::mem::forget(guard);
                Outcome::Success
            }
        })
    })
    .await;
    let id = lifecycle::enqueue(&canceller, task("{}"))
        .await
        .expect("enqueue");
    eventually("the handler runs", Duration::from_secs(10), || async {
        (started.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    let cancelled = cancelling::cancel(&canceller, &id).await.expect("cancel");
    assert!(cancelled, "a running task is cancelled");
    assert_eq!(stopped.load(Ordering::SeqCst), 1, "its handler was stopped");
    let record = record_of(&canceller, &id).await;
    assert_eq!(record.state, Ending::Cancelled);
    assert_eq!(record.attempts, 1);

    // Gone for good: not retried, not dead-lettered; cancelling it again finds nothing.
    eventually("the queue is empty", Duration::from_secs(10), || async {
        let stats = protoqueue::admin::stats::snapshot(&canceller)
            .await
            .expect("stats");
        (stats.pending == 0 && stats.in_flight == 0).then_some(stats)
    })
    .await;
    let stats = protoqueue::admin::stats::snapshot(&canceller)
        .await
        .expect("stats");
    assert_eq!(stats.dead_lettered, 0);
    assert!(!cancelling::cancel(&canceller, &id).await.expect("cancel"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(started.load(Ordering::SeqCst), 1, "never run again");
    worker.stop().await;
}

#[tokio::test]
async fn a_waiting_task_cancelled_before_any_worker_never_starts() {
    let server = NatsServer::start().await;
    let config = recording_config();
    let producer = connect(&config, &server).await;
    let own = lifecycle::enqueue(
        &producer,
        NewTask {
            id: Some("order-1".into()),
            ..task("{}")
        },
    )
    .await
    .expect("enqueue");
    let generated = lifecycle::enqueue(&producer, task("{}"))
        .await
        .expect("enqueue");
    let kept = lifecycle::enqueue(&producer, task("{}"))
        .await
        .expect("enqueue");
    // An own id is known to be waiting; a generated one is not (no index), but is marked.
    assert!(cancelling::cancel(&producer, &own).await.expect("cancel"));
    assert!(!cancelling::cancel(&producer, &generated)
        .await
        .expect("cancel"));
    assert!(!cancelling::cancel(&producer, "never-enqueued")
        .await
        .expect("cancel"));

    let recorder = Recorder::new();
    let worker_side = other_connection(&config, &server).await;
    let worker = start_worker(&worker_side, recording_success(&recorder, 0)).await;
    recorder.wait_calls(1, Duration::from_secs(10)).await;
    recorder
        .assert_no_more_calls(1, Duration::from_millis(500))
        .await;
    assert_eq!(recorder.events()[0].id(), kept);
    for id in [&own, &generated] {
        let record = record_of(&producer, id).await;
        assert_eq!(record.state, Ending::Cancelled, "{id}");
        assert_eq!(record.attempts, 0, "{id}: never ran");
    }
    // The own id is free again: a new task with it runs.
    lifecycle::enqueue(
        &producer,
        NewTask {
            id: Some("order-1".into()),
            ..task("{}")
        },
    )
    .await
    .expect("enqueue again");
    recorder.wait_calls(2, Duration::from_secs(10)).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_task_cancelled_between_attempts_is_not_retried() {
    let server = NatsServer::start().await;
    let config = Config {
        retry_delay: Duration::from_secs(2),
        ..recording_config()
    };
    let connection = connect(&config, &server).await;
    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |_| async {
            Outcome::Failure(Failure::new("not yet"))
        }),
    )
    .await;
    let id = lifecycle::enqueue(
        &connection,
        NewTask {
            id: Some("retrying".into()),
            ..task("{}")
        },
    )
    .await
    .expect("enqueue");
    recorder.wait_calls(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(cancelling::cancel(&connection, &id).await.expect("cancel"));
    let record = record_of(&connection, &id).await;
    assert_eq!(record.state, Ending::Cancelled);
    assert_eq!(record.attempts, 1);
    recorder
        .assert_no_more_calls(1, Duration::from_millis(500))
        .await;
    worker.stop().await;
}

#[tokio::test]
async fn a_cancel_racing_completion_ends_in_exactly_one_of_the_two() {
    let server = NatsServer::start().await;
    let config = Config {
        batch_size: 60,
        ..recording_config()
    };
    let worker_side = connect(&config, &server).await;
    let canceller = other_connection(&config, &server).await;
    let worker = start_worker(
        &worker_side,
        handler(|attempt| async move {
            // 50 to 290 ms: the cancels below land during and after.
            let n = attempt.task.data.len() as u64;
            tokio::time::sleep(Duration::from_millis(50 + 10 * (n % 25))).await;
            Outcome::Success
        }),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..60 {
        let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(i % 25));
        ids.push(
            lifecycle::enqueue(&canceller, task(data))
                .await
                .expect("enqueue"),
        );
    }
    let cancels = ids.iter().enumerate().map(|(i, id)| {
        let (canceller, id) = (canceller.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(15 * (i % 20) as u64)).await;
            cancelling::cancel(&canceller, &id).await.expect("cancel")
        })
    });
    let mut answers = Vec::new();
    for cancel in cancels.collect::<Vec<_>>() {
        answers.push(cancel.await.expect("joined"));
    }
    let mut both = (0, 0);
    for (id, cancelled) in ids.iter().zip(answers) {
        let record = record_of(&canceller, id).await;
        let ended_cancelled = record.state == Ending::Cancelled;
        assert!(
            record.state == Ending::Completed || ended_cancelled,
            "{id}: {record:?}"
        );
        if cancelled {
            // `true` is only said of a task that ended cancelled.
            assert!(ended_cancelled, "{id}: cancel said true but {record:?}");
            both.0 += 1;
        } else if !ended_cancelled {
            both.1 += 1;
        }
    }
    eprintln!("cancelled, completed: {both:?}");
    worker.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_task_cancelled_then_requeued_runs_in_its_new_life() {
    let server = NatsServer::start().await;
    let config = Config {
        max_retries: 0,
        ..recording_config()
    };
    let connection = connect(&config, &server).await;
    let recorder = Recorder::new();
    let fail_first = Arc::new(AtomicUsize::new(0));
    let worker = start_worker(&connection, {
        let fail_first = fail_first.clone();
        recording(&recorder, 0, move |_| {
            let first = fail_first.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Outcome::Failure(Failure::new("first life fails"))
                } else {
                    Outcome::Success
                }
            }
        })
    })
    .await;
    let id = lifecycle::enqueue(
        &connection,
        NewTask {
            id: Some("letter-1".into()),
            ..task("{}")
        },
    )
    .await
    .expect("enqueue");
    assert_eq!(
        record_of(&connection, &id).await.state,
        Ending::DeadLettered
    );
    // Ended: nothing to cancel (the mark stays, for a task of its life).
    assert!(!cancelling::cancel(&connection, &id).await.expect("cancel"));
    let requeued =
        protoqueue::dead_letters::redrive::requeue(&connection, &Default::default(), |_| {})
            .await
            .expect("requeue");
    assert_eq!(requeued, 1);
    recorder.wait_calls(2, Duration::from_secs(10)).await;
    assert_eq!(record_of(&connection, &id).await.state, Ending::Completed);
    worker.stop().await;
}
