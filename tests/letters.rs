//! Dead-letter workers (`processDLQ()`) against a real nats-server: a letter is removed only
//! after its handler succeeded, offered again after a failure, shared between the workers.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use protoqueue::{
    admin::stats,
    config::LetterOptions,
    envelope::DeadLetterReason,
    worker::{
        executor::BoxFuture,
        letters::{LetterAttempt, LetterHandler},
    },
    Failure, Outcome, Queue,
};

/// Generous bound for things that normally take milliseconds.
const SOON: Duration = Duration::from_secs(10);

/// Records each offer (task id, offer number) and answers from `answer`.
struct Recording<F> {
    offers: Arc<Mutex<Vec<(String, u64)>>>,
    answer: F,
}

impl<F> LetterHandler for Recording<F>
where
    F: Fn(&str, u64) -> Outcome + Send + Sync + 'static,
{
    fn handle(&self, attempt: LetterAttempt) -> BoxFuture<Outcome> {
        let id = attempt
            .letter
            .letter
            .task
            .map(|task| task.id)
            .unwrap_or_default();
        let outcome = (self.answer)(&id, attempt.number);
        self.offers
            .lock()
            .expect("offers")
            .push((id, attempt.number));
        Box::pin(async move { outcome })
    }
}

/// A queue whose tasks all fail for good at once; returns it with the ids of `n` dead letters.
async fn queue_with_dead_letters(server: &NatsServer, n: usize) -> (Arc<Queue>, Vec<String>) {
    let mut config = test_config();
    config.max_retries = 0;
    config.retry_delay = Duration::from_millis(100);
    let queue = Arc::new(Queue::new(config));
    queue.connect(Some(&server.url())).await.expect("connect");
    let ids = queue
        .enqueue_batch(numbered_tasks(n))
        .await
        .expect("enqueue");
    queue
        .process(handler(|_| async {
            Outcome::Failure(Failure::new("down"))
        }))
        .await
        .expect("process");
    eventually("every task dead-lettered", SOON, || async {
        let stats = queue.stats().await.ok()?;
        (stats.dead_lettered == n as u64 && stats.messages == 0).then_some(())
    })
    .await;
    (queue, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_is_removed_after_success_offered_again_after_failure_and_kept_when_rejected() {
    let server = NatsServer::start().await;
    let (queue, ids) = queue_with_dead_letters(&server, 3).await;
    let (fine, flaky, hopeless) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let offers = Arc::new(Mutex::new(Vec::new()));
    let answers = {
        let (flaky, hopeless) = (flaky.clone(), hopeless.clone());
        move |id: &str, number: u64| {
            if id == flaky && number == 1 {
                Outcome::Failure(Failure::new("not yet"))
            } else if id == hopeless {
                Outcome::Failure(Failure {
                    retry: false,
                    ..Failure::new("never")
                })
            } else {
                Outcome::Success
            }
        }
    };
    queue
        .process_dead_letters(
            Arc::new(Recording {
                offers: offers.clone(),
                answer: answers,
            }),
            LetterOptions::default(),
        )
        .await
        .expect("processDLQ");
    eventually("two letters removed", SOON, || async {
        (queue.stats().await.ok()?.dead_lettered == 1).then_some(())
    })
    .await;
    let left = queue.dead_letters(10).await.expect("letters");
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].letter.task.as_ref().map(|t| t.id.clone()),
        Some(hopeless.clone())
    );
    assert_eq!(left[0].letter.reason(), DeadLetterReason::RetriesExhausted);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let offers = offers.lock().expect("offers").clone();
    let count = |id: &str| offers.iter().filter(|(o, _)| o == id).count();
    assert_eq!(
        (count(&fine), count(&flaky), count(&hopeless)),
        (1, 2, 1),
        "{offers:?}"
    );
    assert!(offers.contains(&(flaky, 2)), "offered again, as offer 2");
    queue.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_workers_share_the_letters() {
    const N: usize = 60;
    let server = NatsServer::start().await;
    let (queue, ids) = queue_with_dead_letters(&server, N).await;
    let other = Arc::new(Queue::new(queue.config().clone()));
    other.connect(Some(&server.url())).await.expect("connect");
    let offers = Arc::new(Mutex::new(Vec::new()));
    let options = LetterOptions {
        batch_size: Some(4),
        ..LetterOptions::default()
    };
    for worker in [&queue, &other] {
        let handler = Recording {
            offers: offers.clone(),
            answer: |_: &str, _| Outcome::Success,
        };
        worker
            .process_dead_letters(Arc::new(handler), options.clone())
            .await
            .expect("processDLQ");
    }
    let connection = connect(queue.config(), &server).await;
    eventually("every letter removed", SOON, || async {
        (stats::snapshot(&connection).await.ok()?.dead_lettered == 0).then_some(())
    })
    .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (id, _) in offers.lock().expect("offers").iter() {
        *seen.entry(id.clone()).or_default() += 1;
    }
    assert_eq!(seen.len(), N);
    assert!(seen.values().all(|&n| n == 1), "each letter handled once");
    assert!(ids.iter().all(|id| seen.contains_key(id)));
    assert_eq!(
        queue
            .process_dead_letters(
                Arc::new(Recording {
                    offers: offers.clone(),
                    answer: |_: &str, _| Outcome::Success,
                }),
                options,
            )
            .await
            .map_err(|e| e.code()),
        Err("ERR_PQ_ALREADY_PROCESSING")
    );
    queue.disconnect().await;
    other.disconnect().await;
}
