//! Batched handlers: attempts cross to a handler that takes many at once, and outcomes come back
//! one by one, matched by token.
//!
//! Calling into JavaScript costs tens of microseconds per call, far more than the work of a
//! trivial handler, so a worker with many tasks in flight pays it once per batch instead of once
//! per task. Each attempt still has its own future: it completes when that task's outcome
//! arrives, so heartbeats, `taskTimeout` and settling stay per task, and a slow task never holds
//! back the others of its batch.
//!
//! A receiver that queues attempts (the JavaScript dispatcher runs `batchSize` at once) reports
//! which ones it started ([`PendingOutcomes::started`]): `taskTimeout` counts from there, not
//! from the hand-over, so a task waiting behind slow ones is never failed before it ran. When
//! the worker's `shutdownTimeout` runs out, [`Handler::release_unstarted`] closes the receiver
//! (it drops its waiting attempts and starts no other) and every attempt it had not started
//! ends as [`Outcome::NotStarted`], to be handed back to the server at once.
//!
//! At most one batch is on its way at a time. While the receiving side is busy with one, the
//! attempts that become ready meanwhile queue up and go together in the next: under load batches
//! grow by themselves, and a lone task goes at once. The receiver says it took a batch through
//! [`Taken`], which wakes the dispatch loop only when it is waiting to send the next: a lone task
//! costs the runtime thread no wake-up for its hand-over (one wake fewer per task at low rates).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::worker::{
    abort::{AbortCell, AbortReason},
    executor::{Attempt, BoxFuture, Failure, Handler, Outcome},
};

/// Where batches go: implemented by the JavaScript binding and by tests.
pub trait BatchSink: Send + Sync + 'static {
    /// One attempt in the form the receiver takes, tagged with the token its outcome must carry.
    type Item: Send + 'static;

    /// Converts one attempt; an attempt that cannot be converted ends with the returned outcome
    /// without being sent (a [`Outcome::Failure`], or [`Outcome::InvalidData`] when no handler
    /// could ever take it).
    fn item(&self, token: u32, attempt: Attempt) -> Result<Self::Item, Outcome>;

    /// Hands over one batch, and reports through `taken` (from any thread) once the receiver has
    /// taken it (not when its tasks are done); an error fails every attempt of the batch with
    /// that message, and so does dropping `taken` unreported. The next batch goes once this one
    /// is reported taken.
    fn send(&self, batch: Vec<Self::Item>, taken: Taken);

    /// Whether the receiver limits how many attempts run at once itself ([`Handler::queues_attempts`]).
    /// Such a receiver reports each attempt it starts ([`PendingOutcomes::started`]).
    fn queues_attempts(&self) -> bool {
        false
    }

    /// Tells the receiver that these attempts ended before it reported their outcomes, and why:
    /// it stops their handlers (aborts their `task.signal`) and drops those not started. Their
    /// outcomes are no longer awaited.
    fn abort(&self, _aborted: Vec<(u32, AbortReason)>) {}

    /// Tells the receiver to drop the attempts it has not started and never start another.
    /// Resolves once the receiver has taken the message: the starts it reported by then are
    /// all there will be.
    fn close(&self) -> BoxFuture<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// One attempt waiting for its outcome: its start signal (until it is reported started) and
/// where its outcome goes.
struct Waiter {
    start: Option<oneshot::Sender<()>>,
    outcome: oneshot::Sender<Outcome>,
}

/// Outcomes not yet reported, by token.
#[derive(Default)]
pub struct PendingOutcomes {
    waiting: Mutex<HashMap<u32, Waiter>>,
}

impl PendingOutcomes {
    /// Reports that the handler of the attempt with `token` started: its `taskTimeout` counts
    /// from now. Unknown tokens and repeated reports are ignored.
    pub fn started(&self, token: u32) {
        if let Some(start) = self
            .lock()
            .get_mut(&token)
            .and_then(|waiter| waiter.start.take())
        {
            let _ = start.send(());
        }
    }

