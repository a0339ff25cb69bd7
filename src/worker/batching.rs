//! Batched handlers: attempts cross to a handler that takes many at once, and outcomes come back
//! one by one, matched by token.
//!
//! Calling into JavaScript costs tens of microseconds per call, far more than the work of a
//! trivial handler, so a worker with many tasks in flight pays it once per batch instead of once
//! per task. Each attempt still has its own future: it completes when that task's outcome
//! arrives, so heartbeats, `taskTimeout` and settling stay per task, and a slow task never holds
//! back the others of its batch.
//!
//! At most one batch is on its way at a time. While the receiving side is busy with one, the
//! attempts that become ready meanwhile queue up and go together in the next: under load batches
//! grow by themselves, and a lone task goes at once.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use tokio::sync::{mpsc, oneshot};

use crate::worker::executor::{Attempt, BoxFuture, Failure, Handler, Outcome};

/// Where batches go: implemented by the JavaScript binding and by tests.
pub trait BatchSink: Send + Sync + 'static {
    /// One attempt in the form the receiver takes, tagged with the token its outcome must carry.
    type Item: Send + 'static;

    /// Converts one attempt; an attempt that cannot be converted fails without being sent.
    fn item(&self, token: u32, attempt: Attempt) -> Result<Self::Item, Failure>;

    /// Hands over one batch. Resolves once the receiver has taken it (not when its tasks are
    /// done); an error fails every attempt of the batch with that message.
    fn send(&self, batch: Vec<Self::Item>) -> BoxFuture<Result<(), String>>;

    /// Whether the receiver limits how many attempts run at once itself ([`Handler::queues_attempts`]).
    fn queues_attempts(&self) -> bool {
        false
    }
}

/// Outcomes not yet reported, by token.
#[derive(Default)]
pub struct PendingOutcomes {
    waiting: Mutex<HashMap<u32, oneshot::Sender<Outcome>>>,
}

impl PendingOutcomes {
    /// Reports the outcome of the attempt with `token`. Returns `false` when nothing waits for
    /// it any more (it timed out, or the token is unknown).
    pub fn complete(&self, token: u32, outcome: Outcome) -> bool {
        match self.lock().remove(&token) {
            Some(waiter) => waiter.send(outcome).is_ok(),
            None => false,
        }
    }

    fn register(&self, token: u32) -> oneshot::Receiver<Outcome> {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(token, sender);
        receiver
    }

