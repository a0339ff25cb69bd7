//! The JavaScript-facing side: the `NativeQueue` class the `index.js` shim wraps. It converts
//! values and delegates to the core; nothing here decides queue behaviour.
//!
//! Errors cross as `"<code>: <message>"` reasons (napi-rs cannot set `code` on errors of async
//! methods); the shim turns them back into `Error`s with `err.code`.

mod queues;
mod settle;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use napi::{
    bindgen_prelude::{Buffer, Either, Function, Promise, Uint32Array},
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
    Env, Status,
};
use napi_derive::napi;

use self::settle::{NativeEnqueueFailure, NativeEnqueued, Settler};
use crate::{
    admin::{
        dead_letters,
        redrive::{Filter, Progress},
        schedules::{Recurring, Spec, StoredSchedule},
    },
    config::{backoff::Backoff, MAX_DURATION_MS},
    config::{Config, LetterOptions},
    content_type::{self, Accepted},
    envelope::{self, DeadLetterReason, Task},
    error::Error,
    hops::{self, Hop},
    logging, producer,
    queue::Queue,
    schedules,
    worker::{
        batching::{BatchSink, Taken},
        dead_letter,
        executor::{Attempt, BoxFuture, Failure, Outcome},
        handoff,
        letters::{LetterAttempt, LetterHandler},
    },
};

#[napi_derive::module_init]
fn init() {
    logging::init();
    hops::init_from_env();
    // One runtime thread by default: the work per task is small, and keeping every task of a
    // worker on one thread saves the cross-thread wake-ups that otherwise dominate its cost.
    let threads = std::env::var("PROTOQUEUE_RUNTIME_THREADS")
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .filter(|&threads| threads > 0)
        .unwrap_or(1);
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("protoqueue")
        .enable_all()
        .build()
    {
        Ok(runtime) => napi::bindgen_prelude::create_custom_tokio_runtime(runtime),
        Err(err) => tracing::warn!("using napi's default runtime: {err}"),
    }
}

fn to_js(err: Error) -> napi::Error {
    napi::Error::new(Status::GenericFailure, coded(&err))
}

/// An error as the shim reads it: `"<code>: <message>"`.
fn coded(err: &Error) -> String {
    format!("{}: {err}", err.code())
}

/// A task to enqueue, as the shim sends it. (Its name, if any, travels beside it, in a `names`
/// argument: a task without one costs no more to convert than before names existed.)
#[napi(object)]
pub struct NativeTaskInput {
    /// The task's data as JSON text, or as bytes the queue's serializer encoded
    /// (`useSerializer`).
    pub data: Either<String, Buffer>,
    /// The task's metadata as JSON object text, if any.
    pub metadata: Option<String>,
    /// The producer's own task id.
    pub id: Option<String>,
    /// The task's own `maxRetries`.
    pub max_retries: Option<f64>,
    /// The task's own backoff object (`{ type, delay, maxDelay?, jitter? }`).
    pub backoff: Option<serde_json::Value>,
    /// Milliseconds from now before workers get the task.
    pub delay: Option<f64>,
    /// When workers get the task, ms since the epoch.
    pub run_at: Option<f64>,
    /// The W3C `traceparent` of the enqueueing code (dropped when not valid).
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that goes with it.
    pub tracestate: Option<String>,
    /// The task's priority, 1 (most urgent) to 10 (`options.priorities`).
    pub priority: Option<f64>,
    /// The subject the task is routed to, in the queue's subject tree.
    pub subject: Option<String>,
}

/// A recurring schedule as `getSchedules()` returns it before the shim decodes the JSON.
#[napi(object)]
pub struct NativeSchedule {
    /// Its name.
    pub name: String,
    /// The cron expression, for a cron schedule.
    pub cron: Option<String>,
    /// The interval in ms, for an `every` schedule.
    pub every: Option<f64>,
    /// The time zone of a cron schedule.
    pub time_zone: Option<String>,
    /// The task's data as JSON text (for a JSON task).
    pub data: String,
    /// The task's data as bytes, when its content type is not JSON.
    pub raw_data: Option<Buffer>,
    /// How the data is encoded.
    pub content_type: String,
    /// The name of the tasks it enqueues, if any.
    pub task_name: Option<String>,
    /// The task's metadata as JSON object text, if any.
    pub metadata: Option<String>,
    /// The next run, ms since the epoch, when the server says.
    pub next_run: Option<f64>,
}

