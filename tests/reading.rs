//! Reading dead letters and statistics against a real nats-server, at a cost that does not grow
//! with what is stored: the JetStream API requests a call makes (and the bytes of the replies)
//! are counted by a second client of the same server ([`ApiTraffic`]).

mod common;

use std::collections::HashSet;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use common::*;
use prost::Message as _;
use protoqueue::{
    dead_letters::stored::{self as dead_letters, Filter},
    envelope::{DeadLetter, DeadLetterReason, Task},
    Config, NewTask, Queue,
};

/// Letters stored for the tests that count requests: far more than the few requests a read
/// may take.
const MANY: usize = 400;

/// A dead letter of task `id`, as a worker writes it.
fn letter(id: &str, reason: DeadLetterReason) -> Bytes {
    DeadLetter {
        task: Some(Task::create(
            id.into(),
            Bytes::from_static(b"{}"),
            "application/json",
            Bytes::new(),
            0,
        )),
        reason: reason as i32,
        error: "down".into(),
        attempts: 1,
        ..DeadLetter::default()
    }
    .encode_to_vec()
    .into()
}

/// Stores `letters` on the queue's dead-letter subject (as a worker or another tool would);
/// returns their sequences.
async fn store(server: &NatsServer, config: &Config, letters: Vec<Bytes>) -> Vec<u64> {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let mut acks = Vec::with_capacity(letters.len());
    for payload in letters {
        acks.push(
            js.publish(config.dead_letter_subject(), payload)
                .await
                .expect("publish a letter"),
        );
    }
    let mut sequences = Vec::with_capacity(acks.len());
    for ack in acks {
        sequences.push(ack.await.expect("letter stored").sequence);
    }
    sequences
}

/// A connected queue of `config` on `server`.
async fn queue(server: &NatsServer, config: Config) -> Queue {
    let queue = Queue::new(config);
    queue.connect(Some(&server.url())).await.expect("connect");
    queue
}

