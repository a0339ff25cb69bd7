//! The lifecycle of one queue object: connect → process → disconnect, and the calls in between.
//!
//! A [`Queue`] is what the JavaScript `Protoqueue` object holds (through the binding, which only
//! converts values). It may connect again after `disconnect()`, and each `process()` starts one
//! worker *run*. What a run hands out dies with it: a batched handler's outcomes are reported by
//! run id and token ([`Queue::outcomes`]), so a late result from a handler abandoned by an earlier
//! run can never settle a task of a later one.
//!
//! `disconnect()` is bounded as a whole: the worker stops within `shutdownTimeout` (what it holds
//! is run, then handed back), enqueues still in flight get the same time to be confirmed, and
//! closing the connection takes at most [`CLOSE_TIMEOUT`] more.

use std::sync::{
    atomic::{AtomicU32, AtomicUsize, Ordering},
    Arc, Mutex, PoisonError, Weak,
};

use serde_json::value::RawValue;

use tokio::{sync::Notify, time::Instant};

use crate::{
    admin::{
        control, destroy,
        schedules::{self, Recurring, StoredSchedule},
        stats::{self, Stats},
    },
    cancelling::watch::Cancels,
    config::{Config, LetterOptions},
    dead_letters::{
        redrive::{self, Filter, Progress},
        stored::{self as dead_letters, StoredDeadLetter},
    },
    error::{Error, Result, API_TIMEOUT},
    history::{lookup::TaskInfo, waiters::Waiters, Record},
    lifecycle,
    nats::connection::Connection,
    observe::{metrics, Observer},
    producer::NewTask,
    worker::{
        batching::{BatchSink, BatchedHandler, PendingOutcomes},
        executor::Handler,
        letters::LetterHandler,
        StopReport, Worker,
    },
};

pub use crate::nats::connection::CLOSE_TIMEOUT;

/// One queue object: its configuration, and its connection and worker once connected.
pub struct Queue {
    config: Arc<Config>,
    state: tokio::sync::Mutex<Option<Connected>>,
    /// The outcome registries of the runs not yet finished, by run id, readable without waiting
    /// for `state` (outcomes arrive on the JavaScript thread, which must never block).
    runs: Runs,
    next_run: AtomicU32,
    enqueues: InFlight,
    /// Metrics and events, kept across reconnects.
    observer: Arc<Observer>,
    /// Hears the queue's workers in every process (`options.events: 'queue'`) while connected.
    listener: tokio::sync::Mutex<Option<crate::observe::remote::Listener>>,
    /// What this object's task worker runs, for the progress its handlers report (read on the
    /// JavaScript thread, which must not wait for `state`).
    running: Mutex<Weak<Cancels>>,
}

struct Connected {
    connection: Connection,
    /// This object's `waitFor` calls, under one subscription.
    waiters: Waiters,
    worker: Option<(u32, Worker)>,
    /// The dead-letter worker (`processDLQ()`), beside the task worker or alone.
    letters: Option<Worker>,
}

impl Connected {
    /// This object's workers: the task worker and the dead-letter worker, those running.
    fn workers(&self) -> impl Iterator<Item = &Worker> {
        (self.worker.iter().map(|(_, worker)| worker)).chain(&self.letters)
    }
}

type Runs = Arc<Mutex<Vec<(u32, Arc<PendingOutcomes>)>>>;

/// A disconnect under way: the worker has been asked to stop and new calls fail with
/// `ERR_PQ_NOT_CONNECTED`; [`Shutdown::finish`] waits for the rest, bounded.
pub struct Shutdown {
    connected: Option<Connected>,
    runs: Runs,
    enqueues: InFlight,
    deadline: Instant,
}

impl Queue {
    /// A queue that is not connected yet.
    pub fn new(config: Config) -> Self {
        let hears_queue = config.events_from_queue;
        Queue {
            config: Arc::new(config),
            state: tokio::sync::Mutex::new(None),
            runs: Runs::default(),
            next_run: AtomicU32::new(1),
            enqueues: InFlight::default(),
            observer: Arc::new(Observer {
                hears_queue,
                ..Observer::default()
            }),
            listener: tokio::sync::Mutex::default(),
            running: Mutex::new(Weak::new()),
        }
    }

    /// Which events this object's listeners want (a mask of [`crate::observe::events`] kinds).
    /// With `options.events: 'queue'`, it hears the queue's workers in every process while it
    /// wants any of their kinds (and is connected).
    pub async fn set_events(&self, mask: u32) {
        self.observer.events.set_mask(mask);
        self.hear_as_wanted().await;
    }

