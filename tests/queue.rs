//! The lifecycle of a queue object ([`Queue`]): connect → process → disconnect, again and again,
//! with a handler that queues attempts itself like the JavaScript dispatcher does.

mod common;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use protoqueue::{
    worker::{
        batching::{BatchSink, Taken},
        executor::{Attempt, BoxFuture, Outcome},
        ACKS_SENT_TIMEOUT, OVERRUN,
    },
    Config, Error, Queue,
};
use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinSet,
    time::{timeout, Instant},
};

/// Generous bound for things that normally take milliseconds.
const SOON: Duration = Duration::from_secs(10);

type Behaviour = Arc<dyn Fn(Attempt) -> BoxFuture<Outcome> + Send + Sync>;

/// A handler shaped like the JavaScript dispatcher: it is handed every attempt as it arrives,
/// runs at most `limit` at once, the others in arrival order, and reports each outcome by run
/// and token through [`Queue::outcomes`].
struct QueueingSink {
    batches: mpsc::UnboundedSender<Vec<(u32, Attempt)>>,
}

impl BatchSink for QueueingSink {
    type Item = (u32, Attempt);

    fn item(&self, token: u32, attempt: Attempt) -> Result<Self::Item, Outcome> {
        Ok((token, attempt))
    }

    fn queues_attempts(&self) -> bool {
        true
    }

    fn send(&self, batch: Vec<Self::Item>, taken: Taken) {
        let sent = self
            .batches
            .send(batch)
            .map_err(|_| "dispatcher gone".into());
        taken.report(sent);
    }
}

/// Starts a run of `queue` whose handler runs `behaviour`, `limit` at a time; returns the run id.
async fn process_queueing(queue: &Arc<Queue>, limit: usize, behaviour: Behaviour) -> u32 {
    let run = queue.reserve_run();
    let (batches, mut arriving) = mpsc::unbounded_channel::<Vec<(u32, Attempt)>>();
    let reporting = queue.clone();
    tokio::spawn(async move {
        let mut waiting = VecDeque::new();
        let mut running = JoinSet::new();
        loop {
            tokio::select! {
                batch = arriving.recv() => match batch {
                    Some(batch) => waiting.extend(batch),
                    // The run ended; handlers still running go on, as they do in JavaScript.
                    None => {
                        while running.join_next().await.is_some() {}
                        break;
                    }
                },
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
            while running.len() < limit {
                let Some((token, attempt)) = waiting.pop_front() else {
                    break;
                };
                if let Some(outcomes) = reporting.outcomes(run) {
                    outcomes.started(token);
                }
                let handled = behaviour(attempt);
                let queue = reporting.clone();
                running.spawn(async move {
                    let outcome = handled.await;
                    if let Some(outcomes) = queue.outcomes(run) {
                        outcomes.complete(token, outcome);
                    }
                });
            }
        }
    });
    queue
        .process_batched(run, QueueingSink { batches })
        .await
        .expect("process");
    run
}

fn behaviour<F, Fut>(f: F) -> Behaviour
where
    F: Fn(Attempt) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    Arc::new(move |attempt| Box::pin(f(attempt)))
}

async fn connected(config: Config, server: &NatsServer) -> Arc<Queue> {
    let queue = Arc::new(Queue::new(config));
    queue.connect(Some(&server.url())).await.expect("connect");
    queue
}

