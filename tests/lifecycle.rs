//! Where features meet: a task's multi-step state changes (own ids, dead letters, requeue) under
//! the defaults users get — the stream's 2-minute duplicate window is never shortened here, so a
//! new event of a task that the window takes for a re-send shows as a lost task.

mod common;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use protoqueue::{
    admin::schedules::Recurring,
    config::LetterOptions,
    dead_letters::redrive::Filter,
    envelope::Task,
    lifecycle,
    worker::{
        executor::BoxFuture,
        letters::{LetterAttempt, LetterHandler},
    },
    Connection, Failure, NewTask, Outcome, Queue,
};

const SOON: Duration = Duration::from_secs(15);

async fn jetstream(server: &NatsServer) -> async_nats::jetstream::Context {
    let client = async_nats::connect(server.url()).await.expect("connect");
    async_nats::jetstream::new(client)
}

fn with_id(id: &str) -> NewTask {
    NewTask {
        id: Some(id.to_owned()),
        ..task("{}")
    }
}

/// A queue of `config` whose handler fails every task for good and counts its calls.
async fn failing_queue(server: &NatsServer) -> (Arc<Queue>, Arc<AtomicUsize>) {
    let mut config = test_config();
    config.max_retries = 0;
    let queue = Arc::new(Queue::new(config));
    queue.connect(Some(&server.url())).await.expect("connect");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    queue
        .process(handler(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Outcome::Failure(Failure::new("downstream is down")) }
        }))
        .await
        .expect("process");
    (queue, calls)
}

async fn wait_queue_stats(queue: &Queue, messages: u64, dead_lettered: u64) {
    let what = format!("{messages} stored tasks and {dead_lettered} dead letters");
    eventually(&what, SOON, || async {
        let stats = queue.stats().await.ok()?;
        (stats.messages == messages && stats.dead_lettered == dead_lettered).then_some(())
    })
    .await;
}

async fn wait_calls(calls: &AtomicUsize, n: usize) {
    eventually(&format!("{n} handler calls"), SOON, || async {
        (calls.load(Ordering::SeqCst) >= n).then_some(())
    })
    .await;
}

/// Issue 23 A1: the second letter of a requeued task was taken for a re-send of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_task_that_fails_for_good_again_is_dead_lettered_again() {
    let server = NatsServer::start().await;
    let (queue, calls) = failing_queue(&server).await;
    queue.enqueue(task("{}")).await.expect("enqueue");
    wait_queue_stats(&queue, 0, 1).await;
    for round in 1..=3 {
        let requeued = queue
            .requeue_dead_letters(&Filter::default(), |_| {})
            .await
            .expect("requeue");
        assert_eq!(requeued, 1, "round {round}");
        wait_calls(&calls, round + 1).await;
        // On neither stream is lost: it must be a letter again.
        wait_queue_stats(&queue, 0, 1).await;
    }
    queue.disconnect().await;
}

/// Issue 23 A2: an own id enqueued again after its task was dead-lettered, failing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_id_enqueued_again_after_its_letter_fails_again_into_a_second_letter() {
    let server = NatsServer::start().await;
    let (queue, calls) = failing_queue(&server).await;
    queue.enqueue(with_id("order-7")).await.expect("enqueue");
    wait_queue_stats(&queue, 0, 1).await;
    queue.enqueue(with_id("order-7")).await.expect("again");
    wait_calls(&calls, 2).await;
    wait_queue_stats(&queue, 0, 2).await;
    let letters = queue.dead_letters(10).await.expect("letters");
    let ids: Vec<_> = letters
        .iter()
        .map(|stored| stored.letter.task.as_ref().map(|task| task.id.clone()))
        .collect();
    assert_eq!(
        ids,
        [Some("order-7".to_owned()), Some("order-7".to_owned())]
    );
    queue.disconnect().await;
}

