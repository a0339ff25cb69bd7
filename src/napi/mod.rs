//! The JavaScript-facing side: the `NativeQueue` class the `index.js` shim wraps. It converts
//! values and delegates to the core; nothing here decides queue behaviour.
//!
//! Errors cross as `"<code>: <message>"` reasons (napi-rs cannot set `code` on errors of async
//! methods); the shim turns them back into `Error`s with `err.code` ([`errors`]).
//!
//! - [`queue`]: the `NativeQueue` class, one method per call of the shim, each delegating to
//!   [`Queue`](crate::queue::Queue);
//! - [`enqueue`]: tasks as the shim sends them, converted to the core's; [`settle`]: how single
//!   enqueues are answered;
//! - [`worker`]: handing tasks to the shim's dispatcher and reading the outcomes it reports;
//!   [`threads`]: the same for dispatchers on worker threads (`process(moduleUrl, { threads })`);
//! - [`dead_letters`], [`schedules`], [`stats`]: what those calls take and give, converted;
//! - [`queues`]: the `listQueues()` function; [`logger`]: the `setLogger()` function.

mod dead_letters;
mod enqueue;
mod errors;
mod logger;
mod queue;
mod queues;
mod schedules;
mod settle;
mod stats;
mod threads;
mod worker;

use crate::{hops, logging};

#[napi_derive::module_init]
fn init() {
    // Once per process: each worker thread that loads the addon runs this too.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(init_process);
}

fn init_process() {
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
