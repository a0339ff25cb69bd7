//! Routing over a subject tree against a real nats-server: tasks routed within the tree reach
//! the workers of their part only, shared between them; a part without workers keeps its tasks;
//! priorities, delays and requeued dead letters keep the routed subject; bad subjects and
//! overlapping parts are refused.

mod common;

use protoqueue::lifecycle;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use protoqueue::{
    admin::stats, dead_letters::redrive, envelope, layout, Config, NewTask, Outcome, Worker,
};

const SOON: Duration = Duration::from_secs(20);

fn tree_config() -> Config {
    let (stream, subject) = unique_names();
    let mut config = Config::new(stream, format!("{subject}.>")).unwrap();
    config.batch_size = 1;
    config.prefetch = 0;
    config
}

fn to(config: &Config, part: &str, data: &str) -> NewTask {
    NewTask {
        subject: Some(format!("{}.{part}", config.subject)),
        ..task(data)
    }
}

fn part(config: &Config, part: &str) -> Vec<String> {
    vec![format!("{}.{part}", config.subject)]
}

/// Which worker (label) ran which task (data).
#[derive(Clone, Default)]
struct Ran(Arc<Mutex<Vec<(usize, String)>>>);

impl Ran {
    fn handler(&self, worker: usize) -> Arc<dyn protoqueue::Handler> {
        let ran = self.clone();
        handler(move |attempt| {
            let data = String::from_utf8_lossy(&attempt.task.data).into_owned();
            ran.0.lock().unwrap().push((worker, data));
            async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Outcome::Success
            }
        })
    }

    fn all(&self) -> Vec<(usize, String)> {
        self.0.lock().unwrap().clone()
    }
}

async fn part_worker(
    config: &Config,
    server: &NatsServer,
    handler: Arc<dyn protoqueue::Handler>,
    subjects: &[String],
) -> protoqueue::Result<(Worker, protoqueue::Connection)> {
    let connection = connect(config, server).await;
    let worker = Worker::start_part(connection.clone(), handler, Some(subjects)).await?;
    Ok((worker, connection))
}