    /// Reports the outcome of the attempt with `token`. Returns `false` when nothing waits for
    /// it any more (it timed out, or the token is unknown).
    pub fn complete(&self, token: u32, outcome: Outcome) -> bool {
        match self.lock().remove(&token) {
            Some(waiter) => waiter.outcome.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Ends every attempt not reported started with [`Outcome::NotStarted`]; returns how many.
    pub fn release_unstarted(&self) -> usize {
        let unstarted: Vec<Waiter> = {
            let mut waiting = self.lock();
            let tokens: Vec<u32> = waiting
                .iter()
                .filter(|(_, waiter)| waiter.start.is_some())
                .map(|(&token, _)| token)
                .collect();
            tokens
                .into_iter()
                .filter_map(|token| waiting.remove(&token))
                .collect()
        };
        let released = unstarted.len();
        for waiter in unstarted {
            let _ = waiter.outcome.send(Outcome::NotStarted);
        }
        released
    }

    fn register(&self, token: u32) -> (oneshot::Receiver<()>, oneshot::Receiver<Outcome>) {
        let (start, started) = oneshot::channel();
        let (outcome, receiver) = oneshot::channel();
        let waiter = Waiter {
            start: Some(start),
            outcome,
        };
        self.lock().insert(token, waiter);
        (started, receiver)
    }

    /// Forgets `token`; `true` when its outcome was still awaited.
    fn forget(&self, token: u32) -> bool {
        self.lock().remove(&token).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Waiter>> {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receipt of one batch: the receiver reports with it that it took the batch, or why it
/// could not. Dropped unreported, it reports that the batch was lost.
pub struct Taken {
    /// The batch's tokens and where their outcomes go; `None` once reported.
    batch: Option<(Vec<u32>, Arc<PendingOutcomes>)>,
    /// Notified once the batch is taken (or failed): the next may go.
    idle: Arc<Notify>,
    /// For a part of a batch ([`Taken::split`]): the parts not reported yet. The last one
    /// reported lets the next batch go.
    parts: Option<Arc<AtomicUsize>>,
}

impl Taken {
    /// Reports that the receiver took the batch, or the error that fails all of its attempts.
    pub fn report(mut self, result: Result<(), String>) {
        self.settle(result);
    }

    /// One receipt per part of the batch, for a receiver that hands the parts to different
    /// places (`parts`: each one's tokens; together, the batch's): each reports for its own
    /// attempts, and the next batch goes once all of them did.
    pub fn split(mut self, parts: Vec<Vec<u32>>) -> Vec<Taken> {
        let Some((_, outcomes)) = self.batch.take() else {
            return Vec::new();
        };
        let left = Arc::new(AtomicUsize::new(parts.len()));
        parts
            .into_iter()
            .map(|tokens| Taken {
                batch: Some((tokens, outcomes.clone())),
                idle: self.idle.clone(),
                parts: Some(left.clone()),
            })
            .collect()
    }

    fn settle(&mut self, result: Result<(), String>) {
        let Some((tokens, outcomes)) = self.batch.take() else {
            return;
        };
        if let Err(error) = result {
            tracing::warn!(
                tasks = tokens.len(),
                "handler batch not delivered: {}",
                crate::logging::shorten(&error)
            );
            for token in tokens {
                outcomes.complete(token, Outcome::Failure(Failure::new(error.clone())));
            }
        }
        let last = self
            .parts
            .as_ref()
            .is_none_or(|left| left.fetch_sub(1, Ordering::AcqRel) == 1);
        if last {
            // Stores a permit when the dispatch loop is not waiting: no wake-up then.
            self.idle.notify_one();
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.settle(Err(
            "the batch was dropped before the handler took it".into()
        ));
    }
}

/// What the dispatch loop takes: attempts, and the request to release the unstarted ones.
// Nearly every message is an attempt: boxing it would cost an allocation per task for nothing.
#[allow(clippy::large_enum_variant)]
enum Message {
    Attempt(u32, Attempt),
    /// An attempt ended before its outcome came, and why.
    Abort(u32, AbortReason),
    Release(oneshot::Sender<()>),
}

/// A [`Handler`] that hands attempts to a [`BatchSink`] in batches. Outcomes are reported through
/// [`PendingOutcomes::complete`] on the shared `outcomes`.
pub struct BatchedHandler {
    queues_attempts: bool,
    task_timeout: Duration,
    outcomes: Arc<PendingOutcomes>,
    next_token: AtomicU32,
    queue: mpsc::UnboundedSender<Message>,
}

impl BatchedHandler {
    /// Starts the dispatch loop (on the current tokio runtime). It ends, dropping the sink, when
    /// the handler is dropped. Each attempt may run `task_timeout` from its start (from the
    /// hand-over when the sink does not queue attempts, as it then starts them at once).
    pub fn start(
        sink: impl BatchSink,
        outcomes: Arc<PendingOutcomes>,
        task_timeout: Duration,
    ) -> Self {
        let (queue, ready) = mpsc::unbounded_channel();
        let queues_attempts = sink.queues_attempts();
        tokio::spawn(dispatch(sink, ready, outcomes.clone()));
        BatchedHandler {
            queues_attempts,
            task_timeout,
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

    fn times_attempts(&self) -> bool {
        true
    }

    fn handle(&self, attempt: Attempt) -> BoxFuture<Outcome> {
        let timed = self.handle_timed(attempt);
        Box::pin(async move { timed.await.0 })
    }

    /// The start is when the receiver reported it ([`PendingOutcomes::started`]).
    fn handle_timed(&self, attempt: Attempt) -> BoxFuture<(Outcome, Option<Instant>)> {
        // Tokens wrap after 2^32 attempts; only `batchSize` are ever outstanding.
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let abort = attempt.abort.clone();
        let (started, mut outcome) = self.outcomes.register(token);
        if !self.queues_attempts {
            // A receiver that does not queue starts each attempt as it takes it.
            self.outcomes.started(token);
        }
        if self.queue.send(Message::Attempt(token, attempt)).is_err() {
            self.outcomes.forget(token);
            return Box::pin(async {
                let failure = Failure::new("the handler was released");
                (Outcome::Failure(failure), None)
            });
        }
        let registration = Registration {
            outcomes: self.outcomes.clone(),
            token,
            abort,
            queue: self.queue.clone(),
        };
        let task_timeout = self.task_timeout;
        Box::pin(async move {
            let released = |_| {
                Outcome::Failure(Failure::new(
                    "the handler was released before the task settled",
                ))
            };
            // Until it starts, an attempt only waits (an outcome may still come first, e.g. when
            // its batch could not be delivered).
            let mut started = started;
            let settled = tokio::select! {
                biased;
                settled = &mut outcome => Some(settled.unwrap_or_else(released)),
                _ = &mut started => None,
            };
            // Started and settled in one report: it ran just now, as far as can be told.
            let started_at = (settled.is_none() || started.try_recv().is_ok()).then(Instant::now);
            let outcome = match settled {
                Some(outcome) => outcome,
                None => match tokio::time::timeout(task_timeout, &mut outcome).await {
                    Ok(settled) => settled.unwrap_or_else(released),
                    Err(_) => {
                        registration.abort.set(AbortReason::Timeout);
                        Outcome::Failure(Failure::new(format!(
                            "handler did not settle within taskTimeout ({}ms)",
                            task_timeout.as_millis()
                        )))
                    }
                },
            };
            drop(registration);
            (outcome, started_at)
        })
    }

    fn release_unstarted(&self) -> BoxFuture<()> {
        let (done, released) = oneshot::channel();
        let sent = self.queue.send(Message::Release(done)).is_ok();
        let outcomes = self.outcomes.clone();
        Box::pin(async move {
            if !sent || released.await.is_err() {
                // The dispatch loop is gone, and the receiver with it: nothing will start.
                outcomes.release_unstarted();
            }
        })
    }
}

/// Unregisters a token when its attempt is dropped unfinished (at `taskTimeout`, a cancel, a
/// shutdown's deadline), so a late or missing outcome leaves nothing behind, and tells the
/// receiver why its handler is no longer awaited (a shutdown when nobody said).
struct Registration {
    outcomes: Arc<PendingOutcomes>,
    token: u32,
    abort: AbortCell,
    queue: mpsc::UnboundedSender<Message>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.outcomes.forget(self.token) {
            let reason = self.abort.get().unwrap_or(AbortReason::Shutdown);
            let _ = self.queue.send(Message::Abort(self.token, reason));
        }
    }
}

async fn dispatch<S: BatchSink>(
    sink: S,
    mut ready: mpsc::UnboundedReceiver<Message>,
    outcomes: Arc<PendingOutcomes>,
) {
    // Set once the receiver was closed: later attempts are given back unsent.
    let mut closed = false;
    // Holds a permit while no batch is on its way.
    let idle = Arc::new(Notify::new());
    idle.notify_one();
    while let Some(first) = ready.recv().await {
        // Whatever becomes ready while the last batch is on its way goes in this one.
        idle.notified().await;
        let mut tokens = Vec::new();
        let mut items = Vec::new();
        let mut aborted = Vec::new();
        let mut release = None;
        let mut next = Some(first);
        while let Some(message) = next.take().or_else(|| ready.try_recv().ok()) {
            match message {
                Message::Attempt(token, _) if closed => {
                    outcomes.complete(token, Outcome::NotStarted);
                }
                Message::Attempt(token, attempt) => match sink.item(token, attempt) {
                    Ok(item) => {
                        tokens.push(token);
                        items.push(item);
                    }
                    Err(outcome) => {
                        outcomes.complete(token, outcome);
                    }
                },
                Message::Abort(token, reason) => aborted.push((token, reason)),
                Message::Release(done) => {
                    // The attempts before it go first; the receiver drops them unstarted.
                    release = Some(done);
                    break;
                }
            }
        }
        if items.is_empty() {
            idle.notify_one();
        } else {
            let taken = Taken {
                batch: Some((tokens, outcomes.clone())),
                idle: idle.clone(),
                parts: None,
            };
            sink.send(items, taken);
        }
        if !aborted.is_empty() {
            // After the batch that may hold them (the receiver takes calls in order).
            sink.abort(aborted);
        }
        if let Some(done) = release {
            if !closed {
                idle.notified().await;
                if let Err(error) = sink.close().await {
                    tracing::warn!("handler not closed: {error}");
                }
                idle.notify_one();
                closed = true;
            }
            let released = outcomes.release_unstarted();
            tracing::debug!(released, "unstarted tasks given back");
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::Task;

    const MINUTE: Duration = Duration::from_secs(60);

    /// Records batch sizes and answers each task from `answer`, after `delay`.
    struct TestSink {
        outcomes: Arc<PendingOutcomes>,
        batches: mpsc::UnboundedSender<usize>,
        fail_with: Option<String>,
    }

    impl BatchSink for TestSink {
        type Item = (u32, String);

        fn item(&self, token: u32, attempt: Attempt) -> Result<Self::Item, Outcome> {
            if attempt.task.id == "unsendable" {
                return Err(Outcome::Failure(Failure::new("cannot convert")));
            }
            Ok((token, attempt.task.id))
        }

        fn send(&self, batch: Vec<Self::Item>, taken: Taken) {
            let _ = self.batches.send(batch.len());
            if let Some(error) = self.fail_with.clone() {
                return taken.report(Err(error));
            }
            let outcomes = self.outcomes.clone();
            // Taken later, from another task, as the JavaScript thread takes it.
            tokio::spawn(async move {
                tokio::task::yield_now().await;
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
                taken.report(Ok(()));
            });
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
            route: None,
            abort: Default::default(),
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
        (BatchedHandler::start(sink, outcomes, MINUTE), sizes)
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
            fn item(&self, token: u32, _: Attempt) -> Result<u32, Outcome> {
                Ok(token)
            }
            fn send(&self, batch: Vec<u32>, taken: Taken) {
                let _ = self.0.send(batch.len());
                taken.report(Ok(()));
            }
        }
        let handler = BatchedHandler::start(Silent(batches), outcomes.clone(), MINUTE);
        let pending = handler.handle(attempt("never"));
        let timed_out = tokio::time::timeout(Duration::from_millis(20), pending).await;
        assert!(timed_out.is_err());
        assert!(outcomes.lock().is_empty());
        assert!(
            !outcomes.complete(0, Outcome::Success),
            "a late outcome finds nobody"
        );
    }

    /// Keeps each receipt until the test reports it, like a JavaScript thread that is busy.
    struct Holding(mpsc::UnboundedSender<(Vec<u32>, Taken)>);

    impl BatchSink for Holding {
        type Item = u32;
        fn item(&self, token: u32, _: Attempt) -> Result<u32, Outcome> {
            Ok(token)
        }
        fn send(&self, batch: Vec<u32>, taken: Taken) {
            let _ = self.0.send((batch, taken));
        }
    }

    /// The batches a [`Holding`] sink was given, each with its receipt.
    type Held = mpsc::UnboundedReceiver<(Vec<u32>, Taken)>;

    fn holding() -> (BatchedHandler, Arc<PendingOutcomes>, Held) {
        let outcomes = Arc::new(PendingOutcomes::default());
        let (sent, batches) = mpsc::unbounded_channel();
        let handler = BatchedHandler::start(Holding(sent), outcomes.clone(), MINUTE);
        (handler, outcomes, batches)
    }

    #[tokio::test]
    async fn the_next_batch_waits_until_the_last_was_taken_and_takes_all_that_came_meanwhile() {
        let (handler, outcomes, mut batches) = holding();
        let first = tokio::spawn(handler.handle(attempt("first")));
        let (tokens, taken) = batches.recv().await.expect("a batch");
        assert_eq!(tokens.len(), 1);
        let later: Vec<_> = (0..3)
            .map(|i| tokio::spawn(handler.handle(attempt(&format!("later-{i}")))))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            batches.try_recv().is_err(),
            "nothing goes before the last was taken"
        );
        taken.report(Ok(()));
        let (next, taken) = batches.recv().await.expect("the next batch");
        assert_eq!(next.len(), 3, "all that came meanwhile, together");
        taken.report(Ok(()));
        for token in tokens.into_iter().chain(next) {
            assert!(outcomes.complete(token, Outcome::Success));
        }
        assert_eq!(first.await.expect("joined"), Outcome::Success);
        for attempt in later {
            assert_eq!(attempt.await.expect("joined"), Outcome::Success);
        }
    }

    #[tokio::test]
    async fn a_receipt_dropped_unreported_fails_its_batch_and_frees_the_next() {
        let (handler, _, mut batches) = holding();
        let lost = handler.handle(attempt("lost"));
        let (_, taken) = batches.recv().await.expect("a batch");
        drop(taken);
        let Outcome::Failure(failure) = lost.await else {
            panic!("expected a failure")
        };
        assert!(failure.error.contains("dropped"), "{failure:?}");
        let _next = tokio::spawn(handler.handle(attempt("next")));
        let (tokens, _taken) = batches.recv().await.expect("the next batch still goes");
        assert_eq!(tokens.len(), 1);
    }

    /// A receiver that queues attempts, like the JavaScript dispatcher: it records the tokens of
    /// each batch and each close; the test starts and completes attempts through `outcomes`.
    struct Queueing {
        batches: mpsc::UnboundedSender<Vec<u32>>,
        closes: mpsc::UnboundedSender<()>,
    }

    impl BatchSink for Queueing {
        type Item = u32;
        fn item(&self, token: u32, _: Attempt) -> Result<u32, Outcome> {
            Ok(token)
        }
        fn send(&self, batch: Vec<u32>, taken: Taken) {
            let _ = self.batches.send(batch);
            taken.report(Ok(()));
        }
        fn queues_attempts(&self) -> bool {
            true
        }
        fn close(&self) -> BoxFuture<Result<(), String>> {
            let _ = self.closes.send(());
            Box::pin(async { Ok(()) })
        }
    }

    type Receivers = (
        mpsc::UnboundedReceiver<Vec<u32>>,
        mpsc::UnboundedReceiver<()>,
    );

    fn queueing(task_timeout: Duration) -> (BatchedHandler, Arc<PendingOutcomes>, Receivers) {
        let outcomes = Arc::new(PendingOutcomes::default());
        let (batches, batches_rx) = mpsc::unbounded_channel();
        let (closes, closes_rx) = mpsc::unbounded_channel();
        let handler =
            BatchedHandler::start(Queueing { batches, closes }, outcomes.clone(), task_timeout);
        assert!(handler.times_attempts() && handler.queues_attempts());
        (handler, outcomes, (batches_rx, closes_rx))
    }

    #[tokio::test(start_paused = true)]
    async fn task_timeout_counts_from_the_start_not_the_hand_over() {
        let timeout = Duration::from_millis(1_500);
        let (handler, outcomes, (mut batches, _)) = queueing(timeout);
        let mut waiting = tokio::spawn(handler.handle(attempt("waits")));
        let mut never = tokio::spawn(handler.handle(attempt("never settles")));
        let tokens = batches.recv().await.expect("a batch");
        assert_eq!(tokens.len(), 2);
        // Long past taskTimeout, neither has started: both still wait.
        tokio::time::sleep(timeout * 4).await;
        assert!(futures::poll!(&mut waiting).is_pending());
        assert!(futures::poll!(&mut never).is_pending());
        outcomes.started(tokens[0]);
        outcomes.started(tokens[1]);
        tokio::time::sleep(timeout - Duration::from_millis(100)).await;
        assert!(outcomes.complete(tokens[0], Outcome::Success));
        assert_eq!(waiting.await.expect("joined"), Outcome::Success);
        // The one that never settles fails taskTimeout after its start.
        let started_at = tokio::time::Instant::now() - (timeout - Duration::from_millis(100));
        let outcome = never.await.expect("joined");
        let Outcome::Failure(failure) = outcome else {
            panic!("expected a failure, got {outcome:?}")
        };
        assert!(failure.error.contains("taskTimeout"), "{failure:?}");
        let elapsed = started_at.elapsed();
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_millis(10),
            "{elapsed:?}"
        );
        assert!(outcomes.lock().is_empty());
    }

    #[tokio::test]
    async fn release_unstarted_gives_back_what_has_not_started() {
        let (handler, outcomes, (mut batches, mut closes)) = queueing(MINUTE);
        let running = handler.handle(attempt("running"));
        let unstarted = handler.handle(attempt("unstarted"));
        let tokens = batches.recv().await.expect("a batch");
        outcomes.started(tokens[0]);
        handler.release_unstarted().await;
        assert_eq!(closes.try_recv(), Ok(()), "the receiver was closed first");
        assert_eq!(unstarted.await, Outcome::NotStarted);
        // A late start of a released attempt changes nothing; the running one still reports.
        outcomes.started(tokens[1]);
        assert!(!outcomes.complete(tokens[1], Outcome::Success));
        assert!(outcomes.complete(tokens[0], Outcome::Success));
        assert_eq!(running.await, Outcome::Success);
        // Attempts after the release are given back without being sent.
        assert_eq!(handler.handle(attempt("late")).await, Outcome::NotStarted);
        assert!(batches.try_recv().is_err());
        assert!(outcomes.lock().is_empty());
    }
}