// One runtime thread, as the addon runs: spawned tasks then run in an order of tokio's choosing.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn one_worker_starts_tasks_in_the_order_they_were_enqueued() {
    const N: usize = 50;
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.batch_size = 1;
    let queue = connected(config, &server).await;
    let ids = queue
        .enqueue_batch(numbered_tasks(N))
        .await
        .expect("enqueue");

    let started = Arc::new(Mutex::new(Vec::new()));
    let log = started.clone();
    process_queueing(
        &queue,
        1,
        behaviour(move |attempt: Attempt| {
            log.lock().expect("log").push(attempt.task.id);
            async { Outcome::Success }
        }),
    )
    .await;
    eventually("every task handled", SOON, || async {
        (started.lock().expect("log").len() == N).then_some(())
    })
    .await;
    queue.disconnect().await;
    assert_eq!(*started.lock().expect("log"), ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn one_worker_with_a_plain_handler_calls_it_in_enqueue_order() {
    const N: usize = 50;
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.batch_size = 1;
    let queue = connected(config, &server).await;
    let ids = queue
        .enqueue_batch(numbered_tasks(N))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    queue
        .process(recording_success(&recorder, 0))
        .await
        .expect("process");
    recorder.wait_calls(N, SOON).await;
    queue.disconnect().await;
    let handled: Vec<_> = recorder
        .events()
        .iter()
        .map(|e| e.id().to_owned())
        .collect();
    assert_eq!(handled, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_connects_and_processes_again_after_disconnect() {
    let server = NatsServer::start().await;
    let queue = connected(test_config(), &server).await;
    queue.disconnect().await;
    assert_eq!(
        queue.enqueue(task("{}")).await.map_err(|e| e.code()),
        Err(Error::NotConnected.code())
    );
    queue.connect(Some(&server.url())).await.expect("again");
    let id = queue.enqueue(task("{}")).await.expect("enqueue");
    let recorder = Recorder::new();
    queue
        .process(recording_success(&recorder, 0))
        .await
        .expect("process");
    recorder.wait_calls(1, SOON).await;
    assert_eq!(recorder.events()[0].id(), id);
    assert_eq!(queue.disconnect().await.abandoned, 0);
}

/// A handler abandoned at `shutdownTimeout` by one run answers late, while the next run of the
/// same queue object holds a task under the same token: the late answer must settle nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_outcome_from_an_ended_run_settles_nothing() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.shutdown_timeout = Duration::from_millis(300);
    config.ack_wait = Duration::from_secs(1);
    let queue = connected(config, &server).await;
    queue.enqueue(task("{}")).await.expect("enqueue");

    // Run 1 answers only when the test says so; its only task is abandoned at shutdownTimeout.
    let late = Arc::new(Semaphore::new(0));
    let answer = late.clone();
    let began = Arc::new(Semaphore::new(0));
    let beginning = began.clone();
    let first = process_queueing(
        &queue,
        1,
        behaviour(move |_| {
            beginning.add_permits(1);
            let answer = answer.clone();
            async move {
                let _ = answer.acquire().await;
                Outcome::Success
            }
        }),
    )
    .await;
    wait_in_flight(&queue, 1).await;
    // Started (a task whose start is not yet reported at the deadline is handed back instead,
    // as a loaded machine showed).
    timeout(SOON, began.acquire())
        .await
        .expect("the handler started")
        .expect("permit")
        .forget();
    assert_eq!(queue.disconnect().await.abandoned, 1);

    // Run 2 gets the same task again (after ackWait), under the first token of its run.
    queue.connect(Some(&server.url())).await.expect("again");
    let arrived = Arc::new(Semaphore::new(0));
    let signal = arrived.clone();
    let second = process_queueing(
        &queue,
        1,
        behaviour(move |_| {
            signal.add_permits(1);
            std::future::pending()
        }),
    )
    .await;
    assert_ne!(first, second);
    timeout(SOON, arrived.acquire())
        .await
        .expect("redelivered")
        .expect("open")
        .forget();

    // The abandoned handler of run 1 answers now, with the token both attempts got.
    late.add_permits(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = queue.stats().await.expect("stats");
    assert_eq!((stats.messages, stats.in_flight), (1, 1), "still running");
    queue.disconnect().await;
}

/// `disconnect()` from inside a handler cannot wait for that handler: the binding begins it,
/// returns, and finishes it in the background. The handler's result still settles its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_handler_that_disconnects_its_queue_still_settles_its_task() {
    let server = NatsServer::start().await;
    let config = test_config(); // shutdownTimeout 30 s
    let watcher = connect(&config, &server).await;
    let queue = connected(config, &server).await;
    queue.enqueue(task("{}")).await.expect("enqueue");

    let (returned, mut disconnected) = mpsc::unbounded_channel();
    let handlers = Recorder::new();
    let record = handlers.clone();
    let inner = queue.clone();
    process_queueing(
        &queue,
        1,
        behaviour(move |attempt: Attempt| {
            record.record(&attempt, 0);
            let queue = inner.clone();
            let returned = returned.clone();
            async move {
                let began = Instant::now();
                let shutdown = queue.begin_disconnect().await;
                tokio::spawn(shutdown.finish());
                let _ = returned.send(began.elapsed());
                Outcome::Success
            }
        }),
    )
    .await;
    let took = timeout(SOON, disconnected.recv())
        .await
        .expect("disconnect returned")
        .expect("sent");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    wait_stats(&watcher, 0, 0, SOON).await;
    let stats = protoqueue::admin::stats::snapshot(&watcher)
        .await
        .expect("stats");
    assert_eq!((stats.messages, stats.dead_lettered), (0, 0), "acked");
    handlers
        .assert_no_more_calls(1, Duration::from_millis(500))
        .await;
}

/// During an outage nothing can be settled: `disconnect()` still returns within
/// `shutdownTimeout` plus the bounded overrun, acks and close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_is_bounded_during_an_outage() {
    let mut server = NatsServer::start().await;
    let mut config = test_config();
    config.shutdown_timeout = Duration::from_millis(500);
    config.batch_size = 2;
    let queue = connected(config, &server).await;
    // Two tasks run, two wait in the worker (prefetched: one per slot before any finished) to be
    // handed back.
    queue
        .enqueue_batch(numbered_tasks(4))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let finished = Recorder::new();
    queue
        .process(recording_slow_success(
            &recorder,
            &finished,
            Duration::from_secs(60),
        ))
        .await
        .expect("process");
    recorder.wait_calls(1, SOON).await;
    wait_in_flight(&queue, 4).await;
    server.kill();
    // An enqueue that waits for the server, and a stats call, while the disconnect runs.
    let enqueuing = tokio::spawn({
        let queue = queue.clone();
        async move { queue.enqueue(task("{}")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let began = Instant::now();
    let report = timeout(SOON * 3, queue.disconnect())
        .await
        .expect("disconnect returns");
    let bound = Duration::from_millis(500)
        + OVERRUN
        + ACKS_SENT_TIMEOUT
        + protoqueue::queue::CLOSE_TIMEOUT
        + Duration::from_millis(500);
    assert!(began.elapsed() <= bound, "took {:?}", began.elapsed());
    assert!(report.abandoned <= 2);
    // The enqueue cut off by the close may still be stored: it says so with ERR_PQ_TIMEOUT.
    let enqueued = timeout(SOON, enqueuing)
        .await
        .expect("the enqueue ends")
        .expect("joined");
    assert_eq!(enqueued.map_err(|e| e.code()), Err("ERR_PQ_TIMEOUT"));
}

/// Enqueues racing `disconnect()`: each either resolves with an id (and is stored) or is refused
/// before anything is sent (`ERR_PQ_NOT_CONNECTED`). Nothing is refused and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_racing_disconnect_are_stored_exactly_when_they_resolve() {
    let server = NatsServer::start().await;
    let config = test_config();
    let watcher = connect(&config, &server).await;
    let queue = connected(config, &server).await;
    let mut enqueues = JoinSet::new();
    for i in 0..400 {
        let queue = queue.clone();
        enqueues.spawn(async move { queue.enqueue(task(format!("{{\"n\":{i}}}"))).await });
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    queue.disconnect().await;
    let mut stored = 0;
    while let Some(result) = enqueues.join_next().await {
        match result.expect("joined") {
            Ok(_) => stored += 1,
            Err(err) => assert_eq!(err.code(), "ERR_PQ_NOT_CONNECTED", "{err}"),
        }
    }
    let stats = protoqueue::admin::stats::snapshot(&watcher)
        .await
        .expect("stats");
    assert_eq!(stats.messages, stored);
}

async fn wait_in_flight(queue: &Queue, n: u64) {
    eventually("a task in flight", SOON, || async {
        let stats = queue.stats().await.ok()?;
        (stats.in_flight == n).then_some(())
    })
    .await;
}

/// Single enqueues that crossed together stand alone: a task too large for the server fails on
/// its own, the others are stored, each result in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_enqueued_together_each_get_their_own_result() {
    let server = NatsServer::start().await;
    let config = test_config();
    let watcher = connect(&config, &server).await;
    let queue = connected(config, &server).await;
    let too_large = task(vec![b'x'; 2 * 1024 * 1024]);
    let results = queue
        .enqueue_each(vec![task("1"), too_large, task("3")])
        .await
        .expect("connected");
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[2].is_ok());
    assert_eq!(
        results[1].as_ref().map_err(|e| e.code()).err(),
        Some("ERR_PQ_PAYLOAD_TOO_LARGE")
    );
    let stats = protoqueue::admin::stats::snapshot(&watcher)
        .await
        .expect("stats");
    assert_eq!(stats.messages, 2);
    queue.disconnect().await;
    assert_eq!(
        queue
            .enqueue_each(vec![task("4")])
            .await
            .map(|_| ())
            .map_err(|e| e.code()),
        Err("ERR_PQ_NOT_CONNECTED")
    );
}
