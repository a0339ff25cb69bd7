//! Why a running attempt was ended before its handler settled: the reason its handler's
//! `task.signal` is aborted with. The executor (a cancel), the batched handler (`taskTimeout`)
//! or the worker's shutdown decide it; whoever hands the attempt to the handler tells it.

use std::sync::{
    atomic::{AtomicU8, Ordering},
    Arc,
};

/// Why an attempt was ended while its handler ran (or before it started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// `taskTimeout` ran out: the attempt counts as failed.
    Timeout = 1,
    /// `cancel(id)` was called for the task: it ends cancelled.
    Cancelled = 2,
    /// The worker stopped (`disconnect()`'s `shutdownTimeout` ran out): the task runs again.
    Shutdown = 3,
}

impl AbortReason {
    /// Its name as the JavaScript dispatcher takes it.
    pub fn name(self) -> &'static str {
        match self {
            AbortReason::Timeout => "timeout",
            AbortReason::Cancelled => "cancelled",
            AbortReason::Shutdown => "shutdown",
        }
    }

    fn of(value: u8) -> Option<Self> {
        match value {
            1 => Some(AbortReason::Timeout),
            2 => Some(AbortReason::Cancelled),
            3 => Some(AbortReason::Shutdown),
            _ => None,
        }
    }
}

/// The abort reason of one attempt, shared by whoever ends it and whoever runs it. The first
/// reason set is kept.
#[derive(Debug, Clone, Default)]
pub struct AbortCell(Arc<AtomicU8>);

impl AbortCell {
    /// Sets `reason`, unless one was set before.
    pub fn set(&self, reason: AbortReason) {
        let _ = self
            .0
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The reason set, if any.
    pub fn get(&self) -> Option<AbortReason> {
        AbortReason::of(self.0.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_is_kept() {
        let cell = AbortCell::default();
        assert_eq!(cell.get(), None);
        cell.set(AbortReason::Cancelled);
        cell.clone().set(AbortReason::Shutdown);
        assert_eq!(cell.get(), Some(AbortReason::Cancelled));
        assert_eq!(AbortReason::Timeout.name(), "timeout");
    }
}
