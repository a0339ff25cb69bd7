//! Handlers on worker threads (`process(moduleUrl, { threads })`): one worker — one consumer,
//! its pull loop, heartbeats, `taskTimeout`, settling, events and metrics, all in the core —
//! feeds the dispatchers of several JavaScript threads instead of the main thread's one.
//!
//! The shim opens a pool for a worker run ([`NativeQueue::open_pool`]), starts its threads, and
//! each thread loads this addon and attaches its dispatcher to the pool by the pool's number
//! ([`thread_attach`]); the thread reports outcomes and progress the same way
//! ([`thread_complete`], [`thread_progress`]). The run then starts with a [`PoolDispatch`] as its
//! batch sink: each batch is split over the threads, each task going to the thread holding the
//! fewest, so a thread busy with a long task gets no more. A thread that exits
//! ([`thread_detach`]) fails the tasks it held at once (retried as any failure) and gets none
//! after; while no thread is attached (the last one exited, its replacement is loading), tasks
//! wait in the pool for the next thread instead of failing.
#![cfg_attr(test, allow(dead_code))]

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, LazyLock, Mutex, MutexGuard, PoisonError,
    },
};

use napi::{
    bindgen_prelude::Uint32Array,
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
    Status,
};
use napi_derive::napi;

use super::{
    errors::to_js,
    worker::{report, NativeFailure, NativeReturned},
};
use crate::{
    content_type::Accepted,
    error::Error,
    queue::Queue,
    worker::{
        abort::AbortReason,
        batching::{BatchSink, Taken},
        executor::{Attempt, BoxFuture, Failure, Outcome},
        handoff,
    },
};

type Dispatch = ThreadsafeFunction<String, (), String, Status, false>;
/// A task as a dispatcher takes it: its token and its JSON text ([`handoff::task_json`]).
type Item = (u32, String);
/// The tasks of a batch one thread gets: the thread's number, its dispatcher, the tasks.
type Part = (usize, Arc<Dispatch>, Vec<Item>);

/// The pools of this process, by number: reachable from every JavaScript thread.
static POOLS: LazyLock<Mutex<HashMap<u32, Arc<Pool>>>> = LazyLock::new(Mutex::default);
static NEXT_POOL: AtomicU32 = AtomicU32::new(1);

/// The threads of one worker run.
pub(super) struct Pool {
    queue: Arc<Queue>,
    run: u32,
    /// How many handlers each thread runs at once: `batchSize` shared out.
    limit: u32,
    accepted: Arc<Accepted>,
    /// Attached threads by number, and the tasks that wait for one.
    threads: Mutex<Threads>,
}

/// A pool's threads by number (`None` once a thread exited), and the tasks handed over while
/// none was attached, in order.
#[derive(Default)]
struct Threads {
    attached: Vec<Option<Thread>>,
    waiting: Vec<Item>,
}

/// One attached thread: its dispatcher, and the tokens of the tasks it holds.
struct Thread {
    dispatch: Arc<Dispatch>,
    holds: HashSet<u32>,
    /// Its dispatcher no longer takes calls (the thread is exiting; its detach is on the way).
    gone: bool,
}

impl Pool {
    /// A pool for run `run` of `queue`, `threads` threads sharing `batchSize`; returns its number.
    pub(super) fn open(queue: Arc<Queue>, run: u32, threads: u32, accepted: Arc<Accepted>) -> u32 {
        let limit = queue.config().batch_size.div_ceil(threads.max(1)).max(1);
        let pool = Arc::new(Pool {
            queue,
            run,
            limit,
            accepted,
            threads: Mutex::default(),
        });
        let number = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
        pools().insert(number, pool);
        number
    }

    /// Pool `number`, while it is open.
    pub(super) fn get(number: u32) -> napi::Result<Arc<Pool>> {
        pools().get(&number).cloned().ok_or_else(|| {
            to_js(Error::InvalidConfig(format!(
                "no worker thread pool {number} (its worker stopped)"
            )))
        })
    }

    /// Forgets pool `number`: its threads' dispatchers are released with it.
    pub(super) fn close(number: u32) {
        pools().remove(&number);
    }

    fn threads(&self) -> MutexGuard<'_, Threads> {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the outcomes thread `thread` reports: it no longer holds the tasks that settled.
    fn settled(&self, thread: u32, tokens: impl IntoIterator<Item = u32>) {
        if let Some(Some(held)) = self.threads().attached.get_mut(thread as usize) {
            for token in tokens {
                held.holds.remove(&token);
            }
        }
    }

    /// Hands `items` to thread `thread` through its `dispatch`, outside the pool's lock. `taken`
    /// (none for tasks that waited in the pool) hears that the thread took them; a dispatcher
    /// that throws fails them; a thread that can no longer take calls passes them on
    /// ([`Delivery`]).
    fn deliver(self: &Arc<Self>, (thread, dispatch, items): Part, taken: Option<Taken>) {
        let json = handoff::batch_json(self.limit, &items);
        let delivery = Delivery {
            pool: self.clone(),
            thread,
            items,
            taken,
        };
        dispatch.call_with_return_value(
            json,
            ThreadsafeFunctionCallMode::NonBlocking,
            move |result: napi::Result<()>, _| {
                delivery.taken(result.map_err(|err| format!("handler failed: {}", err.reason)));
                Ok(())
            },
        );
    }

