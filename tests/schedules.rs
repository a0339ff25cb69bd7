//! Delayed and recurring tasks (NATS message schedules) against a real nats-server: never early,
//! on time, through a server crash, cancelled, one task per tick however many producers, and
//! refused with codes where they cannot work.

mod common;

use protoqueue::lifecycle;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use protoqueue::{
    admin::{
        schedules::{self, Recurring, Spec},
        stats,
    },
    cancelling, envelope, Config, Connection, NewTask, Outcome,
};

/// Generous bound for things that normally take milliseconds.
const SOON: Duration = Duration::from_secs(10);

fn scheduled_config() -> Config {
    let mut config = test_config();
    config.schedules = true;
    config
}

/// Handler start times (ms since the epoch) by task id.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<(String, i64)>>>);

impl Starts {
    fn handler(&self) -> Arc<dyn protoqueue::Handler> {
        let starts = self.clone();
        handler(move |attempt| {
            let now = envelope::now_ms();
            starts
                .0
                .lock()
                .expect("lock")
                .push((attempt.task.id.clone(), now));
            async { Outcome::Success }
        })
    }

    fn len(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    fn all(&self) -> Vec<(String, i64)> {
        self.0.lock().expect("lock").clone()
    }

    async fn wait_for(&self, n: usize, limit: Duration) {
        eventually(&format!("{n} handler starts"), limit, || async {
            (self.len() >= n).then_some(())
        })
        .await;
    }
}

fn code<T>(result: Result<T, protoqueue::Error>) -> Option<&'static str> {
    result.err().map(|e| e.code())
}

async fn stats_of(connection: &Connection) -> stats::Stats {
    stats::snapshot(connection).await.expect("stats")
}

/// A small deterministic generator (no extra dependency): xorshift.
fn randoms(seed: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    })
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test]
async fn a_thousand_delayed_tasks_start_at_their_time_never_before() {
    let server = NatsServer::start().await;
    let mut config = scheduled_config();
    config.batch_size = 200;
    let connection = connect(&config, &server).await;
    let starts = Starts::default();
    let worker = start_worker(&connection, starts.handler()).await;

    let now = envelope::now_ms();
    let delays: Vec<i64> = randoms(0x5eed)
        .take(1_000)
        .map(|r| 1_000 + (r % 4_000) as i64)
        .collect();
    let tasks = delays
        .iter()
        .enumerate()
        .map(|(i, delay)| task(format!("{{\"n\":{i}}}")).at(now + delay))
        .collect();
    let ids = lifecycle::enqueue_batch(&connection, tasks)
        .await
        .expect("enqueue");
    let stored = stats_of(&connection).await;
    assert!(
        stored.delayed > 900,
        "the delayed tasks are stored as schedules at once: {stored:?}"
    );
    assert_eq!(stored.pending, 0, "none is available before its time");

    starts.wait_for(1_000, Duration::from_secs(20)).await;
    let due: std::collections::HashMap<&str, i64> = ids
        .iter()
        .map(String::as_str)
        .zip(delays.iter().map(|d| now + d))
        .collect();
    let mut lateness: Vec<i64> = starts
        .all()
        .iter()
        .map(|(id, started)| started - due[id.as_str()])
        .collect();
    assert_eq!(lateness.len(), 1_000, "each task ran once");
    lateness.sort_unstable();
    let (early, p50, p99, max) = (
        lateness[0],
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness[999],
    );
    println!("lateness of 1000 delayed tasks (ms): min {early}, p50 {p50}, p99 {p99}, max {max}");
    assert!(early >= 0, "a task started {}ms before its time", -early);
    assert!(p99 <= 500 && max <= 1_500, "late: p99 {p99}ms, max {max}ms");
    // Once the last acknowledgements land, nothing is stored and nothing counts as delayed (the
    // count of delayed tasks is never inflated by tasks acknowledged while it is read).
    let after = eventually("the acknowledgements", Duration::from_secs(5), || async {
        let stats = stats_of(&connection).await;
        (stats.in_flight == 0 && stats.messages == 0).then_some(stats)
    })
    .await;
    assert_eq!((after.delayed, after.messages), (0, 0), "{after:?}");
    worker.stop().await;
}