/// A task as a dead letter carries it. Its data and metadata come as JSON text when they are
/// JSON (a JSON object for the metadata), else as their bytes.
#[napi(object)]
pub struct NativeTask {
    /// The task id.
    pub id: String,
    /// The data as JSON text, when it is JSON.
    pub data: Option<String>,
    /// The data's bytes, when they are not JSON (and were not dropped).
    pub raw_data: Option<Buffer>,
    /// How the data is encoded, as the producer said (`application/json` from JavaScript).
    pub content_type: String,
    /// The task's name, when it has one.
    pub name: Option<String>,
    /// The user's metadata as JSON object text, when there is metadata and it is one.
    pub metadata: Option<String>,
    /// The metadata's bytes, when they are not a JSON object.
    pub raw_metadata: Option<Buffer>,
    /// The data and metadata were dropped to fit the server's `max_payload`.
    pub data_dropped: bool,
    /// Enqueue time, ms since the epoch.
    pub timestamp: f64,
    /// Which delivery this is, from 1.
    pub attempt: u32,
    /// The most deliveries the task gets.
    pub max_attempts: u32,
}

/// A failed attempt as the shim reports it: the handler's result (normalised) or what it threw.
#[napi(object)]
pub struct NativeFailure {
    /// The token of the attempt (from the batch it came in).
    pub token: u32,
    /// The error message.
    pub error: Option<String>,
    /// `details` as JSON object text.
    pub details: Option<String>,
    /// `false` dead-letters a failure without further attempts.
    pub retry: Option<bool>,
    /// The wait before the next attempt in ms, from the worker's `backoff` function; absent:
    /// the task's or the queue's backoff decides.
    pub retry_delay: Option<f64>,
    /// The task's data could not be decoded: dead-lettered at once as `invalidData`.
    pub invalid_data: Option<bool>,
}

/// Queue statistics.
#[napi(object)]
pub struct NativeStats {
    pub messages: i64,
    pub bytes: i64,
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub consumer_count: i64,
    pub pending: i64,
    pub in_flight: i64,
    pub redelivered: i64,
    pub dead_lettered: i64,
    pub paused: bool,
    pub delayed: i64,
    pub recurring: i64,
    /// Tasks not yet delivered per priority level, 1 first (`options.priorities`); else empty.
    pub pending_by_priority: Vec<i64>,
}

/// Which dead letters `requeueDeadLetters`/`purgeDeadLetters` act on (checked by the shim).
#[napi(object)]
pub struct NativeLetterFilter {
    /// Only the letters stored at these sequences of the dead-letter stream.
    pub sequences: Option<Vec<f64>>,
    /// Only the letters of these task ids.
    pub ids: Option<Vec<String>>,
    /// Only the letters with this reason.
    pub reason: Option<String>,
    /// At most this many letters, oldest first.
    pub limit: Option<f64>,
}

/// How far a dead-letter requeue or purge is.
#[napi(object)]
pub struct NativeProgress {
    /// Letters looked at so far.
    pub seen: f64,
    /// Letters stored when the operation began.
    pub total: f64,
    /// Letters acted on (requeued or removed) so far.
    pub done: f64,
}

/// A handler's result as the shim normalised it.
#[napi(object)]
pub struct NativeOutcome {
    pub success: bool,
    /// The error message of a failure.
    pub error: Option<String>,
    /// `details` as JSON object text.
    pub details: Option<String>,
    /// `false`: do not offer again.
    pub retry: Option<bool>,
}

/// A dead letter as `getDeadLetters()` returns it before the shim decodes the JSON.
#[napi(object)]
pub struct NativeDeadLetter {
    /// The task, when the original message was a valid envelope.
    pub task: Option<NativeTask>,
    /// The original bytes, when it was not.
    pub raw: Option<Buffer>,
    /// `retriesExhausted`, `rejected`, `invalidEnvelope`, `invalidData`, `deliveriesExhausted`
    /// or `unspecified`.
    pub reason: String,
    /// The last error message.
    pub error: String,
    /// The handler's `details` as JSON text, when they are JSON.
    pub details: Option<String>,
    /// The stored details' bytes, when they are not JSON.
    pub raw_details: Option<Buffer>,
    /// How many times the task was delivered.
    pub attempts: u32,
    /// When it was dead-lettered, ms since the epoch.
    pub failed_at: f64,
    /// Its sequence number in the dead-letter stream.
    pub stream_sequence: f64,
}

/// The native side of one `Protoqueue`: converts values and delegates to [`Queue`].
#[napi]
pub struct NativeQueue {
    queue: Arc<Queue>,
    /// Where `enqueueEach` answers go (set once, by the shim).
    settler: OnceLock<Arc<Settler>>,
    /// The queue's serializer, if it has one besides JSON (set once, by the shim).
    serializer: OnceLock<Serializer>,
}

/// A queue's serializer as the core sees it: the content type it writes, and the content types
/// besides JSON its workers hand to the shim's decoder.
struct Serializer {
    content_type: String,
    accepted: Arc<Accepted>,
}

#[napi]
impl NativeQueue {
    /// Validates the configuration; throws `ERR_PQ_INVALID_CONFIG` on any mistake.
    #[napi(constructor)]
    pub fn new(config: serde_json::Value) -> napi::Result<Self> {
        let config = Config::from_json(&config).map_err(to_js)?;
        if config.verbose {
            logging::enable_verbose();
        }
        Ok(NativeQueue {
            queue: Arc::new(Queue::new(config)),
            settler: OnceLock::new(),
            serializer: OnceLock::new(),
        })
    }