/// Issue 23 A3: "once the task is acked or dead-lettered, the id can be used again" — at once,
/// not after the duplicate window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_id_can_be_used_again_as_soon_as_its_task_completed() {
    let server = NatsServer::start().await;
    let queue = Arc::new(Queue::new(test_config()));
    queue.connect(Some(&server.url())).await.expect("connect");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    queue
        .process(handler(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Outcome::Success }
        }))
        .await
        .expect("process");
    for round in 1..=3 {
        let id = queue.enqueue(with_id("receipt-1")).await.expect("enqueue");
        assert_eq!(id, "receipt-1");
        wait_calls(&calls, round).await;
        wait_queue_stats(&queue, 0, 0).await;
    }
    queue.disconnect().await;
}

/// The tasks stored in the task stream, in stream order: (id, data).
async fn stored_in_order(server: &NatsServer, connection: &Connection) -> Vec<(String, String)> {
    let stream = jetstream(server)
        .await
        .get_stream(&connection.config().stream_name)
        .await
        .expect("stream");
    let last = stream.cached_info().state.last_sequence;
    let mut tasks = Vec::new();
    for sequence in 1..=last {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            let task: Task = prost::Message::decode(message.payload).expect("a task");
            tasks.push((task.id, String::from_utf8_lossy(&task.data).into_owned()));
        }
    }
    tasks
}

/// Issue 23 A5: the tasks of one batch are stored in call order, own ids or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_own_ids_is_stored_in_call_order() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let batch = vec![
        NewTask {
            id: Some("first".into()),
            ..task("0")
        },
        task("1"),
        NewTask {
            id: Some("third".into()),
            ..task("2")
        },
        task("3"),
    ];
    let ids = lifecycle::enqueue_batch(&connection, batch)
        .await
        .expect("batch");
    assert_eq!((ids[0].as_str(), ids[2].as_str()), ("first", "third"));
    let data: Vec<_> = stored_in_order(&server, &connection)
        .await
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    assert_eq!(data, ["0", "1", "2", "3"]);

    // Single enqueues of one turn likewise.
    let turn = vec![task("4"), with_id("sixth"), task("6")];
    let results = lifecycle::enqueue_each(&connection, turn).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let data: Vec<_> = stored_in_order(&server, &connection)
        .await
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    assert_eq!(data, ["0", "1", "2", "3", "4", "{}", "6"]);
}

/// Issue 23 A4: a batch that failed part-way, retried, stores every task it resolves — also the
/// tasks it never sent: more tasks follow the refused one than a batch has publishes in flight,
/// so the refusal arrives before the last ones are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_batch_that_failed_part_way_stores_every_task_once() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    // Another tool lowered the stream's largest message below the server's max_payload.
    let js = jetstream(&server).await;
    let mut stream = js.get_stream(&config.stream_name).await.expect("stream");
    let mut stream_config = stream.info().await.expect("info").config.clone();
    stream_config.max_message_size = 1_024;
    js.update_stream(stream_config)
        .await
        .expect("lower max_msg_size");
    let own = |i: usize| NewTask {
        id: Some(format!("own-{i}")),
        ..task(format!("{{\"n\":{i}}}"))
    };
    let mut batch: Vec<NewTask> = (0..150).map(own).collect();
    batch.push(task(vec![b'7'; 2_048]));
    batch.extend(numbered_tasks(protoqueue::producer::PUBLISH_WINDOW + 100));
    batch.extend((150..300).map(own));
    let err = lifecycle::enqueue_batch(&connection, batch)
        .await
        .expect_err("a task the stream refuses fails the batch");
    assert_eq!(err.code(), "ERR_PQ_PAYLOAD_TOO_LARGE");

    let ids = lifecycle::enqueue_batch(&connection, (0..300).map(own).collect())
        .await
        .expect("the retry");
    assert_eq!(ids.len(), 300);
    let stored: Vec<_> = stored_in_order(&server, &connection)
        .await
        .into_iter()
        .filter(|(id, _)| id.starts_with("own-"))
        .collect();
    let distinct: HashSet<_> = stored.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        (stored.len(), distinct.len()),
        (300, 300),
        "every task resolved is stored, once"
    );
}

/// A batch naming one id twice stores it once (the second resolves like the first) and does not
/// wait on itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_repeated_within_one_batch_is_stored_once_without_waiting() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let started = tokio::time::Instant::now();
    let ids = lifecycle::enqueue_batch(
        &connection,
        vec![with_id("a"), task("{}"), with_id("a"), with_id("b")],
    )
    .await
    .expect("batch");
    assert_eq!(
        (ids[0].as_str(), ids[2].as_str(), ids[3].as_str()),
        ("a", "a", "b")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stored_in_order(&server, &connection).await.len(), 3);
}

