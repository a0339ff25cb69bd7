//! Scale-out on a real JetStream cluster: three routed nats-server processes, an R3 queue, and the
//! stream leader killed with SIGKILL while producers and a worker run.

mod common;

use protoqueue::lifecycle;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{stream, Context};
use common::*;
use protoqueue::{Connection, Worker};
use tokio::sync::watch;

const BATCHES: usize = 60;
const BATCH_LEN: usize = 50;
/// The leader is killed once this many batches are stored, so most are sent across the election.
const KILL_AFTER_BATCHES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_queue_loses_nothing_when_the_stream_leader_is_killed() {
    let mut cluster = NatsCluster::start(3).await;
    let mut config = r3_config();
    config.ack_wait = Duration::from_secs(2);
    let config = Arc::new(config);
    let producing = open(&cluster, &config).await;
    let working = open(&cluster, &config).await;
    // A plain client that watches the streams' cluster state.
    let observer = plain_jetstream(cluster.nodes.iter().map(|node| node.url())).await;

    let info = stream_info(&observer, &config.stream_name).await;
    assert_eq!(info.config.num_replicas, 3, "the stream is R3");
    let dead_letters = stream_info(&observer, &config.dead_letter_stream()).await;
    assert_eq!(
        dead_letters.config.num_replicas, 3,
        "the dead-letter stream is R3"
    );

    let recorder = Recorder::new();
    let worker = start_worker(&working, recording_success(&recorder, 0)).await;

    // The producer paces its batches so that most of them are sent during and after the election.
    let enqueued = Arc::new(Mutex::new(Vec::<String>::new()));
    let (progress, mut stored_batches) = watch::channel(0usize);
    let producer_task = tokio::spawn({
        let enqueued = enqueued.clone();
        async move {
            for batch in 0..BATCHES {
                let ids = lifecycle::enqueue_batch(&producing, numbered_tasks(BATCH_LEN)).await?;
                enqueued.lock().expect("ids lock").extend(ids);
                let _ = progress.send(batch + 1);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Ok::<_, protoqueue::Error>(producing)
        }
    });

    stored_batches
        .wait_for(|&n| n >= KILL_AFTER_BATCHES)
        .await
        .expect("the producer reports progress");
    let leader = info
        .cluster
        .and_then(|cluster| cluster.leader)
        .expect("the stream has a leader");
    cluster.node_mut(&leader).kill();
    tracing::info!(%leader, "killed the stream leader");

    let producing = tokio::time::timeout(Duration::from_secs(120), producer_task)
        .await
        .expect("the producer finishes within 120 s")
        .expect("the producer task does not panic")
        .expect("every batch is stored across the election");
    let enqueued: HashSet<String> = enqueued.lock().expect("ids lock").iter().cloned().collect();
    assert_eq!(enqueued.len(), BATCHES * BATCH_LEN, "ids are unique");

    recorder
        .wait_for(
            "every enqueued task handled",
            Duration::from_secs(120),
            |log| enqueued.iter().all(|id| log.ids.contains(id)),
        )
        .await;
    let duplicates = recorder.count() - recorder.distinct();
    println!(
        "cluster: {} tasks handled after killing leader {leader}, {duplicates} duplicates",
        enqueued.len()
    );

    let new_leader = eventually("a new stream leader", Duration::from_secs(30), || async {
        let info = try_stream_info(&observer, &config.stream_name).await?;
        info.cluster?.leader.filter(|name| *name != leader)
    })
    .await;
    tracing::info!(%new_leader, "stream led by another node");

    // The killed node comes back on its old store and catches up.
    cluster.node_mut(&leader).restart().await;
    eventually(
        "the restarted node current again",
        Duration::from_secs(60),
        || async {
            let cluster = try_stream_info(&observer, &config.stream_name)
                .await?
                .cluster?;
            let rejoined = cluster.leader.as_deref() == Some(leader.as_str())
                || cluster
                    .replicas
                    .iter()
                    .any(|peer| peer.name == leader && peer.current && !peer.offline);
            rejoined.then_some(())
        },
    )
    .await;

    worker.stop().await;
    producing.close().await;
    working.close().await;
}

/// The client URLs of every node of `cluster` but `name`.
fn urls_but(cluster: &NatsCluster, name: &str) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .filter(|node| node.name() != name)
        .map(|node| node.url())
        .collect()
}

/// The test configuration of an R3 queue.
fn r3_config() -> protoqueue::config::Config {
    protoqueue::config::Config {
        replicas: 3,
        ..test_config()
    }
}