#[tokio::test]
async fn delayed_tasks_survive_a_server_kill() {
    let mut server = NatsServer::start().await;
    let config = scheduled_config();
    let connection = connect(&config, &server).await;
    let now = envelope::now_ms();
    let due = now + 3_000;
    let tasks = numbered_tasks(20).into_iter().map(|t| t.at(due)).collect();
    lifecycle::enqueue_batch(&connection, tasks)
        .await
        .expect("enqueue");
    assert_eq!(stats_of(&connection).await.delayed, 20);

    server.kill();
    server.restart().await;

    let starts = Starts::default();
    let worker = start_worker(&connection, starts.handler()).await;
    starts.wait_for(20, SOON).await;
    for (id, started) in starts.all() {
        assert!(started >= due, "{id} started {}ms early", due - started);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(starts.len(), 20, "each ran once");
    worker.stop().await;
}

#[tokio::test]
async fn cancel_removes_a_task_not_yet_due_only() {
    let server = NatsServer::start().await;
    let config = scheduled_config();
    let connection = connect(&config, &server).await;
    let starts = Starts::default();
    let worker = start_worker(&connection, starts.handler()).await;
    let now = envelope::now_ms();

    let later = lifecycle::enqueue(&connection, task("{}").at(now + 5_000))
        .await
        .expect("enqueue");
    let soon = lifecycle::enqueue(&connection, task("{}").at(now + 200))
        .await
        .expect("enqueue");
    assert_eq!(stats_of(&connection).await.delayed, 2);
    assert!(cancelling::cancel(&connection, &later)
        .await
        .expect("cancel"));
    assert!(!cancelling::cancel(&connection, &later)
        .await
        .expect("again"));
    assert!(!cancelling::cancel(&connection, "never-enqueued")
        .await
        .expect("unknown id"));

    starts.wait_for(1, SOON).await;
    assert!(
        !cancelling::cancel(&connection, &soon)
            .await
            .expect("cancel"),
        "a task that ran cannot be cancelled"
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let ran: Vec<String> = starts.all().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ran, vec![soon], "the cancelled task never runs");
    assert_eq!(stats_of(&connection).await.delayed, 0);
    worker.stop().await;
}

/// Issue 23 A12: a cancel that could race the server firing the task (due within
/// CANCEL_MARGIN) cannot remove its schedule; the task fires, and ends cancelled or completed —
/// `true` is only said of a task that does not complete.
#[tokio::test]
async fn cancel_never_answers_true_for_a_task_that_completes() {
    let server = NatsServer::start().await;
    let config = Config {
        results_ttl: Some(Duration::from_secs(600)),
        ..scheduled_config()
    };
    let connection = connect(&config, &server).await;
    let starts = Starts::default();
    let worker = start_worker(&connection, starts.handler()).await;
    let now = envelope::now_ms();
    let mut due = Vec::new();
    for i in 0..20 {
        let at = now + 300 + i * 30;
        due.push(
            lifecycle::enqueue(&connection, task("{}").at(at))
                .await
                .expect("enqueue"),
        );
    }
    let mut answers = Vec::new();
    for id in &due {
        answers.push(cancelling::cancel(&connection, id).await.expect("cancel"));
    }
    for (id, cancelled) in due.iter().zip(answers) {
        let record = eventually("the task's record", SOON, || async {
            protoqueue::history::read(&connection, id)
                .await
                .expect("read")
        })
        .await;
        if cancelled {
            assert_eq!(record.state, protoqueue::history::Ending::Cancelled, "{id}");
        }
    }
    assert_eq!(stats_of(&connection).await.delayed, 0);
    worker.stop().await;
}

#[tokio::test]
async fn delays_shorter_than_the_duplicate_window_run_once_beside_plain_tasks() {
    let server = NatsServer::start().await;
    let config = scheduled_config();
    let connection = connect(&config, &server).await;
    let now = envelope::now_ms();
    let mut tasks = numbered_tasks(10);
    for (i, task) in tasks.iter_mut().enumerate().filter(|(i, _)| i % 2 == 0) {
        task.run_at = Some(now + 100 + i as i64 * 10);
    }
    // Zero and past times run at once.
    tasks.push(task("{}").at(now));
    tasks.push(task("{}").at(now - 60_000));
    let ids = lifecycle::enqueue_batch(&connection, tasks)
        .await
        .expect("enqueue");
    let starts = Starts::default();
    let worker = start_worker(&connection, starts.handler()).await;
    starts.wait_for(12, SOON).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ran: Vec<String> = starts.all().into_iter().map(|(id, _)| id).collect();
    ran.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        ran, expected,
        "every task ran once, under the id enqueue returned"
    );
    let after = stats_of(&connection).await;
    assert_eq!((after.messages, after.delayed), (0, 0), "{after:?}");
    worker.stop().await;
}

