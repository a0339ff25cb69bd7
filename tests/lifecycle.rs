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
    admin::{redrive::Filter, stats},
    config::LetterOptions,
    worker::{
        executor::BoxFuture,
        letters::{LetterAttempt, LetterHandler},
    },
    envelope::Task,
    admin::schedules::Recurring,
    lifecycle, Connection, Failure, NewTask, Outcome, Queue,
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
    assert_eq!(ids, [Some("order-7".to_owned()), Some("order-7".to_owned())]);
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

/// Issue 23 A4: a batch that failed part-way, retried, stores every task it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_batch_that_failed_part_way_stores_every_task_once() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    // Another tool lowered the stream's largest message below the server's max_payload.
    let mut stream_config = protoqueue::nats::topology::task_stream_config(&config);
    stream_config.max_message_size = 1_024;
    jetstream(&server)
        .await
        .update_stream(stream_config)
        .await
        .expect("lower max_msg_size");
    let own = |i: usize| NewTask {
        id: Some(format!("own-{i}")),
        ..task(format!("{{\"n\":{i}}}"))
    };
    let mut batch: Vec<NewTask> = (0..150).map(own).collect();
    batch.push(task(vec![b'7'; 2_048]));
    batch.extend((150..300).map(own));
    let err = lifecycle::enqueue_batch(&connection, batch)
        .await
        .expect_err("a task the stream refuses fails the batch");
    assert_eq!(err.code(), "ERR_PQ_PAYLOAD_TOO_LARGE");

    let ids = lifecycle::enqueue_batch(&connection, (0..300).map(own).collect())
        .await
        .expect("the retry");
    assert_eq!(ids.len(), 300);
    let stored = stored_in_order(&server, &connection).await;
    let distinct: HashSet<_> = stored.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        (stored.len(), distinct.len()),
        (300, 300),
        "every task resolved is stored, once"
    );
    let snapshot = stats::snapshot(&connection).await.expect("stats");
    assert_eq!(snapshot.messages, 300);
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
    assert_eq!((ids[0].as_str(), ids[2].as_str(), ids[3].as_str()), ("a", "a", "b"));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
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
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the task did not run again");
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
    queue.schedule("tick", &every, once).await.expect("schedule");
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