/// Opens the queue of `config` on every node of `cluster`.
async fn open(cluster: &NatsCluster, config: &Arc<protoqueue::config::Config>) -> Connection {
    Connection::open(config.clone(), &cluster.urls())
        .await
        .expect("connect to the cluster")
}

/// A plain JetStream client (no Protoqueue) of the servers at `urls`.
async fn plain_jetstream(urls: impl IntoIterator<Item = String>) -> Context {
    let addresses: Vec<async_nats::ServerAddr> = urls
        .into_iter()
        .map(|url| url.parse().expect("a server URL"))
        .collect();
    async_nats::jetstream::new(
        async_nats::connect(addresses)
            .await
            .expect("connect a plain client"),
    )
}

async fn stream_info(observer: &Context, name: &str) -> stream::Info {
    try_stream_info(observer, name)
        .await
        .unwrap_or_else(|| panic!("no info for stream {name}"))
}

/// The stream's info, or `None` while the cluster cannot answer (e.g. during an election).
async fn try_stream_info(observer: &Context, name: &str) -> Option<stream::Info> {
    let mut stream = observer.get_stream(name).await.ok()?;
    stream.info().await.ok().cloned()
}

/// Found by the lifecycle model on a cluster: the first `enqueueBatch` with own ids on a new R3
/// queue creates the id index stream from every claim at once; all but one create failed while
/// the first was under way, and the batch rejected (with the message of a task it left unsent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_batch_with_own_ids_on_a_new_r3_queue_is_stored() {
    let cluster = NatsCluster::start(3).await;
    let connection = open(&cluster, &Arc::new(r3_config())).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| protoqueue::NewTask {
            id: Some(format!("order-{i}")),
            ..task("{}")
        })
        .collect();
    let ids = lifecycle::enqueue_batch(&connection, tasks)
        .await
        .expect("the batch is stored");
    assert_eq!(ids.len(), 8);
    connection.close().await;
}

/// Found by the lifecycle model on a cluster: a worker process started just after the node
/// leading the workers' consumer was killed failed with `ERR_PQ_TIMEOUT` ("reading consumer …
/// timed out") while the other two nodes elected a new leader. Opening a queue and its consumer
/// now waits an election out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_starting_while_its_consumers_leader_is_elected_waits_it_out() {
    let mut cluster = NatsCluster::start(3).await;
    let config = Arc::new(r3_config());
    let first = open(&cluster, &config).await;
    let all = plain_jetstream(cluster.nodes.iter().map(|node| node.url())).await;
    let info = protoqueue::nats::topology::ensure_consumer(&all, &config)
        .await
        .expect("the workers' consumer");
    let leader = info
        .cluster
        .and_then(|cluster| cluster.leader)
        .expect("the consumer has a leader");
    first.close().await;
    cluster.node_mut(&leader).kill();
    let others = urls_but(&cluster, &leader);
    let starting = Connection::open(config.clone(), &others.join(","))
        .await
        .expect("the queue opens while a leader is elected");
    protoqueue::nats::topology::ensure_consumer(&plain_jetstream(others).await, &config)
        .await
        .expect("the consumer opens while its leader is elected");
    starting.close().await;
}

/// Found by the lifecycle model on a cluster: a worker whose `ackWait` differs from the
/// consumer's writes the consumer's configuration as it starts; started just after the node
/// leading the consumer was killed, that write timed out ("updating consumer … timed out") and the
/// worker failed to start. It now waits the election out like the rest of opening a queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_another_ack_wait_starting_during_an_election_starts() {
    let mut cluster = NatsCluster::start(3).await;
    let config = Arc::new(r3_config());
    let all = plain_jetstream(cluster.nodes.iter().map(|node| node.url())).await;
    let first = open(&cluster, &config).await;
    let info = protoqueue::nats::topology::ensure_consumer(&all, &config)
        .await
        .expect("the workers' consumer");
    first.close().await;
    let leader = info
        .cluster
        .and_then(|cluster| cluster.leader)
        .expect("the consumer has a leader");
    let others = urls_but(&cluster, &leader);
    let mut longer = r3_config();
    longer.stream_name = config.stream_name.clone();
    longer.subject = config.subject.clone();
    longer.ack_wait = config.ack_wait * 2;
    let starting = Connection::open(Arc::new(longer), &others.join(","))
        .await
        .expect("the queue opens");
    cluster.node_mut(&leader).kill();
    let worker = Worker::start(
        starting.clone(),
        handler(|_| async { protoqueue::Outcome::Success }),
    )
    .await
    .expect("the worker starts while its consumer's leader is elected");
    worker.stop().await;
    starting.close().await;
}

