//! What a queue object tells about itself: Prometheus [`metrics`] and [`events`] for its
//! listeners. One [`Observer`] per queue object, kept across reconnects and reached by the
//! producer and the worker through the [`Connection`](crate::Connection).
//!
//! The worker decides each attempt's fate and reports it here once ([`Observer::attempt_ended`],
//! [`Observer::dead_lettered`]); both the counters and the events are fed from that one report.

pub mod events;
pub mod metrics;
pub mod remote;

use std::time::{Duration, Instant};

use crate::envelope::DeadLetterReason;

pub use events::{AttemptInfo, Event, Events, Timing};
pub use metrics::Metrics;

/// The metrics and events of one queue object.
#[derive(Debug, Default)]
pub struct Observer {
    pub metrics: Metrics,
    /// What this object's listeners hear.
    pub events: Events,
    /// What this object's worker tells listeners in other processes, while any listen
    /// ([`remote`]).
    pub remote: Events,
    /// The object's listeners hear every worker of the queue (`options.events: 'queue'`): its
    /// own worker's events reach them through the server too, not directly.
    pub hears_queue: bool,
}

/// When an attempt was enqueued, handed over and started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The task's enqueue time, ms since the epoch (the producer's clock).
    pub enqueued_at_ms: i64,
    /// When the handler started (or was handed the attempt, when it does not say).
    pub started: Instant,
}

impl Clock {
    /// The timing of an attempt that ends now. Clocks that disagree (producer ahead of worker)
    /// give a wait of 0, never a negative one.
    pub fn timing(&self) -> Timing {
        let (ran, wait, since_enqueue) = self.durations();
        Timing {
            duration_ms: ms(ran),
            wait_ms: ms(wait),
            since_enqueue_ms: ms(since_enqueue),
        }
    }

    /// When the handler started, ms since the epoch (this machine's clock).
    pub fn started_ms(&self) -> i64 {
        let ran = Instant::now().saturating_duration_since(self.started);
        crate::envelope::now_ms() - i64::try_from(ran.as_millis()).unwrap_or(0)
    }

    /// The handler's run time, the wait before it and the time since enqueue, ending now.
    fn durations(&self) -> (Duration, Duration, Duration) {
        let ran = Instant::now().saturating_duration_since(self.started);
        let since_enqueue = Duration::from_millis(
            u64::try_from(crate::envelope::now_ms() - self.enqueued_at_ms).unwrap_or(0),
        )
        .max(ran);
        (ran, since_enqueue.saturating_sub(ran), since_enqueue)
    }
}

/// `duration` in milliseconds, to the microsecond: `8.539`, not `8.539000000000001` (a whole
/// number of microseconds divided by 1000 is the double nearest that decimal, which JavaScript
/// prints as written).
fn ms(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// How an attempt whose handler ran ended.
#[derive(Debug)]
pub enum Ended<'a> {
    /// Succeeded and acked.
    Completed,
    /// Failed; retried after `retry_delay` when that is `Some`.
    Failed {
        error: &'a str,
        retry_delay: Option<Duration>,
    },
    /// Succeeded or failed, but the worker could not settle it (the server redelivers it).
    Unsettled,
    /// Cancelled (`cancel(id)`): ended without an outcome of its handler.
    Cancelled,
}

impl Observer {
    /// Reports an attempt whose handler ran (or was to run): its timing goes to the histograms,
    /// its end to the counters and the listeners.
    pub fn attempt_ended(
        &self,
        attempt: impl FnOnce() -> AttemptInfo,
        clock: &Clock,
        ended: Ended,
    ) {
        let (ran, wait, since_enqueue) = clock.durations();
        let metrics = &self.metrics;
        metrics.handler_duration.observe(ran);
        metrics.wait.observe(wait);
        let timing = Timing {
            duration_ms: ms(ran),
            wait_ms: ms(wait),
            since_enqueue_ms: ms(since_enqueue),
        };
        use std::sync::atomic::Ordering::Relaxed;
        match ended {
            Ended::Completed => {
                metrics.completed.fetch_add(1, Relaxed);
                self.tell(events::COMPLETED, || Event::Completed {
                    attempt: attempt(),
                    timing,
                });
            }
            Ended::Failed { error, retry_delay } => {
                metrics.attempts_failed.fetch_add(1, Relaxed);
                if retry_delay.is_some() {
                    metrics.retried.fetch_add(1, Relaxed);
                }
                self.tell(events::FAILED, || Event::Failed {
                    attempt: attempt(),
                    timing,
                    error: error.to_owned(),
                    will_retry: retry_delay.is_some(),
                    retry_delay_ms: retry_delay.map(ms),
                });
            }
            Ended::Cancelled => {
                self.tell(events::CANCELLED, || Event::Cancelled {
                    attempt: attempt(),
                });
            }
            Ended::Unsettled => {}
        }
    }

    /// Reports a dead letter stored for `reason`.
    pub fn dead_lettered(
        &self,
        attempt: impl FnOnce() -> AttemptInfo,
        reason: DeadLetterReason,
        error: &str,
    ) {
        self.metrics.dead_lettered(reason);
        self.tell(events::DEAD_LETTERED, || Event::DeadLettered {
            attempt: attempt(),
            reason: metrics::reason_name(reason),
            error: error.to_owned(),
        });
    }

    /// Reports a handler's progress on task `id` (`task.progress(value)`; `progress` is JSON).
    pub fn progress(&self, id: &str, progress: &serde_json::value::RawValue) {
        self.tell(events::PROGRESS, || Event::Progress {
            id: id.to_owned(),
            progress: events::RawJson(progress.to_owned()),
        });
    }

    /// Whether anyone — this object's listeners or another process's — wants events of `kind`.
    pub fn wants(&self, kind: u32) -> bool {
        (!self.hears_queue && self.events.wants(kind)) || self.remote.wants(kind)
    }

    /// Records an event of this object's worker for its own listeners (unless they hear the
    /// queue's, which brings it back through the server) and for those of other processes.
    fn tell(&self, kind: u32, event: impl FnOnce() -> Event) {
        let local = !self.hears_queue && self.events.wants(kind);
        let remote = self.remote.wants(kind);
        match (local, remote) {
            (true, true) => {
                let event = event();
                self.remote.push(kind, || event.clone());
                self.events.push(kind, || event);
            }
            (true, false) => self.events.push(kind, event),
            (false, true) => self.remote.push(kind, event),
            (false, false) => {}
        }
    }

    /// Reports connection trouble to the `error` listeners.
    pub fn connection_trouble(&self, code: &'static str, message: impl FnOnce() -> String) {
        self.events.push(events::ERROR, || Event::Error {
            code,
            message: message(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_print_to_the_microsecond_without_float_noise() {
        for (nanos, shown) in [
            (8_539_000, "8.539"),
            (8_539_999, "8.539"),
            (100_000, "0.1"),
            (300_000, "0.3"),
            (1_234_567_000, "1234.567"),
            (0, "0.0"),
        ] {
            let text = serde_json::to_string(&ms(Duration::from_nanos(nanos))).expect("json");
            assert_eq!(text, shown, "{nanos} ns");
        }
    }
}