    /// Gives the queue a serializer besides JSON (once, before anything else): task data given
    /// as bytes is labelled `contentType`, and workers hand tasks of its media type to the shim
    /// (as base64) instead of dead-lettering them as `invalidData`. Throws
    /// `ERR_PQ_INVALID_CONFIG` for a malformed content type or a second call.
    #[napi]
    pub fn use_serializer(&self, content_type: String) -> napi::Result<()> {
        let accepted = Accepted::new([content_type.as_str()]).map_err(to_js)?;
        self.serializer
            .set(Serializer {
                content_type,
                accepted: Arc::new(accepted),
            })
            .map_err(|_| {
                to_js(Error::InvalidConfig(
                    "the queue has a serializer already".into(),
                ))
            })
    }

    /// The content type of task data given as bytes, if the queue has a serializer.
    fn content_type(&self) -> Option<&str> {
        self.serializer.get().map(|s| s.content_type.as_str())
    }

    /// Connects (a no-op when connected) and makes sure the streams exist.
    #[napi(catch_unwind)]
    pub async fn connect(&self, url: Option<String>) -> napi::Result<()> {
        self.queue.connect(url.as_deref()).await.map_err(to_js)
    }

    /// Enqueues one task (named `name`, if given); resolves to its id once stored.
    #[napi(catch_unwind)]
    pub async fn enqueue(
        &self,
        task: NativeTaskInput,
        name: Option<String>,
    ) -> napi::Result<String> {
        let task = new_task(task, name, self.content_type(), envelope::now_ms()).map_err(to_js)?;
        self.queue.enqueue(task).await.map_err(to_js)
    }