/// Issue 23 A14: a task due already is stored as a task at once, not as a schedule that waits
/// for the server's next schedule pass.
#[tokio::test]
async fn a_task_due_already_is_stored_as_a_task_at_once() {
    let server = NatsServer::start().await;
    let config = scheduled_config();
    let connection = connect(&config, &server).await;
    let now = envelope::now_ms();
    lifecycle::enqueue_batch(
        &connection,
        vec![task("{}").at(now), task("{}").at(now - 60_000)],
    )
    .await
    .expect("enqueue");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let stream = async_nats::jetstream::new(client)
        .get_stream(&config.stream_name)
        .await
        .expect("stream");
    for sequence in [1, 2] {
        let stored = stream.get_raw_message(sequence).await.expect("stored");
        assert_eq!(stored.subject.as_str(), config.subject, "seq {sequence}");
    }
}

/// Whether the task stream of `config` allows message schedules, as the server says.
async fn stream_allows_schedules(server: &NatsServer, config: &Config) -> bool {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(&config.stream_name)
        .await
        .expect("stream");
    stream
        .info()
        .await
        .expect("info")
        .config
        .allow_message_schedules
}

#[tokio::test]
async fn a_queue_that_creates_its_stream_has_schedules_unless_it_says_no_and_changes_no_stream() {
    let server = NatsServer::start().await;
    // Unset: the new stream allows them, and a delayed task is taken.
    let config = test_config();
    let connection = connect(&config, &server).await;
    assert!(connection.config().schedules);
    assert!(stream_allows_schedules(&server, &config).await);
    lifecycle::enqueue(&connection, task("{}").at(envelope::now_ms() + 60_000))
        .await
        .expect("a delay with no option");
    assert_eq!(stats_of(&connection).await.delayed, 1);

    // A stream made without them (an earlier version, or `schedules: false`) stays so when a
    // queue leaves the option unset.
    let earlier = Config {
        schedules_option: Some(false),
        ..test_config()
    };
    drop(connect(&earlier, &server).await);
    assert!(!stream_allows_schedules(&server, &earlier).await);
    let unset = Config {
        schedules_option: None,
        ..earlier.clone()
    };
    let connection = connect(&unset, &server).await;
    assert!(!connection.config().schedules);
    assert!(!stream_allows_schedules(&server, &earlier).await);
}

#[tokio::test]
async fn a_queue_without_schedules_refuses_them_and_sends_nothing() {
    let server = NatsServer::start().await;
    let config = Config {
        schedules_option: Some(false),
        ..test_config()
    };
    let connection = connect(&config, &server).await;
    let delayed = task("{}").at(envelope::now_ms() + 1_000);
    assert_eq!(
        code(lifecycle::enqueue(&connection, delayed.clone()).await),
        Some("ERR_PQ_SCHEDULES_OFF")
    );
    assert_eq!(
        code(lifecycle::enqueue_batch(&connection, vec![task("{}"), delayed]).await),
        Some("ERR_PQ_SCHEDULES_OFF")
    );
    // Cancelling works on any stream: there is no delayed task to find.
    assert!(!cancelling::cancel(&connection, "x").await.expect("cancel"));
    let every = Recurring::from_json(&serde_json::json!({"every": 1000})).expect("valid");
    assert_eq!(
        code(schedules::schedule(&connection, "n", &every, "{}".into(), Default::default()).await),
        Some("ERR_PQ_SCHEDULES_OFF")
    );
    assert_eq!(
        code(schedules::list(&connection).await),
        Some("ERR_PQ_SCHEDULES_OFF")
    );
    let stats = stats_of(&connection).await;
    assert_eq!(
        (stats.messages, stats.last_sequence),
        (0, 0),
        "nothing sent"
    );
}

#[tokio::test]
async fn opting_in_adds_schedules_to_an_existing_stream_and_keeps_its_tasks() {
    let server = NatsServer::start().await;
    let plain = test_config();
    let before = connect(&plain, &server).await;
    lifecycle::enqueue(&before, task("{\"plain\":1}"))
        .await
        .expect("enqueue");

    let mut opted = plain.clone();
    opted.schedules = true;
    let connection = connect(&opted, &server).await;
    let id = lifecycle::enqueue(&connection, task("{}").at(envelope::now_ms() + 300))
        .await
        .expect("a delayed enqueue once opted in");
    let stats = stats_of(&connection).await;
    assert_eq!((stats.messages, stats.delayed), (1, 1), "{stats:?}");
    // The queue without the option still works on the same stream, and its stats count tasks.
    assert_eq!(stats_of(&before).await.messages, 1);

    let starts = Starts::default();
    let worker = start_worker(&before, starts.handler()).await;
    starts.wait_for(2, SOON).await;
    assert!(starts.all().iter().any(|(ran, _)| *ran == id));
    worker.stop().await;
    // Opening it again changes nothing.
    connect(&opted, &server).await;
}

