//! Task priorities against a real nats-server: urgent tasks overtake a backlog on every worker
//! within the stated bound, keep their level through retries, dead letters and delays, and bad
//! input is refused with nothing sent.

mod common;

use protoqueue::lifecycle;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use futures::StreamExt;
use protoqueue::{admin::stats, dead_letters::redrive, envelope, layout, Config, NewTask, Outcome};
use tokio::time::Instant;

/// Generous bound for things that normally take milliseconds.
const SOON: Duration = Duration::from_secs(20);

fn priority_config() -> Config {
    let mut config = test_config();
    config.priorities = true;
    config
}

fn at(priority: u8, data: &str) -> NewTask {
    NewTask {
        priority: Some(priority),
        ..task(data)
    }
}

/// One start of a handler: which worker, which task (its data), when.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<(usize, String, Instant)>>>);

impl Starts {
    fn handler(&self, worker: usize, work: Duration) -> Arc<dyn protoqueue::Handler> {
        let starts = self.clone();
        handler(move |attempt| {
            let data = String::from_utf8_lossy(&attempt.task.data).into_owned();
            starts
                .0
                .lock()
                .unwrap()
                .push((worker, data, Instant::now()));
            async move {
                tokio::time::sleep(work).await;
                Outcome::Success
            }
        })
    }

    fn all(&self) -> Vec<(usize, String, Instant)> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[tokio::test]
async fn urgent_tasks_overtake_a_backlog_on_every_worker_within_the_bound() {
    let server = NatsServer::start().await;
    let mut config = priority_config();
    config.batch_size = 5;
    config.prefetch = 20;
    // What one worker may hold: its batchSize plus its prefetch.
    let bound = (config.batch_size + config.prefetch) as usize;
    let producer_side = connect(&config, &server).await;
    let lows: Vec<NewTask> = (0..2_000).map(|i| at(10, &format!("\"low{i}\""))).collect();
    lifecycle::enqueue_batch(&producer_side, lows)
        .await
        .unwrap();

    let starts = Starts::default();
    let mut workers = Vec::new();
    for worker in 0..2 {
        let connection = connect(&config, &server).await;
        let handler = starts.handler(worker, Duration::from_millis(5));
        workers.push((start_worker(&connection, handler).await, connection));
    }
    eventually("the backlog to be under way", SOON, || async {
        (starts.count() >= 100).then_some(())
    })
    .await;

    // Rounds of urgent tasks while the backlog runs: each is stored, then must start before
    // more than `bound` low tasks start after it on its worker.
    let mut stored = Vec::new();
    for round in 0..4 {
        let urgent: Vec<NewTask> = (0..10)
            .map(|i| at(1, &format!("\"high{round}_{i}\"")))
            .collect();
        lifecycle::enqueue_batch(&producer_side, urgent)
            .await
            .unwrap();
        let when = Instant::now();
        for i in 0..10 {
            stored.push((format!("\"high{round}_{i}\""), when));
        }
        let started = stored.len();
        eventually("the urgent round to start", SOON, || async {
            let all = starts.all();
            let highs = all.iter().filter(|(_, d, _)| d.contains("high")).count();
            (highs >= started).then_some(())
        })
        .await;
    }
    let all = starts.all();
    let remaining_lows = all.iter().filter(|(_, d, _)| d.contains("low")).count();
    assert!(
        remaining_lows < 1_900,
        "the backlog was still there when the urgent tasks came ({remaining_lows} lows started)"
    );
    let mut workers_with_urgent = [false; 2];
    let mut worst = 0;
    for (data, stored_at) in &stored {
        let (worker, _, started_at) = all
            .iter()
            .find(|(_, d, _)| d == data)
            .expect("every urgent task started");
        workers_with_urgent[*worker] = true;
        let overtaken_by = all
            .iter()
            .filter(|(w, d, t)| w == worker && d.contains("low") && t > stored_at && t < started_at)
            .count();
        worst = worst.max(overtaken_by);
        assert!(
            overtaken_by <= bound,
            "{data} started after {overtaken_by} low tasks were started on its worker after it \
             was stored (bound {bound})"
        );
    }
    eprintln!(
        "priority bound: at most {worst} low tasks started before an urgent one (bound {bound})"
    );
    assert_eq!(
        workers_with_urgent,
        [true, true],
        "both workers ran urgent tasks"
    );

    for (worker, _) in workers {
        worker.stop().await;
    }
}

#[tokio::test]
async fn every_level_is_served_by_an_idle_worker() {
    let server = NatsServer::start().await;
    let config = priority_config();
    let connection = connect(&config, &server).await;
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    // One at a time, so each lands on an idle worker's waiting requests.
    for (seen, level) in [10, 1, 5, 7, 3].into_iter().enumerate() {
        lifecycle::enqueue(&connection, at(level, "{}"))
            .await
            .unwrap();
        recorder.wait_calls(seen + 1, SOON).await;
    }
    // And without a priority: the default level.
    lifecycle::enqueue(&connection, task("{}")).await.unwrap();
    recorder.wait_calls(6, SOON).await;
    worker.stop().await;
}

/// A backlog at the least urgent level is swept without asking the nine empty levels above it
/// each time: a level a sweep finds empty keeps a waiting request (renewed when it expires, once
/// a second), and sweeps pass over it. Asked by every sweep, as before, each empty level would
/// get one request per sweep: hundreds here (3,000 tasks, room for about a hundred at a time).
#[tokio::test]
async fn a_backlog_below_empty_levels_costs_one_request_per_sweep() {
    let server = NatsServer::start().await;
    let mut config = priority_config();
    config.batch_size = 10;
    config.prefetch = 100;
    let connection = connect(&config, &server).await;
    let tasks = (0..3_000)
        .map(|i| at(10, &format!("{{\"i\":{i}}}")))
        .collect();
    lifecycle::enqueue_batch(&connection, tasks).await.unwrap();

    // Every pull request of the queue's consumers, as the server receives it.
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut requests = watcher
        .subscribe(format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.>",
            config.stream_name
        ))
        .await
        .unwrap();
    watcher.flush().await.unwrap();