    /// Enqueues many tasks, pipelined; resolves to their ids in order once all are stored.
    /// A task that is only data comes as its JSON text alone, as in `enqueueEach`. `names`,
    /// when given, holds each task's name (or nothing), in the order of `tasks`.
    #[napi(
        catch_unwind,
        ts_args_type = "tasks: Array<string | NativeTaskInput>, names?: Array<string | undefined | null> | undefined | null"
    )]
    pub async fn enqueue_batch(
        &self,
        tasks: Vec<Either<String, NativeTaskInput>>,
        names: Option<Vec<Option<String>>>,
    ) -> napi::Result<Vec<String>> {
        let now = envelope::now_ms();
        let content_type = self.content_type();
        let mut names = names.unwrap_or_default().into_iter();
        let tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(i, task)| {
                let name = names.next().flatten();
                match task {
                    Either::A(data) => Ok(data_only_task(data)),
                    Either::B(input) => {
                        new_task(input, name, content_type, now).map_err(|err| at_index(i, err))
                    }
                }
            })
            .collect::<crate::error::Result<Vec<_>>>()
            .map_err(to_js)?;
        self.queue.enqueue_batch(tasks).await.map_err(to_js)
    }

    /// Sets where `enqueueEach` answers go (once, before the first call): `callback` is called
    /// on the JavaScript thread with each call's answer (`NativeEnqueued`).
    #[napi(ts_args_type = "callback: (answer: NativeEnqueued) => void")]
    pub fn answer_enqueues_with(&self, callback: Function<NativeEnqueued, ()>) -> napi::Result<()> {
        let settler = Settler::new(callback)?;
        self.settler.set(Arc::new(settler)).map_err(|_| {
            to_js(Error::InvalidConfig(
                "enqueue answers go somewhere already".into(),
            ))
        })
    }

    /// Enqueues tasks that stand alone (the `enqueue` calls of one event-loop turn, coalesced by
    /// the shim) as call number `call`, answered through `answerEnqueuesWith`'s callback with
    /// each one's id or its coded error text. A task that is only data comes as its JSON text
    /// alone (no object to read fields from). `names` as in `enqueueBatch`.
    #[napi(
        catch_unwind,
        ts_args_type = "call: number, tasks: Array<string | NativeTaskInput>, names?: Array<string | undefined | null> | undefined | null"
    )]
    pub fn enqueue_each(
        &self,
        env: Env,
        call: u32,
        tasks: Vec<Either<String, NativeTaskInput>>,
        names: Option<Vec<Option<String>>>,
    ) -> napi::Result<()> {
        let settler = self.settler.get().cloned().ok_or_else(|| {
            to_js(Error::InvalidConfig(
                "enqueueEach before answerEnqueuesWith".into(),
            ))
        })?;
        settler.expect(&env)?;
        let queue = self.queue.clone();
        let content_type = self.content_type().map(str::to_owned);
        napi::bindgen_prelude::spawn(async move {
            hops::mark(Hop::TaskStart);
            let answer = enqueue_each(&queue, call, tasks, names, content_type.as_deref()).await;
            hops::mark(Hop::Done);
            settler.answer(answer);
        });
        Ok(())
    }

    /// The hop marks of single enqueues recorded so far (`PROTOQUEUE_HOPS=1`), as
    /// `[hop, ns, ...]`; for `bench/hops.mjs`.
    #[napi]
    pub fn hops_take() -> Vec<f64> {
        hops::take()
    }

    /// Cancels the delayed task `id` that is not yet due; resolves to whether it was.
    #[napi(catch_unwind)]
    pub async fn cancel(&self, id: String) -> napi::Result<bool> {
        self.queue.cancel(&id).await.map_err(to_js)
    }

    /// Creates or replaces the recurring task `name`: `spec` is `{ cron } | { every }` with an
    /// optional `timeZone`; its tasks are named `taskName`, if given.
    #[napi(catch_unwind)]
    pub async fn schedule(
        &self,
        name: String,
        spec: serde_json::Value,
        task: NativeTaskInput,
        task_name: Option<String>,
    ) -> napi::Result<()> {
        let recurring = Recurring::from_json(&spec).map_err(to_js)?;
        let task =
            new_task(task, task_name, self.content_type(), envelope::now_ms()).map_err(to_js)?;
        self.queue
            .schedule(&name, &recurring, task)
            .await
            .map_err(to_js)
    }

    /// Removes the recurring task `name`; resolves to whether it existed.
    #[napi(catch_unwind)]
    pub async fn unschedule(&self, name: String) -> napi::Result<bool> {
        self.queue.unschedule(&name).await.map_err(to_js)
    }

    /// The recurring tasks of the queue.
    #[napi(catch_unwind)]
    pub async fn schedules(&self) -> napi::Result<Vec<NativeSchedule>> {
        let listed = self.queue.schedules().await.map_err(to_js)?;
        Ok(listed.into_iter().map(native_schedule).collect())
    }

    /// A new run id for `process()`: outcomes are reported with it.
    #[napi]
    pub fn reserve_run(&self) -> u32 {
        self.queue.reserve_run()
    }

    /// Starts worker run `run`. `dispatch` receives ready tasks in batches, as the JSON text
    /// `{"limit": number, "tokens": number[], "tasks": TaskData[]}`; it runs at most `limit` at
    /// once, the others in order as handlers finish, and must report each task it starts and
    /// each task's outcome, by its token, through `complete(run, ...)` (`taskTimeout` counts from
    /// the start). `{"close": true}` tells it to drop the tasks it has not started and start no
    /// other. It is kept (and keeps the process alive) until `disconnect()`.
    #[napi(
        catch_unwind,
        ts_args_type = "run: number, dispatch: (batch: string) => void, subjects?: string[] | undefined | null"
    )]
    pub async fn process(
        &self,
        run: u32,
        dispatch: ThreadsafeFunction<String, (), String, Status, false>,
        subjects: Option<Vec<String>>,
    ) -> napi::Result<()> {
        let accepted = self
            .serializer
            .get()
            .map(|s| s.accepted.clone())
            .unwrap_or_default();
        let sink = JsDispatch {
            function: Arc::new(dispatch),
            limit: self.queue.config().batch_size,
            accepted,
        };
        self.queue
            .process_batched_part(run, sink, subjects)
            .await
            .map_err(to_js)
    }

    /// Reports what happened in run `run` since the last report: the tokens of the attempts whose
    /// handler started (`taskTimeout` counts from here), of those that succeeded, and the
    /// failures. Starts are taken first, so one report may start and settle an attempt. Reports
    /// of runs that ended, and outcomes for attempts that already timed out or were given back,
    /// are ignored.
    #[napi]
    pub fn complete(
        &self,
        run: u32,
        succeeded: Uint32Array,
        failed: Vec<NativeFailure>,
        started: Option<Uint32Array>,
    ) {
        let Some(outcomes) = self.queue.outcomes(run) else {
            return;
        };
        for &token in started.as_deref().unwrap_or_default() {
            outcomes.started(token);
        }
        for &token in succeeded.iter() {
            outcomes.complete(token, Outcome::Success);
        }
        for failure in failed {
            outcomes.complete(failure.token, outcome_of(failure));
        }
    }

    /// Reads queue statistics from the server.
    #[napi(catch_unwind)]
    pub async fn stats(&self) -> napi::Result<NativeStats> {
        let s = self.queue.stats().await.map_err(to_js)?;
        let n = |v: u64| v as i64;
        Ok(NativeStats {
            messages: n(s.messages),
            bytes: n(s.bytes),
            first_sequence: n(s.first_sequence),
            last_sequence: n(s.last_sequence),
            consumer_count: n(s.consumer_count),
            pending: n(s.pending),
            in_flight: n(s.in_flight),
            redelivered: n(s.redelivered),
            dead_lettered: n(s.dead_lettered),
            paused: s.paused,
            delayed: n(s.delayed),
            recurring: n(s.recurring),
            pending_by_priority: s.pending_by_priority.iter().map(|&v| n(v)).collect(),
        })
    }

    /// Reads (without removing) up to `limit` dead letters, oldest first.
    #[napi(catch_unwind)]
    pub async fn dead_letters(&self, limit: u32) -> napi::Result<Vec<NativeDeadLetter>> {
        let stored = self
            .queue
            .dead_letters(limit as usize)
            .await
            .map_err(to_js)?;
        Ok(stored.into_iter().map(native_dead_letter).collect())
    }

    /// Reads (without removing) the dead letter at `sequence` (an integer >= 1, checked by the
    /// shim), if there is one.
    #[napi(catch_unwind)]
    pub async fn dead_letter(&self, sequence: f64) -> napi::Result<Option<NativeDeadLetter>> {
        let stored = self
            .queue
            .dead_letter(sequence as u64)
            .await
            .map_err(to_js)?;
        Ok(stored.map(native_dead_letter))
    }

    /// Starts the dead-letter worker: `handler` gets each dead letter and resolves to its
    /// normalised result; a success removes the letter.
    #[napi(
        catch_unwind,
        ts_args_type = "handler: (letter: NativeDeadLetter) => Promise<NativeOutcome>, options: object | null"
    )]
    pub async fn process_dead_letters(
        &self,
        handler: ThreadsafeFunction<
            NativeDeadLetter,
            Promise<NativeOutcome>,
            NativeDeadLetter,
            Status,
            false,
        >,
        options: serde_json::Value,
    ) -> napi::Result<()> {
        let options = LetterOptions::from_json(&options).map_err(to_js)?;
        let handler = Arc::new(JsLetters {
            function: Arc::new(handler),
        });
        self.queue
            .process_dead_letters(handler, options)
            .await
            .map_err(to_js)
    }

    /// Requeues the tasks of the dead letters `filter` picks; resolves to how many. `progress`,
    /// if given, is called with how far it is, at most about ten times a second.
    #[napi(
        catch_unwind,
        ts_args_type = "filter: NativeLetterFilter, progress?: ((progress: NativeProgress) => void) | undefined | null"
    )]
    pub async fn requeue_dead_letters(
        &self,
        filter: NativeLetterFilter,
        progress: Option<ThreadsafeFunction<NativeProgress, (), NativeProgress, Status, false>>,
    ) -> napi::Result<f64> {
        let filter = letter_filter(filter).map_err(to_js)?;
        let report = Throttled::new(progress);
        let count = self
            .queue
            .requeue_dead_letters(&filter, |status| report.call(status))
            .await
            .map_err(to_js)?;
        Ok(count as f64)
    }

    /// Removes the dead letters `filter` picks; resolves to how many. `progress` as in
    /// `requeueDeadLetters`.
    #[napi(
        catch_unwind,
        ts_args_type = "filter: NativeLetterFilter, progress?: ((progress: NativeProgress) => void) | undefined | null"
    )]
    pub async fn purge_dead_letters(
        &self,
        filter: NativeLetterFilter,
        progress: Option<ThreadsafeFunction<NativeProgress, (), NativeProgress, Status, false>>,
    ) -> napi::Result<f64> {
        let filter = letter_filter(filter).map_err(to_js)?;
        let report = Throttled::new(progress);
        let count = self
            .queue
            .purge_dead_letters(&filter, |status| report.call(status))
            .await
            .map_err(to_js)?;
        Ok(count as f64)
    }

    /// Removes the tasks waiting in the queue; resolves to how many.
    #[napi(catch_unwind)]
    pub async fn purge(&self) -> napi::Result<f64> {
        Ok(self.queue.purge().await.map_err(to_js)? as f64)
    }

    /// Pauses every worker of the queue.
    #[napi(catch_unwind)]
    pub async fn pause(&self) -> napi::Result<()> {
        self.queue.pause().await.map_err(to_js)
    }

    /// Resumes every worker of the queue.
    #[napi(catch_unwind)]
    pub async fn resume(&self) -> napi::Result<()> {
        self.queue.resume().await.map_err(to_js)
    }

    /// The queue's metrics in the Prometheus text exposition format.
    #[napi(catch_unwind)]
    pub async fn metrics(&self) -> napi::Result<String> {
        self.queue.metrics().await.map_err(to_js)
    }

    /// The queue's metric families as JSON text: `[{ name, help, type, values: [{ metricName,
    /// labels: [[key, value]...], value }] }]`.
    #[napi(catch_unwind)]
    pub async fn metric_families(&self) -> napi::Result<String> {
        let families = self.queue.metric_families().await.map_err(to_js)?;
        serde_json::to_string(&families)
            .map_err(|err| to_js(Error::Nats(format!("metrics not serializable: {err}"))))
    }

    /// Sets where events go: `wake` is called (without arguments, never keeping the process
    /// alive) when events wait; it should call `takeEvents()`.
    #[napi(ts_args_type = "wake: () => void")]
    pub fn listen(&self, wake: ThreadsafeFunction<(), (), (), Status, false, true>) {
        let wake = Arc::new(wake);
        self.queue.observer().events.set_sink(move || {
            wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
        });
    }

    /// Which events are recorded: a mask of 1 `completed`, 2 `failed`, 4 `deadLettered`,
    /// 8 `error`.
    #[napi]
    pub fn set_events(&self, mask: u32) {
        self.queue.observer().events.set_mask(mask);
    }

    /// The events recorded since the last call, as a JSON array of rows (`Event::write_row`).
    #[napi]
    pub fn take_events(&self) -> String {
        self.queue.observer().events.take_rows()
    }

    /// Stops the worker (what it holds is run first, within `shutdownTimeout`), then closes the
    /// connection; the handler is released, so nothing keeps the process alive afterwards. A
    /// no-op when not connected. From inside a handler (`inHandler`), it resolves once the
    /// worker pulls no more, and finishes in the background: it cannot wait for the handler
    /// that awaits it.
    #[napi(catch_unwind)]
    pub async fn disconnect(&self, in_handler: Option<bool>) -> napi::Result<()> {
        let shutdown = self.queue.begin_disconnect().await;
        if in_handler == Some(true) {
            tokio::spawn(shutdown.finish());
        } else {
            shutdown.finish().await;
        }
        Ok(())
    }
}