#[tokio::test]
async fn two_parts_with_two_workers_each_share_their_own_tasks_only() {
    let server = NatsServer::start().await;
    let config = tree_config();
    let producer_side = connect(&config, &server).await;
    let ran = Ran::default();
    let mut workers = Vec::new();
    // Workers 0 and 1 take `eu`, 2 and 3 take `us`.
    for (label, region) in ["eu", "eu", "us", "us"].into_iter().enumerate() {
        let started = part_worker(&config, &server, ran.handler(label), &part(&config, region))
            .await
            .unwrap();
        workers.push(started);
    }
    let mut tasks = Vec::new();
    for i in 0..100 {
        tasks.push(to(&config, "eu", &format!("\"eu{i}\"")));
        tasks.push(to(&config, "us", &format!("\"us{i}\"")));
    }
    // One for a part nobody serves: it waits.
    tasks.push(to(&config, "asia", "\"asia\""));
    lifecycle::enqueue_batch(&producer_side, tasks)
        .await
        .unwrap();
    eventually("every eu and us task to run", SOON, || async {
        (ran.all().len() >= 200).then_some(())
    })
    .await;
    let all = ran.all();
    let mut by_worker: HashMap<usize, usize> = HashMap::new();
    for (worker, data) in &all {
        let region = if *worker < 2 { "eu" } else { "us" };
        assert!(
            data.contains(region),
            "worker {worker} of {region} ran {data}"
        );
        *by_worker.entry(*worker).or_default() += 1;
    }
    let distinct: HashSet<&String> = all.iter().map(|(_, d)| d).collect();
    assert_eq!(distinct.len(), 200, "each task ran once");
    assert_eq!(
        by_worker.len(),
        4,
        "every worker shared its part's tasks: {by_worker:?}"
    );

    // The asia task waits for a worker of its part.
    eventually("only the asia task to be left, waiting", SOON, || async {
        let stats = stats::snapshot(&producer_side).await.ok()?;
        ((stats.messages, stats.pending) == (1, 1)).then_some(())
    })
    .await;
    let (asia, _c) = part_worker(&config, &server, ran.handler(9), &part(&config, "asia"))
        .await
        .unwrap();
    eventually("the asia task to run", SOON, || async {
        ran.all()
            .iter()
            .any(|(w, d)| *w == 9 && d.contains("asia"))
            .then_some(())
    })
    .await;
    asia.stop().await;
    for (worker, _) in workers {
        worker.stop().await;
    }
    // The consumers are named after their part, the same in every process.
    let client = async_nats::connect(server.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream(&config.stream_name)
        .await
        .unwrap();
    for region in ["eu", "us", "asia"] {
        let name = layout::part_consumer(&part(&config, region));
        assert!(stream.consumer_info(&name).await.is_ok(), "{name}");
    }
}

#[tokio::test]
async fn routed_tasks_keep_their_subject_through_priorities_delays_and_requeue() {
    let server = NatsServer::start().await;
    let mut config = tree_config();
    config.priorities = true;
    config.schedules = true;
    config.max_retries = 0;
    let connection = connect(&config, &server).await;
    // Before any worker: three routine tasks, then an urgent one, all for eu.
    let mut tasks: Vec<NewTask> = (0..3)
        .map(|i| NewTask {
            priority: Some(10),
            ..to(&config, "eu", &format!("\"low{i}\""))
        })
        .collect();
    tasks.push(NewTask {
        priority: Some(1),
        ..to(&config, "eu", "\"urgent\"")
    });
    lifecycle::enqueue_batch(&connection, tasks).await.unwrap();
    let stats = stats::snapshot(&connection).await.unwrap();
    assert_eq!(stats.pending_by_priority[0], 1, "{stats:?}");
    assert_eq!(stats.pending_by_priority[9], 3, "{stats:?}");

    let ran = Ran::default();
    let (eu, _c) = part_worker(&config, &server, ran.handler(0), &part(&config, "eu"))
        .await
        .unwrap();
    eventually("the four tasks to run", SOON, || async {
        (ran.all().len() == 4).then_some(())
    })
    .await;
    assert_eq!(ran.all()[0].1, "\"urgent\"", "the urgent one first");

    // A delayed task fires into its routed subject (and level).
    let due = envelope::now_ms() + 300;
    let delayed = NewTask {
        priority: Some(2),
        ..to(&config, "eu", "\"delayed\"")
    };
    lifecycle::enqueue(&connection, delayed.at(due))
        .await
        .unwrap();
    eventually("the delayed task to run", SOON, || async {
        ran.all()
            .iter()
            .any(|(_, d)| d.contains("delayed"))
            .then_some(())
    })
    .await;
    assert!(envelope::now_ms() >= due);
    eu.stop().await;

    // A dead letter of a routed task is requeued to its subject: only its part's workers get it.
    let failing = handler(|_| async { Outcome::Failure(Default::default()) });
    let (us, _c) = part_worker(&config, &server, failing, &part(&config, "us"))
        .await
        .unwrap();
    lifecycle::enqueue(&connection, to(&config, "us", "\"doomed\""))
        .await
        .unwrap();
    let letters = settled_with_dead_letters(&connection, 1).await;
    assert_eq!(letters[0].subject, format!("{}.us", config.subject));
    us.stop().await;
    let requeued = redrive::requeue(&connection, &Default::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(requeued, 1);
    let (us, _c) = part_worker(&config, &server, ran.handler(1), &part(&config, "us"))
        .await
        .unwrap();
    eventually("the requeued task to run on its part", SOON, || async {
        ran.all()
            .iter()
            .any(|(w, d)| *w == 1 && d.contains("doomed"))
            .then_some(())
    })
    .await;
    us.stop().await;
}

#[tokio::test]
async fn bad_subjects_and_overlapping_parts_are_refused() {
    let server = NatsServer::start().await;
    let config = tree_config();
    let connection = connect(&config, &server).await;
    for bad in [
        "elsewhere.eu".to_string(),
        format!("{}.*", config.subject),
        format!("{}.>", config.subject),
        format!("{}..eu", config.subject),
        format!("{}x", config.subject),
    ] {
        let batch = vec![
            to(&config, "eu", "1"),
            NewTask {
                subject: Some(bad.clone()),
                ..task("2")
            },
        ];
        let err = lifecycle::enqueue_batch(&connection, batch)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "ERR_PQ_INVALID_TASK", "{bad}");
    }
    assert_eq!(stats::snapshot(&connection).await.unwrap().messages, 0);

    // A plain queue routes nothing and has no parts.
    let plain = test_config();
    let plain_connection = connect(&plain, &server).await;
    let err = lifecycle::enqueue(
        &plain_connection,
        NewTask {
            subject: Some(plain.subject.clone()),
            ..task("1")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "ERR_PQ_INVALID_TASK");
    let err = Worker::start_part(
        plain_connection.clone(),
        handler(|_| async { Outcome::Success }),
        Some(std::slice::from_ref(&plain.subject)),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG");

    // Parts outside the tree; a part overlapping a running whole-tree worker.
    let outside = vec!["elsewhere.>".to_string()];
    let noop = || handler(|_| async { Outcome::Success });
    let err = part_worker(&config, &server, noop(), &outside)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG");
    let whole = start_worker(&connection, noop()).await;
    let err = part_worker(&config, &server, noop(), &part(&config, "eu"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "ERR_PQ_STREAM_CONFLICT", "{err}");
    whole.stop().await;
}

#[tokio::test]
async fn pause_resume_and_purge_act_on_the_parts_of_a_tree() {
    let server = NatsServer::start().await;
    let config = tree_config();
    let connection = connect(&config, &server).await;
    let ran = Ran::default();
    let (eu, _c) = part_worker(&config, &server, ran.handler(0), &part(&config, "eu"))
        .await
        .unwrap();
    protoqueue::admin::control::pause(&connection)
        .await
        .unwrap();
    assert!(protoqueue::admin::control::is_paused(&connection)
        .await
        .unwrap());
    lifecycle::enqueue_batch(
        &connection,
        vec![to(&config, "eu", "\"a\""), to(&config, "eu", "\"b\"")],
    )
    .await
    .unwrap();
    let stats = stats::snapshot(&connection).await.unwrap();
    assert!(stats.paused, "{stats:?}");
    // Purging while paused removes both waiting tasks; the queue stays paused.
    assert_eq!(
        protoqueue::admin::control::purge(&connection)
            .await
            .unwrap(),
        2
    );
    assert!(protoqueue::admin::control::is_paused(&connection)
        .await
        .unwrap());
    lifecycle::enqueue(&connection, to(&config, "eu", "\"c\""))
        .await
        .unwrap();
    protoqueue::admin::control::resume(&connection)
        .await
        .unwrap();
    eventually("the task to run after resume", SOON, || async {
        ran.all().iter().any(|(_, d)| d.contains('c')).then_some(())
    })
    .await;
    assert_eq!(ran.all().len(), 1, "the purged tasks never ran");

    // A part whose first worker starts after a pause is paused too.
    protoqueue::admin::control::pause(&connection)
        .await
        .unwrap();
    lifecycle::enqueue(&connection, to(&config, "us", "\"later\""))
        .await
        .unwrap();
    let (us, _c) = part_worker(&config, &server, ran.handler(1), &part(&config, "us"))
        .await
        .unwrap();
    let stats = stats::snapshot(&connection).await.unwrap();
    assert!(stats.paused && stats.pending == 1, "{stats:?}");
    protoqueue::admin::control::resume(&connection)
        .await
        .unwrap();
    eventually("the us task to run after resume", SOON, || async {
        ran.all()
            .iter()
            .any(|(w, d)| *w == 1 && d.contains("later"))
            .then_some(())
    })
    .await;
    us.stop().await;
    eu.stop().await;
}
