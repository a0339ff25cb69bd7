//! Metrics and events after a known workload, through the core with a real nats-server: the
//! counters (enqueued, completed, failed attempts, retried, dead-lettered by reason), the
//! histograms' counts, the server's gauges, the text format, and the events a listener gets.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use common::*;
use protoqueue::{
    observe::{events, metrics::Family},
    Failure, Outcome, Queue,
};

fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    let family = families
        .iter()
        .find(|f| f.name == name || name.starts_with(f.name))
        .unwrap_or_else(|| panic!("no family for {name}"));
    family
        .values
        .iter()
        .find(|s| {
            s.metric_name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn counters_histograms_gauges_and_events_follow_a_known_workload() {
    let server = NatsServer::start().await;
    let mut config = test_config();
    config.max_retries = 1;
    config.retry_delay = Duration::from_millis(10);
    let stream = config.stream_name.clone();
    let subject = config.subject.clone();
    let queue = Arc::new(Queue::new(config));
    assert_eq!(
        queue.metrics().await.expect_err("not connected").code(),
        "ERR_PQ_NOT_CONNECTED"
    );
    queue.connect(Some(&server.url())).await.expect("connect");

    // Every event is recorded; the sink counts how often it is woken.
    let wakes = Arc::new(AtomicUsize::new(0));
    let woken = wakes.clone();
    let observer = queue.observer();
    observer.events.set_sink(move || {
        woken.fetch_add(1, Ordering::Relaxed);
    });
    observer
        .events
        .set_mask(events::COMPLETED | events::FAILED | events::DEAD_LETTERED);

    // n < 6 succeed; 6 and 7 always fail (retried once, then retriesExhausted); 8 fails with
    // retry: false (rejected); 9 fails once and then succeeds.
    assert_eq!(
        queue
            .enqueue_batch(numbered_tasks(10))
            .await
            .expect("enqueue")
            .len(),
        10
    );
    // Another client's bytes that are no task: invalidEnvelope.
    let client = async_nats::connect(server.url()).await.expect("client");
    async_nats::jetstream::new(client)
        .publish(subject, Bytes::from_static(b"\xff not a task"))
        .await
        .expect("publish")
        .await
        .expect("stored");

    queue
        .process(handler(|attempt| async move {
            let data: serde_json::Value =
                serde_json::from_slice(&attempt.task.data).expect("json data");
            let n = data["n"].as_u64().expect("n");
            match n {
                0..=5 => Outcome::Success,
                6 | 7 => Outcome::Failure(Failure::new("always")),
                8 => Outcome::Failure(Failure {
                    retry: false,
                    ..Failure::new("never again")
                }),
                _ if attempt.number == 1 => Outcome::Failure(Failure::new("once")),
                _ => Outcome::Success,
            }
        }))
        .await
        .expect("process");

    let families = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let families = queue.metric_families().await.expect("metrics");
            let done = value(&families, "protoqueue_tasks_completed_total", &[]) == 7.0
                && value(&families, "protoqueue_dead_letters", &[]) == 4.0
                && value(&families, "protoqueue_tasks_in_flight", &[]) == 0.0;
            if done {
                break families;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "workload not done: {families:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let queue_label = [("queue", stream.as_str())];
    let v = |name: &str| value(&families, name, &queue_label);
    assert_eq!(v("protoqueue_tasks_enqueued_total"), 10.0);
    assert_eq!(v("protoqueue_tasks_completed_total"), 7.0);
    assert_eq!(v("protoqueue_task_attempts_failed_total"), 6.0);
    assert_eq!(v("protoqueue_tasks_retried_total"), 3.0);
    let dead = |reason: &str| {
        value(
            &families,
            "protoqueue_tasks_dead_lettered_total",
            &[("queue", &stream), ("reason", reason)],
        )
    };
    assert_eq!(dead("retriesExhausted"), 2.0);
    assert_eq!(dead("rejected"), 1.0);
    assert_eq!(dead("invalidEnvelope"), 1.0);
    assert_eq!(dead("invalidData"), 0.0);
    assert_eq!(dead("deliveriesExhausted"), 0.0);
    // 13 handler runs: 7 successes and 6 failures.
    assert_eq!(v("protoqueue_handler_duration_seconds_count"), 13.0);
    assert_eq!(v("protoqueue_task_wait_seconds_count"), 13.0);
    assert_eq!(
        value(
            &families,
            "protoqueue_handler_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        13.0
    );
    assert_eq!(v("protoqueue_tasks_pending"), 0.0);
    assert_eq!(v("protoqueue_dead_letters"), 4.0);
    assert_eq!(v("protoqueue_consumers"), 1.0);
    assert_eq!(v("protoqueue_tasks_delayed"), 0.0);

    let text = queue.metrics().await.expect("text");
    assert!(text.contains(&format!(
        "protoqueue_tasks_dead_lettered_total{{queue=\"{stream}\",reason=\"rejected\"}} 1\n"
    )));

    // The events tell the same story, taken in few batches.
    let taken: Vec<serde_json::Value> =
        serde_json::from_str(&observer.events.take_json()).expect("events");
    let count = |kind: &str| taken.iter().filter(|e| e["type"] == kind).count();
    assert_eq!(count("completed"), 7);
    assert_eq!(count("failed"), 6);
    assert_eq!(count("deadLettered"), 4);
    let retried = taken
        .iter()
        .filter(|e| e["type"] == "failed" && e["willRetry"] == true)
        .count();
    assert_eq!(retried, 3);
    let foreign = taken
        .iter()
        .find(|e| e["reason"] == "invalidEnvelope")
        .expect("invalidEnvelope event");
    assert!(
        foreign.get("id").is_none(),
        "no id for a message that is no task"
    );
    assert!(wakes.load(Ordering::Relaxed) >= 1);

    // Counters outlive a disconnect; reading them needs a connection.
    queue.disconnect().await;
    assert_eq!(
        queue.metrics().await.expect_err("disconnected").code(),
        "ERR_PQ_NOT_CONNECTED"
    );
    queue.connect(Some(&server.url())).await.expect("reconnect");
    let again = queue.metric_families().await.expect("metrics");
    assert_eq!(value(&again, "protoqueue_tasks_completed_total", &[]), 7.0);
    queue.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_scrape_while_the_server_is_down_fails_instead_of_hanging() {
    let mut server = NatsServer::start().await;
    let queue = Queue::new(test_config());
    queue.connect(Some(&server.url())).await.expect("connect");
    server.kill();
    let scrape = tokio::time::timeout(Duration::from_secs(30), queue.metrics())
        .await
        .expect("the scrape ends by itself");
    let code = scrape.expect_err("no server").code();
    assert!(
        ["ERR_PQ_TIMEOUT", "ERR_PQ_NATS"].contains(&code),
        "unexpected code {code}"
    );
    queue.disconnect().await;
}