fn ids(letters: &[dead_letters::StoredDeadLetter]) -> Vec<String> {
    letters
        .iter()
        .map(|stored| {
            stored
                .letter
                .task
                .as_ref()
                .map(|t| t.id.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_every_letter_takes_a_few_requests_whatever_their_number() {
    let server = NatsServer::start().await;
    let config = test_config();
    let queue = queue(&server, config.clone()).await;
    let names: Vec<String> = (0..MANY).map(|i| format!("t{i}")).collect();
    let sequences = store(
        &server,
        &config,
        names
            .iter()
            .map(|id| letter(id, DeadLetterReason::Rejected))
            .collect(),
    )
    .await;
    let mut traffic = ApiTraffic::watch(&server).await;

    let all = queue.dead_letters(MANY * 10).await.expect("read all");
    let seen = traffic.take().await;
    assert_eq!(ids(&all), names, "every letter, oldest first");
    assert_eq!(
        all.iter().map(|stored| stored.sequence).collect::<Vec<_>>(),
        sequences
    );
    // One request per letter before: MANY of them.
    assert!(
        seen.until_consumer_deleted().len() <= 12,
        "{} letters read with {} requests: {:?}",
        MANY,
        seen.until_consumer_deleted().len(),
        seen.requests
    );

    // A few: what is pulled is about what is returned.
    let few = queue.dead_letters(3).await.expect("read three");
    let seen_few = traffic.take().await;
    assert_eq!(ids(&few), names[..3]);
    assert!(
        seen_few.until_consumer_deleted().len() <= 6,
        "{:?}",
        seen_few.requests
    );
    // What is pulled is what is wanted: no pull asks the server for more than 3 letters.
    let pulls: Vec<serde_json::Value> = seen_few
        .requests
        .iter()
        .zip(&seen_few.payloads)
        .filter(|(subject, _)| subject.contains(".CONSUMER.MSG.NEXT."))
        .map(|(_, payload)| serde_json::from_slice(payload).expect("a pull request"))
        .collect();
    assert!(!pulls.is_empty());
    for pull in &pulls {
        assert!(pull["batch"].as_u64().is_some_and(|n| n <= 3), "{pull}");
    }

    // Limit edges: nothing asked, nothing read; exactly as many as stored.
    assert!(dead_letters::list(&connect(&config, &server).await, 0)
        .await
        .expect("limit 0")
        .is_empty());
    assert_eq!(queue.dead_letters(MANY).await.expect("exact").len(), MANY);
    assert_eq!(
        queue.dead_letters(1).await.expect("one")[0].sequence,
        sequences[0]
    );
    queue.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_a_task_s_letters_walks_once_and_keeps_only_the_matches() {
    let server = NatsServer::start().await;
    let config = test_config();
    let queue = queue(&server, config.clone()).await;
    // Task "twice" failed twice: near the start and near the end; undecodable letters between.
    let mut letters: Vec<Bytes> = (0..MANY)
        .map(|i| letter(&format!("t{i}"), DeadLetterReason::RetriesExhausted))
        .collect();
    letters[5] = letter("twice", DeadLetterReason::Rejected);
    letters[MANY - 3] = letter("twice", DeadLetterReason::RetriesExhausted);
    letters[7] = Bytes::from_static(b"\xff\xff not a letter");
    letters[MANY - 2] = Bytes::from_static(b"\x08");
    let sequences = store(&server, &config, letters).await;
    let by_id = |ids: &[&str]| Filter {
        ids: Some(ids.iter().map(|id| id.to_string()).collect()),
        ..Filter::default()
    };
    let mut traffic = ApiTraffic::watch(&server).await;

    let found = queue
        .find_dead_letters(&by_id(&["twice"]), 100)
        .await
        .expect("find");
    let seen = traffic.take().await;
    assert_eq!(
        found.iter().map(|s| s.sequence).collect::<Vec<_>>(),
        [sequences[5], sequences[MANY - 3]]
    );
    assert!(
        seen.until_consumer_deleted().len() <= 12,
        "found a task among {MANY} letters with {} requests: {:?}",
        seen.until_consumer_deleted().len(),
        seen.requests
    );

    // The oldest only (what `dlq show <task id>` shows): the walk stops there.
    let first = queue
        .find_dead_letters(&by_id(&["twice"]), 1)
        .await
        .expect("first");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].sequence, sequences[5]);
    assert_eq!(
        first[0].letter.reason(),
        DeadLetterReason::Rejected,
        "the oldest letter of the task"
    );

    // By reason, by sequences (an undecodable one and a missing one among them), by nothing.
    let rejected = Filter {
        reason: Some(DeadLetterReason::Rejected),
        ..Filter::default()
    };
    assert_eq!(
        ids(&queue.find_dead_letters(&rejected, 10).await.unwrap()),
        ["twice"]
    );
    let named = Filter {
        sequences: Some(HashSet::from([sequences[9], sequences[7], 999_999])),
        ..Filter::default()
    };
    assert_eq!(
        ids(&queue.find_dead_letters(&named, 10).await.unwrap()),
        ["t9"]
    );
    assert!(queue
        .find_dead_letters(&by_id(&["nobody"]), 10)
        .await
        .unwrap()
        .is_empty());
    // The filter's own limit applies too.
    let limited = Filter {
        limit: Some(2),
        ..Filter::default()
    };
    assert_eq!(
        ids(&queue.find_dead_letters(&limited, 10).await.unwrap()),
        ["t0", "t1"]
    );
    // Undecodable letters are skipped, never counted or returned.
    let all = queue.dead_letters(MANY * 2).await.expect("all");
    assert_eq!(all.len(), MANY - 2);
    queue.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_on_a_stream_made_by_another_tool_are_read_among_its_other_messages() {
    let server = NatsServer::start().await;
    let config = test_config();
    // Another tool made the dead-letter stream: every dead-letter subject, no direct gets.
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: config.dead_letter_stream(),
        subjects: vec![format!("{}.>", "protoqueue.dlq"), "other.>".into()],
        ..Default::default()
    })
    .await
    .expect("create the stream");
    let queue = queue(&server, config.clone()).await;
    for i in 0..20 {
        js.publish(
            format!("other.{i}"),
            letter("other", DeadLetterReason::Rejected),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        js.publish(
            "protoqueue.dlq.someone_else",
            letter("else", DeadLetterReason::Rejected),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        store(
            &server,
            &config,
            vec![letter(&format!("t{i}"), DeadLetterReason::Rejected)],
        )
        .await;
    }
    let read = queue.dead_letters(100).await.expect("read");
    assert_eq!(
        ids(&read),
        (0..20).map(|i| format!("t{i}")).collect::<Vec<_>>()
    );
    let found = queue
        .find_dead_letters(
            &Filter {
                ids: Some(HashSet::from(["t19".to_owned(), "else".to_owned()])),
                ..Filter::default()
            },
            100,
        )
        .await
        .expect("find");
    assert_eq!(ids(&found), ["t19"]);
    // Letters removed while nothing else is left: the read ends (no wait for more).
    js.get_stream(config.dead_letter_stream())
        .await
        .unwrap()
        .purge()
        .filter(config.dead_letter_subject())
        .await
        .unwrap();
    assert!(queue.dead_letters(100).await.expect("empty").is_empty());
    queue.disconnect().await;
}

/// A dead-letter stream that takes no new consumer (made by another tool with `max_consumers`
/// reached; a client without the permission is refused the same way): letters are still read,
/// one request each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_are_read_where_the_stream_takes_no_new_consumer() {
    let server = NatsServer::start().await;
    let config = test_config();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let mut made = protoqueue::nats::topology::dead_letter_stream_config(&config);
    made.max_consumers = 1;
    let made = js.create_stream(made).await.expect("create the stream");
    made.create_consumer(async_nats::jetstream::consumer::pull::Config {
        durable_name: Some("another-tools-reader".into()),
        ..Default::default()
    })
    .await
    .expect("the one consumer it takes");
    let queue = queue(&server, config.clone()).await;
    let letters = (0..30)
        .map(|i| letter(&format!("t{i}"), DeadLetterReason::Rejected))
        .collect();
    store(&server, &config, letters).await;
    let read = queue.dead_letters(100).await.expect("read");
    assert_eq!(
        ids(&read),
        (0..30).map(|i| format!("t{i}")).collect::<Vec<_>>()
    );
    let found = queue
        .find_dead_letters(
            &Filter {
                ids: Some(HashSet::from(["t7".to_owned()])),
                ..Filter::default()
            },
            100,
        )
        .await
        .expect("find");
    assert_eq!(ids(&found), ["t7"]);
    queue.disconnect().await;
}

/// Enqueues one task on each of `n` distinct subjects of `config`'s tree (with `priority`, if
/// any) and waits until they are stored.
async fn fill_tree(queue: &Queue, config: &Config, n: usize, priority: Option<u8>) {
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| NewTask {
            subject: Some(format!("{}.part{i}", config.subject)),
            priority,
            ..task("{}")
        })
        .collect();
    for chunk in tasks.chunks(500) {
        queue.enqueue_batch(chunk.to_vec()).await.expect("enqueue");
    }
}

/// Reads the stats of `queue` while watching: its traffic, after a first read (warm).
async fn stats_traffic(queue: &Queue, server: &NatsServer) -> (protoqueue::Stats, Traffic) {
    queue.stats().await.expect("stats");
    let mut traffic = ApiTraffic::watch(server).await;
    let stats = queue.stats().await.expect("stats");
    (stats, traffic.take().await)
}

/// A subject-tree queue with `options` on: stats of a tree with few subjects and one with many
/// cost the same requests and (about) the same reply bytes.
async fn tree_stats_do_not_grow_with_subjects(schedules: bool, priorities: bool) {
    let server = NatsServer::start().await;
    let mut costs = Vec::new();
    for subjects in [5, 1_500] {
        let (stream, subject) = unique_names();
        let mut config = Config::new(stream, format!("{subject}.>")).expect("config");
        config.schedules = schedules;
        config.priorities = priorities;
        let queue = queue(&server, config.clone()).await;
        fill_tree(&queue, &config, subjects, None).await;
        if priorities {
            fill_tree(&queue, &config, subjects, Some(2)).await;
        }
        let (stats, seen) = stats_traffic(&queue, &server).await;
        let levels = if priorities { 2 } else { 1 };
        assert_eq!(stats.messages, (subjects * levels) as u64, "{stats:?}");
        assert_eq!(stats.pending, (subjects * levels) as u64, "{stats:?}");
        assert_eq!(stats.delayed, 0);
        if priorities {
            assert_eq!(stats.pending_by_priority[1], subjects as u64);
            assert_eq!(stats.pending_by_priority[4], subjects as u64);
        }
        costs.push(seen);
        queue.disconnect().await;
    }
    let (few, many) = (&costs[0], &costs[1]);
    assert_eq!(
        few.requests.len(),
        many.requests.len(),
        "requests: {:?} then {:?}",
        few.requests,
        many.requests
    );
    // Listing the subjects costs ~25 bytes per subject: ~37 KB more for the larger tree.
    assert!(
        many.reply_bytes < few.reply_bytes + 2_000,
        "stats of a tree of 5 subjects: {} reply bytes; of 1,500: {}",
        few.reply_bytes,
        many.reply_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_a_tree_with_schedules_do_not_grow_with_its_subjects() {
    tree_stats_do_not_grow_with_subjects(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_a_tree_with_priorities_do_not_grow_with_its_subjects() {
    tree_stats_do_not_grow_with_subjects(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_a_tree_whose_stream_has_no_direct_gets_still_count_right() {
    // A task stream made before streams allowed direct gets (or by another tool): counting
    // falls back to listing the subjects, with the same numbers.
    let server = NatsServer::start().await;
    let (stream, subject) = unique_names();
    let mut config = Config::new(stream, format!("{subject}.>")).expect("config");
    config.schedules = true;
    config.priorities = true;
    let mut made = protoqueue::nats::topology::task_stream_config(&config);
    made.allow_direct = false;
    let client = async_nats::connect(server.url()).await.expect("connect");
    jetstream::new(client)
        .create_stream(made)
        .await
        .expect("create");
    let queue = queue(&server, config.clone()).await;
    fill_tree(&queue, &config, 30, None).await;
    fill_tree(&queue, &config, 20, Some(1)).await;
    queue
        .enqueue(NewTask {
            run_at: Some(protoqueue::envelope::now_ms() + 3_600_000),
            ..task("{}")
        })
        .await
        .expect("a delayed task");
    let stats = queue.stats().await.expect("stats");
    assert_eq!(
        (stats.messages, stats.pending, stats.delayed),
        (50, 50, 1),
        "{stats:?}"
    );
    assert_eq!(stats.pending_by_priority[0], 20);
    assert_eq!(stats.pending_by_priority[4], 30);
    queue.disconnect().await;
}