    let recorder = Recorder::new();
    let started = Instant::now();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_calls(3_000, SOON).await;
    let elapsed = started.elapsed();
    worker.stop().await;

    let backlog = layout::consumer_name(protoqueue::config::CONSUMER_NAME, 10);
    let (mut to_backlog, mut to_empty) = (0usize, 0usize);
    while let Ok(Some(request)) =
        tokio::time::timeout(Duration::from_millis(300), requests.next()).await
    {
        if request.subject.as_str().ends_with(&format!(".{backlog}")) {
            to_backlog += 1;
        } else {
            to_empty += 1;
        }
    }
    // Each empty level: a sweep's request and a waiting request, again each time that expires.
    let expiries = elapsed.as_secs() as usize + 2;
    assert!(
        to_backlog >= 20,
        "{to_backlog} requests to the backlog's level: room for ~110 at a time should take dozens"
    );
    assert!(
        to_empty <= 9 * 2 * expiries,
        "{to_empty} requests to the nine empty levels in {elapsed:?} ({to_backlog} to the backlog's)"
    );
}

/// The number of tasks in flight on the consumer of `level`.
async fn in_flight_at(server: &NatsServer, config: &Config, level: u8) -> usize {
    let client = async_nats::connect(server.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream(&config.stream_name)
        .await
        .unwrap();
    let consumer = layout::consumer_name(protoqueue::config::CONSUMER_NAME, level);
    stream
        .consumer_info(&consumer)
        .await
        .unwrap()
        .num_ack_pending
}

#[tokio::test]
async fn a_retried_task_keeps_its_priority() {
    let server = NatsServer::start().await;
    let mut config = priority_config();
    config.retry_delay = Duration::from_secs(2);
    let connection = connect(&config, &server).await;
    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |attempt| async move {
            if attempt.number == 1 {
                Outcome::Failure(protoqueue::Failure {
                    retry: true,
                    ..Default::default()
                })
            } else {
                Outcome::Success
            }
        }),
    )
    .await;
    lifecycle::enqueue(&connection, at(2, "{}")).await.unwrap();
    recorder.wait_calls(1, SOON).await;
    // Waiting for its retry, it is still on level 2's consumer.
    eventually("the failed task to wait on level 2", SOON, || async {
        (in_flight_at(&server, &config, 2).await == 1).then_some(())
    })
    .await;
    recorder.wait_calls(2, SOON).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_requeued_dead_letter_goes_back_to_its_priority() {
    let server = NatsServer::start().await;
    let mut config = priority_config();
    config.max_retries = 0;
    let connection = connect(&config, &server).await;
    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |_| async {
            Outcome::Failure(Default::default())
        }),
    )
    .await;
    lifecycle::enqueue(&connection, at(3, "{}")).await.unwrap();
    let letters = settled_with_dead_letters(&connection, 1).await;
    assert_eq!(
        letters[0].subject,
        layout::stored_subject(&config, &config.subject, 3)
    );
    worker.stop().await;

    let requeued = redrive::requeue(&connection, &Default::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(requeued, 1);
    let stats = stats::snapshot(&connection).await.unwrap();
    assert_eq!(stats.pending, 1);
    assert_eq!(stats.pending_by_priority[2], 1, "{stats:?}");
    assert_eq!(stats.dead_lettered, 0);
}