/// The least time between two progress calls to JavaScript.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// A progress callback called at most every [`PROGRESS_INTERVAL`] (the first report and the last
/// one, when everything was looked at, always go through), without waiting for JavaScript.
struct Throttled {
    function: Option<ThreadsafeFunction<NativeProgress, (), NativeProgress, Status, false>>,
    last: Mutex<Option<Instant>>,
}

impl Throttled {
    fn new(
        function: Option<ThreadsafeFunction<NativeProgress, (), NativeProgress, Status, false>>,
    ) -> Self {
        Throttled {
            function,
            last: Mutex::new(None),
        }
    }

    fn call(&self, status: Progress) {
        let Some(function) = &self.function else {
            return;
        };
        let finished = status.seen >= status.total;
        {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            if !finished && last.is_some_and(|at| now.duration_since(at) < PROGRESS_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        let progress = NativeProgress {
            seen: status.seen as f64,
            total: status.total as f64,
            done: status.done as f64,
        };
        function.call(progress, ThreadsafeFunctionCallMode::NonBlocking);
    }
}

/// A task that is only its data (JSON text).
/// The answer to `enqueueEach` call `call`: the tasks converted (a task that does not convert
/// fails alone), the rest enqueued, one string of ids and the failures.
async fn enqueue_each(
    queue: &Queue,
    call: u32,
    tasks: Vec<Either<String, NativeTaskInput>>,
    names: Option<Vec<Option<String>>>,
    content_type: Option<&str>,
) -> NativeEnqueued {
    let now = envelope::now_ms();
    let mut names = names.unwrap_or_default().into_iter();
    let mut results: Vec<Option<crate::error::Result<String>>> = Vec::with_capacity(tasks.len());
    let mut valid = Vec::with_capacity(tasks.len());
    for task in tasks {
        let name = names.next().flatten();
        let task = match task {
            Either::A(data) => Ok(data_only_task(data)),
            Either::B(input) => new_task(input, name, content_type, now),
        };
        match task {
            Ok(task) => {
                valid.push(task);
                results.push(None);
            }
            Err(err) => results.push(Some(Err(err))),
        }
    }
    let mut answer = NativeEnqueued {
        call,
        ids: String::with_capacity(results.len() * 37),
        failures: None,
        error: None,
    };
    let mut enqueued = match queue.enqueue_each(valid).await {
        Ok(enqueued) => enqueued.into_iter(),
        Err(err) => {
            answer.error = Some(coded(&err));
            return answer;
        }
    };
    for (index, result) in results.into_iter().enumerate() {
        let result = result
            .or_else(|| enqueued.next())
            .unwrap_or_else(|| Err(Error::Nats("enqueue lost its result".into())));
        if index > 0 {
            answer.ids.push('\n');
        }
        match result {
            Ok(id) => answer.ids.push_str(&id),
            Err(err) => answer
                .failures
                .get_or_insert_with(Vec::new)
                .push(NativeEnqueueFailure {
                    index: index as u32,
                    error: coded(&err),
                }),
        }
    }
    answer
}

fn data_only_task(data: String) -> producer::NewTask {
    producer::NewTask {
        data: Bytes::from(data.into_bytes()),
        ..Default::default()
    }
}

/// The task `input` (named `name`): JSON text, or bytes labelled `content_type` (the queue's
/// serializer's; bytes on a queue without one are an error).
fn new_task(
    input: NativeTaskInput,
    name: Option<String>,
    content_type: Option<&str>,
    now_ms: i64,
) -> crate::error::Result<producer::NewTask> {
    let (data, content_type) = match (input.data, content_type) {
        (Either::A(text), _) => (Bytes::from(text.into_bytes()), None),
        (Either::B(bytes), Some(content_type)) => {
            (Bytes::from(bytes.to_vec()), Some(content_type.to_owned()))
        }
        (Either::B(_), None) => {
            return Err(Error::InvalidTask(
                "task data given as bytes needs a serializer (useSerializer)".into(),
            ))
        }
    };
    Ok(producer::NewTask {
        run_at: schedules::run_at(input.delay, input.run_at, now_ms)?,
        data,
        content_type,
        name,
        metadata: input
            .metadata
            .map(|m| Bytes::from(m.into_bytes()))
            .unwrap_or_default(),
        id: input.id,
        max_retries: input
            .max_retries
            .map(producer::checked_max_retries)
            .transpose()?,
        backoff: input
            .backoff
            .filter(|b| !b.is_null())
            .map(|b| Backoff::from_json("task.backoff", &b, Error::InvalidTask))
            .transpose()?,
        trace: input.traceparent.and_then(|traceparent| {
            crate::trace_context::checked(&traceparent, input.tracestate.as_deref())
        }),
        priority: input
            .priority
            .map(crate::layout::priority_level)
            .transpose()?,
        subject: input.subject,
    })
}

/// `err` about the `index`th task of a batch.
fn at_index(index: usize, err: Error) -> Error {
    match err {
        Error::InvalidTask(message) => Error::InvalidTask(format!("tasks[{index}]: {message}")),
        other => other,
    }
}

fn native_schedule(stored: StoredSchedule) -> NativeSchedule {
    let (cron, every, time_zone) = match stored.recurring {
        Some(Recurring {
            spec: Spec::Cron(cron),
            time_zone,
        }) => (Some(cron), None, time_zone),
        Some(Recurring {
            spec: Spec::Every(every),
            time_zone,
        }) => (None, Some(every.as_millis() as f64), time_zone),
        None => (None, None, None),
    };
    let task = stored.task;
    let json = content_type::is_json(&task.content_type);
    NativeSchedule {
        name: stored.name,
        cron,
        every,
        time_zone,
        data: if json {
            String::from_utf8_lossy(&task.data).into_owned()
        } else {
            String::new()
        },
        raw_data: (!json).then(|| Buffer::from(task.data.to_vec())),
        content_type: task.content_type,
        task_name: (!task.name.is_empty()).then_some(task.name),
        metadata: (!task.metadata.is_empty())
            .then(|| String::from_utf8_lossy(&task.metadata).into_owned()),
        next_run: stored.next_run_ms.map(|ms| ms as f64),
    }
}

/// Hands batches of tasks to the shim's dispatch function on the JavaScript thread, as one JSON
/// text each ([`handoff`]). The shim runs at most `limit` (`batchSize`) at once and queues the
/// rest, so the worker hands over prefetched tasks as they arrive: when a handler finishes, the
/// next task starts on the JavaScript thread without waiting for a round trip through Rust.
struct JsDispatch {
    function: Arc<ThreadsafeFunction<String, (), String, Status, false>>,
    limit: u32,
    /// The content types besides JSON the shim decodes.
    accepted: Arc<Accepted>,
}

impl BatchSink for JsDispatch {
    type Item = (u32, String);

    fn item(&self, token: u32, attempt: Attempt) -> Result<(u32, String), Outcome> {
        match handoff::task_json(&attempt, &self.accepted) {
            Ok(json) => Ok((token, json)),
            Err(failure) => Err(Outcome::InvalidData(failure)),
        }
    }

    fn queues_attempts(&self) -> bool {
        true
    }

    fn send(&self, batch: Vec<(u32, String)>, taken: Taken) {
        // A throw from the shim arrives as an `Err` instead of a fatal exception. When the call
        // cannot be queued (the environment is closing), `taken` is dropped: the batch fails.
        self.function.call_with_return_value(
            handoff::batch_json(self.limit, &batch),
            ThreadsafeFunctionCallMode::NonBlocking,
            move |result: napi::Result<()>, _| {
                taken.report(result.map_err(|err| format!("handler failed: {}", err.reason)));
                Ok(())
            },
        );
    }

    fn close(&self) -> BoxFuture<Result<(), String>> {
        let function = self.function.clone();
        Box::pin(async move {
            function
                .call_async_catch(handoff::CLOSE_JSON.to_owned())
                .await
                .map_err(|err| format!("dispatcher not closed: {}", err.reason))
        })
    }
}

fn native_task(task: Task, attempt: u64, max_attempts: u64, data_dropped: bool) -> NativeTask {
    // Data of another content type is handed over as bytes, even when they happen to be JSON.
    let data = (!data_dropped && content_type::is_json(&task.content_type))
        .then(|| handoff::json_text(&task.data).map(str::to_owned))
        .flatten();
    let raw_data = (!data_dropped && data.is_none()).then(|| Buffer::from(task.data.to_vec()));
    let metadata = handoff::json_text(&task.metadata)
        .filter(|text| text.trim_start().starts_with('{'))
        .map(str::to_owned);
    let raw_metadata = (metadata.is_none() && !task.metadata.is_empty())
        .then(|| Buffer::from(task.metadata.to_vec()));
    NativeTask {
        id: task.id,
        data,
        raw_data,
        content_type: task.content_type,
        name: (!task.name.is_empty()).then_some(task.name),
        metadata,
        raw_metadata,
        data_dropped,
        timestamp: task.enqueued_at_ms as f64,
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
    }
}

/// Dead-letter reasons by the names JavaScript sees.
const REASONS: [(&str, DeadLetterReason); 5] = crate::observe::metrics::DEAD_LETTER_REASONS;

fn reason_named(name: &str) -> Option<DeadLetterReason> {
    REASONS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, reason)| *reason)
}

