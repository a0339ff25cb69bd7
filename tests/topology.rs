//! The queue's JetStream objects made by other tools: existing streams and consumers whose
//! settings could lose tasks or dead letters are refused (`ERR_PQ_STREAM_CONFLICT`), never
//! rewritten; server refusals and outages get the code that says what happened.

mod common;

use protoqueue::lifecycle;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, consumer,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use common::*;
use protoqueue::{
    admin::stats, dead_letters::stored as dead_letters, Config, Connection, Error, Worker,
};

/// A change to a stream's configuration, for one case of a test.
type StreamChange = Box<dyn Fn(&mut stream::Config)>;
/// A change to the consumer's configuration, for one case of a test.
type ConsumerChange = Box<dyn Fn(&Config, &mut consumer::pull::Config)>;

fn code<T>(result: Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(err) => err.code(),
    }
}

async fn plain_jetstream(server: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(server.url())
        .await
        .expect("plain client");
    jetstream::new(client)
}

/// The task stream of `config` as Protoqueue would make it, with `change` applied.
fn task_stream(config: &Config, change: impl FnOnce(&mut stream::Config)) -> stream::Config {
    let mut wanted = stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![config.subject.clone()],
        retention: RetentionPolicy::WorkQueue,
        ..Default::default()
    };
    change(&mut wanted);
    wanted
}

/// The dead-letter stream of `config`, with `change` applied.
fn dead_letter_stream(config: &Config, change: impl FnOnce(&mut stream::Config)) -> stream::Config {
    let mut wanted = stream::Config {
        name: config.dead_letter_stream(),
        subjects: vec![config.dead_letter_subject()],
        ..Default::default()
    };
    change(&mut wanted);
    wanted
}