#[tokio::test]
async fn a_delayed_task_fires_into_its_priority() {
    let server = NatsServer::start().await;
    let mut config = priority_config();
    config.schedules = true;
    let connection = connect(&config, &server).await;
    let due = envelope::now_ms() + 500;
    lifecycle::enqueue(&connection, at(1, "{}").at(due))
        .await
        .unwrap();
    let stats = stats::snapshot(&connection).await.unwrap();
    assert_eq!((stats.delayed, stats.pending), (1, 0), "{stats:?}");
    let stats = eventually("the delayed task to be due", SOON, || async {
        let stats = stats::snapshot(&connection).await.ok()?;
        (stats.delayed == 0 && stats.pending == 1).then_some(stats)
    })
    .await;
    assert_eq!(stats.pending_by_priority[0], 1, "{stats:?}");
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_calls(1, SOON).await;
    assert!(envelope::now_ms() >= due);
    worker.stop().await;
}

#[tokio::test]
async fn bad_priorities_are_refused_and_nothing_is_sent() {
    let server = NatsServer::start().await;
    let plain = test_config();
    let connection = connect(&plain, &server).await;
    let err = lifecycle::enqueue(&connection, at(1, "{}"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_PQ_INVALID_TASK");
    assert!(err.to_string().contains("options.priorities"), "{err}");

    let config = priority_config();
    let connection = connect(&config, &server).await;
    for bad in [0, 11, 255] {
        let batch = vec![at(1, "{}"), at(bad, "{}")];
        let err = lifecycle::enqueue_batch(&connection, batch)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "ERR_PQ_INVALID_TASK");
    }
    let stats = stats::snapshot(&connection).await.unwrap();
    assert_eq!(stats.messages, 0, "nothing was sent");

    let mut both = priority_config();
    both.global_concurrency = Some(3);
    let value = serde_json::json!({
        "streamName": both.stream_name,
        "subject": both.subject,
        "options": { "priorities": true, "globalConcurrency": 3 },
    });
    let err = Config::from_json(&value).unwrap_err();
    assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG");
    let value = serde_json::json!({
        "streamName": both.stream_name,
        "subject": both.subject,
        "options": { "priorities": "yes" },
    });
    assert_eq!(
        Config::from_json(&value).unwrap_err().code(),
        "ERR_PQ_INVALID_CONFIG"
    );
}

#[tokio::test]
async fn a_queue_turning_priorities_on_keeps_its_tasks_at_the_default_level() {
    let server = NatsServer::start().await;
    let plain = test_config();
    let connection = connect(&plain, &server).await;
    lifecycle::enqueue_batch(&connection, numbered_tasks(3))
        .await
        .unwrap();
    let mut config = plain.clone();
    config.priorities = true;
    let connection = connect(&config, &server).await;
    lifecycle::enqueue(&connection, at(1, "\"urgent\""))
        .await
        .unwrap();
    let stats = stats::snapshot(&connection).await.unwrap();
    assert_eq!(stats.pending, 4, "{stats:?}");
    assert_eq!(stats.pending_by_priority[0], 1);
    assert_eq!(stats.pending_by_priority[4], 3);
    let starts = Starts::default();
    let worker = start_worker(&connection, starts.handler(0, Duration::ZERO)).await;
    eventually("every task to run", SOON, || async {
        (starts.count() == 4).then_some(())
    })
    .await;
    assert_eq!(starts.all()[0].1, "\"urgent\"", "the urgent task first");
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_of_every_level_carries_on_after_a_server_restart() {
    let mut server = NatsServer::start().await;
    let config = priority_config();
    let connection = connect(&config, &server).await;
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    lifecycle::enqueue(&connection, at(3, "{}")).await.unwrap();
    recorder.wait_calls(1, SOON).await;
    server.restart().await;
    // Every level again, after the restart: the worker's requests were lost with the connection.
    let tasks: Vec<NewTask> = (1..=10).map(|level| at(level, "{}")).collect();
    lifecycle::enqueue_batch(&connection, tasks).await.unwrap();
    recorder.wait_calls(11, Duration::from_secs(30)).await;
    worker.stop().await;
}

#[tokio::test]
async fn own_ids_and_pause_work_with_priorities() {
    let server = NatsServer::start().await;
    let config = priority_config();
    let connection = connect(&config, &server).await;
    let own = |id: &str| NewTask {
        id: Some(id.into()),
        ..at(1, "{}")
    };
    let first = lifecycle::enqueue(&connection, own("order-1"))
        .await
        .unwrap();
    let again = lifecycle::enqueue(&connection, own("order-1"))
        .await
        .unwrap();
    assert_eq!((first.as_str(), again.as_str()), ("order-1", "order-1"));
    let stats = stats::snapshot(&connection).await.unwrap();
    assert_eq!(stats.pending_by_priority[0], 1, "stored once: {stats:?}");

    protoqueue::admin::control::pause(&connection)
        .await
        .unwrap();
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    lifecycle::enqueue(&connection, at(9, "{}")).await.unwrap();
    recorder
        .assert_no_more_calls(0, Duration::from_millis(500))
        .await;
    assert!(stats::snapshot(&connection).await.unwrap().paused);
    protoqueue::admin::control::resume(&connection)
        .await
        .unwrap();
    recorder.wait_calls(2, SOON).await;
    worker.stop().await;
}