fn native_dead_letter(stored: dead_letters::StoredDeadLetter) -> NativeDeadLetter {
    let letter = stored.letter;
    let reason = REASONS
        .iter()
        .find(|(_, reason)| *reason == letter.reason())
        .map_or("unspecified", |(name, _)| name);
    let attempts = u64::from(letter.attempts);
    let data_dropped = dead_letter::data_was_dropped(&letter);
    let details = handoff::json_text(&letter.details).map(str::to_owned);
    let raw_details = (details.is_none() && !letter.details.is_empty())
        .then(|| Buffer::from(letter.details.to_vec()));
    NativeDeadLetter {
        task: letter
            .task
            .map(|task| native_task(task, attempts, attempts, data_dropped)),
        raw: (!letter.raw.is_empty()).then(|| Buffer::from(letter.raw.to_vec())),
        reason: reason.into(),
        error: letter.error,
        details,
        raw_details,
        attempts: letter.attempts,
        failed_at: letter.failed_at_ms as f64,
        stream_sequence: stored.sequence as f64,
    }
}

/// Calls the shim's dead-letter function on the JavaScript thread, one letter per call (dead
/// letters are few; each call's cost does not matter here).
struct JsLetters {
    function: Arc<
        ThreadsafeFunction<
            NativeDeadLetter,
            Promise<NativeOutcome>,
            NativeDeadLetter,
            Status,
            false,
        >,
    >,
}

