//! The queue core against a real `nats-server`: enqueue, process, retries, dead letters,
//! concurrency, several workers, crashes of workers and of the server, shutdown, and errors.
//!
//! Every test starts its own server (see `common::NatsServer`) and uses unique stream names, so
//! tests run in parallel. Waits are on recorded events or server state, always bounded.

mod common;

use protoqueue::lifecycle;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream::{self, stream::RetentionPolicy};
use bytes::Bytes;
use common::*;
use futures::StreamExt;
use protoqueue::{
    admin::stats,
    envelope::{self, DeadLetterReason},
    producer::NewTask,
    Config, Connection, Error, Failure, Handler, Outcome, Worker,
};
use tokio::{
    sync::Semaphore,
    time::{timeout, Instant},
};

/// Generous bound for things that normally take milliseconds.
const SOON: Duration = Duration::from_secs(10);

fn code<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
    result.expect_err("expected an error").code()
}

async fn snapshot(connection: &Connection) -> protoqueue::Stats {
    stats::snapshot(connection).await.expect("read stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_round_trips_with_its_data_metadata_and_id() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;

    let before = envelope::now_ms();
    let data = Bytes::from_static(br#"{"to":"ada@example.com","n":1}"#);
    let metadata = Bytes::from_static(br#"{"tenant":"t-1"}"#);
    let id = lifecycle::enqueue(
        &connection,
        NewTask {
            data: data.clone(),
            metadata: metadata.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("enqueue");
    let stats = snapshot(&connection).await;
    assert_eq!((stats.messages, stats.pending, stats.in_flight), (1, 1, 0));

    let recorder = Recorder::new();
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, move |_| {
            let gate = held.clone();
            async move {
                let _permit = gate.acquire().await.expect("gate open");
                Outcome::Success
            }
        }),
    )
    .await;

    recorder.wait_calls(1, SOON).await;
    let attempt = recorder.events()[0].attempt.clone();
    assert_eq!(attempt.task.id, id);
    assert_eq!(attempt.task.data, data);
    assert_eq!(attempt.task.metadata, metadata);
    assert_eq!(attempt.task.content_type, envelope::JSON);
    assert_eq!(attempt.task.version, envelope::VERSION);
    assert!((before..=envelope::now_ms()).contains(&attempt.task.enqueued_at_ms));
    assert_eq!((attempt.number, attempt.max), (1, config.max_deliveries()));

    // While the handler runs the task is in flight and still stored.
    let stats = snapshot(&connection).await;
    assert_eq!((stats.messages, stats.pending, stats.in_flight), (1, 0, 1));

    gate.add_permits(1);
    wait_stats(&connection, 0, 0, SOON).await;
    let stats = snapshot(&connection).await;
    assert_eq!(
        (stats.pending, stats.in_flight, stats.last_sequence),
        (0, 0, 1)
    );
    assert_eq!(recorder.count(), 1);
    assert_eq!(worker.stop().await.abandoned, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_batch_returns_ordered_unique_ids_and_every_task_runs_once() {
    const N: usize = 2_000;
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;

    let ids = lifecycle::enqueue_batch(&connection, numbered_tasks(N))
        .await
        .expect("enqueue batch");
    assert_eq!(ids.len(), N);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        N,
        "ids are unique"
    );
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids are time-ordered, in input order");
    for id in &ids {
        let uuid = uuid::Uuid::parse_str(id).expect("ids are UUIDs");
        assert_eq!(uuid.get_version_num(), 7, "ids are UUIDv7");
    }
    assert_eq!(snapshot(&connection).await.messages, N as u64);

    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_distinct(N, Duration::from_secs(60)).await;
    wait_stats(&connection, 0, 0, SOON).await;

    // Every task was handled once (the stream is empty, so every ack was confirmed), and the
    // id returned for input i is the id of the task carrying data {"n":i}.
    let events = recorder.events();
    assert_eq!(events.len(), N, "no task was handled twice");
    for event in &events {
        let data: serde_json::Value =
            serde_json::from_slice(&event.attempt.task.data).expect("task data is JSON");
        let n = data["n"].as_u64().expect("data has n") as usize;
        assert_eq!(ids[n], event.id(), "id of input {n}");
        assert_eq!(event.attempt.number, 1);
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_retried_after_retry_delay_then_dead_lettered() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.max_retries = 2;
    config.retry_delay = Duration::from_millis(300);
    let connection = connect(&config, &server).await;

    let id = lifecycle::enqueue(&connection, task(br#"{"job":"fail"}"#.to_vec()))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |_| async {
            Outcome::Failure(Failure {
                error: "smtp refused".into(),
                details: Bytes::from_static(br#"{"status":550}"#),
                retry: true,
                retry_delay: None,
            })
        }),
    )
    .await;

    recorder.wait_calls(3, SOON).await;
    let letters = settled_with_dead_letters(&connection, 1).await;
    recorder
        .assert_no_more_calls(3, Duration::from_millis(800))
        .await;

    let events = recorder.events();
    let numbers: Vec<u64> = events.iter().map(|e| e.attempt.number).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(events.iter().all(|e| e.attempt.max == 3 && e.id() == id));
    for pair in events.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(280),
            "retried after {gap:?}, before retryDelay"
        );
    }

    let letter = &letters[0];
    assert_eq!(letter.reason(), DeadLetterReason::RetriesExhausted);
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.error, "smtp refused");
    assert_eq!(letter.details, Bytes::from_static(br#"{"status":550}"#));
    assert_eq!(letter.task.as_ref(), Some(&events[0].attempt.task));
    assert!(letter.raw.is_empty());
    assert_eq!(letter.stream, config.stream_name);
    assert_eq!(letter.subject, config.subject);
    // The last of the task's messages: each retry is stored anew (attempts 1, 2, 3).
    assert_eq!(letter.stream_sequence, 3);
    assert!(letter.failed_at_ms >= letter.task.as_ref().expect("task").enqueued_at_ms);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_without_retry_is_dead_lettered_after_one_attempt() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.retry_delay = Duration::from_millis(50);
    let connection = connect(&config, &server).await;

    let id = lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |_| async {
            Outcome::Failure(Failure {
                error: "bad input".into(),
                retry: false,
                ..Failure::default()
            })
        }),
    )
    .await;

    let letters = settled_with_dead_letters(&connection, 1).await;
    recorder
        .assert_no_more_calls(1, Duration::from_millis(500))
        .await;
    assert_eq!(recorder.count(), 1);
    let letter = &letters[0];
    assert_eq!(letter.reason(), DeadLetterReason::Rejected);
    assert_eq!(letter.attempts, 1);
    assert_eq!(letter.error, "bad input");
    assert_eq!(
        letter.task.as_ref().map(|t| t.id.as_str()),
        Some(id.as_str())
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_task_is_dead_lettered_raw_and_the_worker_carries_on() {
    const JUNK: &[u8] = b"hello, I am not a protobuf task";
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    assert!(
        envelope::Task::decode_checked(JUNK).is_err(),
        "the junk must not decode"
    );

    let client = async_nats::connect(server.url())
        .await
        .expect("plain client");
    let js = jetstream::new(client);
    js.publish(config.subject.clone(), Bytes::from_static(JUNK))
        .await
        .expect("publish junk")
        .await
        .expect("junk stored");

    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    let id = lifecycle::enqueue(&connection, task(b"{\"after\":true}".to_vec()))
        .await
        .expect("enqueue");

    recorder.wait_calls(1, SOON).await;
    let letters = settled_with_dead_letters(&connection, 1).await;
    assert_eq!(recorder.count(), 1, "the handler never saw the junk");
    assert_eq!(recorder.events()[0].id(), id);

    let letter = &letters[0];
    assert_eq!(letter.reason(), DeadLetterReason::InvalidEnvelope);
    assert_eq!(letter.raw, Bytes::from_static(JUNK));
    assert!(letter.task.is_none());
    assert!(!letter.error.is_empty());
    assert_eq!((letter.attempts, letter.stream_sequence), (1, 1));

    // Still processing after the junk.
    let id2 = lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    recorder.wait_calls(2, SOON).await;
    assert_eq!(recorder.events()[1].id(), id2);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_caps_the_handlers_running_at_once() {
    const N: usize = 40;
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.batch_size = 4;
    let connection = connect(&config, &server).await;
    lifecycle::enqueue_batch(&connection, numbered_tasks(N))
        .await
        .expect("enqueue");

    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let recorder = Recorder::new();
    let (r, m) = (running.clone(), most.clone());
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, move |_| {
            let (running, most) = (r.clone(), m.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Outcome::Success
            }
        }),
    )
    .await;

    recorder.wait_distinct(N, Duration::from_secs(30)).await;
    wait_stats(&connection, 0, 0, SOON).await;
    assert_eq!(recorder.count(), N);
    assert_eq!(
        most.load(Ordering::SeqCst),
        4,
        "at most batchSize handlers, and all slots used"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_a_queue_and_each_task_runs_once() {
    const N: usize = 1_000;
    let server = NatsServer::start().await;
    let config = test_config();
    let first = connect(&config, &server).await;
    let second = connect(&config, &server).await;

    let recorder = Recorder::new();
    let slow = |recorder: &Recorder, worker| {
        recording(recorder, worker, |_| async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Outcome::Success
        })
    };
    let a = start_worker(&first, slow(&recorder, 0)).await;
    let b = start_worker(&second, slow(&recorder, 1)).await;
    lifecycle::enqueue_batch(&first, numbered_tasks(N))
        .await
        .expect("enqueue");

    recorder.wait_distinct(N, Duration::from_secs(60)).await;
    wait_stats(&first, 0, 0, SOON).await;
    let events = recorder.events();
    assert_eq!(events.len(), N, "no task was handled twice");
    let by_a = events.iter().filter(|e| e.worker == 0).count();
    eprintln!("worker A handled {by_a}, worker B {}", N - by_a);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_a_server_kill_and_restart() {
    const N: usize = 1_000;
    let mut server = NatsServer::start().await;
    let mut config = test_config();
    config.ack_wait = Duration::from_secs(2);
    let connection = connect(&config, &server).await;
    lifecycle::enqueue_batch(&connection, numbered_tasks(N))
        .await
        .expect("enqueue");

    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Outcome::Success
        }),
    )
    .await;
    recorder.wait_distinct(N / 10, SOON).await;
    server.kill();
    let at_kill = recorder.distinct();
    assert!(
        at_kill < N,
        "the kill came after every task was handled; make handlers slower"
    );
    // An outage, not just a blip.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;

    recorder.wait_distinct(N, Duration::from_secs(60)).await;
    wait_stats(&connection, 0, 0, Duration::from_secs(30)).await;
    eprintln!(
        "handled {at_kill} before the kill; {} calls for {N} tasks in total",
        recorder.count()
    );
    assert_eq!(worker.stop().await.abandoned, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_during_an_outage_resolves_after_the_restart() {
    let mut server = NatsServer::start().await;
    let config = test_config(); // enqueueTimeout 30 s
    let connection = connect(&config, &server).await;

    server.kill();
    let pending = tokio::spawn({
        let connection = connection.clone();
        async move { lifecycle::enqueue(&connection, task(b"{\"late\":true}".to_vec())).await }
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        !pending.is_finished(),
        "enqueue resolved while the server was down"
    );
    server.restart().await;

    let id = timeout(Duration::from_secs(20), pending)
        .await
        .expect("enqueue resolves after the restart")
        .expect("enqueue task")
        .expect("enqueue succeeds");
    wait_stats(&connection, 1, 0, SOON).await;
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_calls(1, SOON).await;
    assert_eq!(recorder.events()[0].id(), id);
    wait_stats(&connection, 0, 0, SOON).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_times_out_when_the_server_stays_down() {
    let mut server = NatsServer::start().await;
    let mut config = test_config();
    config.enqueue_timeout = Duration::from_secs(1);
    let connection = connect(&config, &server).await;
    server.kill();

    let started = Instant::now();
    let result = lifecycle::enqueue(&connection, task(b"{}".to_vec())).await;
    let took = started.elapsed();
    assert_eq!(code(result), "ERR_PQ_TIMEOUT");
    assert!(
        took >= Duration::from_millis(900),
        "gave up after {took:?}, before enqueueTimeout"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} for a 1 s enqueueTimeout"
    );

    let started = Instant::now();
    let result = lifecycle::enqueue_batch(&connection, numbered_tasks(10)).await;
    assert_eq!(code(result), "ERR_PQ_TIMEOUT");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A worker on a runtime of its own, so it can die abruptly: dropping the runtime drops its
/// tasks, its handler and its TCP connection, with no ack, no unsubscribe, no drain.
struct DoomedWorker {
    runtime: tokio::runtime::Runtime,
    _parts: (Connection, Worker),
}

impl DoomedWorker {
    async fn start(config: &Config, url: String, handler: Arc<dyn Handler>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the doomed worker");
        let config = Arc::new(config.clone());
        let parts = runtime
            .spawn(async move {
                let connection = Connection::open(config, &url)
                    .await
                    .expect("connect worker A");
                let worker = Worker::start(connection.clone(), handler)
                    .await
                    .expect("start A");
                (connection, worker)
            })
            .await
            .expect("worker A started");
        DoomedWorker {
            runtime,
            _parts: parts,
        }
    }

    fn crash(self) {
        self.runtime.shutdown_background();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_task_goes_to_another_worker_after_ack_wait() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.ack_wait = Duration::from_secs(1);
    let connection = connect(&config, &server).await;

    let recorder = Recorder::new();
    let hangs = recording(&recorder, 0, |_| std::future::pending::<Outcome>());
    let a = DoomedWorker::start(&config, server.url(), hangs).await;
    let id = lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    recorder.wait_calls(1, SOON).await;
    let received_by_a = recorder.events()[0].at;
    a.crash();

    let b = start_worker(&connection, recording_success(&recorder, 1)).await;
    recorder.wait_calls(2, SOON).await;
    let second = &recorder.events()[1];
    let after = second.at - received_by_a;
    // A's run ended without an outcome: a stalled delivery, not an attempt (executor docs).
    assert_eq!(
        (second.worker, second.id(), second.attempt.number),
        (1, id.as_str(), 1)
    );
    assert!(
        after >= Duration::from_millis(900),
        "redelivered after {after:?}, before ackWait"
    );
    wait_stats(&connection, 0, 0, SOON).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_workers_task_goes_to_another_worker_after_ack_wait() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.ack_wait = Duration::from_secs(1);
    // Workers of two processes: closing A's connection must take its worker down with it.
    let a_connection = Connection::open_unshared(Arc::new(config.clone()), &server.url())
        .await
        .expect("connect");
    let b_connection = connect(&config, &server).await;

    let recorder = Recorder::new();
    let hangs = recording(&recorder, 0, |_| std::future::pending::<Outcome>());
    let _a = start_worker(&a_connection, hangs).await;
    let id = lifecycle::enqueue(&b_connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    recorder.wait_calls(1, SOON).await;
    let received_by_a = recorder.events()[0].at;

    // Worker B runs while A still holds the task: A's heartbeats keep it from B.
    let b = start_worker(&b_connection, recording_success(&recorder, 1)).await;
    recorder
        .assert_no_more_calls(1, Duration::from_millis(1_500))
        .await;
    let closed = Instant::now();
    a_connection.close().await;

    recorder.wait_calls(2, SOON).await;
    let second = &recorder.events()[1];
    // Abandoned without an outcome: a stalled delivery, not an attempt.
    assert_eq!(
        (second.worker, second.id(), second.attempt.number),
        (1, id.as_str(), 1)
    );
    let after_close = second.at - closed;
    let last_heartbeat_slack = config.heartbeat_interval() + Duration::from_millis(100);
    assert!(
        after_close + last_heartbeat_slack >= config.ack_wait,
        "redelivered {after_close:?} after A closed, before ackWait"
    );
    assert!(second.at - received_by_a >= Duration::from_millis(1_500));
    wait_stats(&b_connection, 0, 0, SOON).await;
    b.stop().await;
}

/// Takes the queue's next delivery `n` times without settling it as a handler would (each is
/// handed back at once): deliveries that end without an outcome, as a worker that dies, a lost
/// connection or a failover leaves them.
async fn stall(server: &NatsServer, config: &protoqueue::Config, n: usize) {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let stream = js.get_stream(&config.stream_name).await.expect("stream");
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(protoqueue::config::CONSUMER_NAME)
        .await
        .expect("the workers' consumer");
    for _ in 0..n {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(SOON)
            .messages()
            .await
            .expect("fetch");
        let message = batch.next().await.expect("a delivery").expect("a message");
        message
            .double_ack_with(jetstream::AckKind::Nak(None))
            .await
            .expect("handed back");
    }
}

/// Issue 23 A16: deliveries that never reached a handler (lost in a failover, a worker that
/// died) are not attempts: a task allowed one attempt still runs; only a task that keeps
/// stalling past its own budget is dead-lettered, unhandled, as deliveriesExhausted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_deliveries_have_a_budget_of_their_own_apart_from_attempts() {
    use protoqueue::worker::executor::MAX_STALLED_DELIVERIES;
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.max_retries = 0;
    let connection = connect(&config, &server).await;
    // Creates the consumer, then stops: the stalls below take the deliveries.
    start_worker(&connection, recording_success(&Recorder::new(), 9))
        .await
        .stop()
        .await;

    let within = lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    stall(&server, &config, MAX_STALLED_DELIVERIES as usize).await;
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 1)).await;
    recorder.wait_calls(1, SOON).await;
    let handled = &recorder.events()[0];
    assert_eq!((handled.id(), handled.attempt.number), (within.as_str(), 1));
    wait_stats(&connection, 0, 0, SOON).await;
    worker.stop().await;

    let past = lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    stall(&server, &config, MAX_STALLED_DELIVERIES as usize + 1).await;
    let worker = start_worker(&connection, recording_success(&recorder, 2)).await;
    let letters = settled_with_dead_letters(&connection, 1).await;
    assert_eq!(
        recorder.count(),
        1,
        "the handler never ran the task past its budget"
    );
    let letter = &letters[0];
    assert_eq!(letter.reason(), DeadLetterReason::DeliveriesExhausted);
    assert_eq!(
        letter.task.as_ref().map(|t| t.id.as_str()),
        Some(past.as_str())
    );
    worker.stop().await;
}

/// A handler whose worker died mid-run has no outcome: the task runs again (at least once), as
/// attempt 1 of a task allowed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_worker_died_mid_run_runs_again_on_another_worker() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.ack_wait = Duration::from_secs(1);
    config.max_retries = 0;
    let connection = connect(&config, &server).await;

    let recorder = Recorder::new();
    let hangs = recording(&recorder, 0, |_| std::future::pending::<Outcome>());
    let a = DoomedWorker::start(&config, server.url(), hangs).await;
    let id = lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    recorder.wait_calls(1, SOON).await;
    a.crash();

    let b = start_worker(&connection, recording_success(&recorder, 1)).await;
    recorder.wait_calls(2, SOON).await;
    let second = &recorder.events()[1];
    assert_eq!(
        (second.worker, second.id(), second.attempt.number),
        (1, id.as_str(), 1)
    );
    wait_stats(&connection, 0, 0, SOON).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_still_running_at_shutdown_timeout_is_abandoned_and_redelivered() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.ack_wait = Duration::from_secs(1);
    config.shutdown_timeout = Duration::from_millis(300);
    let connection = connect(&config, &server).await;

    let recorder = Recorder::new();
    let hangs = recording(&recorder, 0, |_| std::future::pending::<Outcome>());
    let a = start_worker(&connection, hangs).await;
    let id = lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    recorder.wait_calls(1, SOON).await;

    let stopping = Instant::now();
    let report = timeout(SOON, a.stop()).await.expect("stop returns");
    assert_eq!(report.abandoned, 1);
    assert!(stopping.elapsed() >= config.shutdown_timeout);

    let b = start_worker(&connection, recording_success(&recorder, 1)).await;
    recorder.wait_calls(2, SOON).await;
    let second = &recorder.events()[1];
    // Abandoned without an outcome: a stalled delivery, not an attempt.
    assert_eq!(
        (second.worker, second.id(), second.attempt.number),
        (1, id.as_str(), 1)
    );
    wait_stats(&connection, 0, 0, SOON).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_task_with_its_worker() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.ack_wait = Duration::from_secs(1);
    let connection = connect(&config, &server).await;

    let started = Recorder::new();
    let finished = Recorder::new();
    let work = Duration::from_millis(3_500);
    let worker = start_worker(
        &connection,
        recording_slow_success(&started, &finished, work),
    )
    .await;
    lifecycle::enqueue(&connection, task(b"{\"long\":true}".to_vec()))
        .await
        .expect("enqueue");

    finished.wait_calls(1, SOON).await;
    let took = finished.events()[0].at - started.events()[0].at;
    assert!(took >= Duration::from_millis(3_500));
    wait_stats(&connection, 0, 0, SOON).await;
    started
        .assert_no_more_calls(1, Duration::from_secs(2))
        .await;
    assert_eq!(finished.count(), 1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_settles_times_out_into_the_dead_letters() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.task_timeout = Duration::from_millis(500);
    config.max_retries = 0;
    let connection = connect(&config, &server).await;

    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |_| std::future::pending::<Outcome>()),
    )
    .await;
    let id = lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    recorder.wait_calls(1, SOON).await;
    let called = recorder.events()[0].at;

    let letters = settled_with_dead_letters(&connection, 1).await;
    assert!(called.elapsed() >= Duration::from_millis(500));
    let letter = &letters[0];
    assert_eq!(letter.reason(), DeadLetterReason::RetriesExhausted);
    assert_eq!(letter.attempts, 1);
    assert_eq!(
        letter.task.as_ref().map(|t| t.id.as_str()),
        Some(id.as_str())
    );
    assert_eq!(recorder.count(), 1);
    assert_eq!(worker.stop().await.abandoned, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_running_handlers_finish_and_acks_their_tasks() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.batch_size = 4;
    config.prefetch = 0; // the worker holds only the four it runs
    config.ack_wait = Duration::from_secs(1);
    let connection = connect(&config, &server).await;
    let ids = lifecycle::enqueue_batch(&connection, numbered_tasks(6))
        .await
        .expect("enqueue");

    let started = Recorder::new();
    let finished = Recorder::new();
    let work = Duration::from_millis(1_000);
    let worker = start_worker(
        &connection,
        recording_slow_success(&started, &finished, work),
    )
    .await;
    started.wait_calls(4, SOON).await;
    assert_eq!(finished.count(), 0);

    let report = timeout(SOON, worker.stop()).await.expect("stop returns");
    assert_eq!(report.abandoned, 0);
    assert_eq!(finished.count(), 4, "stop waited for the running handlers");
    assert_eq!(started.count(), 4, "no task was started after stop");
    let stats = snapshot(&connection).await;
    assert_eq!(
        (stats.messages, stats.in_flight),
        (2, 0),
        "the finished tasks are acked"
    );

    // A worker started afterwards gets only the two tasks never started, once each.
    let first_four: HashSet<String> = started.events().iter().map(|e| e.id().to_owned()).collect();
    let later = Recorder::new();
    let b = start_worker(
        &connect(&config, &server).await,
        recording_success(&later, 1),
    )
    .await;
    later.wait_calls(2, SOON).await;
    wait_stats(&connection, 0, 0, SOON).await;
    later.assert_no_more_calls(2, Duration::from_secs(2)).await;
    let rest: HashSet<String> = later.events().iter().map(|e| e.id().to_owned()).collect();
    assert!(rest.is_disjoint(&first_four));
    assert_eq!(first_four.len() + rest.len(), 6);
    assert!(ids
        .iter()
        .all(|id| first_four.contains(id) || rest.contains(id)));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_also_runs_the_prefetched_tasks_so_no_attempt_is_lost() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.batch_size = 4;
    let connection = connect(&config, &server).await;
    lifecycle::enqueue_batch(&connection, numbered_tasks(6))
        .await
        .expect("enqueue");

    // Four run, two are prefetched and wait for a slot.
    let started = Recorder::new();
    let finished = Recorder::new();
    let work = Duration::from_millis(500);
    let worker = start_worker(
        &connection,
        recording_slow_success(&started, &finished, work),
    )
    .await;
    started.wait_calls(4, SOON).await;
    eventually("all six tasks at the worker", SOON, || async {
        (snapshot(&connection).await.in_flight == 6).then_some(())
    })
    .await;

    let report = timeout(SOON, worker.stop()).await.expect("stop returns");
    assert_eq!(report.abandoned, 0);
    assert_eq!(finished.count(), 6, "stop ran the prefetched tasks too");
    let attempts: Vec<u64> = started.events().iter().map(|e| e.attempt.number).collect();
    assert_eq!(attempts, [1; 6], "each ran on its first delivery");
    let stats = snapshot(&connection).await;
    assert_eq!((stats.messages, stats.in_flight), (0, 0), "all acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_not_started_by_shutdown_timeout_are_handed_back_at_once() {
    let server = NatsServer::start().await; // ackWait stays at its 30 s default
    let mut config = test_config();
    config.batch_size = 1;
    config.shutdown_timeout = Duration::from_millis(200);
    let connection = connect(&config, &server).await;
    let ids = lifecycle::enqueue_batch(&connection, numbered_tasks(2))
        .await
        .expect("enqueue");

    // One slot: the first task runs (longer than shutdownTimeout), the second is prefetched.
    let started = Recorder::new();
    let finished = Recorder::new();
    let a = start_worker(
        &connection,
        recording_slow_success(&started, &finished, Duration::from_secs(2)),
    )
    .await;
    started.wait_calls(1, SOON).await;
    eventually("the second task to be prefetched", SOON, || async {
        (snapshot(&connection).await.in_flight == 2).then_some(())
    })
    .await;
    assert_eq!(a.stop().await.abandoned, 1);
    assert_eq!(started.count(), 1, "the prefetched task did not start");

    // Handed back, not held until ackWait (30 s) ran out: the next worker gets it at once.
    let later = Recorder::new();
    let b = start_worker(&connection, recording_success(&later, 1)).await;
    later.wait_calls(1, SOON).await;
    assert_eq!(later.events()[0].id(), ids[1]);
    // It was delivered to the first worker, which never started it: no attempt was charged.
    assert_eq!(later.events()[0].attempt.number, 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_prefetched_task_waiting_for_a_slot() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.batch_size = 1;
    config.ack_wait = Duration::from_secs(1);
    let connection = connect(&config, &server).await;
    lifecycle::enqueue_batch(&connection, numbered_tasks(2))
        .await
        .expect("enqueue");

    // The second task waits 2.5 ackWaits for the only slot.
    let started = Recorder::new();
    let finished = Recorder::new();
    let work = Duration::from_millis(2_500);
    let worker = start_worker(
        &connection,
        recording_slow_success(&started, &finished, work),
    )
    .await;
    finished.wait_calls(2, SOON).await;
    wait_stats(&connection, 0, 0, SOON).await;
    started
        .assert_no_more_calls(2, Duration::from_secs(2))
        .await;
    let attempts: Vec<u64> = started.events().iter().map(|e| e.attempt.number).collect();
    assert_eq!(attempts, [1, 1], "neither task was redelivered");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_enqueued_after_an_idle_worker_stopped_is_not_stranded() {
    let server = NatsServer::start().await; // ackWait stays at its 30 s default
    let config = test_config();
    let connection = connect(&config, &server).await;

    // An idle worker has a pull request open at the server when it stops.
    let recorder = Recorder::new();
    let a = start_worker(&connection, recording_success(&recorder, 0)).await;
    let client = async_nats::connect(server.url())
        .await
        .expect("plain client");
    let stream = jetstream::new(client)
        .get_stream(&config.stream_name)
        .await
        .expect("stream");
    eventually(
        "worker A's pull request to wait at the server",
        SOON,
        || async {
            let info = stream
                .consumer_info(protoqueue::config::CONSUMER_NAME)
                .await
                .ok()?;
            (info.num_waiting >= 1).then_some(())
        },
    )
    .await;
    timeout(SOON, a.stop()).await.expect("stop returns");

    let id = lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    let b = start_worker(
        &connect(&config, &server).await,
        recording_success(&recorder, 1),
    )
    .await;
    recorder.wait_calls(1, Duration::from_secs(5)).await;
    let first = &recorder.events()[0];
    assert_eq!(
        (first.worker, first.id(), first.attempt.number),
        (1, id.as_str(), 1)
    );
    wait_stats(&connection, 0, 0, SOON).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_where_no_server_listens_fails_fast() {
    let port = free_port();
    let config = test_config();
    let started = Instant::now();
    let result = Connection::open(Arc::new(config), &format!("nats://127.0.0.1:{port}")).await;
    assert_eq!(code(result), "ERR_PQ_CONNECT");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_that_does_not_fit_is_a_conflict() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url())
        .await
        .expect("plain client");
    let js = jetstream::new(client);

    // Same name and subject, but Limits retention.
    let limits = test_config();
    js.create_stream(jetstream::stream::Config {
        name: limits.stream_name.clone(),
        subjects: vec![limits.subject.clone()],
        retention: RetentionPolicy::Limits,
        ..Default::default()
    })
    .await
    .expect("create a Limits stream");
    let result = Connection::open(Arc::new(limits.clone()), &server.url()).await;
    assert_eq!(code(result), "ERR_PQ_STREAM_CONFLICT");
    let mut untouched = js
        .get_stream(&limits.stream_name)
        .await
        .expect("stream still there");
    let info = untouched.info().await.expect("stream info");
    assert_eq!(
        info.config.retention,
        RetentionPolicy::Limits,
        "never rewritten"
    );

    // Same name, other subjects.
    let other = test_config();
    js.create_stream(jetstream::stream::Config {
        name: other.stream_name.clone(),
        subjects: vec![format!("{}.elsewhere", other.subject)],
        retention: RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .expect("create a stream on other subjects");
    let result = Connection::open(Arc::new(other), &server.url()).await;
    assert_eq!(code(result), "ERR_PQ_STREAM_CONFLICT");

    // Our subject already captured by another stream.
    let taken = test_config();
    js.create_stream(jetstream::stream::Config {
        name: format!("{}_OTHER", taken.stream_name),
        subjects: vec![taken.subject.clone()],
        ..Default::default()
    })
    .await
    .expect("create a stream on the subject");
    let result = Connection::open(Arc::new(taken), &server.url()).await;
    assert_eq!(code(result), "ERR_PQ_STREAM_CONFLICT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_max_payload_is_refused_and_nothing_is_stored() {
    let server = NatsServer::start_with_config("max_payload: 4096\n").await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    assert_eq!(connection.max_payload(), 4096);

    let big = task(vec![b'x'; 5_000]);
    assert_eq!(
        code(lifecycle::enqueue(&connection, big.clone()).await),
        "ERR_PQ_PAYLOAD_TOO_LARGE"
    );
    let mixed = vec![task(b"{}".to_vec()), big, task(b"{}".to_vec())];
    assert_eq!(
        code(lifecycle::enqueue_batch(&connection, mixed).await),
        "ERR_PQ_PAYLOAD_TOO_LARGE"
    );
    let huge_metadata = NewTask {
        data: Bytes::new(),
        metadata: vec![b'm'; 5_000].into(),
        ..Default::default()
    };
    assert_eq!(
        code(lifecycle::enqueue(&connection, huge_metadata).await),
        "ERR_PQ_PAYLOAD_TOO_LARGE"
    );
    assert_eq!(
        snapshot(&connection).await.messages,
        0,
        "nothing was stored"
    );

    lifecycle::enqueue(&connection, task(vec![b'x'; 3_000]))
        .await
        .expect("a task that fits");
    assert_eq!(snapshot(&connection).await.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_near_max_payload_can_still_be_dead_lettered() {
    let server = NatsServer::start_with_config("max_payload: 4096\n").await;
    let mut config = test_config();
    config.retry_delay = Duration::from_millis(50);
    let connection = connect(&config, &server).await;

    // The largest data that is accepted: the dead letter wraps it with more fields.
    let mut size = 4_096;
    let id = loop {
        match lifecycle::enqueue(&connection, task(vec![b'x'; size])).await {
            Ok(id) => break id,
            Err(Error::PayloadTooLarge { .. }) => size -= 1,
            Err(err) => panic!("enqueue: {err}"),
        }
    };
    let recorder = Recorder::new();
    let worker = start_worker(
        &connection,
        recording(&recorder, 0, |_| async {
            Outcome::Failure(Failure {
                error: "e".repeat(2_000),
                details: vec![b'd'; 2_000].into(),
                retry: false,
                retry_delay: None,
            })
        }),
    )
    .await;
    let letters = settled_with_dead_letters(&connection, 1).await;
    assert_eq!(recorder.count(), 1);
    let letter = &letters[0];
    assert_eq!(
        (letter.reason(), letter.attempts),
        (DeadLetterReason::Rejected, 1)
    );
    let kept = letter
        .task
        .as_ref()
        .expect("the dead letter names its task");
    assert_eq!(kept.id, id);
    assert!(
        kept.data.is_empty(),
        "the data made way for the record of the failure"
    );
    recorder
        .assert_no_more_calls(1, Duration::from_millis(300))
        .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_drains_a_large_backlog_without_pauses() {
    const N: usize = 20_000;
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.batch_size = 100;
    let connection = connect(&config, &server).await;
    lifecycle::enqueue_batch(&connection, numbered_tasks(N))
        .await
        .expect("enqueue backlog");

    let recorder = Recorder::new();
    let started = Instant::now();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_distinct(N, Duration::from_secs(120)).await;
    let took = started.elapsed();
    wait_stats(&connection, 0, 0, SOON).await;

    let mut times: Vec<Instant> = recorder.events().iter().map(|e| e.at).collect();
    times.sort();
    let mut previous = started;
    let mut longest = Duration::ZERO;
    for at in times {
        longest = longest.max(at - previous);
        previous = at;
    }
    eprintln!(
        "{N} tasks in {took:?}; longest pause {longest:?}; {} calls",
        recorder.count()
    );
    assert!(
        longest < Duration::from_secs(5),
        "the worker paused for {longest:?}"
    );
    worker.stop().await;
}