#[tokio::test]
async fn opting_in_fails_with_a_code_when_another_stream_holds_the_schedule_subjects() {
    let server = NatsServer::start().await;
    let config = scheduled_config();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: unique("OTHER"),
        subjects: vec![format!("{}.>", config.schedule_prefix())],
        ..Default::default()
    })
    .await
    .expect("a stream in the way");
    // A new stream cannot be created with those subjects either.
    let err = Connection::open(Arc::new(config.clone()), &server.url())
        .await
        .expect_err("subjects taken");
    assert_eq!(err.code(), "ERR_PQ_STREAM_CONFLICT");
    // Without the option, the queue is made without schedules instead of failing…
    let unset = Config {
        schedules: false,
        schedules_option: None,
        ..config.clone()
    };
    assert!(!connect(&unset, &server).await.config().schedules);
    // …and asking for them on that existing stream fails the same way, changing nothing.
    let err = Connection::open(Arc::new(config), &server.url())
        .await
        .expect_err("subjects taken");
    assert_eq!(err.code(), "ERR_PQ_STREAM_CONFLICT");
}

/// A fake NATS server that says it is version `version`: it answers the handshake and nothing
/// else, enough for the version check before any JetStream request.
async fn fake_server(version: &'static str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("nats://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let info = format!(
                    "INFO {{\"server_id\":\"fake\",\"version\":\"{version}\",\"proto\":1,\
                     \"max_payload\":1048576,\"headers\":true,\"jetstream\":true}}\r\n"
                );
                if write.write_all(info.as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("PING") && write.write_all(b"PONG\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn a_server_older_than_2_12_refuses_schedules_with_a_code() {
    let url = fake_server("2.11.4").await;
    let err = Connection::open(Arc::new(scheduled_config()), &url)
        .await
        .expect_err("too old");
    assert_eq!(err.code(), "ERR_PQ_SERVER_TOO_OLD", "{err}");
}

#[tokio::test]
async fn hostile_ids_and_names_are_refused_with_codes() {
    let server = NatsServer::start().await;
    let config = scheduled_config();
    let connection = connect(&config, &server).await;
    for id in ["", "a b", "a\nb", &"x".repeat(300)] {
        let err = cancelling::cancel(&connection, id).await.expect_err(id);
        assert_eq!(err.code(), "ERR_PQ_INVALID_TASK", "{id:?}");
    }
    let every = Recurring::from_json(&serde_json::json!({"every": 1000})).expect("valid");
    for name in ["", "a b", "a.b", "a:b", "*", "tasks.>"] {
        let err = schedules::schedule(&connection, name, &every, "{}".into(), Default::default())
            .await
            .expect_err(name);
        assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG", "{name:?}");
        let err = schedules::unschedule(&connection, name)
            .await
            .expect_err(name);
        assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG", "{name:?}");
    }
    // Well-formed for this side, refused by the server: a field out of range, an unknown zone.
    for spec in [
        serde_json::json!({"cron": "61 * * * * *"}),
        serde_json::json!({"cron": "* * * * * *", "timeZone": "Mars/Olympus_Mons"}),
    ] {
        let recurring = Recurring::from_json(&spec).expect("checked by the server");
        let err = schedules::schedule(
            &connection,
            "n",
            &recurring,
            "{}".into(),
            Default::default(),
        )
        .await
        .expect_err("refused by the server");
        assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG", "{spec}: {err}");
    }
    let stats = stats_of(&connection).await;
    assert_eq!(
        (stats.recurring, stats.delayed, stats.last_sequence),
        (0, 0, 0)
    );
}

/// Three producers schedule the same name; the worker sees one occurrence per tick, each with
/// its own id.
async fn one_task_per_tick(spec: serde_json::Value) {
    let server = NatsServer::start().await;
    let config = scheduled_config();
    let producers = [
        connect(&config, &server).await,
        connect(&config, &server).await,
        connect(&config, &server).await,
    ];
    let recurring = Recurring::from_json(&spec).expect("valid");
    let data = bytes::Bytes::from_static(b"{\"report\":\"daily\"}");
    let calls = producers.iter().map(|connection| {
        schedules::schedule(
            connection,
            "report",
            &recurring,
            data.clone(),
            Default::default(),
        )
    });
    for result in futures::future::join_all(calls).await {
        result.expect("schedule");
    }
    let listed = schedules::list(&producers[0]).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "report");
    assert_eq!(listed[0].recurring.as_ref(), Some(&recurring));
    assert_eq!(listed[0].task.data, data);
    assert_eq!(stats_of(&producers[0]).await.recurring, 1);

    let starts = Starts::default();
    let worker = start_worker(&producers[1], starts.handler()).await;
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let ticks = starts.all();
    assert!(
        (3..=6).contains(&ticks.len()),
        "about one per second: {ticks:?}"
    );
    for pair in ticks.windows(2) {
        assert!(
            pair[1].1 - pair[0].1 >= 700,
            "two tasks for one tick: {ticks:?}"
        );
    }
    let mut ids: Vec<&str> = ticks.iter().map(|(id, _)| id.as_str()).collect();
    assert!(ids.iter().all(|id| id.starts_with("report:")), "{ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), ticks.len(), "each occurrence has its own id");

    assert!(schedules::unschedule(&producers[2], "report")
        .await
        .expect("unschedule"));
    assert!(!schedules::unschedule(&producers[2], "report")
        .await
        .expect("again"));
    assert!(schedules::list(&producers[0])
        .await
        .expect("list")
        .is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = starts.len();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(starts.len(), after, "no tick after unschedule");
    worker.stop().await;
}

#[tokio::test]
async fn an_every_schedule_makes_one_task_per_tick_with_three_producers() {
    one_task_per_tick(serde_json::json!({"every": 1000})).await;
}

#[tokio::test]
async fn a_cron_schedule_makes_one_task_per_tick_with_three_producers() {
    one_task_per_tick(serde_json::json!({"cron": "* * * * * *", "timeZone": "UTC"})).await;
}

#[tokio::test]
async fn recurring_specs_read_back() {
    let server = NatsServer::start().await;
    let config = scheduled_config();
    let connection = connect(&config, &server).await;
    let nightly = Recurring {
        spec: Spec::Cron("0 30 2 * * *".into()),
        time_zone: Some("Europe/Paris".into()),
    };
    let hourly = Recurring {
        spec: Spec::Every(Duration::from_secs(3600)),
        time_zone: None,
    };
    schedules::schedule(
        &connection,
        "nightly",
        &nightly,
        "1".into(),
        "{\"m\":1}".into(),
    )
    .await
    .expect("schedule");
    schedules::schedule(
        &connection,
        "hourly",
        &hourly,
        "2".into(),
        Default::default(),
    )
    .await
    .expect("schedule");
    // Calling again replaces it.
    schedules::schedule(
        &connection,
        "hourly",
        &hourly,
        "3".into(),
        Default::default(),
    )
    .await
    .expect("schedule");
    let listed = schedules::list(&connection).await.expect("list");
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["hourly", "nightly"]);
    assert_eq!(listed[0].recurring.as_ref(), Some(&hourly));
    assert_eq!(&listed[0].task.data[..], b"3");
    assert_eq!(listed[1].recurring.as_ref(), Some(&nightly));
    assert_eq!(&listed[1].task.metadata[..], b"{\"m\":1}");
    let stats = stats_of(&connection).await;
    assert_eq!((stats.recurring, stats.delayed, stats.messages), (2, 0, 0));
}

/// Delayed enqueues sent while the server is down are re-sent until confirmed; each task is
/// stored once (one schedule per task subject, `Nats-Msg-Id` on it) and runs once, not before
/// its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_enqueues_re_sent_through_an_outage_run_once() {
    let mut server = NatsServer::start().await;
    let config = scheduled_config();
    let connection = connect(&config, &server).await;
    server.kill();
    let due = envelope::now_ms() + 2_500;
    let pending = tokio::spawn({
        let connection = connection.clone();
        let tasks = numbered_tasks(50).into_iter().map(|t| t.at(due)).collect();
        async move { lifecycle::enqueue_batch(&connection, tasks).await }
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!pending.is_finished(), "resolved while the server was down");
    server.restart().await;
    let ids = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("resolves after the restart")
        .expect("enqueue task")
        .expect("enqueue succeeds");
    let starts = Starts::default();
    let worker = start_worker(&connection, starts.handler()).await;
    starts.wait_for(50, SOON).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let ran = starts.all();
    assert_eq!(ran.len(), 50, "each task ran once");
    let mut ran_ids: Vec<String> = ran.iter().map(|(id, _)| id.clone()).collect();
    ran_ids.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(ran_ids, expected);
    assert!(ran.iter().all(|(_, started)| *started >= due), "none early");
    worker.stop().await;
}

/// A measurement, not a check (`--ignored --nocapture`): how late after its time the server
/// publishes each of ten delayed tasks, read from the stored message's time (no worker involved).
#[tokio::test]
#[ignore]
async fn probe_when_the_server_publishes_due_tasks() {
    let server = NatsServer::start().await;
    let config = scheduled_config();
    let connection = connect(&config, &server).await;
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(&config.stream_name).await.expect("stream");
    let mut dues = Vec::new();
    for i in 0..10 {
        let due = envelope::now_ms() + 300 + i * 137;
        lifecycle::enqueue(&connection, task("{}").at(due))
            .await
            .expect("enqueue");
        dues.push(due);
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for (n, due) in dues.iter().enumerate() {
        let message = stream
            .raw_message_builder()
            .sequence(1)
            .next_by_subject(config.subject.clone())
            .sequence(11 + n as u64)
            .send()
            .await;
        match message {
            Ok(message) => {
                let at = (message.time.unix_timestamp_nanos() / 1_000_000) as i64;
                println!(
                    "seq {} published {}ms after its time",
                    message.sequence,
                    at - due
                );
            }
            Err(err) => println!("{err}"),
        }
    }
}

#[tokio::test]
async fn purge_removes_waiting_tasks_but_not_schedules() {
    let server = NatsServer::start().await;
    let config = scheduled_config();
    let connection = connect(&config, &server).await;
    let every = Recurring::from_json(&serde_json::json!({"every": 3_600_000})).expect("valid");
    schedules::schedule(
        &connection,
        "hourly",
        &every,
        "{}".into(),
        Default::default(),
    )
    .await
    .expect("schedule");
    let far = envelope::now_ms() + 3_600_000;
    let mut tasks = numbered_tasks(6);
    tasks[1].run_at = Some(far);
    tasks[4].run_at = Some(far);
    lifecycle::enqueue_batch(&connection, tasks)
        .await
        .expect("enqueue");
    // Nothing delivered yet: the whole-subject purge.
    assert_eq!(
        protoqueue::admin::control::purge(&connection)
            .await
            .expect("purge"),
        4
    );
    let stats = stats_of(&connection).await;
    assert_eq!((stats.messages, stats.delayed, stats.recurring), (0, 2, 1));

    // After deliveries: the message-by-message purge skips schedules too.
    lifecycle::enqueue_batch(&connection, numbered_tasks(3))
        .await
        .expect("enqueue");
    let starts = Starts::default();
    let worker = start_worker(&connection, starts.handler()).await;
    starts.wait_for(3, SOON).await;
    worker.stop().await;
    let mut tasks = numbered_tasks(4);
    tasks[2].run_at = Some(far);
    lifecycle::enqueue_batch(&connection, tasks)
        .await
        .expect("enqueue");
    assert_eq!(
        protoqueue::admin::control::purge(&connection)
            .await
            .expect("purge"),
        3
    );
    let stats = stats_of(&connection).await;
    assert_eq!((stats.messages, stats.delayed, stats.recurring), (0, 3, 1));
}

/// A producer's own id may hold dots or wildcards: its delayed task still gets a subject of its
/// own, runs at its time, and can be cancelled by that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_with_their_own_odd_ids_run_and_cancel() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.schedules = true;
    let connection = connect(&config, &server).await;
    let later = envelope::now_ms() + 60_000;
    for id in ["order.42", "a*b>c", "~61"] {
        let task = NewTask {
            id: Some(id.into()),
            ..task("{}")
        }
        .at(later);
        assert_eq!(
            lifecycle::enqueue(&connection, task)
                .await
                .expect("enqueue"),
            id
        );
    }
    for id in ["order.42", "a*b>c", "~61"] {
        assert!(
            cancelling::cancel(&connection, id).await.expect("cancel"),
            "{id}"
        );
    }
    let soon = NewTask {
        id: Some("soon.1".into()),
        ..task("{}")
    }
    .at(envelope::now_ms() + 200);
    lifecycle::enqueue(&connection, soon)
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_calls(1, Duration::from_secs(10)).await;
    assert_eq!(recorder.events()[0].id(), "soon.1");
    worker.stop().await;
}