impl LetterHandler for JsLetters {
    fn handle(&self, attempt: LetterAttempt) -> BoxFuture<Outcome> {
        let function = self.function.clone();
        let letter = native_dead_letter(attempt.letter);
        Box::pin(async move {
            // `_catch`: a synchronous throw becomes an `Err` instead of a fatal exception.
            let result = match function.call_async_catch(letter).await {
                Ok(promise) => promise.await,
                Err(err) => Err(err),
            };
            match result {
                Ok(outcome) if outcome.success => Outcome::Success,
                Ok(outcome) => outcome_of(NativeFailure {
                    token: 0,
                    error: outcome.error,
                    details: outcome.details,
                    retry: outcome.retry,
                    retry_delay: None,
                    invalid_data: None,
                }),
                Err(err) => {
                    Outcome::Failure(Failure::new(format!("handler failed: {}", err.reason)))
                }
            }
        })
    }
}

fn letter_filter(filter: NativeLetterFilter) -> crate::error::Result<Filter> {
    let reason = match filter.reason.as_deref() {
        None => None,
        Some(name) => Some(reason_named(name).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "filter.reason {name:?} is not a dead-letter reason ({})",
                REASONS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
    };
    Ok(Filter {
        sequences: filter
            .sequences
            .map(|sequences| sequences.into_iter().map(|n| n as u64).collect()),
        ids: filter.ids.map(|ids| ids.into_iter().collect()),
        reason,
        limit: filter.limit.map(|limit| limit as u64),
    })
}

fn outcome_of(failure: NativeFailure) -> Outcome {
    let invalid_data = failure.invalid_data == Some(true);
    let failure = Failure {
        error: failure
            .error
            .unwrap_or_else(|| "handler returned { success: false }".into()),
        details: failure
            .details
            .map(|d| Bytes::from(d.into_bytes()))
            .unwrap_or_default(),
        retry: failure.retry.unwrap_or(true),
        retry_delay: failure
            .retry_delay
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_millis((ms as u64).min(MAX_DURATION_MS))),
    };
    if invalid_data {
        Outcome::InvalidData(failure)
    } else {
        Outcome::Failure(failure)
    }
}