/// Issue 23 A7: a dead-letter stream that denies deletes (set by another tool) is refused before
/// any task is requeued, instead of running the task and keeping its letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_from_a_dead_letter_stream_that_denies_deletes_is_refused_and_runs_nothing() {
    let server = NatsServer::start().await;
    let (queue, calls) = failing_queue(&server).await;
    queue.enqueue(task("{}")).await.expect("enqueue");
    wait_queue_stats(&queue, 0, 1).await;
    let js = jetstream(&server).await;
    let name = queue.config().dead_letter_stream();
    let mut config = js
        .get_stream(&name)
        .await
        .expect("dlq")
        .cached_info()
        .config
        .clone();
    config.deny_delete = true;
    js.update_stream(config).await.expect("deny deletes");

    let err = queue
        .requeue_dead_letters(&Filter::default(), |_| {})
        .await
        .expect_err("requeue is refused");
    assert_eq!(err.code(), "ERR_PQ_STREAM_CONFLICT");
    let by_id = Filter {
        ids: Some(HashSet::from(["x".to_owned()])),
        ..Filter::default()
    };
    let err = queue
        .purge_dead_letters(&by_id, |_| {})
        .await
        .expect_err("removing single letters is refused");
    assert_eq!(err.code(), "ERR_PQ_STREAM_CONFLICT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the task did not run again"
    );
    wait_queue_stats(&queue, 0, 1).await;

    // A dead-letter handler's success whose delete the server refuses is not taken for a letter
    // already gone: the letter is offered again (and stays), not acked away unseen.
    struct Succeeding(Arc<AtomicUsize>);
    impl LetterHandler for Succeeding {
        fn handle(&self, _: LetterAttempt) -> BoxFuture<Outcome> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Outcome::Success })
        }
    }
    let offers = Arc::new(AtomicUsize::new(0));
    let options = LetterOptions {
        retry_delay: Some(Duration::from_millis(100)),
        ..LetterOptions::default()
    };
    queue
        .process_dead_letters(Arc::new(Succeeding(offers.clone())), options)
        .await
        .expect("processDLQ");
    wait_calls(&offers, 2).await;
    wait_queue_stats(&queue, 0, 1).await;
    queue.disconnect().await;
}

/// Issue 23 A13: a recurring task keeps its own `maxRetries` (each tick ran 4 times with
/// `maxRetries: 0`), and an own id, which its ticks cannot have, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_task_keeps_its_retry_policy_and_refuses_an_id() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.schedules = true;
    config.retry_delay = Duration::from_millis(50);
    let queue = Arc::new(Queue::new(config));
    queue.connect(Some(&server.url())).await.expect("connect");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    queue
        .process(handler(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Outcome::Failure(Failure::new("no")) }
        }))
        .await
        .expect("process");
    let every = Recurring::from_json(&serde_json::json!({ "every": 1000 })).expect("valid");
    let once = NewTask {
        max_retries: Some(0),
        ..task("{}")
    };
    queue
        .schedule("tick", &every, once)
        .await
        .expect("schedule");
    eventually("a tick dead-lettered", SOON, || async {
        (queue.stats().await.ok()?.dead_lettered >= 1).then_some(())
    })
    .await;
    queue.unschedule("tick").await.expect("unschedule");
    let letter = &queue.dead_letters(1).await.expect("letters")[0].letter;
    assert_eq!(letter.attempts, 1, "maxRetries: 0 is one attempt");

    let err = queue
        .schedule("other", &every, with_id("mine"))
        .await
        .expect_err("an id is refused");
    assert_eq!(err.code(), "ERR_PQ_INVALID_TASK");
    queue.disconnect().await;
}