    /// Tasks a thread did not take: it is gone (it no longer gets tasks, and its detach fails
    /// only what it did take); they go to the other threads, or wait for the next one.
    fn pass_on(self: &Arc<Self>, thread: usize, items: Vec<Item>) {
        let parts = {
            let mut threads = self.threads();
            if let Some(Some(gone)) = threads.attached.get_mut(thread) {
                gone.gone = true;
                for (token, _) in &items {
                    gone.holds.remove(token);
                }
            }
            threads.hand_out(items)
        };
        for part in parts {
            self.deliver(part, None);
        }
    }
}

/// One hand-over to a thread until its dispatcher took it. Dropped untaken (its thread had
/// exited, and the call could not be made), its tasks are passed on, never failed.
struct Delivery {
    pool: Arc<Pool>,
    thread: usize,
    items: Vec<Item>,
    taken: Option<Taken>,
}

impl Delivery {
    /// The dispatcher took the tasks, or threw (they fail: it never started them).
    fn taken(mut self, result: Result<(), String>) {
        let items = std::mem::take(&mut self.items);
        if result.is_err() {
            let thread = u32::try_from(self.thread).unwrap_or(u32::MAX);
            self.pool
                .settled(thread, items.iter().map(|(token, _)| *token));
        }
        match (self.taken.take(), result) {
            (Some(taken), result) => taken.report(result),
            (None, Ok(())) => {}
            (None, Err(error)) => {
                if let Some(outcomes) = self.pool.queue.outcomes(self.pool.run) {
                    for (token, _) in &items {
                        outcomes.complete(*token, Outcome::Failure(Failure::new(&error)));
                    }
                }
            }
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.items.is_empty() {
            let items = std::mem::take(&mut self.items);
            self.pool.pass_on(self.thread, items);
        }
        if let Some(taken) = self.taken.take() {
            // Passed on: for the batch's sender, taken.
            taken.report(Ok(()));
        }
    }
}

impl Threads {
    /// The live thread holding the fewest tasks (the first of equals).
    fn least_busy(&mut self) -> Option<(usize, &mut Thread)> {
        self.attached
            .iter_mut()
            .enumerate()
            .filter_map(|(index, thread)| Some((index, thread.as_mut().filter(|t| !t.gone)?)))
            .min_by_key(|(_, thread)| thread.holds.len())
    }

    /// Splits `items` over the live threads (see [`Threads::share_out`]); with none live (a
    /// replacement is loading), keeps them for the next thread that attaches and returns no part.
    fn hand_out(&mut self, items: Vec<Item>) -> Vec<Part> {
        if self.least_busy().is_none() {
            self.waiting.extend(items);
            return Vec::new();
        }
        self.share_out(items)
    }

