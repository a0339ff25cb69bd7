//! How single enqueues are answered: through one long-lived thread-safe function per queue
//! instead of a promise per call. A promise from an `async fn` costs the JavaScript thread a
//! Node-API promise and a thread-safe function created, and later destroyed, for every call; an
//! awaited `enqueue` in a loop (W1 in bench/README.md) or many request handlers enqueueing at once
//! (W5) pay that per call. Here a call is a number: the shim keeps its callers under it, and the
//! runtime hands back `(call, answer)` through the function the shim registered once.
//!
//! The function is weak (it never keeps the process alive by itself); while calls are unanswered
//! it is referenced, so a process whose only work is an awaited `enqueue` does not exit under it.

use std::{
    ffi::c_void,
    ptr,
    sync::{
        atomic::{AtomicPtr, AtomicU32, Ordering},
        Arc,
    },
};

use napi::{
    bindgen_prelude::Function,
    sys,
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
    Env, Status,
};
use napi_derive::napi;

/// A task of an `enqueueEach` call that failed.
#[napi(object)]
pub struct NativeEnqueueFailure {
    /// Its position in the input.
    pub index: u32,
    /// Its error as `"<code>: <message>"`.
    pub error: String,
}

/// The answer to one `enqueueEach` call.
#[napi(object)]
pub struct NativeEnqueued {
    /// The call it answers (the number the shim gave it).
    pub call: u32,
    /// The tasks' ids in input order, joined by `\n` (an id holds no whitespace); a failed
    /// task's is empty.
    pub ids: String,
    /// The tasks that failed, in input order; absent when none did.
    pub failures: Option<Vec<NativeEnqueueFailure>>,
    /// Set when the whole call failed (`"<code>: <message>"`): every task failed with it.
    pub error: Option<String>,
}

type Answer = ThreadsafeFunction<NativeEnqueued, (), NativeEnqueued, Status, false, true>;

/// The thread-safe function that answers a queue's `enqueueEach` calls, and how many of them are
/// unanswered.
pub(super) struct Settler {
    answer: Answer,
    holds: Arc<Holds>,
}

/// The calls not yet answered, and the raw function to reference while there are any. Only
/// touched on the JavaScript thread (atomics only because the callback must be `Send`).
struct Holds {
    unanswered: AtomicU32,
    raw: AtomicPtr<c_void>,
}

impl Holds {
    fn raw(&self) -> sys::napi_threadsafe_function {
        self.raw.load(Ordering::Relaxed).cast()
    }
}

impl Settler {
    /// A settler calling `callback` with each answer, on the JavaScript thread.
    pub(super) fn new(callback: Function<NativeEnqueued, ()>) -> napi::Result<Self> {
        let holds = Arc::new(Holds {
            unanswered: AtomicU32::new(0),
            raw: AtomicPtr::new(ptr::null_mut()),
        });
        let released = holds.clone();
        let answer: Answer = callback
            .build_threadsafe_function::<NativeEnqueued>()
            .weak::<true>()
            .build_callback(move |ctx| {
                // The last unanswered call is answered now: nothing of ours holds the process.
                if released.unanswered.fetch_sub(1, Ordering::Relaxed) == 1 {
                    // SAFETY: on the JavaScript thread (a thread-safe function's callback), with
                    // the function this callback belongs to, which is alive while it runs.
                    unsafe { sys::napi_unref_threadsafe_function(ctx.env.raw(), released.raw()) };
                }
                Ok(ctx.value)
            })?;
        holds.raw.store(answer.raw().cast(), Ordering::Relaxed);
        Ok(Settler { answer, holds })
    }

    /// Counts a call that will be answered (on the JavaScript thread, before the work starts);
    /// the first unanswered one references the function, so the process waits for the answer.
    pub(super) fn expect(&self, env: &Env) -> napi::Result<()> {
        if self.holds.unanswered.fetch_add(1, Ordering::Relaxed) == 0 {
            // SAFETY: on the JavaScript thread, with a live thread-safe function.
            let status = unsafe { sys::napi_ref_threadsafe_function(env.raw(), self.holds.raw()) };
            if status != sys::Status::napi_ok {
                self.holds.unanswered.fetch_sub(1, Ordering::Relaxed);
                return Err(napi::Error::new(
                    Status::GenericFailure,
                    "ERR_PQ_NATS: the enqueue answer could not be set up",
                ));
            }
        }
        Ok(())
    }

    /// Hands `answer` to JavaScript (from any thread). Each call that [`Settler::expect`]
    /// counted is answered exactly once.
    pub(super) fn answer(&self, answer: NativeEnqueued) {
        let status = self
            .answer
            .call(answer, ThreadsafeFunctionCallMode::NonBlocking);
        if status != Status::Ok {
            // Only when the environment is going away: nobody is left to answer.
            tracing::debug!(?status, "an enqueue answer could not reach JavaScript");
        }
    }
}