/// A queue whose handler fails each task's first attempt and succeeds on the second; it records
/// every attempt (task id, attempt number).
async fn flaky_queue(
    server: &NatsServer,
) -> (Arc<Queue>, Arc<std::sync::Mutex<Vec<(String, u64)>>>) {
    let mut config = test_config();
    config.max_retries = 1;
    config.retry_delay = Duration::from_millis(200);
    let queue = Arc::new(Queue::new(config));
    queue.connect(Some(&server.url())).await.expect("connect");
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = attempts.clone();
    queue
        .process(handler(move |attempt| {
            let number = attempt.number;
            recorded
                .lock()
                .expect("attempts")
                .push((attempt.task.id.clone(), number));
            async move {
                if number == 1 {
                    Outcome::Failure(Failure::new("first attempt"))
                } else {
                    Outcome::Success
                }
            }
        }))
        .await
        .expect("process");
    (queue, attempts)
}

/// Every task a handler saw ended handled or dead-lettered; together with the purged ones,
/// every task enqueued is accounted for.
async fn assert_nothing_lost(
    queue: &Queue,
    attempts: &std::sync::Mutex<Vec<(String, u64)>>,
    enqueued: usize,
    purged: u64,
) {
    wait_queue_stats(queue, 0, 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_queue_stats(queue, 0, 0).await;
    let attempts = attempts.lock().expect("attempts").clone();
    let started: HashSet<_> = attempts.iter().map(|(id, _)| id.clone()).collect();
    let succeeded: HashSet<_> = attempts
        .iter()
        .filter(|(_, number)| *number >= 2)
        .map(|(id, _)| id.clone())
        .collect();
    let lost: Vec<_> = started.difference(&succeeded).collect();
    assert!(
        lost.is_empty(),
        "{} tasks failed once and were never retried: {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        started.len() as u64 + purged,
        enqueued as u64,
        "handled {} + purged {purged} of {enqueued}",
        started.len()
    );
}

/// Issue 23 A10: purges overlapping each other and a resume never remove a task a worker holds
/// (whose failed attempt would then be neither retried nor dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_purges_and_a_resume_never_remove_a_task_a_worker_holds() {
    const N: usize = 3_000;
    let server = NatsServer::start().await;
    let (queue, attempts) = flaky_queue(&server).await;
    queue
        .enqueue_batch(numbered_tasks(N))
        .await
        .expect("enqueue");
    let other = Arc::new(Queue::new(queue.config().clone()));
    other.connect(Some(&server.url())).await.expect("connect");
    let (first, second, resumed) = tokio::join!(
        queue.purge(),
        async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            other.purge().await
        },
        async {
            tokio::time::sleep(Duration::from_millis(75)).await;
            other.resume().await
        }
    );
    resumed.expect("resume");
    let purged = first.expect("purge") + second.expect("purge");
    assert_nothing_lost(&queue, &attempts, N, purged).await;
    other.disconnect().await;
    queue.disconnect().await;
}

/// Issue 23 A10, on a paused queue: a resume and a pause issued while a purge deletes wait for it
/// or leave its pause alone; the pause found is the pause left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_a_paused_queue_holds_resume_off_and_keeps_the_pause() {
    const N: usize = 3_000;
    let server = NatsServer::start().await;
    let (queue, attempts) = flaky_queue(&server).await;
    queue
        .enqueue_batch(numbered_tasks(N))
        .await
        .expect("enqueue");
    // Let the worker start some, then pause with tasks in flight and waiting.
    eventually("some tasks started", SOON, || async {
        (attempts.lock().ok()?.len() >= 50).then_some(())
    })
    .await;
    queue.pause().await.expect("pause");
    let other = Arc::new(Queue::new(queue.config().clone()));
    other.connect(Some(&server.url())).await.expect("connect");
    let (purged, paused_again) = tokio::join!(queue.purge(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        other.pause().await
    });
    paused_again.expect("pause during the purge");
    let purged = purged.expect("purge");
    assert!(
        queue.stats().await.expect("stats").paused,
        "the pause outlives the purge"
    );

    let (purged_too, resumed) = tokio::join!(queue.purge(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        other.resume().await
    });
    resumed.expect("resume during the purge");
    assert_nothing_lost(&queue, &attempts, N, purged + purged_too.expect("purge")).await;
    other.disconnect().await;
    queue.disconnect().await;
}

