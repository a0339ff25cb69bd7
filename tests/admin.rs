//! Operations on a queue as a whole, against a real nats-server: requeueing and removing dead
//! letters, purging waiting tasks, pausing and resuming every worker.

mod common;

use protoqueue::lifecycle;

use std::{collections::HashSet, time::Duration};

use common::*;
use protoqueue::{
    admin::{control, stats},
    dead_letters::{
        redrive::{self, Filter},
        write::{self as dead_letter, Failed, Origin},
    },
    envelope::{DeadLetterReason, Task},
    Connection, Failure, Outcome,
};
use tokio::time::Instant;

/// Generous bound for things that normally take milliseconds.
const SOON: Duration = Duration::from_secs(10);

/// Stores `n` dead letters of tasks `{"n":i}` (ids returned), as workers would.
/// Origins of the letters `dead_letters_of` makes, one per letter.
static NEXT_SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn dead_letters_of(
    connection: &Connection,
    n: usize,
    reason: DeadLetterReason,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let stores = chunk.iter().map(|i| {
            let id = format!("task-{}-{i}", unique("l"));
            let sequence = NEXT_SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ids.push(id.clone());
            let task = Task::create(
                id,
                format!("{{\"n\":{i}}}").into(),
                "application/json",
                Default::default(),
                1,
            );
            async move {
                dead_letter::publish(
                    connection,
                    Failed::Task(Box::new(task)),
                    // Each letter of its own message: the letter's message id names it.
                    &Origin {
                        attempts: 4,
                        stream: connection.config().stream_name.clone(),
                        stream_sequence: sequence,
                        ..Origin::default()
                    },
                    reason,
                    "failed".into(),
                    Default::default(),
                )
                .await
                .expect("store a dead letter")
            }
        });
        futures::future::join_all(stores).await;
    }
    ids
}

async fn snapshot(connection: &Connection) -> protoqueue::Stats {
    stats::snapshot(connection).await.expect("stats")
}

fn no_progress(_: redrive::Progress) {}

/// A task dead-lettered seconds after it was enqueued, inside the 2-minute duplicate window of
/// its id, runs again when requeued: same id, a fresh attempt budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_task_runs_again_with_its_id_and_fresh_attempts() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.max_retries = 1;
    config.retry_delay = Duration::from_millis(50);
    let connection = connect(&config, &server).await;
    let id = lifecycle::enqueue(&connection, task("{}"))
        .await
        .expect("enqueue");

    let recorder = Recorder::new();
    let failing = start_worker(
        &connection,
        recording(&recorder, 0, |_| async {
            Outcome::Failure(Failure::new("down"))
        }),
    )
    .await;
    wait_stats(&connection, 0, 1, SOON).await;
    failing.stop().await;

    let requeued = redrive::requeue(&connection, &Filter::default(), no_progress)
        .await
        .expect("requeue");
    assert_eq!(requeued, 1);
    assert_eq!(
        snapshot(&connection).await.dead_lettered,
        0,
        "the letter is gone"
    );
    let again = Recorder::new();
    let worker = start_worker(&connection, recording_success(&again, 1)).await;
    again.wait_calls(1, SOON).await;
    let attempt = again.events()[0].attempt.clone();
    assert_eq!((attempt.task.id.as_str(), attempt.number), (id.as_str(), 1));
    wait_stats(&connection, 0, 0, SOON).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_requeueing_at_once_store_one_copy_of_each_task() {
    const N: usize = 200;
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let other = connect(&config, &server).await;
    dead_letters_of(&connection, N, DeadLetterReason::RetriesExhausted).await;

    let filter = Filter::default();
    let (a, b) = tokio::join!(
        redrive::requeue(&connection, &filter, no_progress),
        redrive::requeue(&other, &filter, no_progress),
    );
    let (a, b) = (a.expect("requeue a"), b.expect("requeue b"));
    assert_eq!(a + b, N as u64, "every letter requeued once ({a} + {b})");
    let stats = snapshot(&connection).await;
    assert_eq!((stats.messages, stats.dead_lettered), (N as u64, 0));
}