    fn forget(&self, token: u32) {
        self.lock().remove(&token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Outcome>>> {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A [`Handler`] that hands attempts to a [`BatchSink`] in batches. Outcomes are reported through
/// [`PendingOutcomes::complete`] on the shared `outcomes`.
pub struct BatchedHandler {
    queues_attempts: bool,
    outcomes: Arc<PendingOutcomes>,
    next_token: AtomicU32,
    queue: mpsc::UnboundedSender<(u32, Attempt)>,
}

impl BatchedHandler {
    /// Starts the dispatch loop (on the current tokio runtime). It ends, dropping the sink, when
    /// the handler is dropped.
    pub fn start(sink: impl BatchSink, outcomes: Arc<PendingOutcomes>) -> Self {
        let (queue, ready) = mpsc::unbounded_channel();
        let queues_attempts = sink.queues_attempts();
        tokio::spawn(dispatch(sink, ready, outcomes.clone()));
        BatchedHandler {
            queues_attempts,
            outcomes,
            next_token: AtomicU32::new(0),
            queue,
        }
    }
}

impl Handler for BatchedHandler {
    fn queues_attempts(&self) -> bool {
        self.queues_attempts
    }

    fn handle(&self, attempt: Attempt) -> BoxFuture<Outcome> {
        // Tokens wrap after 2^32 attempts; only `batchSize` are ever outstanding.
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let outcome = self.outcomes.register(token);
        if self.queue.send((token, attempt)).is_err() {
            self.outcomes.forget(token);
            return Box::pin(async { Outcome::Failure(Failure::new("the handler was released")) });
        }
        let registration = Registration {
            outcomes: self.outcomes.clone(),
            token,
        };
        Box::pin(async move {
            let outcome = outcome.await.unwrap_or_else(|_| {
                Outcome::Failure(Failure::new(
                    "the handler was released before the task settled",
                ))
            });
            drop(registration);
            outcome
        })
    }
}

/// Unregisters a token when its attempt is dropped unfinished (e.g. at `taskTimeout`), so a late
/// or missing outcome leaves nothing behind.
struct Registration {
    outcomes: Arc<PendingOutcomes>,
    token: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.outcomes.forget(self.token);
    }
}

async fn dispatch<S: BatchSink>(
    sink: S,
    mut ready: mpsc::UnboundedReceiver<(u32, Attempt)>,
    outcomes: Arc<PendingOutcomes>,
) {
    while let Some(first) = ready.recv().await {
        let mut tokens = Vec::new();
        let mut items = Vec::new();
        let mut next = Some(first);
        while let Some((token, attempt)) = next.take().or_else(|| ready.try_recv().ok()) {
            match sink.item(token, attempt) {
                Ok(item) => {
                    tokens.push(token);
                    items.push(item);
                }
                Err(failure) => {
                    outcomes.complete(token, Outcome::Failure(failure));
                }
            }
        }
        if items.is_empty() {
            continue;
        }
        if let Err(error) = sink.send(items).await {
            tracing::warn!(
                tasks = tokens.len(),
                "handler batch not delivered: {}",
                crate::logging::shorten(&error)
            );
            for token in tokens {
                outcomes.complete(token, Outcome::Failure(Failure::new(error.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::Task;

    /// Records batch sizes and answers each task from `answer`, after `delay`.
    struct TestSink {
        outcomes: Arc<PendingOutcomes>,
        batches: mpsc::UnboundedSender<usize>,
        fail_with: Option<String>,
    }

    impl BatchSink for TestSink {
        type Item = (u32, String);

        fn item(&self, token: u32, attempt: Attempt) -> Result<Self::Item, Failure> {
            if attempt.task.id == "unsendable" {
                return Err(Failure::new("cannot convert"));
            }
            Ok((token, attempt.task.id))
        }

        fn send(&self, batch: Vec<Self::Item>) -> BoxFuture<Result<(), String>> {
            let _ = self.batches.send(batch.len());
            if let Some(error) = self.fail_with.clone() {
                return Box::pin(async move { Err(error) });
            }
            let outcomes = self.outcomes.clone();
            Box::pin(async move {
                for (token, id) in batch {
                    let outcome = if id.starts_with("ok") {
                        Outcome::Success
                    } else {
                        Outcome::Failure(Failure::new(format!("{id} failed")))
                    };
                    let outcomes = outcomes.clone();
                    // Outcomes arrive later and out of order, as async handlers finish.
                    tokio::spawn(async move {
                        let delay = if id.ends_with("slow") { 50 } else { 1 };
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        outcomes.complete(token, outcome);
                    });
                }
                Ok(())
            })
        }
    }

    fn attempt(id: &str) -> Attempt {
        Attempt {
            task: Task {
                id: id.into(),
                ..Task::default()
            },
            number: 1,
            max: 1,
        }
    }

    fn start(fail_with: Option<&str>) -> (BatchedHandler, mpsc::UnboundedReceiver<usize>) {
        let outcomes = Arc::new(PendingOutcomes::default());
        let (batches, sizes) = mpsc::unbounded_channel();
        let sink = TestSink {
            outcomes: outcomes.clone(),
            batches,
            fail_with: fail_with.map(String::from),
        };
        (BatchedHandler::start(sink, outcomes), sizes)
    }

    #[tokio::test]
    async fn each_attempt_gets_its_own_outcome() {
        let (handler, _) = start(None);
        let slow = handler.handle(attempt("ok-slow"));
        let failing = handler.handle(attempt("bad"));
        let fast = handler.handle(attempt("ok"));
        // The fast ones settle without waiting for the slow one of the same batch.
        assert_eq!(fast.await, Outcome::Success);
        assert_eq!(failing.await, Outcome::Failure(Failure::new("bad failed")));
        assert_eq!(slow.await, Outcome::Success);
        assert!(handler.outcomes.lock().is_empty());
    }

    #[tokio::test]
    async fn attempts_ready_together_go_in_one_batch() {
        let (handler, mut sizes) = start(None);
        let attempts: Vec<_> = (0..50)
            .map(|i| handler.handle(attempt(&format!("ok-{i}"))))
            .collect();
        for outcome in futures::future::join_all(attempts).await {
            assert_eq!(outcome, Outcome::Success);
        }
        drop(handler);
        let mut batches = Vec::new();
        while let Some(size) = sizes.recv().await {
            batches.push(size);
        }
        assert_eq!(batches.iter().sum::<usize>(), 50);
        assert!(batches.len() < 50, "no batching happened: {batches:?}");
    }

    #[tokio::test]
    async fn an_attempt_that_cannot_be_converted_fails_alone() {
        let (handler, _) = start(None);
        let unsendable = handler.handle(attempt("unsendable"));
        let fine = handler.handle(attempt("ok"));
        assert_eq!(
            unsendable.await,
            Outcome::Failure(Failure::new("cannot convert"))
        );
        assert_eq!(fine.await, Outcome::Success);
    }

    #[tokio::test]
    async fn a_batch_that_cannot_be_delivered_fails_its_attempts() {
        let (handler, _) = start(Some("receiver gone"));
        let outcome = handler.handle(attempt("ok")).await;
        assert_eq!(outcome, Outcome::Failure(Failure::new("receiver gone")));
    }

    #[tokio::test]
    async fn a_dropped_attempt_leaves_no_registration() {
        let outcomes = Arc::new(PendingOutcomes::default());
        let (batches, _sizes) = mpsc::unbounded_channel();
        // A sink that takes batches but never answers, like a handler that never settles.
        struct Silent(mpsc::UnboundedSender<usize>);
        impl BatchSink for Silent {
            type Item = u32;
            fn item(&self, token: u32, _: Attempt) -> Result<u32, Failure> {
                Ok(token)
            }
            fn send(&self, batch: Vec<u32>) -> BoxFuture<Result<(), String>> {
                let _ = self.0.send(batch.len());
                Box::pin(async { Ok(()) })
            }
        }
        let handler = BatchedHandler::start(Silent(batches), outcomes.clone());
        let pending = handler.handle(attempt("never"));
        let timed_out = tokio::time::timeout(Duration::from_millis(20), pending).await;
        assert!(timed_out.is_err());
        assert!(outcomes.lock().is_empty());
        assert!(
            !outcomes.complete(0, Outcome::Success),
            "a late outcome finds nobody"
        );
    }
}
