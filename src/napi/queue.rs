//! The `NativeQueue` class: one method per call of the shim, each converting its arguments and
//! delegating to the core's [`Queue`].

use std::sync::{Arc, OnceLock};

use napi::{
    bindgen_prelude::{Either, Function, Promise, Uint32Array},
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
    Env, Status,
};
use napi_derive::napi;

use super::{
    dead_letters::{
        letter_filter, native_dead_letter, JsLetters, NativeDeadLetter, NativeLetterFilter,
        NativeProgress, Throttled,
    },
    enqueue::{at_index, data_only_task, enqueue_each, new_task, NativeTaskInput},
    errors::to_js,
    schedules::{native_schedule, NativeSchedule},
    settle::{NativeEnqueued, Settler},
    stats::{NativeStats, NativeTaskInfo, NativeTaskPage, NativeWorker},
    threads::{Pool, PoolDispatch},
    worker::{progress, report, JsDispatch, NativeFailure, NativeOutcome, NativeReturned},
};
use crate::{
    admin::schedules::Recurring,
    config::{Config, LetterOptions},
    content_type::Accepted,
    envelope,
    error::{Error, Result},
    hops::{self, Hop},
    logging,
    queue::Queue,
};

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
            .collect::<Result<Vec<_>>>()
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

    /// Task `id` as the server knows it; `null` when nothing has it.
    #[napi(catch_unwind)]
    pub async fn task(&self, id: String) -> napi::Result<Option<NativeTaskInfo>> {
        let task = self.queue.task(&id).await.map_err(to_js)?;
        Ok(task.map(NativeTaskInfo::from))
    }

    /// The tasks of `state`, newest first: at most `limit`, after `cursor` (a page's).
    #[napi(catch_unwind)]
    pub async fn tasks(
        &self,
        state: String,
        limit: u32,
        cursor: Option<String>,
    ) -> napi::Result<NativeTaskPage> {
        let page = self
            .queue
            .tasks(&state, limit as usize, cursor.as_deref())
            .await
            .map_err(to_js)?;
        Ok(page.into())
    }

    /// Waits up to `timeout_ms` for task `id` to end (completed or dead-lettered).
    #[napi(catch_unwind)]
    pub async fn wait_for(&self, id: String, timeout_ms: f64) -> napi::Result<NativeTaskInfo> {
        let timeout = std::time::Duration::from_millis(timeout_ms.max(0.0) as u64);
        let record = self.queue.wait_for(&id, timeout).await.map_err(to_js)?;
        Ok(crate::history::lookup::TaskInfo::from(record).into())
    }

    /// The workers running now, in any process, oldest first.
    #[napi(catch_unwind)]
    pub async fn workers(&self) -> napi::Result<Vec<NativeWorker>> {
        let workers = self.queue.workers().await.map_err(to_js)?;
        Ok(workers.into_iter().map(NativeWorker::from).collect())
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
        let sink = JsDispatch {
            function: Arc::new(dispatch),
            limit: self.queue.config().batch_size,
            accepted: self.accepted(),
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
        returned: Option<Vec<NativeReturned>>,
    ) {
        if let Some(outcomes) = self.queue.outcomes(run) {
            report(&outcomes, &succeeded, failed, started.as_deref(), returned);
        }
    }

    /// How many tasks the worker runs at once (`options.batchSize`).
    #[napi(getter)]
    pub fn batch_size(&self) -> u32 {
        self.queue.config().batch_size
    }

    /// Opens a pool of `threads` handler threads for worker run `run` (`process(moduleUrl,
    /// { threads })`); returns its number, with which each thread attaches (`threadAttach`).
    #[napi]
    pub fn open_pool(&self, run: u32, threads: u32) -> u32 {
        Pool::open(self.queue.clone(), run, threads, self.accepted())
    }

    /// Starts worker run `run` with the handlers of pool `pool`'s attached threads. Resolves
    /// once the worker runs; it is kept (and keeps the process alive) until `disconnect()`.
    #[napi(
        catch_unwind,
        ts_args_type = "run: number, pool: number, subjects?: string[] | undefined | null"
    )]
    pub async fn process_pool(
        &self,
        run: u32,
        pool: u32,
        subjects: Option<Vec<String>>,
    ) -> napi::Result<()> {
        let sink = PoolDispatch {
            pool: Pool::get(pool)?,
        };
        self.queue
            .process_batched_part(run, sink, subjects)
            .await
            .map_err(to_js)
    }

    /// Closes pool `pool` (its worker stopped, or never started): its threads' dispatchers go.
    #[napi]
    pub fn close_pool(&self, pool: u32) {
        Pool::close(pool);
    }

    /// Reads queue statistics from the server.
    #[napi(catch_unwind)]
    pub async fn stats(&self) -> napi::Result<NativeStats> {
        let stats = self.queue.stats().await.map_err(to_js)?;
        Ok(stats.into())
    }

    /// Reads (without removing) up to `limit` dead letters, oldest first; with `filter`
    /// (checked by the shim, without its own limit), only those it picks.
    #[napi(catch_unwind)]
    pub async fn dead_letters(
        &self,
        limit: u32,
        filter: Option<NativeLetterFilter>,
    ) -> napi::Result<Vec<NativeDeadLetter>> {
        let filter = match filter {
            Some(filter) => letter_filter(filter).map_err(to_js)?,
            None => Default::default(),
        };
        let stored = self
            .queue
            .find_dead_letters(&filter, limit as usize)
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

    /// Deletes the queue's streams (unless `force`, not while workers use it), then
    /// disconnects; resolves to the names of the streams deleted.
    #[napi(catch_unwind)]
    pub async fn destroy(&self, force: bool) -> napi::Result<Vec<String>> {
        self.queue.destroy(force).await.map_err(to_js)
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
    /// 8 `error`, 16 `progress`, 32 `cancelled`.
    #[napi]
    pub fn set_events(&self, mask: u32) {
        let queue = self.queue.clone();
        queue.observer().events.set_mask(mask);
        if queue.config().events_from_queue {
            napi::bindgen_prelude::spawn(async move { queue.hear_as_wanted().await });
        }
    }

    /// A handler's progress on task `id` (`task.progress(value)`), as JSON text; reported to the
    /// `progress` listeners (of every process, with `options.events: 'queue'`).
    #[napi]
    pub fn progress(&self, id: String, json: String) -> napi::Result<()> {
        progress(&self.queue, &id, json)
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

impl NativeQueue {
    /// The content types besides JSON the queue's workers hand to the shim's decoder.
    fn accepted(&self) -> Arc<Accepted> {
        self.serializer
            .get()
            .map(|s| s.accepted.clone())
            .unwrap_or_default()
    }
}
