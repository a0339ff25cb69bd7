//! Hop-by-hop timestamps of the single-enqueue path, for `bench/hops.mjs` (bench/README.md):
//! where one awaited `enqueue` spends its time between the JavaScript thread, the runtime thread
//! and the server. Off unless `PROTOQUEUE_HOPS=1` is set when the addon loads; off, a mark costs
//! one relaxed load of a flag that is never written again.
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds, the clock Node's `process.hrtime.bigint()` reads, so
//! the script lines them up with its own marks.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex,
};

/// A point on the path, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Hop {
    /// The native `enqueueEach` future's first poll, on the runtime thread.
    TaskStart = 1,
    /// The connection is taken (queue lock, the publisher set up); encoding starts.
    Connected = 2,
    /// The task is encoded and its publish handed to the NATS client (queued for the client's
    /// connection task to write).
    Handed = 3,
    /// The server's acknowledgement arrived and was matched to the publish.
    Acked = 4,
    /// The results are built; napi resolves the promise next.
    Done = 5,
}

/// Marks kept at most: a run of the script takes them after every enqueue.
const MAX_MARKS: usize = 1 << 16;

static ENABLED: AtomicBool = AtomicBool::new(false);
static MARKS: Mutex<Vec<(u8, u64)>> = Mutex::new(Vec::new());

/// Turns the marks on when `PROTOQUEUE_HOPS=1` (called once when the addon loads).
pub fn init_from_env() {
    if std::env::var("PROTOQUEUE_HOPS").as_deref() == Ok("1") {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

/// Whether marks are recorded.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
#[cfg(unix)]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Elsewhere the marks do not line up with JavaScript's clock; the script needs Linux anyway.
#[cfg(not(unix))]
pub fn now_ns() -> u64 {
    0
}

/// Records `hop` now, when enabled.
#[inline]
pub fn mark(hop: Hop) {
    if enabled() {
        record(hop);
    }
}

#[cold]
fn record(hop: Hop) {
    let at = now_ns();
    if let Ok(mut marks) = MARKS.lock() {
        if marks.len() < MAX_MARKS {
            marks.push((hop as u8, at));
        }
    }
}

/// Takes the marks recorded so far, as `[hop, ns, hop, ns, ...]`.
pub fn take() -> Vec<f64> {
    let marks = MARKS
        .lock()
        .map(|mut marks| std::mem::take(&mut *marks))
        .unwrap_or_default();
    marks
        .into_iter()
        .flat_map(|(hop, at)| [f64::from(hop), at as f64])
        .collect()
}