/// Found by the lifecycle model on a cluster: the first enqueue with an own id creates the id
/// index stream, and a new R3 stream cannot be placed while a node is down or not current yet;
/// the enqueue failed at once (`no suitable peers`). It now tries again until `enqueueTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_own_id_enqueue_waits_for_a_node_that_comes_back() {
    let mut cluster = NatsCluster::start(3).await;
    let config = Arc::new(r3_config());
    let connection = open(&cluster, &config).await;
    let down = cluster.nodes[2].name().to_owned();
    cluster.node_mut(&down).kill();
    let enqueued = tokio::spawn({
        let connection = connection.clone();
        async move {
            lifecycle::enqueue(
                &connection,
                protoqueue::NewTask {
                    id: Some("order-1".into()),
                    ..task("{}")
                },
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.node_mut(&down).restart().await;
    let id = tokio::time::timeout(Duration::from_secs(60), enqueued)
        .await
        .expect("the enqueue settles")
        .expect("the enqueue task does not panic")
        .expect("the enqueue waits for the node and stores the task");
    assert_eq!(id, "order-1");
    connection.close().await;
}

/// The lifecycle model on a cluster once saw a task that failed for good while a node was
/// killed end on neither stream. Here tasks fail for good while the node leading the
/// dead-letter stream (or the task stream) is killed: every one must end as exactly one letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_failing_while_the_dead_letter_leader_is_killed_all_become_letters() {
    letters_survive_a_killed_leader(|config| config.dead_letter_stream()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_failing_while_the_task_stream_leader_is_killed_all_become_letters() {
    letters_survive_a_killed_leader(|config| config.stream_name.clone()).await;
}

async fn letters_survive_a_killed_leader(led: fn(&protoqueue::Config) -> String) {
    const N: usize = 400;
    let mut cluster = NatsCluster::start(3).await;
    let mut config = r3_config();
    config.max_retries = 0;
    config.ack_wait = Duration::from_secs(2);
    let config = Arc::new(config);
    let queue = protoqueue::Queue::new((*config).clone());
    queue
        .connect(Some(&cluster.urls()))
        .await
        .expect("connect to the cluster");
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    queue
        .process(handler(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                protoqueue::Outcome::Failure(protoqueue::Failure {
                    retry: false,
                    ..protoqueue::Failure::new("down")
                })
            }
        }))
        .await
        .expect("process");
    let observer = plain_jetstream(cluster.nodes.iter().map(|node| node.url())).await;
    let leader = stream_info(&observer, &led(&config))
        .await
        .cluster
        .and_then(|cluster| cluster.leader)
        .expect("the stream has a leader");
    let enqueuing = {
        let queue = &queue;
        async move {
            for _ in 0..N / 50 {
                queue
                    .enqueue_batch(numbered_tasks(50))
                    .await
                    .expect("enqueue");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let killing = async {
        while calls.load(std::sync::atomic::Ordering::SeqCst) < N / 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.node_mut(&leader).kill();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        cluster.node_mut(&leader).restart().await;
    };
    tokio::join!(enqueuing, killing);
    eventually("every task a letter", Duration::from_secs(120), || async {
        let stats = queue.stats().await.ok()?;
        (stats.messages == 0 && stats.dead_lettered as usize >= N).then_some(stats)
    })
    .await;
    let letters = queue.dead_letters(10_000).await.expect("letters");
    let ids: std::collections::HashSet<String> = letters
        .iter()
        .filter_map(|stored| stored.letter.task.as_ref().map(|task| task.id.clone()))
        .collect();
    assert_eq!(ids.len(), N, "one letter per task");
    assert_eq!(letters.len(), N, "no task lettered twice");
    queue.disconnect().await;
}

/// Found by the lifecycle model on a cluster: an own id enqueued again while its task was
/// stored rejected with `ERR_PQ_NATS` ("wrong last sequence", code 10164): a clustered stream
/// refuses the marker write with another code than one server (10071), which async-nats does
/// not name. The id is taken: the enqueue resolves with it and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_id_enqueued_again_on_a_cluster_is_taken_not_an_error() {
    let cluster = NatsCluster::start(3).await;
    let connection = open(&cluster, &Arc::new(r3_config())).await;
    let again = || protoqueue::NewTask {
        id: Some("order-1".into()),
        ..task("{}")
    };
    for _ in 0..3 {
        let id = lifecycle::enqueue(&connection, again())
            .await
            .expect("taken, not an error");
        assert_eq!(id, "order-1");
    }
    let ids = lifecycle::enqueue_batch(&connection, vec![again(), again()])
        .await
        .expect("a batch of a taken id");
    assert_eq!(ids, ["order-1", "order-1"]);
    // Producers writing the id's marker at the same moment (the model's case: a worker pointed
    // the marker of a fired delayed task while a producer claimed its id): a cluster refuses
    // all but one write with its own code.
    for round in 0..10 {
        let id = format!("race-{round}");
        let calls = (0..12).map(|_| {
            lifecycle::enqueue(
                &connection,
                protoqueue::NewTask {
                    id: Some(id.clone()),
                    ..task("{}")
                },
            )
        });
        for result in futures::future::join_all(calls).await {
            assert_eq!(result.expect("taken or stored, not an error"), id);
        }
    }
    let stats = protoqueue::admin::stats::snapshot(&connection)
        .await
        .expect("stats");
    assert_eq!(stats.messages, 11, "each id stored once");
    connection.close().await;
}

/// Found by the lifecycle model on an R3 cluster: a worker points a fired delayed task's marker
/// at it beside the handler; when the task was done and its marker released first, the pointing
/// was still stored (a cluster's leader checks the expected sequence against a delete still in
/// flight), leaving a marker behind. Many delayed tasks with own ids, handled at once: none left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fired_delayed_tasks_with_own_ids_leave_no_marker_on_a_cluster() {
    const N: usize = 60;
    let cluster = NatsCluster::start(3).await;
    let mut config = r3_config();
    config.schedules = true;
    let queue = Arc::new(protoqueue::Queue::new(config));
    queue
        .connect(Some(&cluster.urls()))
        .await
        .expect("connect to the cluster");
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    queue
        .process(handler(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { protoqueue::Outcome::Success }
        }))
        .await
        .expect("process");
    let due = protoqueue::envelope::now_ms() + 1_000;
    let tasks = (0..N)
        .map(|i| {
            protoqueue::NewTask {
                id: Some(format!("report-{i}")),
                ..task("{}")
            }
            .at(due)
        })
        .collect();
    queue.enqueue_batch(tasks).await.expect("enqueue");
    eventually("every task handled", Duration::from_secs(30), || async {
        (calls.load(std::sync::atomic::Ordering::SeqCst) >= N).then_some(())
    })
    .await;
    let observer = plain_jetstream(cluster.urls().split(',').map(str::to_owned)).await;
    let index = queue.config().id_index_stream();
    eventually("every marker released", Duration::from_secs(15), || async {
        let info = try_stream_info(&observer, &index).await?;
        (info.state.messages == 0).then_some(())
    })
    .await;
    queue.disconnect().await;
}

/// Found by the lifecycle model on an R3 cluster: dead letters are read through a consumer the
/// server places on any replica of the dead-letter stream; on one still catching up (here a
/// server restarted after letters were stored without it) the consumer counted nothing left
/// before the walk reached the stream's last letter, and the listing stopped short. Listed
/// again and again while the server catches up: every letter, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_all_listed_while_a_restarted_server_catches_up() {
    const LETTERS: usize = 3_000;
    let mut cluster = NatsCluster::start(3).await;
    let config = Arc::new(r3_config());
    let connection = open(&cluster, &config).await;
    let observer = plain_jetstream(cluster.urls().split(',').map(str::to_owned)).await;
    let letters = config.dead_letter_stream();
    let leader = eventually(
        "a dead-letter stream leader",
        Duration::from_secs(15),
        || async { try_stream_info(&observer, &letters).await?.cluster?.leader },
    )
    .await;
    let followers: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| node.name().to_owned())
        .filter(|name| *name != leader)
        .collect();
    let letter = protoqueue::envelope::DeadLetter {
        error: "downstream is down".into(),
        ..Default::default()
    }
    .to_bytes();
    // Each follower in turn misses letters, then catches up while they are listed.
    for (round, follower) in followers.iter().enumerate() {
        cluster.node_mut(follower).kill();
        let mut stored = Vec::with_capacity(LETTERS);
        for _ in 0..LETTERS {
            let sent = observer
                .publish(config.dead_letter_subject(), letter.clone())
                .await
                .expect("publish a letter");
            stored.push(sent);
        }
        for sent in stored {
            sent.await.expect("letter stored");
        }
        cluster.node_mut(follower).restart().await;
        for listing in 0..30 {
            let listed = protoqueue::dead_letters::stored::list(&connection, 10_000)
                .await
                .expect("list the dead letters");
            let expected = (round + 1) * LETTERS;
            assert_eq!(listed.len(), expected, "round {round}, listing {listing}");
        }
    }
    connection.close().await;
}