/// Letters removed by someone else while a requeue walks the stream are never delivered to its
/// reader: it must notice they are gone rather than wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_racing_a_purge_of_every_letter_finishes() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let other = connect(&config, &server).await;
    let filter = Filter::default();
    for round in 0..20 {
        dead_letters_of(&connection, 5, DeadLetterReason::RetriesExhausted).await;
        let (requeued, purged) = tokio::time::timeout(SOON, async {
            tokio::join!(
                redrive::requeue(&connection, &filter, no_progress),
                redrive::purge(&other, &filter, no_progress),
            )
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: requeue and purge did not finish"));
        let (requeued, purged) = (requeued.expect("requeue"), purged.expect("purge"));
        assert!(
            requeued + purged >= 5,
            "round {round}: {requeued} + {purged}"
        );
        assert_eq!(
            snapshot(&connection).await.dead_lettered,
            0,
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pick_letters_by_id_reason_and_count() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let failed = dead_letters_of(&connection, 5, DeadLetterReason::RetriesExhausted).await;
    let rejected = dead_letters_of(&connection, 3, DeadLetterReason::Rejected).await;

    let by_ids = Filter {
        ids: Some(HashSet::from([failed[1].clone(), rejected[2].clone()])),
        ..Filter::default()
    };
    assert_eq!(
        redrive::requeue(&connection, &by_ids, no_progress)
            .await
            .expect("requeue"),
        2
    );
    let by_reason = Filter {
        reason: Some(DeadLetterReason::Rejected),
        ..Filter::default()
    };
    assert_eq!(
        redrive::purge(&connection, &by_reason, no_progress)
            .await
            .expect("purge"),
        2
    );
    let two = Filter {
        limit: Some(2),
        ..Filter::default()
    };
    assert_eq!(
        redrive::requeue(&connection, &two, no_progress)
            .await
            .expect("requeue"),
        2
    );
    let stats = snapshot(&connection).await;
    assert_eq!((stats.messages, stats.dead_lettered), (4, 2));
    let left: Vec<_> = dead_letters(&connection)
        .await
        .into_iter()
        .filter_map(|letter| letter.task.map(|task| task.id))
        .collect();
    assert_eq!(
        left,
        vec![failed[3].clone(), failed[4].clone()],
        "the oldest went first"
    );
    assert_eq!(
        redrive::purge(&connection, &Filter::default(), no_progress)
            .await
            .expect("purge"),
        2
    );
    assert_eq!(snapshot(&connection).await.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_letters_are_requeued_in_one_call() {
    const N: usize = 10_000;
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    dead_letters_of(&connection, N, DeadLetterReason::RetriesExhausted).await;
    let reports = std::sync::Mutex::new(Vec::new());
    let began = Instant::now();
    let requeued = redrive::requeue(&connection, &Filter::default(), |progress| {
        reports.lock().expect("reports").push(progress)
    })
    .await
    .expect("requeue");
    let took = began.elapsed();
    eprintln!("requeued {requeued} letters in {took:?}");
    assert_eq!(requeued, N as u64);
    let stats = snapshot(&connection).await;
    assert_eq!((stats.messages, stats.dead_lettered), (N as u64, 0));
    let reports = reports.into_inner().expect("reports");
    let last = reports.last().expect("progress reported");
    assert_eq!(
        (last.seen, last.total, last.done),
        (N as u64, N as u64, N as u64)
    );
    assert!(reports.windows(2).all(|w| w[0].done <= w[1].done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_waiting_tasks_but_not_those_in_flight() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.batch_size = 2;
    config.prefetch = 0;
    let connection = connect(&config, &server).await;
    lifecycle::enqueue_batch(&connection, numbered_tasks(10))
        .await
        .expect("enqueue");
    let (started, finished) = (Recorder::new(), Recorder::new());
    let worker = start_worker(
        &connection,
        recording_slow_success(&started, &finished, Duration::from_millis(800)),
    )
    .await;
    started.wait_calls(2, SOON).await;
    let removed = control::purge(&connection).await.expect("purge");
    assert_eq!(removed, 8);
    finished.wait_calls(2, SOON).await;
    wait_stats(&connection, 0, 0, SOON).await;
    started
        .assert_no_more_calls(2, Duration::from_millis(300))
        .await;
    assert!(
        !control::is_paused(&connection).await.expect("state"),
        "workers resumed"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_every_worker_until_resume_and_outlives_a_worker_restart() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let operator = connect(&config, &server).await;
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;

    control::pause(&operator).await.expect("pause");
    assert!(control::is_paused(&operator).await.expect("state"));
    lifecycle::enqueue(&operator, task("{}"))
        .await
        .expect("enqueue");
    recorder
        .assert_no_more_calls(0, Duration::from_secs(1))
        .await;

    // A worker restarted while paused stays paused.
    worker.stop().await;
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder
        .assert_no_more_calls(0, Duration::from_secs(1))
        .await;
    assert!(control::is_paused(&operator).await.expect("state"));

    control::resume(&operator).await.expect("resume");
    recorder.wait_calls(1, SOON).await;
    assert!(!control::is_paused(&operator).await.expect("state"));
    worker.stop().await;
}