    /// Splits `items` over the live threads, each to the one holding the fewest.
    fn share_out(&mut self, items: Vec<Item>) -> Vec<Part> {
        let mut parts: HashMap<usize, Vec<Item>> = HashMap::new();
        for item in items {
            if let Some((index, thread)) = self.least_busy() {
                thread.holds.insert(item.0);
                parts.entry(index).or_default().push(item);
            }
        }
        parts
            .into_iter()
            .filter_map(|(index, items)| {
                let dispatch = self.attached.get(index)?.as_ref()?.dispatch.clone();
                Some((index, dispatch, items))
            })
            .collect()
    }
}

fn pools() -> MutexGuard<'static, HashMap<u32, Arc<Pool>>> {
    POOLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Attaches the calling thread's dispatcher to pool `pool`; returns the thread's number there,
/// with which it reports.
#[napi(ts_args_type = "pool: number, dispatch: (batch: string) => void")]
pub fn thread_attach(pool: u32, dispatch: Dispatch) -> napi::Result<u32> {
    let pool = Pool::get(pool)?;
    let dispatch = Arc::new(dispatch);
    let (number, waiting) = {
        let mut threads = pool.threads();
        let waiting = std::mem::take(&mut threads.waiting);
        threads.attached.push(Some(Thread {
            dispatch: dispatch.clone(),
            holds: waiting.iter().map(|(token, _)| *token).collect(),
            gone: false,
        }));
        (threads.attached.len() - 1, waiting)
    };
    if !waiting.is_empty() {
        pool.deliver((number, dispatch, waiting), None);
    }
    Ok(u32::try_from(number).unwrap_or(u32::MAX))
}

/// What thread `thread` of pool `pool` reports: as `NativeQueue.complete` for the main thread.
#[napi]
pub fn thread_complete(
    pool: u32,
    thread: u32,
    succeeded: Uint32Array,
    failed: Vec<NativeFailure>,
    started: Option<Uint32Array>,
    returned: Option<Vec<NativeReturned>>,
) {
    let Ok(pool) = Pool::get(pool) else {
        return;
    };
    let settled = succeeded
        .iter()
        .copied()
        .chain(failed.iter().map(|failure| failure.token))
        .chain(returned.iter().flatten().map(|returned| returned.token))
        .collect::<Vec<_>>();
    pool.settled(thread, settled);
    if let Some(outcomes) = pool.queue.outcomes(pool.run) {
        report(&outcomes, &succeeded, failed, started.as_deref(), returned);
    }
}

/// A handler's progress on task `id`, from a thread of pool `pool`: as `NativeQueue.progress`.
#[napi]
pub fn thread_progress(pool: u32, id: String, json: String) -> napi::Result<()> {
    let pool = Pool::get(pool)?;
    super::worker::progress(&pool.queue, &id, json)
}

/// Thread `thread` of pool `pool` exited: the tasks it held fail now (and are retried as any
/// failure), and it gets no more.
#[napi]
pub fn thread_detach(pool: u32, thread: u32) {
    let Ok(pool) = Pool::get(pool) else {
        return;
    };
    let gone = pool
        .threads()
        .attached
        .get_mut(thread as usize)
        .and_then(Option::take);
    let (Some(gone), Some(outcomes)) = (gone, pool.queue.outcomes(pool.run)) else {
        return;
    };
    if !gone.holds.is_empty() {
        tracing::warn!(
            tasks = gone.holds.len(),
            "a handler thread exited with tasks in hand; they fail and are retried"
        );
    }
    for token in gone.holds {
        outcomes.complete(
            token,
            Outcome::Failure(Failure::new("the handler's worker thread exited")),
        );
    }
}

/// The batch sink of a pool's run: batches go to its threads' dispatchers.
pub(super) struct PoolDispatch {
    pub(super) pool: Arc<Pool>,
}

impl BatchSink for PoolDispatch {
    type Item = (u32, String);

    fn item(&self, token: u32, attempt: Attempt) -> Result<Item, Outcome> {
        match handoff::task_json(&attempt, &self.pool.accepted) {
            Ok(json) => Ok((token, json)),
            Err(failure) => Err(Outcome::InvalidData(failure)),
        }
    }

    fn queues_attempts(&self) -> bool {
        true
    }

    fn send(&self, batch: Vec<Item>, taken: Taken) {
        let parts = self.pool.threads().hand_out(batch);
        if parts.is_empty() {
            // No thread now (a replacement is loading): the tasks wait for the next one, and
            // for the batch's sender they are taken.
            taken.report(Ok(()));
            return;
        }
        let receipts = taken.split(
            parts
                .iter()
                .map(|(_, _, items)| items.iter().map(|(token, _)| *token).collect())
                .collect(),
        );
        for (part, taken) in parts.into_iter().zip(receipts) {
            self.pool.deliver(part, Some(taken));
        }
    }

    fn abort(&self, aborted: Vec<(u32, AbortReason)>) {
        // Each to the thread holding it; one still waiting for a thread is dropped.
        let calls = {
            let mut threads = self.pool.threads();
            threads
                .waiting
                .retain(|(token, _)| !aborted.iter().any(|(gone, _)| gone == token));
            let mut by_thread: HashMap<usize, Vec<(u32, AbortReason)>> = HashMap::new();
            for (token, reason) in aborted {
                let holder = threads.attached.iter().position(|thread| {
                    thread
                        .as_ref()
                        .is_some_and(|thread| thread.holds.contains(&token))
                });
                if let Some(index) = holder {
                    by_thread.entry(index).or_default().push((token, reason));
                }
            }
            by_thread
                .into_iter()
                .filter_map(|(index, aborted)| {
                    let dispatch = threads.attached.get(index)?.as_ref()?.dispatch.clone();
                    Some((dispatch, aborted))
                })
                .collect::<Vec<_>>()
        };
        for (dispatch, aborted) in calls {
            let call = dispatch.call(
                handoff::abort_json(&aborted),
                ThreadsafeFunctionCallMode::NonBlocking,
            );
            if call != Status::Ok {
                tracing::debug!(?call, "an abort could not reach a handler thread");
            }
        }
    }

    fn close(&self) -> BoxFuture<Result<(), String>> {
        // What waits for a thread is dropped unstarted, as each dispatcher drops its own.
        let dispatches = {
            let mut threads = self.pool.threads();
            threads.waiting.clear();
            threads
                .attached
                .iter()
                .flatten()
                .map(|thread| thread.dispatch.clone())
                .collect::<Vec<_>>()
        };
        Box::pin(async move {
            let closed = futures::future::join_all(
                dispatches
                    .iter()
                    .map(|dispatch| dispatch.call_async_catch(handoff::CLOSE_JSON.to_owned())),
            )
            .await;
            closed
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), |err| {
                    Err(format!(
                        "a handler thread's dispatcher not closed: {}",
                        err.reason
                    ))
                })
        })
    }
}
