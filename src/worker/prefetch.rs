//! How many tasks a worker keeps ready beyond those running: enough to hide the round trip of the
//! next pull, never so many that they sit idle while other workers could run them.
//!
//! Prefetched tasks are delivered and wait for a free slot (in the worker, or in a handler that
//! queues attempts itself); their `ackWait` is kept from running out meanwhile (see
//! [`crate::worker`]). A count alone cannot be right for every handler:
//! a hundred tasks are a millisecond of work for a trivial handler and hours for a slow one,
//! hours during which another worker might have run them. So the count adapts to the handlers'
//! pace: the worker keeps about [`HORIZON`] of work ready, measured from how long tasks hold
//! their slots (from hand-over to outcome, when the handler queues), never more than
//! `options.prefetch`, nor more than [`MAX_BYTES`] of payload.
//! Fast handlers get the whole allowance, and handlers slower than `batchSize` per [`HORIZON`]
//! get none: their worker pulls only for free slots, whose round trip is small next to the
//! handlers' own time.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// How much work (in handler time) a worker keeps ready.
pub const HORIZON: Duration = Duration::from_millis(50);
/// The most payload a worker keeps prefetched, going by the mean task size: large tasks are
/// prefetched fewer at a time, so worker memory stays small.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// The weight of the newest sample in the running mean of slot times, as 1 / this.
const SMOOTHING: u64 = 8;

/// The prefetch allowance of one worker, shared by its pull loop (which asks for it) and its
/// slots (which report how long they were held).
#[derive(Debug)]
pub struct Prefetch {
    batch_size: u64,
    max: u64,
    /// Running mean of how long a task holds its slot, in microseconds; 0 until the first one.
    mean_slot_micros: AtomicU64,
    /// Running mean of the tasks' payload size in bytes; 0 until the first one.
    mean_size: AtomicU64,
}

impl Prefetch {
    /// A worker with `batch_size` slots that prefetches at most `max` tasks.
    pub fn new(batch_size: u32, max: u32) -> Arc<Self> {
        Arc::new(Prefetch {
            batch_size: u64::from(batch_size),
            max: u64::from(max),
            mean_slot_micros: AtomicU64::new(0),
            mean_size: AtomicU64::new(0),
        })
    }

    /// The most tasks the worker may prefetch at any time: `options.prefetch`.
    pub fn max(&self) -> usize {
        self.max as usize
    }

    /// How many tasks to keep ready now. Before any task has finished, as many as there are
    /// slots (bounded by the maximum).
    pub fn allowance(&self) -> usize {
        // Tasks finished per HORIZON with every slot busy; before the first, one per slot.
        let by_pace = (self.batch_size * HORIZON.as_micros() as u64)
            .checked_div(self.mean_slot_micros.load(Ordering::Relaxed))
            .unwrap_or(self.batch_size);
        let by_size = MAX_BYTES / self.mean_size.load(Ordering::Relaxed).max(1);
        by_pace.min(by_size).min(self.max) as usize
    }

    /// Records that a task held its slot for `held`.
    pub fn record(&self, held: Duration) {
        update_mean(&self.mean_slot_micros, held.as_micros() as u64);
    }

    /// Records the payload size of a task that arrived.
    pub fn record_size(&self, bytes: usize) {
        update_mean(&self.mean_size, bytes as u64);
    }

    /// Starts timing a slot; the returned guard records the time when dropped.
    pub fn time<Slot>(self: &Arc<Self>, slot: Slot) -> Timed<Slot> {
        Timed {
            _slot: slot,
            since: Instant::now(),
            prefetch: self.clone(),
        }
    }
}

/// Adds `sample` (at least 1) to the running mean in `mean`: an integer exponential moving
/// average, seeded by the first sample. A lost update under a race only drops one sample.
fn update_mean(mean: &AtomicU64, sample: u64) {
    let sample = sample.max(1);
    let old = mean.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        // A signed step, so the mean moves both ways.
        let step = (sample as i64 - old as i64) / SMOOTHING as i64;
        (old as i64 + step).max(1) as u64
    };
    mean.store(new, Ordering::Relaxed);
}

/// A slot being timed: when dropped (the handler is done), it frees the slot and records how
/// long it was held.
pub struct Timed<Slot> {
    _slot: Slot,
    since: Instant,
    prefetch: Arc<Prefetch>,
}

impl<Slot> Drop for Timed<Slot> {
    fn drop(&mut self) {
        self.prefetch.record(self.since.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(prefetch: &Prefetch, held: Duration) {
        for _ in 0..100 {
            prefetch.record(held);
        }
    }

    #[test]
    fn starts_with_one_task_per_slot_within_the_maximum() {
        assert_eq!(Prefetch::new(10, 100).allowance(), 10);
        assert_eq!(Prefetch::new(10, 4).allowance(), 4);
        assert_eq!(Prefetch::new(10, 0).allowance(), 0);
    }

    #[test]
    fn fast_handlers_get_the_whole_allowance() {
        let prefetch = Prefetch::new(10, 100);
        settle(&prefetch, Duration::from_micros(300));
        assert_eq!(prefetch.allowance(), 100);
    }

    #[test]
    fn keeps_about_the_horizon_of_work_ready() {
        let prefetch = Prefetch::new(10, 100);
        settle(&prefetch, Duration::from_millis(25));
        // 10 slots, 25 ms each: 20 tasks per 50 ms.
        assert_eq!(prefetch.allowance(), 20);
    }

    #[test]
    fn slow_handlers_get_none_and_fast_ones_win_it_back() {
        let prefetch = Prefetch::new(10, 100);
        settle(&prefetch, Duration::from_secs(2));
        assert_eq!(prefetch.allowance(), 0);
        settle(&prefetch, Duration::from_micros(200));
        assert_eq!(prefetch.allowance(), 100);
    }

    #[test]
    fn large_tasks_are_prefetched_fewer_at_a_time() {
        let prefetch = Prefetch::new(10, 100);
        settle(&prefetch, Duration::from_micros(300));
        for _ in 0..100 {
            prefetch.record_size(1024 * 1024);
        }
        assert_eq!(prefetch.allowance(), 8);
        for _ in 0..100 {
            prefetch.record_size(64);
        }
        assert_eq!(prefetch.allowance(), 100);
    }

    #[test]
    fn zero_maximum_never_prefetches() {
        let prefetch = Prefetch::new(10, 0);
        settle(&prefetch, Duration::from_micros(1));
        assert_eq!(prefetch.allowance(), 0);
    }

    #[test]
    fn a_timed_slot_records_when_dropped() {
        let prefetch = Prefetch::new(1, 1_000);
        assert_eq!(prefetch.allowance(), 1);
        drop(prefetch.time(()));
        // A slot held for far less than the horizon: more than one task's worth.
        assert!(prefetch.allowance() > 1);
    }
}
