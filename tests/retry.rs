//! Retry backoff (queue-wide, per task, chosen by the handler), producer-chosen task ids, and
//! the global limits (`globalConcurrency`, `rateLimit`), against a real `nats-server`.
//!
//! Times are asserted with lower bounds kept strictly and upper bounds generous: this machine is
//! shared and noisy.

mod common;

use protoqueue::lifecycle;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use protoqueue::{
    admin::stats,
    config::{
        backoff::{Backoff, BackoffKind},
        RateLimit,
    },
    producer::{self, NewTask},
    Config, Connection, Error, Failure, Outcome,
};
use tokio::time::Instant;

const SOON: Duration = Duration::from_secs(10);
/// Slack allowed on top of a delay: scheduling, pulls, a loaded machine.
const SLACK: Duration = Duration::from_millis(1_500);

fn code<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
    result.expect_err("expected an error").code()
}

async fn stored(connection: &Connection) -> u64 {
    stats::snapshot(connection)
        .await
        .expect("read stats")
        .messages
}

/// The gaps between consecutive calls of one task.
fn gaps(recorder: &Recorder) -> Vec<Duration> {
    let times: Vec<Instant> = recorder.events().iter().map(|e| e.at).collect();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn failing() -> impl Fn(protoqueue::Attempt) -> std::future::Ready<Outcome> + Send + Sync {
    |_| std::future::ready(Outcome::Failure(Failure::new("again")))
}

fn assert_between(gap: Duration, least: Duration, what: &str) {
    assert!(gap >= least, "{what}: waited {gap:?}, less than {least:?}");
    assert!(
        gap <= least + SLACK,
        "{what}: waited {gap:?}, far more than {least:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_doubles_the_wait_up_to_max_delay() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.max_retries = 4;
    config.backoff = Some(Backoff {
        kind: BackoffKind::Exponential,
        delay: Duration::from_millis(200),
        max_delay: Some(Duration::from_millis(700)),
        jitter: 0.0,
    });
    let connection = connect(&config, &server).await;
    lifecycle::enqueue(&connection, task("{}"))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording(&recorder, 0, failing())).await;
    recorder.wait_calls(5, Duration::from_secs(20)).await;
    let gaps = gaps(&recorder);
    println!("exponential 200 ms up to 700 ms: observed waits {gaps:?}");
    for (gap, ms) in gaps.iter().zip([200, 400, 700, 700]) {
        assert_between(*gap, Duration::from_millis(ms), "exponential");
    }
    recorder
        .assert_no_more_calls(5, Duration::from_millis(500))
        .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_keeps_waits_within_their_fraction() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.max_retries = 3;
    config.backoff = Some(Backoff {
        kind: BackoffKind::Fixed,
        delay: Duration::from_millis(600),
        max_delay: None,
        jitter: 0.5,
    });
    let connection = connect(&config, &server).await;
    lifecycle::enqueue(&connection, task("{}"))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording(&recorder, 0, failing())).await;
    recorder.wait_calls(4, Duration::from_secs(20)).await;
    for gap in gaps(&recorder) {
        assert_between(gap, Duration::from_millis(300), "jittered");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_carries_its_own_max_retries_and_backoff() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.max_retries = 0;
    config.retry_delay = Duration::from_secs(60);
    let connection = connect(&config, &server).await;
    let own = NewTask {
        max_retries: Some(2),
        backoff: Some(Backoff {
            kind: BackoffKind::Exponential,
            delay: Duration::from_millis(300),
            max_delay: None,
            jitter: 0.0,
        }),
        ..task("{}")
    };
    lifecycle::enqueue(&connection, own).await.expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording(&recorder, 0, failing())).await;
    recorder.wait_calls(3, Duration::from_secs(20)).await;
    let events = recorder.events();
    assert_eq!(
        events.iter().map(|e| e.attempt.max).collect::<Vec<_>>(),
        [3, 3, 3]
    );
    let gaps = gaps(&recorder);
    assert_between(gaps[0], Duration::from_millis(300), "first retry");
    assert_between(gaps[1], Duration::from_millis(600), "second retry");
    recorder
        .assert_no_more_calls(3, Duration::from_millis(800))
        .await;
    eventually("the task dead-lettered", SOON, || async {
        (stored(&connection).await == 0).then_some(())
    })
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handlers_own_retry_delay_wins() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.retry_delay = Duration::from_secs(60);
    let connection = connect(&config, &server).await;
    lifecycle::enqueue(&connection, task("{}"))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |attempt| async move {
            if attempt.number == 1 {
                Outcome::Failure(Failure {
                    retry_delay: Some(Duration::from_millis(250)),
                    ..Failure::new("later")
                })
            } else {
                Outcome::Success
            }
        }),
    )
    .await;
    recorder.wait_calls(2, SOON).await;
    assert_between(
        gaps(&recorder)[0],
        Duration::from_millis(250),
        "handler's delay",
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_enqueued_again_stores_nothing_and_resolves_with_the_id() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let with_id = |id: &str| NewTask {
        id: Some(id.to_owned()),
        ..task("{}")
    };
    let id = lifecycle::enqueue(&connection, with_id("order-42:email"))
        .await
        .expect("enqueue");
    assert_eq!(id, "order-42:email");
    let again = lifecycle::enqueue(&connection, with_id("order-42:email"))
        .await
        .expect("enqueue again");
    assert_eq!(again, "order-42:email");
    let batch = lifecycle::enqueue_batch(
        &connection,
        vec![
            with_id("a"),
            with_id("a"),
            with_id("order-42:email"),
            task("{}"),
        ],
    )
    .await
    .expect("batch");
    assert_eq!(&batch[..3], ["a", "a", "order-42:email"]);
    assert_eq!(stored(&connection).await, 3);

    // The handler sees the producer's id.
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_distinct(3, SOON).await;
    let ids: std::collections::HashSet<String> = recorder
        .events()
        .iter()
        .map(|e| e.id().to_owned())
        .collect();
    assert!(
        ids.contains("order-42:email") && ids.contains("a"),
        "{ids:?}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_racing_with_one_id_store_one_task() {
    let server = NatsServer::start().await;
    let config = test_config();
    let first = connect(&config, &server).await;
    let second = connect(&config, &server).await;
    for round in 0..20 {
        let id = format!("race-{round}");
        let one = NewTask {
            id: Some(id.clone()),
            ..task("{\"from\":1}")
        };
        let two = NewTask {
            id: Some(id.clone()),
            ..task("{\"from\":2}")
        };
        let (a, b) = tokio::join!(
            lifecycle::enqueue(&first, one),
            lifecycle::enqueue(&second, two)
        );
        assert_eq!((a.expect("first"), b.expect("second")), (id.clone(), id));
    }
    assert_eq!(stored(&first).await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_are_invalid_tasks_and_nothing_is_sent() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    for bad in [
        String::new(),
        "a b".into(),
        "a\nb".into(),
        "tab\there".into(),
        "nul\0".into(),
        "x".repeat(257),
        "é".repeat(129),
    ] {
        let attempt = NewTask {
            id: Some(bad.clone()),
            ..task("{}")
        };
        assert_eq!(
            code(lifecycle::enqueue(&connection, attempt).await),
            "ERR_PQ_INVALID_TASK",
            "{bad:?}"
        );
        let batch = vec![
            task("{}"),
            NewTask {
                id: Some(bad.clone()),
                ..task("{}")
            },
        ];
        assert_eq!(
            code(lifecycle::enqueue_batch(&connection, batch).await),
            "ERR_PQ_INVALID_TASK"
        );
    }
    let longest = NewTask {
        id: Some("x".repeat(256)),
        ..task("{}")
    };
    lifecycle::enqueue(&connection, longest)
        .await
        .expect("256 bytes");
    assert_eq!(stored(&connection).await, 1);
    assert_eq!(
        code(producer::checked_max_retries(-1.0)),
        "ERR_PQ_INVALID_TASK"
    );
    assert_eq!(
        code(producer::checked_max_retries(1.5)),
        "ERR_PQ_INVALID_TASK"
    );
    assert_eq!(
        code(producer::checked_max_retries(5e9)),
        "ERR_PQ_INVALID_TASK"
    );
}

/// Counts handlers running at once.
#[derive(Clone, Default)]
struct Concurrency {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

impl Concurrency {
    fn handler(&self, work: Duration) -> Arc<dyn protoqueue::Handler> {
        let this = self.clone();
        handler(move |_| {
            let this = this.clone();
            async move {
                let running = this.now.fetch_add(1, Ordering::SeqCst) + 1;
                this.max.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(work).await;
                this.now.fetch_sub(1, Ordering::SeqCst);
                this.done.fetch_add(1, Ordering::SeqCst);
                Outcome::Success
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_concurrency_bounds_handlers_across_workers() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.global_concurrency = Some(3);
    config.batch_size = 10;
    let producer_connection = connect(&config, &server).await;
    lifecycle::enqueue_batch(&producer_connection, numbered_tasks(24))
        .await
        .expect("enqueue");
    let counter = Concurrency::default();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let connection = connect(&config, &server).await;
        workers.push(start_worker(&connection, counter.handler(Duration::from_millis(150))).await);
    }
    eventually("every task handled", Duration::from_secs(30), || async {
        (counter.done.load(Ordering::SeqCst) >= 24).then_some(())
    })
    .await;
    let max = counter.max.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} handlers ran at once");
    assert_eq!(max, 3, "the limit is used");
    for worker in workers {
        worker.stop().await;
    }

    // The last worker to start sets the limit; one without it lifts it.
    let stream = async_nats::jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("plain client"),
    )
    .get_stream(&config.stream_name)
    .await
    .expect("stream");
    let consumer = stream
        .consumer_info(protoqueue::config::CONSUMER_NAME)
        .await
        .expect("consumer");
    assert_eq!(consumer.config.max_ack_pending, 3);
    let unlimited = Config {
        global_concurrency: None,
        ..config.clone()
    };
    let connection = connect(&unlimited, &server).await;
    let worker = start_worker(&connection, counter.handler(Duration::ZERO)).await;
    let consumer = stream
        .consumer_info(protoqueue::config::CONSUMER_NAME)
        .await
        .expect("consumer");
    assert_eq!(consumer.config.max_ack_pending, -1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_worker_takes_at_most_max_per_window() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    let window = Duration::from_millis(500);
    config.rate_limit = Some(RateLimit {
        max: 5,
        duration: window,
    });
    let connection = connect(&config, &server).await;
    lifecycle::enqueue_batch(&connection, numbered_tasks(25))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let started = Instant::now();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_calls(25, Duration::from_secs(30)).await;
    let elapsed = started.elapsed();
    println!("rateLimit 5 per 500 ms: 25 tasks in {elapsed:?}");
    // 25 tasks at 5 per 500 ms: the last five come 4 windows after the first five.
    assert!(elapsed >= 4 * window, "took {elapsed:?}");
    assert!(elapsed <= 4 * window + 4 * SLACK, "took {elapsed:?}");
    let times: Vec<Instant> = recorder.events().iter().map(|e| e.at).collect();
    // Handler calls follow deliveries within milliseconds: a window shortened by 50 ms holds at
    // most 5 of them.
    for (i, first) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .filter(|t| **t - *first < window - Duration::from_millis(50))
            .count();
        assert!(within <= 5, "{within} tasks within one window");
    }
    worker.stop().await;
}

/// A queue whose task stream forgets ids after one second (the default window is 2 minutes).
async fn short_window(server: &NatsServer) -> (Config, async_nats::jetstream::Context) {
    let config = test_config();
    let js = async_nats::jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("plain client"),
    );
    js.create_stream(async_nats::jetstream::stream::Config {
        duplicate_window: Duration::from_secs(1),
        ..protoqueue::nats::topology::task_stream_config(&config)
    })
    .await
    .expect("create the stream");
    (config, js)
}

fn with_id(id: &str) -> NewTask {
    NewTask {
        id: Some(id.to_owned()),
        ..task("{}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_stays_taken_while_its_task_is_stored_beyond_the_duplicate_window() {
    let server = NatsServer::start().await;
    let (config, js) = short_window(&server).await;
    let connection = connect(&config, &server).await;
    lifecycle::enqueue(&connection, with_id("order-1"))
        .await
        .expect("enqueue");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The server forgot the Nats-Msg-Id; the id index did not.
    assert_eq!(
        lifecycle::enqueue(&connection, with_id("order-1"))
            .await
            .expect("again"),
        "order-1"
    );
    assert_eq!(stored(&connection).await, 1);

    // Handled and acked: the marker goes, and the id can be used again.
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_calls(1, SOON).await;
    worker.stop().await;
    let index = js
        .get_stream(config.id_index_stream())
        .await
        .expect("the index stream");
    eventually("the marker removed", SOON, || {
        let mut index = index.clone();
        async move { (index.info().await.ok()?.state.messages == 0).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    lifecycle::enqueue(&connection, with_id("order-1"))
        .await
        .expect("a new task");
    assert_eq!(stored(&connection).await, 1, "stored again once done");
}

/// Single `enqueue` calls from JavaScript cross together (`Queue::enqueue_each`): a task with its
/// own id takes the id index there too, so the id stays taken beyond the duplicate window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_made_together_keep_an_id_taken_beyond_the_duplicate_window() {
    let server = NatsServer::start().await;
    let (config, _js) = short_window(&server).await;
    let connection = connect(&config, &server).await;
    let queue = protoqueue::Queue::new(config);
    queue.connect(Some(&server.url())).await.expect("connect");
    let first = queue
        .enqueue_each(vec![with_id("order-7"), task("{}")])
        .await
        .expect("connected");
    assert_eq!(first[0].as_deref().ok(), Some("order-7"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The server forgot the Nats-Msg-Id; the id index did not.
    let again = queue
        .enqueue_each(vec![with_id("order-7")])
        .await
        .expect("connected");
    assert_eq!(again[0].as_deref().ok(), Some("order-7"));
    assert_eq!(stored(&connection).await, 2);
    queue.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_whose_task_is_gone_is_replaced() {
    let server = NatsServer::start().await;
    let (config, js) = short_window(&server).await;
    let connection = connect(&config, &server).await;
    lifecycle::enqueue(&connection, with_id("x.y*z"))
        .await
        .expect("enqueue");
    // The task leaves without a worker releasing its marker (a purge; or a worker that died
    // between its ack and the release).
    js.get_stream(&config.stream_name)
        .await
        .expect("stream")
        .purge()
        .await
        .expect("purge");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    lifecycle::enqueue(&connection, with_id("x.y*z"))
        .await
        .expect("enqueue again");
    assert_eq!(
        stored(&connection).await,
        1,
        "the stale marker did not block the id"
    );
    // Two producers racing on the stale marker store one task.
    js.get_stream(&config.stream_name)
        .await
        .expect("stream")
        .purge()
        .await
        .expect("purge");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let other = connect(&config, &server).await;
    let (a, b) = tokio::join!(
        lifecycle::enqueue(&connection, with_id("x.y*z")),
        lifecycle::enqueue(&other, with_id("x.y*z"))
    );
    a.expect("first");
    b.expect("second");
    assert_eq!(stored(&connection).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_task_frees_its_id_and_junk_markers_are_replaced() {
    let server = NatsServer::start().await;
    let (config, js) = short_window(&server).await;
    let connection = connect(&config, &server).await;
    lifecycle::enqueue(&connection, with_id("job-9"))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |_| async {
            Outcome::Failure(Failure {
                retry: false,
                ..Failure::new("no")
            })
        }),
    )
    .await;
    recorder.wait_calls(1, SOON).await;
    worker.stop().await;
    let index = js
        .get_stream(config.id_index_stream())
        .await
        .expect("the index stream");
    eventually("the marker removed", SOON, || {
        let mut index = index.clone();
        async move { (index.info().await.ok()?.state.messages == 0).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    lifecycle::enqueue(&connection, with_id("job-9"))
        .await
        .expect("enqueue again");
    assert_eq!(stored(&connection).await, 1);

    // Something that is not a marker on an id's subject does not block the id.
    js.publish(protoqueue::ids::subject(&config, "junk-id"), "hello".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    lifecycle::enqueue(&connection, with_id("junk-id"))
        .await
        .expect("enqueue");
    assert_eq!(stored(&connection).await, 2);
}

/// Measures one-at-a-time enqueues with and without ids (run by hand: `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_enqueue_with_and_without_ids() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let n = 2_000;
    for round in 0..3 {
        let started = Instant::now();
        for _ in 0..n {
            lifecycle::enqueue(&connection, task("{}"))
                .await
                .expect("enqueue");
        }
        let plain = started.elapsed();
        let started = Instant::now();
        for i in 0..n {
            lifecycle::enqueue(&connection, with_id(&format!("r{round}-{i}")))
                .await
                .expect("enqueue");
        }
        let fresh = started.elapsed();
        let started = Instant::now();
        for i in 0..n {
            lifecycle::enqueue(&connection, with_id(&format!("r{round}-{i}")))
                .await
                .expect("enqueue");
        }
        let taken = started.elapsed();
        let started = Instant::now();
        lifecycle::enqueue_batch(&connection, numbered_tasks(n))
            .await
            .expect("batch");
        let plain_batch = started.elapsed();
        let started = Instant::now();
        let batch = (0..n).map(|i| with_id(&format!("b{round}-{i}"))).collect();
        lifecycle::enqueue_batch(&connection, batch)
            .await
            .expect("batch");
        let id_batch = started.elapsed();
        let per = |d: Duration| d.as_micros() / n as u128;
        println!(
            "round {round}: one at a time (µs/task) plain {} new id {} taken id {}; batch of {n}: plain {} µs/task, ids {} µs/task",
            per(plain),
            per(fresh),
            per(taken),
            per(plain_batch),
            per(id_batch)
        );
    }
}