    /// With `options.events: 'queue'`, starts or stops hearing the queue's workers as the
    /// listeners' mask says now (not as it said when the call was made: calls may overtake one
    /// another — a stale mask once dropped every kind but the first listener's).
    pub async fn hear_as_wanted(&self) {
        if !self.config.events_from_queue {
            return;
        }
        let connection = self
            .state
            .lock()
            .await
            .as_ref()
            .map(|c| c.connection.clone());
        self.sync_listener(connection).await;
    }

    /// Starts or stops hearing the queue's workers, as the listeners' mask says; one call at a
    /// time, so one listener at most.
    async fn sync_listener(&self, connection: Option<Connection>) {
        let mut listener = self.listener.lock().await;
        let wanted = self.observer.events.mask() & crate::observe::events::QUEUE_KINDS != 0;
        match (wanted, connection) {
            (true, Some(connection)) if listener.is_none() => {
                match crate::observe::remote::Listener::start(connection).await {
                    Ok(started) => *listener = Some(started),
                    Err(err) => tracing::warn!("not hearing the queue's events: {err}"),
                }
            }
            (false, _) | (_, None) => *listener = None,
            _ => {}
        }
    }

    /// A handler's progress on task `id` (`task.progress(value)`): kept with the running task
    /// (`getTask`) and told to the `progress` listeners.
    pub fn progress(&self, id: &str, progress: &RawValue) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade();
        if let Some(running) = running {
            running.progressed(id, progress);
        }
        self.observer.progress(id, progress);
    }

    /// The queue object's metrics and events.
    pub fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Connects (the URL argument, else `config.url`, else `NATS_URL`, else localhost) and makes
    /// sure the streams exist. A no-op when connected; allowed again after `disconnect()`.
    pub async fn connect(&self, url: Option<&str>) -> Result<()> {
        let mut state = self.state.lock().await;
        if state.is_some() {
            return Ok(());
        }
        let url = self.config.resolve_url(url)?;
        let connection =
            Connection::open_observed(self.config.clone(), &url, self.observer.clone()).await?;
        *state = Some(Connected {
            waiters: Waiters::new(connection.clone()),
            connection: connection.clone(),
            worker: None,
            letters: None,
        });
        drop(state);
        if self.config.events_from_queue {
            self.sync_listener(Some(connection)).await;
        }
        Ok(())
    }

    /// Enqueues one task; resolves to its id once JetStream stored it.
    pub async fn enqueue(&self, task: NewTask) -> Result<String> {
        let (connection, _guard) = self.connection_for_enqueue().await?;
        let id = lifecycle::enqueue(&connection, task).await?;
        self.observer.metrics.enqueued(1);
        Ok(id)
    }

    /// Enqueues many tasks, pipelined; resolves to their ids in order once all are stored.
    pub async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<String>> {
        let (connection, _guard) = self.connection_for_enqueue().await?;
        let ids = lifecycle::enqueue_batch(&connection, tasks).await?;
        self.observer.metrics.enqueued(ids.len());
        Ok(ids)
    }

    /// A new run id, for a [`Queue::process_batched`] whose handler must know it before the run
    /// starts (its first batch can arrive before the call returns).
    pub fn reserve_run(&self) -> u32 {
        self.next_run.fetch_add(1, Ordering::Relaxed)
    }

    /// Enqueues tasks that stand alone though given together (the `enqueue` calls of one
    /// event-loop turn); each result is its own.
    pub async fn enqueue_each(&self, tasks: Vec<NewTask>) -> Result<Vec<Result<String>>> {
        let (connection, _guard) = self.connection_for_enqueue().await?;
        let results = lifecycle::enqueue_each(&connection, tasks).await;
        self.observer
            .metrics
            .enqueued(results.iter().filter(|result| result.is_ok()).count());
        Ok(results)
    }

    /// Starts a worker run with a handler that takes one attempt at a time.
    pub async fn process(&self, handler: Arc<dyn Handler>) -> Result<()> {
        self.start_run(self.reserve_run(), None, |_| handler).await
    }

    /// Starts worker run `run` (from [`Queue::reserve_run`]), whose attempts go to `sink` in
    /// batches; their outcomes are reported through [`Queue::outcomes`] with the run id.
    pub async fn process_batched(&self, run: u32, sink: impl BatchSink) -> Result<()> {
        self.process_batched_part(run, sink, None).await
    }

    /// [`Queue::process_batched`] for part of the queue's subject tree (`subjects`), or the
    /// whole queue (`None`): see [`Worker::start_part`].
    pub async fn process_batched_part(
        &self,
        run: u32,
        sink: impl BatchSink,
        subjects: Option<Vec<String>>,
    ) -> Result<()> {
        let task_timeout = self.config.task_timeout;
        self.start_run(run, subjects, |outcomes| {
            Arc::new(BatchedHandler::start(sink, outcomes, task_timeout))
        })
        .await
    }

    async fn start_run(
        &self,
        run: u32,
        subjects: Option<Vec<String>>,
        handler: impl FnOnce(Arc<PendingOutcomes>) -> Arc<dyn Handler>,
    ) -> Result<()> {
        let mut state = self.state.lock().await;
        let connected = state.as_mut().ok_or(Error::NotConnected)?;
        if connected.worker.is_some() {
            return Err(Error::AlreadyProcessing);
        }
        if let Some(subjects) = &subjects {
            // Against the queue's shape as the server has it (a tree the caller did not name).
            crate::layout::checked_part(connected.connection.config(), subjects)?;
        }
        let outcomes = Arc::new(PendingOutcomes::default());
        let worker = Worker::start_part(
            connected.connection.clone(),
            handler(outcomes.clone()),
            subjects.as_deref(),
        )
        .await?;
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) =
            worker.running().map_or_else(Weak::new, Arc::downgrade);
        connected.worker = Some((run, worker));
        lock(&self.runs).push((run, outcomes));
        Ok(())
    }

    /// Starts a dead-letter worker: `handler` gets each dead letter of the queue, one worker of
    /// the queue at a time; a success removes the letter, a failure offers it again after
    /// `retryDelay`. One per queue object, beside `process()` or alone.
    pub async fn process_dead_letters(
        &self,
        handler: Arc<dyn LetterHandler>,
        options: LetterOptions,
    ) -> Result<()> {
        let mut state = self.state.lock().await;
        let connected = state.as_mut().ok_or(Error::NotConnected)?;
        if connected.letters.is_some() {
            return Err(Error::AlreadyProcessing);
        }
        let connection = connected
            .connection
            .with_config(options.apply(connected.connection.config()));
        connected.letters = Some(Worker::start_dead_letters(connection, handler).await?);
        Ok(())
    }

    /// The outcome registry of run `run`, until its worker has stopped. Outcomes of runs that
    /// ended find nothing.
    pub fn outcomes(&self, run: u32) -> Option<Arc<PendingOutcomes>> {
        lock(&self.runs)
            .iter()
            .find(|(id, _)| *id == run)
            .map(|(_, outcomes)| outcomes.clone())
    }

    /// Puts the tasks of the dead letters `filter` picks back on the queue (same ids, fresh
    /// attempts), each letter removed once its task is stored; returns how many.
    pub async fn requeue_dead_letters(
        &self,
        filter: &Filter,
        progress: impl Fn(Progress),
    ) -> Result<u64> {
        redrive::requeue(&self.connection().await?, filter, progress).await
    }

    /// Removes the dead letters `filter` picks; returns how many.
    pub async fn purge_dead_letters(
        &self,
        filter: &Filter,
        progress: impl Fn(Progress),
    ) -> Result<u64> {
        redrive::purge(&self.connection().await?, filter, progress).await
    }

    /// Removes the tasks waiting in the queue (not those in flight); returns how many.
    pub async fn purge(&self) -> Result<u64> {
        control::purge(&self.connection().await?).await
    }

    /// Stops every worker of the queue, in every process, from receiving tasks until
    /// [`Queue::resume`].
    pub async fn pause(&self) -> Result<()> {
        control::pause(&self.connection().await?).await
    }

    /// Lets the workers of the queue receive tasks again.
    pub async fn resume(&self) -> Result<()> {
        control::resume(&self.connection().await?).await
    }

    /// Cancels task `id` — delayed, waiting, retrying or running, from any process
    /// ([`crate::cancelling::cancel`]); `false` when it ended first or nothing is known of it.
    pub async fn cancel(&self, id: &str) -> Result<bool> {
        crate::cancelling::cancel(&self.connection().await?, id).await
    }

    /// Creates or replaces the recurring task `name` (one per name across every process); `task`
    /// must not be delayed (`ERR_PQ_INVALID_TASK`).
    pub async fn schedule(&self, name: &str, recurring: &Recurring, task: NewTask) -> Result<()> {
        if task.run_at.is_some() {
            return Err(Error::InvalidTask(
                "a recurring task takes no delay or runAt".into(),
            ));
        }
        if task.id.is_some() {
            return Err(Error::InvalidTask(
                "a recurring task takes no id: each of its tasks has the schedule's name as id"
                    .into(),
            ));
        }
        if task.priority.is_some() || task.subject.is_some() {
            // Its ticks are published on the queue's subject at the default priority.
            return Err(Error::InvalidTask(
                "a recurring task takes no priority or subject (its tasks go to the queue's \
                 subject at the default priority)"
                    .into(),
            ));
        }
        let connection = self.connection().await?;
        schedules::schedule_task(&connection, name, recurring, task).await
    }

    /// Removes the recurring task `name`; `false` when there is none.
    pub async fn unschedule(&self, name: &str) -> Result<bool> {
        schedules::unschedule(&self.connection().await?, name).await
    }

    /// The recurring tasks of the queue.
    pub async fn schedules(&self) -> Result<Vec<StoredSchedule>> {
        schedules::list(&self.connection().await?).await
    }

    /// Reads queue statistics from the server.
    pub async fn stats(&self) -> Result<Stats> {
        stats::snapshot(&self.connection().await?).await
    }

    /// Task `id` as the server knows it (see [`crate::history::lookup`]).
    pub async fn task(&self, id: &str) -> Result<Option<TaskInfo>> {
        crate::history::lookup::get(&self.connection().await?, id).await
    }

    /// The tasks of `state`, newest first, a page at a time ([`crate::history::listing`]).
    pub async fn tasks(
        &self,
        state: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<crate::history::listing::Page> {
        crate::history::listing::list(&self.connection().await?, state, limit, cursor).await
    }

    /// Waits up to `timeout` for task `id` to end: its record, with its result or why it
    /// failed. Needs `options.results` (workers write the records).
    pub async fn wait_for(&self, id: &str, timeout: std::time::Duration) -> Result<Record> {
        crate::producer::validate_task_id(id)?;
        let waiters = {
            let state = self.state.lock().await;
            let connected = state.as_ref().ok_or(Error::NotConnected)?;
            if connected.connection.config().results_ttl.is_none() {
                return Err(Error::ResultsOff(
                    "waitFor needs options.results ({ ttl }) on this object, as on the workers: \
                     without it no worker records how tasks end"
                        .into(),
                ));
            }
            connected.waiters.clone()
        };
        waiters.wait(id, timeout).await
    }

    /// The workers running now, in any process, oldest first.
    pub async fn workers(&self) -> Result<Vec<crate::presence::WorkerRecord>> {
        crate::presence::list(&self.connection().await?).await
    }

    /// The queue's metric families: this object's counters and histograms, and the server's
    /// gauges read now. Bounded: a server that does not answer within [`API_TIMEOUT`] fails it
    /// with `ERR_PQ_TIMEOUT`.
    pub async fn metric_families(&self) -> Result<Vec<metrics::Family>> {
        let connection = self.connection().await?;
        let stats = tokio::time::timeout(API_TIMEOUT, stats::snapshot(&connection))
            .await
            .map_err(|_| Error::Timeout {
                operation: "reading the queue's gauges for metrics".into(),
                after: API_TIMEOUT,
                hint: "; is the NATS server reachable?",
            })??;
        let queue = &self.config.stream_name;
        Ok(metrics::families(
            queue,
            &self.observer.metrics,
            &stats.gauges(),
        ))
    }

    /// [`Queue::metric_families`] in the Prometheus text exposition format.
    pub async fn metrics(&self) -> Result<String> {
        Ok(metrics::exposition(&self.metric_families().await?))
    }

    /// Reads (without removing) up to `limit` dead letters, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<StoredDeadLetter>> {
        dead_letters::list(&self.connection().await?, limit).await
    }

    /// Reads (without removing) up to `limit` of the dead letters `filter` picks, oldest first,
    /// in one pass over the dead-letter stream that keeps only those.
    pub async fn find_dead_letters(
        &self,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>> {
        dead_letters::find(&self.connection().await?, filter, limit).await
    }

    /// Reads (without removing) the dead letter at `sequence` of the dead-letter stream, if any.
    pub async fn dead_letter(&self, sequence: u64) -> Result<Option<StoredDeadLetter>> {
        dead_letters::get(&self.connection().await?, sequence).await
    }

    /// Deletes the queue — its tasks, delayed and recurring tasks, dead letters and id index —
    /// then disconnects; the names of the streams deleted. Unless `force`, refused with
    /// `ERR_PQ_QUEUE_IN_USE` (nothing deleted) while this object processes tasks or a worker of
    /// any process uses the queue. `connect()` again creates the queue anew.
    pub async fn destroy(&self, force: bool) -> Result<Vec<String>> {
        let connection = {
            let state = self.state.lock().await;
            let connected = state.as_ref().ok_or(Error::NotConnected)?;
            if connected.workers().next().is_some() && !force {
                return Err(Error::QueueInUse(
                    "this queue object processes tasks: disconnect() it first, or destroy the \
                     queue anyway with force"
                        .into(),
                ));
            }
            // A stopping worker pulls no more, so it does not make the streams again when its
            // pulls fail (what it runs finishes; its acks then find nothing).
            connected.workers().for_each(Worker::request_stop);
            connected.connection.clone()
        };
        let deleted = destroy::destroy(&connection, force).await?;
        drop(connection);
        self.disconnect().await;
        Ok(deleted)
    }

    /// Stops the worker (what it holds is run first, within `shutdownTimeout`), waits for
    /// enqueues in flight, then closes the connection. A no-op when not connected.
    pub async fn disconnect(&self) -> StopReport {
        self.begin_disconnect().await.finish().await
    }

    /// The first half of [`Queue::disconnect`]: from its return on, the queue is disconnected for
    /// new calls, its worker pulls no more, and outcomes of its run still count until
    /// [`Shutdown::finish`] is done. A handler that disconnects its own queue cannot wait for the
    /// rest, which includes its own task: it finishes this in the background.
    pub async fn begin_disconnect(&self) -> Shutdown {
        let connected = self.state.lock().await.take();
        *self.listener.lock().await = None;
        // The deadline counts from the request: `stop_by` below keeps the first one.
        if let Some(connected) = &connected {
            connected.workers().for_each(Worker::request_stop);
        }
        Shutdown {
            connected,
            runs: self.runs.clone(),
            enqueues: self.enqueues.clone(),
            deadline: Instant::now() + self.config.shutdown_timeout,
        }
    }

    async fn connection(&self) -> Result<Connection> {
        match &*self.state.lock().await {
            Some(connected) => Ok(connected.connection.clone()),
            None => Err(Error::NotConnected),
        }
    }

    /// The connection, and a guard that makes `disconnect()` wait for this enqueue.
    async fn connection_for_enqueue(&self) -> Result<(Connection, EnqueueGuard)> {
        let state = self.state.lock().await;
        let connected = state.as_ref().ok_or(Error::NotConnected)?;
        Ok((connected.connection.clone(), self.enqueues.enter()))
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // A worker still running keeps the observer: it records no events for nobody.
        self.observer.events.detach();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shutdown {
    /// Waits (until `shutdownTimeout`) for the worker and the enqueues in flight, then closes the
    /// connection (at most [`CLOSE_TIMEOUT`] more).
    pub async fn finish(self) -> StopReport {
        let Some(connected) = self.connected else {
            return StopReport::default();
        };
        let tasks = async {
            let (run, worker) = connected.worker?;
            let report = worker.stop_by(self.deadline).await;
            lock(&self.runs).retain(|(id, _)| *id != run);
            Some(report)
        };
        let letters = async { Some(connected.letters?.stop_by(self.deadline).await) };
        let (tasks, letters) = tokio::join!(tasks, letters);
        let report = StopReport {
            abandoned: [tasks, letters].iter().flatten().map(|r| r.abandoned).sum(),
        };
        if !self.enqueues.wait_until(self.deadline).await {
            tracing::warn!(
                "shutdownTimeout ran out with enqueues still waiting for the server; they reject \
                 with ERR_PQ_TIMEOUT and may still be stored"
            );
        }
        connected.connection.close_within(CLOSE_TIMEOUT).await;
        report
    }
}

/// Counts calls in flight that `disconnect()` waits for.
#[derive(Clone, Default)]
struct InFlight {
    inner: Arc<InFlightInner>,
}

#[derive(Default)]
struct InFlightInner {
    count: AtomicUsize,
    idle: Notify,
}

/// One enqueue in flight; dropping it ends it.
struct EnqueueGuard(InFlight);

impl InFlight {
    fn enter(&self) -> EnqueueGuard {
        self.inner.count.fetch_add(1, Ordering::SeqCst);
        EnqueueGuard(self.clone())
    }

    /// Whether every call in flight ended before `deadline`.
    async fn wait_until(&self, deadline: Instant) -> bool {
        tokio::time::timeout_at(deadline, async {
            loop {
                let idle = self.inner.idle.notified();
                if self.inner.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await
        .is_ok()
    }
}

impl Drop for EnqueueGuard {
    fn drop(&mut self) {
        if self.0.inner.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.idle.notify_waiters();
        }
    }
}