/// Found by the lifecycle model: a `resume()` landing between a purge's read of the user's pause
/// and its own pause was undone when that purge gave back the pause it had read. Here the purge's
/// steps are played by hand around a real `resume()`, as that purge would take them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_just_after_a_purge_read_the_pause_is_not_undone_by_it() {
    let server = NatsServer::start().await;
    let (queue, _) = failing_queue(&server).await;
    queue.pause().await.expect("pause");
    let js = jetstream(&server).await;
    let stream = js
        .get_stream(&queue.config().stream_name)
        .await
        .expect("stream");
    let consumer = protoqueue::config::CONSUMER_NAME;
    let read = stream.consumer_info(consumer).await.expect("info");
    let found = read.config.pause_until.expect("paused");
    let purge = tokio::spawn({
        let stream = stream.clone();
        async move {
            // It read `found`; the resume lands now; then it holds its own pause, deletes, and
            // gives back what it read.
            loop {
                let info = stream.consumer_info(consumer).await.expect("info");
                if !info.paused {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // A purge's mark: a millisecond of 2200-01-01.
            let mark =
                async_nats::datetime::from_nanos(7_258_118_400_042 * 1_000_000).expect("mark");
            stream.pause_consumer(consumer, mark).await.expect("hold");
            tokio::time::sleep(Duration::from_millis(400)).await;
            stream
                .pause_consumer(consumer, found)
                .await
                .expect("give back");
        }
    });
    queue.resume().await.expect("resume");
    purge.await.expect("the purge's steps");
    eventually("the queue resumed", SOON, || async {
        (!queue.stats().await.ok()?.paused).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !queue.stats().await.expect("stats").paused,
        "the resume stays"
    );
    queue.disconnect().await;
}

/// Messages in the queue's id index (one marker per id held).
async fn markers(server: &NatsServer, queue: &Queue) -> u64 {
    let js = jetstream(server).await;
    match js.get_stream(queue.config().id_index_stream()).await {
        Ok(mut stream) => stream.info().await.expect("info").state.messages,
        Err(_) => 0,
    }
}

/// Found by the lifecycle model: a purge of a paused queue whose consumer never delivered a task
/// removed the waiting tasks by subject, leaving the markers of their own ids behind (stale, so the
/// ids were free, but the index kept one marker per such id). Tasks with own ids are removed one
/// by one, their markers with them; without own ids the purge by subject stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_a_paused_queue_frees_the_markers_of_the_tasks_it_removes() {
    let server = NatsServer::start().await;
    let queue = Queue::new(test_config());
    queue.connect(Some(&server.url())).await.expect("connect");
    queue.pause().await.expect("pause");
    queue
        .enqueue_batch(vec![with_id("invoice-1"), task("{}"), with_id("invoice-2")])
        .await
        .expect("enqueue");
    assert_eq!(markers(&server, &queue).await, 2);
    assert_eq!(queue.purge().await.expect("purge"), 3);
    assert_eq!(
        markers(&server, &queue).await,
        0,
        "the purged tasks' ids are freed"
    );
    queue
        .enqueue_batch(numbered_tasks(50))
        .await
        .expect("enqueue");
    assert_eq!(queue.purge().await.expect("purge"), 50);
    let stats = queue.stats().await.expect("stats");
    assert_eq!((stats.messages, stats.pending), (0, 0));
    queue.disconnect().await;
}

/// Found by the lifecycle model (soak, priorities): on a paused queue a delayed task with an own id
/// fired (its fired task waits, undelivered); the id enqueued again is taken, and that enqueue
/// points the marker at the fired task; a purge then removed the fired task but freed only a
/// marker still naming the schedule, leaving this one behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_frees_the_marker_of_a_fired_delayed_task_that_an_enqueue_of_its_id_pointed_at_it()
{
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.schedules = true;
    config.priorities = true;
    let queue = Queue::new(config);
    queue.connect(Some(&server.url())).await.expect("connect");
    queue.pause().await.expect("pause");
    let soon = protoqueue::envelope::now_ms() + 1;
    queue
        .enqueue(with_id("order-1").at(soon))
        .await
        .expect("enqueue delayed");
    tokio::time::sleep(Duration::from_millis(250)).await;
    queue.enqueue(with_id("order-1")).await.expect("again");
    assert_eq!(queue.purge().await.expect("purge"), 1);
    assert_eq!(
        markers(&server, &queue).await,
        0,
        "the purged task's id is freed"
    );
    queue.disconnect().await;
}

/// Issue 23 B4, shown not to happen: a starting worker writes the shared consumer's whole
/// configuration (its `ackWait`, `globalConcurrency`), read a moment — or, when lowering
/// `ackWait`, seconds — before; a `pause()` or `resume()` in between is not undone, because the
/// server keeps a consumer's pause through a configuration update, whatever `pause_until` the
/// update carries. (Checked against the server: if a release changed this, this test says so.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_update_never_changes_its_pause() {
    use async_nats::jetstream::{consumer::pull, stream};
    let server = NatsServer::start().await;
    let js = jetstream(&server).await;
    let stream = js
        .create_stream(stream::Config {
            name: "B4".into(),
            subjects: vec!["b4".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    stream
        .create_consumer(pull::Config {
            durable_name: Some("workers".into()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let config = |stream: stream::Stream| async move {
        let info = stream.consumer_info("workers").await.expect("info");
        (info.paused, info.config.clone())
    };
    let (_, read_unpaused) = config(stream.clone()).await;
    let until = async_nats::datetime::add_std_duration(
        async_nats::datetime::now(),
        Duration::from_secs(3_600),
    )
    .expect("time");
    stream
        .pause_consumer("workers", until)
        .await
        .expect("pause");
    let (_, read_paused) = config(stream.clone()).await;
    // Written after the pause, from a read before it: still paused.
    let mut stale = read_unpaused;
    stale.ack_wait = Duration::from_secs(7);
    js.update_consumer_on_stream(stale, "B4")
        .await
        .expect("update");
    let (paused, now) = config(stream.clone()).await;
    assert!(paused, "a stale update did not undo the pause");
    assert_eq!(now.ack_wait, Duration::from_secs(7));
    // Written after a resume, from a read while paused: still resumed.
    stream.resume_consumer("workers").await.expect("resume");
    let mut stale = read_paused;
    stale.ack_wait = Duration::from_secs(8);
    js.update_consumer_on_stream(stale, "B4")
        .await
        .expect("update");
    let (paused, now) = config(stream).await;
    assert!(!paused, "a stale update did not undo the resume");
    assert_eq!(now.ack_wait, Duration::from_secs(8));
}

/// Issue 23 A11 and B1: a delayed task's own id stays taken after its schedule fired, while the
/// fired task runs; once it is done the id is free and its marker gone; a cancelled delayed
/// task frees its id at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_tasks_own_id_is_held_until_its_fired_task_is_done_then_freed() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.schedules = true;
    let queue = Arc::new(Queue::new(config));
    queue.connect(Some(&server.url())).await.expect("connect");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let release = Arc::new(tokio::sync::Notify::new());
    let hold = release.clone();
    queue
        .process(handler(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            let hold = hold.clone();
            async move {
                hold.notified().await;
                Outcome::Success
            }
        }))
        .await
        .expect("process");
    let soon = protoqueue::envelope::now_ms() + 300;
    queue
        .enqueue(with_id("report-1").at(soon))
        .await
        .expect("enqueue delayed");
    wait_calls(&calls, 1).await;
    // Fired and running: the id is still taken.
    assert_eq!(
        queue.enqueue(with_id("report-1")).await.expect("again"),
        "report-1"
    );
    release.notify_one();
    wait_queue_stats(&queue, 0, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second enqueue stored nothing"
    );
    eventually("the marker released", SOON, || async {
        (markers(&server, &queue).await == 0).then_some(())
    })
    .await;

    // Cancel, then enqueue the same id again at once (rescheduling).
    let later = protoqueue::envelope::now_ms() + 60_000;
    queue
        .enqueue(with_id("report-2").at(later))
        .await
        .expect("enqueue delayed");
    assert!(queue.cancel("report-2").await.expect("cancel"));
    queue
        .enqueue(with_id("report-2"))
        .await
        .expect("reschedule");
    wait_calls(&calls, 2).await;
    release.notify_one();
    wait_queue_stats(&queue, 0, 0).await;
    queue.disconnect().await;
}

/// How each task of [`tasks_with_ids_leave_no_marker`] ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Succeeds,
    /// Fails its first attempt at once and succeeds on its retry.
    FailsFirst,
    /// Fails for good at once: dead-lettered.
    FailsForGood,
}

/// Enqueues `n` tasks with ids of their own in one batch (`delayed`: due together) to a worker
/// that is already running, each ending as `ending` says. Once all are done, no id marker may be
/// left.
async fn tasks_with_ids_leave_no_marker(n: usize, delayed: bool, ending: Ending) {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.schedules = true;
    config.retry_delay = Duration::from_millis(20);
    if ending == Ending::FailsForGood {
        config.max_retries = 0;
    }
    let queue = Arc::new(Queue::new(config));
    queue.connect(Some(&server.url())).await.expect("connect");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    queue
        .process(handler(move |attempt| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match ending {
                    Ending::FailsFirst if attempt.number == 1 => {
                        Outcome::Failure(Failure::new("first attempt fails"))
                    }
                    Ending::FailsForGood => Outcome::Failure(Failure::new("downstream is down")),
                    _ => Outcome::Success,
                }
            }
        }))
        .await
        .expect("process");
    let due = protoqueue::envelope::now_ms() + 500;
    let tasks = (0..n)
        .map(|i| {
            let task = with_id(&format!("report-{i}"));
            if delayed {
                task.at(due)
            } else {
                task
            }
        })
        .collect();
    queue.enqueue_batch(tasks).await.expect("enqueue");
    wait_calls(
        &calls,
        if ending == Ending::FailsFirst {
            2 * n
        } else {
            n
        },
    )
    .await;
    let letters = if ending == Ending::FailsForGood { n } else { 0 };
    wait_queue_stats(&queue, 0, letters as u64).await;
    eventually("every marker released", SOON, || async {
        (markers(&server, &queue).await == 0).then_some(())
    })
    .await;
    queue.disconnect().await;
}

/// Issue 23 B1: the marker of a delayed task with an own id named its schedule and was never
/// released (the id index grew by one per such task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_tasks_marker_is_released_once_its_fired_task_is_done() {
    tasks_with_ids_leave_no_marker(20, true, Ending::Succeeds).await;
}