/// Creates `existing` with a plain client, connects a queue for `config`, and returns the code
/// of its refusal; asserts the stream was left as it was.
async fn refused(
    js: &jetstream::Context,
    server: &NatsServer,
    config: &Config,
    existing: stream::Config,
) -> &'static str {
    let name = existing.name.clone();
    let mut before = js
        .create_stream(existing)
        .await
        .expect("create the existing stream")
        .cached_info()
        .config
        .clone();
    let code = code(Connection::open(Arc::new(config.clone()), &server.url()).await);
    let mut after = js
        .get_stream(&name)
        .await
        .expect("the stream is still there")
        .cached_info()
        .config
        .clone();
    // The server's own metadata is a map: its order is not stable.
    before.metadata.clear();
    after.metadata.clear();
    assert_eq!(
        format!("{before:?}"),
        format!("{after:?}"),
        "stream {name} rewritten"
    );
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stream_whose_limits_can_delete_tasks_is_refused_and_left_alone() {
    let server = NatsServer::start().await;
    let js = plain_jetstream(&server).await;
    let cases: Vec<(&str, StreamChange)> = vec![
        ("max_age", Box::new(|s| s.max_age = Duration::from_secs(1))),
        ("max_msgs, discard old", Box::new(|s| s.max_messages = 10)),
        (
            "max_bytes, discard old",
            Box::new(|s| s.max_bytes = 1 << 20),
        ),
        (
            "max_msgs_per_subject",
            Box::new(|s| s.max_messages_per_subject = 10),
        ),
        (
            "max_msgs_per_subject, discard new (not per subject)",
            Box::new(|s| {
                s.max_messages_per_subject = 10;
                s.discard = DiscardPolicy::New;
            }),
        ),
        (
            "memory storage",
            Box::new(|s| s.storage = StorageType::Memory),
        ),
    ];
    for (what, change) in cases {
        let config = test_config();
        let existing = task_stream(&config, |s| change(s));
        assert_eq!(
            refused(&js, &server, &config, existing).await,
            "ERR_PQ_STREAM_CONFLICT",
            "{what}"
        );
    }

    // Limits that only refuse new tasks (discard new) cannot lose one: accepted.
    let config = test_config();
    js.create_stream(task_stream(&config, |s| {
        s.max_messages = 10;
        s.max_bytes = 1 << 20;
        s.discard = DiscardPolicy::New;
    }))
    .await
    .expect("create a bounded stream");
    connect(&config, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_stream_that_would_drop_or_stall_letters_is_refused_and_left_alone() {
    let server = NatsServer::start().await;
    let js = plain_jetstream(&server).await;
    let cases: Vec<(&str, StreamChange)> = vec![
        (
            "WorkQueue, max_msgs 1, discard new (stalls)",
            Box::new(|s| {
                s.retention = RetentionPolicy::WorkQueue;
                s.max_messages = 1;
                s.discard = DiscardPolicy::New;
            }),
        ),
        (
            "WorkQueue, max_msgs 1, discard old (loses)",
            Box::new(|s| {
                s.retention = RetentionPolicy::WorkQueue;
                s.max_messages = 1;
            }),
        ),
        ("max_age", Box::new(|s| s.max_age = Duration::from_secs(60))),
        ("max_bytes", Box::new(|s| s.max_bytes = 1 << 20)),
        (
            "Interest retention",
            Box::new(|s| s.retention = RetentionPolicy::Interest),
        ),
        (
            "max_msg_size below max_payload",
            Box::new(|s| s.max_message_size = 1024),
        ),
        (
            "memory storage",
            Box::new(|s| s.storage = StorageType::Memory),
        ),
    ];
    for (what, change) in cases {
        let config = test_config();
        let existing = dead_letter_stream(&config, |s| change(s));
        assert_eq!(
            refused(&js, &server, &config, existing).await,
            "ERR_PQ_STREAM_CONFLICT",
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_duplicate_window_is_accepted_with_a_warning() {
    let server = NatsServer::start().await;
    let js = plain_jetstream(&server).await;
    let config = test_config();
    let existing = task_stream(&config, |s| s.duplicate_window = Duration::from_millis(100));
    let created = js.create_stream(existing).await.expect("create the stream");
    let existing = created.cached_info().config.clone();
    let warnings =
        protoqueue::nats::topology::check_task_stream(&existing, &config).expect("accepted");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    connect(&config, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_consumer_that_does_not_fit_is_refused_and_left_alone() {
    let server = NatsServer::start().await;
    let js = plain_jetstream(&server).await;
    let cases: Vec<(&str, ConsumerChange)> = vec![
        (
            "another filter subject",
            Box::new(|c, p| p.filter_subject = format!("{}.other", c.subject)),
        ),
        ("max_deliver 3", Box::new(|_, p| p.max_deliver = 3)),
        ("headers only", Box::new(|_, p| p.headers_only = true)),
        (
            "a backoff list",
            Box::new(|_, p| {
                p.max_deliver = -1;
                p.backoff = vec![Duration::from_secs(1), Duration::from_secs(5)];
            }),
        ),
    ];
    for (what, change) in cases {
        let config = test_config();
        let mut stream_config = task_stream(&config, |_| {});
        stream_config
            .subjects
            .push(format!("{}.other", config.subject));
        let stream = js.create_stream(stream_config).await.expect("stream");
        let mut existing = protoqueue::nats::topology::consumer_config(&config);
        change(&config, &mut existing);
        stream
            .create_consumer(existing)
            .await
            .unwrap_or_else(|err| panic!("{what}: create the consumer: {err}"));
        let mut before = stream
            .consumer_info("protoqueue-workers")
            .await
            .expect("consumer info")
            .config;
        before.metadata.clear();
        let connection = connect(&config, &server).await;
        let handler = handler(|_| async { protoqueue::Outcome::Success });
        assert_eq!(
            code(Worker::start(connection, handler).await),
            "ERR_PQ_STREAM_CONFLICT",
            "{what}"
        );
        let mut after = stream
            .consumer_info("protoqueue-workers")
            .await
            .expect("consumer info")
            .config;
        after.metadata.clear();
        assert_eq!(
            format!("{before:?}"),
            format!("{after:?}"),
            "{what}: consumer rewritten"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusal_says_what_the_server_said() {
    let server = NatsServer::start().await;
    // Three replicas on a single server: the server's limit, not a name conflict.
    let mut config = test_config();
    config.replicas = 3;
    let result = Connection::open(Arc::new(config), &server.url()).await;
    assert_eq!(code(result), "ERR_PQ_NATS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_the_streams_max_msg_size_is_payload_too_large() {
    let server = NatsServer::start().await;
    // A stream made by another tool with a smaller max_msg_size: the server refuses the task.
    let js = plain_jetstream(&server).await;
    let config = test_config();
    js.create_stream(task_stream(&config, |s| s.max_message_size = 1024))
        .await
        .expect("create the stream");
    let connection = connect(&config, &server).await;
    assert_eq!(
        code(lifecycle::enqueue(&connection, task(vec![b'x'; 2_000])).await),
        "ERR_PQ_PAYLOAD_TOO_LARGE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_dead_letters_time_out_during_an_outage() {
    let mut server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    stats::snapshot(&connection).await.expect("stats");
    server.kill();
    let err = stats::snapshot(&connection).await.expect_err("no server");
    assert_eq!(err.code(), "ERR_PQ_TIMEOUT");
    assert_eq!(
        code(dead_letters::list(&connection, 10).await),
        "ERR_PQ_TIMEOUT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lowers_ack_wait_does_not_make_a_long_task_run_twice() {
    let server = NatsServer::start().await;
    let slow = {
        let mut config = test_config();
        config.ack_wait = Duration::from_secs(6);
        config
    };
    let fast = {
        let mut config = slow.clone();
        config.ack_wait = Duration::from_secs(1);
        config
    };
    let first = connect(&slow, &server).await;
    let second = connect(&fast, &server).await;
    let started = Recorder::new();
    let finished = Recorder::new();
    let worker_a = start_worker(
        &first,
        recording_slow_success(&started, &finished, Duration::from_secs(7)),
    )
    .await;
    lifecycle::enqueue(&first, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    started.wait_calls(1, Duration::from_secs(10)).await;

    // A second worker with a shorter ackWait starts while the long task runs.
    let worker_b = start_worker(&second, recording_success(&started, 1)).await;
    finished.wait_calls(1, Duration::from_secs(15)).await;
    started
        .assert_no_more_calls(1, Duration::from_millis(500))
        .await;

    // The consumer now has the last worker's ackWait (how an operator changes it).
    let js = plain_jetstream(&server).await;
    let stream = js.get_stream(&slow.stream_name).await.expect("stream");
    let consumer = stream
        .consumer_info("protoqueue-workers")
        .await
        .expect("consumer");
    assert_eq!(consumer.config.ack_wait, Duration::from_secs(1));
    worker_b.stop().await;
    worker_a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_retention_is_applied_when_the_stream_is_made_and_checked_after() {
    let server = NatsServer::start().await;
    let js = plain_jetstream(&server).await;
    let mut config = test_config();
    config.dead_letter_max_count = Some(3);
    config.dead_letter_max_age = Some(Duration::from_secs(3600));
    let connection = connect(&config, &server).await;
    let made = js
        .get_stream(config.dead_letter_stream())
        .await
        .expect("the dead-letter stream")
        .cached_info()
        .config
        .clone();
    assert_eq!(
        (made.max_messages, made.max_age, made.discard),
        (3, Duration::from_secs(3600), DiscardPolicy::Old)
    );

    // Five tasks fail for good, one after the other (so their letters are stored in that order):
    // the three newest letters are kept.
    let mut failing = config.clone();
    failing.max_retries = 0;
    let failing = connect(&failing, &server).await;
    let worker = start_worker(
        &failing,
        handler(|_| async { protoqueue::Outcome::Failure(protoqueue::Failure::new("no")) }),
    )
    .await;
    let mut ids = Vec::new();
    for task in numbered_tasks(5) {
        ids.push(lifecycle::enqueue(&failing, task).await.expect("enqueue"));
        eventually(
            "the task dead-lettered",
            Duration::from_secs(10),
            || async {
                let stats = stats::snapshot(&connection).await.ok()?;
                (stats.messages == 0).then_some(())
            },
        )
        .await;
    }
    worker.stop().await;
    let kept: Vec<_> = dead_letters::list(&connection, 10)
        .await
        .expect("letters")
        .into_iter()
        .filter_map(|stored| stored.letter.task.map(|task| task.id))
        .collect();
    assert_eq!(kept, ids[2..].to_vec());

    // The same queue with the same options connects again; other retention is refused.
    connect(&config, &server).await;
    let mut other = config.clone();
    other.dead_letter_max_count = Some(4);
    assert_eq!(
        code(Connection::open(Arc::new(other.clone()), &server.url()).await),
        "ERR_PQ_STREAM_CONFLICT"
    );
    other.dead_letter_max_count = None;
    other.dead_letter_max_age = None;
    assert_eq!(
        code(Connection::open(Arc::new(other), &server.url()).await),
        "ERR_PQ_STREAM_CONFLICT",
        "keeping letters forever is not what the stream does"
    );
}

/// `create_streams: false` (tools such as the command line): a missing stream is a configuration
/// mistake and nothing is created; existing streams open whatever dead-letter retention they
/// were made with; a stream made for another subject is still refused.
#[tokio::test]
async fn without_create_streams_only_existing_streams_open() {
    let server = NatsServer::start().await;
    let js = plain_jetstream(&server).await;
    let owner = Config {
        dead_letter_max_age: Some(Duration::from_secs(3600)),
        dead_letter_max_count: Some(500),
        ..test_config()
    };
    let tool = Config {
        create_streams: false,
        dead_letter_max_age: None,
        dead_letter_max_count: None,
        ..owner.clone()
    };
    let missing = Connection::open(Arc::new(tool.clone()), &server.url()).await;
    assert_eq!(code(missing), "ERR_PQ_INVALID_CONFIG");
    assert!(
        js.get_stream(&tool.stream_name).await.is_err(),
        "nothing was created"
    );

    connect(&owner, &server).await.close().await;
    let opened = Connection::open(Arc::new(tool.clone()), &server.url())
        .await
        .expect("the tool opens the owner's streams");
    opened.close().await;
    let other_subject = Config {
        subject: format!("{}.other", tool.subject),
        ..tool.clone()
    };
    let conflict = Connection::open(Arc::new(other_subject), &server.url()).await;
    assert_eq!(code(conflict), "ERR_PQ_STREAM_CONFLICT");
}