/// Found by the lifecycle model: a fired delayed task whose first attempt failed at once was
/// retried while the worker was still pointing its marker at the fired task; the retry's move of
/// the marker lost that race, so the marker kept naming the fired task and was left behind once
/// the retry was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_delayed_task_retried_at_once_leaves_no_marker_behind() {
    tasks_with_ids_leave_no_marker(40, true, Ending::FailsFirst).await;
}

/// Found by the lifecycle model: a batch records its markers once every task of it is stored,
/// so a worker can finish a task (and find its marker still pending) before its marker names it;
/// the marker recorded after that was left behind. Tasks done at once, whichever way they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_done_before_their_batch_recorded_their_markers_leave_none_behind() {
    for ending in [Ending::Succeeds, Ending::FailsFirst, Ending::FailsForGood] {
        tasks_with_ids_leave_no_marker(300, false, ending).await;
    }
}

/// A scheduled marker left behind by a lost write (a server killed before it flushed the
/// worker's pointing of the marker at the fired task, or the release after it): the schedule
/// is gone and so is its task, so the marker is stale — the id is free (found by the lifecycle
/// model after kill -9 restarts). And one that was never pointed (no worker received the fired
/// task yet) still holds the id while the fired task waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_tasks_marker_left_behind_by_a_lost_write_goes_stale() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.schedules = true;
    let queue = Arc::new(Queue::new(config));
    queue.connect(Some(&server.url())).await.expect("connect");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    queue
        .process(handler(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Outcome::Success }
        }))
        .await
        .expect("process");
    let js = jetstream(&server).await;
    // What a lost write leaves: the marker still says "scheduled at" the schedule's sequence.
    let revert = |id: &'static str, schedule: u64| {
        let js = js.clone();
        let subject = protoqueue::ids::subject(queue.config(), id);
        async move {
            js.publish(subject, format!("d{schedule}").into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
    };

    let soon = protoqueue::envelope::now_ms() + 200;
    queue
        .enqueue(with_id("report-1").at(soon))
        .await
        .expect("enqueue delayed");
    wait_calls(&calls, 1).await;
    wait_queue_stats(&queue, 0, 0).await;
    eventually("the marker released", SOON, || async {
        (markers(&server, &queue).await == 0).then_some(())
    })
    .await;
    revert("report-1", 1).await;
    queue
        .enqueue(with_id("report-1"))
        .await
        .expect("enqueue again");
    wait_calls(&calls, 2).await;

    // Paused: the fired task waits, no worker points the marker at it, yet the id is held.
    queue.pause().await.expect("pause");
    let soon = protoqueue::envelope::now_ms() + 200;
    queue
        .enqueue(with_id("report-2").at(soon))
        .await
        .expect("enqueue delayed");
    eventually("the schedule to fire", SOON, || async {
        let stats = queue.stats().await.ok()?;
        (stats.delayed == 0 && stats.messages == 1).then_some(())
    })
    .await;
    queue
        .enqueue(with_id("report-2"))
        .await
        .expect("enqueue while its fired task waits");
    assert_eq!(
        queue.stats().await.expect("stats").messages,
        1,
        "taken: nothing stored"
    );
    queue.resume().await.expect("resume");
    wait_calls(&calls, 3).await;
    wait_queue_stats(&queue, 0, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "report-2 ran once");
    queue.disconnect().await;
}

/// Issue 23 A6: an object opened with only the queue's names — as the command line and the
/// dashboard open it — acts on the queue's shape as the server has it: every priority level is
/// paused, counted, purged and handled; a subject that names another queue is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_opened_by_name_acts_on_every_priority_level_the_stream_has() {
    let server = NatsServer::start().await;
    let mut shaped = test_config();
    shaped.priorities = true;
    shaped.schedules = true;
    let producer = Arc::new(Queue::new(shaped.clone()));
    producer
        .connect(Some(&server.url()))
        .await
        .expect("connect");
    let by_name = Arc::new(Queue::new(
        protoqueue::Config::new(shaped.stream_name.clone(), shaped.subject.clone()).expect("names"),
    ));
    by_name
        .connect(Some(&server.url()))
        .await
        .expect("connect by name");

    by_name.pause().await.expect("pause");
    let levels = [1u8, 3, 5, 7, 10];
    let tasks = levels
        .iter()
        .map(|&level| NewTask {
            priority: Some(level),
            ..task(format!("{level}"))
        })
        .collect();
    producer.enqueue_batch(tasks).await.expect("enqueue");
    let stats = by_name.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.delayed), (5, 0), "{stats:?}");

    // A worker of the object opened by name handles every level, once resumed.
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = handled.clone();
    by_name
        .process(handler(move |attempt| {
            seen.lock()
                .expect("handled")
                .push(String::from_utf8_lossy(&attempt.task.data).into_owned());
            async { Outcome::Success }
        }))
        .await
        .expect("process");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        handled.lock().expect("handled").is_empty(),
        "paused on every level"
    );
    by_name.resume().await.expect("resume");
    eventually("every level handled", SOON, || async {
        (handled.lock().ok()?.len() == levels.len()).then_some(())
    })
    .await;
    let mut all = handled.lock().expect("handled").clone();
    all.sort_by_key(|level| level.parse::<u8>().unwrap_or(0));
    assert_eq!(all, ["1", "3", "5", "7", "10"]);

    // Purge through the object opened by name reaches every level too.
    by_name.pause().await.expect("pause");
    let tasks = levels
        .iter()
        .map(|&level| NewTask {
            priority: Some(level),
            ..task("{}")
        })
        .collect();
    producer.enqueue_batch(tasks).await.expect("enqueue");
    assert_eq!(by_name.purge().await.expect("purge"), 5);

    let other_subject = Queue::new(
        protoqueue::Config::new(shaped.stream_name.clone(), "pqtest.somewhere.else")
            .expect("names"),
    );
    let err = other_subject
        .connect(Some(&server.url()))
        .await
        .expect_err("another queue's subject");
    assert_eq!(err.code(), "ERR_PQ_STREAM_CONFLICT");
    by_name.disconnect().await;
    producer.disconnect().await;
}
