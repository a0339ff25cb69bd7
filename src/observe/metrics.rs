//! The queue's Prometheus metrics: counters and histograms kept in this process (atomics, fixed
//! buckets), and the text exposition format they are served in, with the server's gauges read
//! from [`crate::admin::stats`] at scrape time.
//!
//! Every series has a `queue` label, the queue's stream name. The counters count what this queue
//! object did since it was created (they survive `disconnect()` and a new `connect()`); a
//! process that only reads (the command line) has them all at 0.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::Serialize;

use crate::envelope::DeadLetterReason;

/// The dead-letter reasons by the names JavaScript sees (`getDeadLetters()`, the `reason` label).
pub const DEAD_LETTER_REASONS: [(&str, DeadLetterReason); 5] = [
    ("retriesExhausted", DeadLetterReason::RetriesExhausted),
    ("rejected", DeadLetterReason::Rejected),
    ("invalidEnvelope", DeadLetterReason::InvalidEnvelope),
    ("invalidData", DeadLetterReason::InvalidData),
    ("deliveriesExhausted", DeadLetterReason::DeliveriesExhausted),
];

/// The name JavaScript sees for `reason` (`unspecified` for a reason this version does not know).
pub fn reason_name(reason: DeadLetterReason) -> &'static str {
    DEAD_LETTER_REASONS
        .iter()
        .find(|(_, known)| *known == reason)
        .map_or("unspecified", |(name, _)| name)
}

/// The upper bounds (seconds) of the handler-duration buckets.
pub const HANDLER_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// The upper bounds (seconds) of the wait buckets (enqueue → handler start): waits include
/// backlogs, retry delays and delayed tasks, so they reach further.
pub const WAIT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
    86400.0,
];

/// A histogram with fixed buckets: one counter per bucket (not cumulative), the count and the
/// sum in microseconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `bounds.len() + 1` counters; the last is `+Inf`.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = self.bounds.partition_point(|&bound| bound < seconds);
        if let Some(counter) = self.buckets.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// `(upper bound, cumulative count)` per bucket, `+Inf` last, then the sum in seconds.
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, counter) in self.buckets.iter().enumerate() {
            cumulative += counter.load(Ordering::Relaxed);
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        // The `+Inf` bucket is the count: read after the buckets, it is never below them.
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, cumulative, sum)
    }
}

/// The counters and histograms of one queue object.
#[derive(Debug)]
pub struct Metrics {
    /// Tasks this process enqueued (stored by the server).
    pub enqueued: AtomicU64,
    /// Tasks whose handler succeeded and whose ack went out.
    pub completed: AtomicU64,
    /// Attempts that failed (the handler failed, threw, timed out, or the task could not be
    /// handed to it).
    pub attempts_failed: AtomicU64,
    /// Failed attempts handed back to the server for another try.
    pub retried: AtomicU64,
    /// Tasks stored on the dead-letter stream, by reason ([`DEAD_LETTER_REASONS`] order, then
    /// `unspecified`).
    dead_lettered: [AtomicU64; DEAD_LETTER_REASONS.len() + 1],
    /// How long handlers ran.
    pub handler_duration: Histogram,
    /// How long tasks waited from enqueue to the start of an attempt.
    pub wait: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enqueued: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            attempts_failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: Default::default(),
            handler_duration: Histogram::new(&HANDLER_BUCKETS),
            wait: Histogram::new(&WAIT_BUCKETS),
        }
    }
}

impl Metrics {
    /// Counts `n` enqueued tasks.
    pub fn enqueued(&self, n: usize) {
        self.enqueued.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a dead letter stored for `reason`.
    pub fn dead_lettered(&self, reason: DeadLetterReason) {
        let index = DEAD_LETTER_REASONS
            .iter()
            .position(|(_, known)| *known == reason)
            .unwrap_or(DEAD_LETTER_REASONS.len());
        if let Some(counter) = self.dead_lettered.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The dead letters counted for `reason`.
    pub fn dead_lettered_count(&self, reason: DeadLetterReason) -> u64 {
        let index = DEAD_LETTER_REASONS
            .iter()
            .position(|(_, known)| *known == reason)
            .unwrap_or(DEAD_LETTER_REASONS.len());
        self.dead_lettered
            .get(index)
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }
}

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One sample: `metric_name` (the family's name plus `_bucket`/`_sum`/`_count` for
/// histograms), its labels (the `queue` label first) and value. The field names are
/// `prom-client`'s (`getMetricsAsJSON()`), so its registry can serve these as they are.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub metric_name: String,
    /// In order, `queue` first; a JSON object.
    #[serde(serialize_with = "as_object")]
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

fn as_object<S: serde::Serializer>(
    labels: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(labels.iter().map(|(key, value)| (key, value)))
}

/// One metric family: name, help text, type and samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub values: Vec<Sample>,
}

/// The server's gauges of one queue, read at scrape time (from a
/// [`Stats`](crate::admin::stats::Stats) snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Tasks waiting on the server, not yet delivered to a worker.
    pub pending: u64,
    /// Tasks delivered to workers and not yet settled.
    pub in_flight: u64,
    /// Delayed tasks waiting for their time.
    pub delayed: u64,
    /// Dead letters stored.
    pub dead_lettered: u64,
    /// Consumers on the task stream.
    pub consumers: u64,
}

/// The metric families of one queue: this process's counters and histograms, and the server's
/// `gauges`.
pub fn families(queue: &str, metrics: &Metrics, gauges: &Gauges) -> Vec<Family> {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    let one = |name: &'static str, help: &'static str, kind: Kind, value: f64| Family {
        name,
        help,
        kind,
        values: vec![sample(name, queue, &[], value)],
    };
    let mut dead_lettered = Family {
        name: "protoqueue_tasks_dead_lettered_total",
        help: "Tasks this process stored on the dead-letter stream, by reason.",
        kind: Kind::Counter,
        values: Vec::new(),
    };
    let reasons = DEAD_LETTER_REASONS.iter().map(|(name, _)| *name);
    for (reason, counter) in reasons.chain(["unspecified"]).zip(&metrics.dead_lettered) {
        dead_lettered.values.push(sample(
            dead_lettered.name,
            queue,
            &[("reason", reason)],
            load(counter),
        ));
    }
    vec![
        one(
            "protoqueue_tasks_enqueued_total",
            "Tasks this process enqueued (stored by the server).",
            Kind::Counter,
            load(&metrics.enqueued),
        ),
        one(
            "protoqueue_tasks_completed_total",
            "Tasks this process's worker handled successfully.",
            Kind::Counter,
            load(&metrics.completed),
        ),
        one(
            "protoqueue_task_attempts_failed_total",
            "Attempts that failed in this process's worker (retried or dead-lettered).",
            Kind::Counter,
            load(&metrics.attempts_failed),
        ),
        one(
            "protoqueue_tasks_retried_total",
            "Failed attempts this process's worker handed back for another attempt.",
            Kind::Counter,
            load(&metrics.retried),
        ),
        dead_lettered,
        histogram(
            "protoqueue_handler_duration_seconds",
            "How long handlers ran in this process, per attempt.",
            queue,
            &metrics.handler_duration,
        ),
        histogram(
            "protoqueue_task_wait_seconds",
            "Time from enqueue to the start of an attempt in this process.",
            queue,
            &metrics.wait,
        ),
        one(
            "protoqueue_tasks_pending",
            "Tasks waiting on the server, not yet delivered to a worker.",
            Kind::Gauge,
            gauges.pending as f64,
        ),
        one(
            "protoqueue_tasks_in_flight",
            "Tasks delivered to workers and not yet settled.",
            Kind::Gauge,
            gauges.in_flight as f64,
        ),
        one(
            "protoqueue_tasks_delayed",
            "Delayed tasks waiting for their time on the server.",
            Kind::Gauge,
            gauges.delayed as f64,
        ),
        one(
            "protoqueue_dead_letters",
            "Dead letters stored on the server.",
            Kind::Gauge,
            gauges.dead_lettered as f64,
        ),
        one(
            "protoqueue_consumers",
            "Consumers on the task stream.",
            Kind::Gauge,
            gauges.consumers as f64,
        ),
    ]
}

fn sample(metric_name: &str, queue: &str, labels: &[(&str, &str)], value: f64) -> Sample {
    let mut all = Vec::with_capacity(labels.len() + 1);
    all.push(("queue".to_owned(), queue.to_owned()));
    all.extend(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Sample {
        metric_name: metric_name.to_owned(),
        labels: all,
        value,
    }
}

fn histogram(name: &'static str, help: &'static str, queue: &str, histogram: &Histogram) -> Family {
    let (buckets, count, sum) = histogram.snapshot();
    let bucket_name = format!("{name}_bucket");
    let mut values: Vec<Sample> = buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let le = number(bound);
            sample(&bucket_name, queue, &[("le", &le)], cumulative as f64)
        })
        .collect();
    values.push(sample(&format!("{name}_sum"), queue, &[], sum));
    values.push(sample(&format!("{name}_count"), queue, &[], count as f64));
    Family {
        name,
        help,
        kind: Kind::Histogram,
        values,
    }
}

/// The Prometheus text exposition format (version 0.0.4) of `families`.
pub fn exposition(families: &[Family]) -> String {
    let mut text = String::with_capacity(families.len() * 512);
    for family in families {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(text, "# HELP {} {}", family.name, escape_help(family.help));
        let _ = writeln!(text, "# TYPE {} {kind}", family.name);
        for sample in &family.values {
            text.push_str(&sample.metric_name);
            if !sample.labels.is_empty() {
                text.push('{');
                for (i, (key, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    let _ = write!(text, "{key}=\"{}\"", escape_label(value));
                }
                text.push('}');
            }
            let _ = writeln!(text, " {}", number(sample.value));
        }
    }
    text
}

/// A number as Prometheus writes it (`+Inf`, `-Inf`, `NaN`, else the shortest exact form).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

/// A label value escaped: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Help text escaped: backslash and line feed.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let metrics = Metrics::default();
        for ms in [0, 3, 3, 700, 120_000] {
            metrics.handler_duration.observe(Duration::from_millis(ms));
        }
        let (buckets, count, sum) = metrics.handler_duration.snapshot();
        assert_eq!(count, 5);
        assert_eq!(buckets.first(), Some(&(0.001, 1)));
        assert_eq!(buckets.iter().find(|(b, _)| *b == 0.005), Some(&(0.005, 3)));
        assert_eq!(buckets.iter().find(|(b, _)| *b == 1.0), Some(&(1.0, 4)));
        assert_eq!(buckets.iter().find(|(b, _)| *b == 60.0), Some(&(60.0, 4)));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 5)));
        assert!((sum - 120.706).abs() < 1e-9, "{sum}");
        // A value on a bound falls in that bucket (`le`).
        let h = Histogram::new(&HANDLER_BUCKETS);
        h.observe(Duration::from_millis(1));
        assert_eq!(h.snapshot().0.first(), Some(&(0.001, 1)));
    }

    #[test]
    fn the_text_format_escapes_labels_and_writes_help_and_type() {
        let metrics = Metrics::default();
        metrics.enqueued(3);
        metrics.dead_lettered(DeadLetterReason::InvalidData);
        let gauges = Gauges {
            pending: 7,
            ..Gauges::default()
        };
        let text = exposition(&families("q\"uo\\te\nd", &metrics, &gauges));
        assert!(text.contains("# TYPE protoqueue_tasks_enqueued_total counter\n"));
        assert!(text.contains("protoqueue_tasks_enqueued_total{queue=\"q\\\"uo\\\\te\\nd\"} 3\n"));
        assert!(text.contains(
            "protoqueue_tasks_dead_lettered_total{queue=\"q\\\"uo\\\\te\\nd\",reason=\"invalidData\"} 1\n"
        ));
        assert!(text.contains("protoqueue_tasks_pending{queue=\"q\\\"uo\\\\te\\nd\"} 7\n"));
        assert!(text.contains("le=\"+Inf\"} 0\n"));
        assert!(text.contains("# TYPE protoqueue_handler_duration_seconds histogram\n"));
        assert_eq!(reason_name(DeadLetterReason::Unspecified), "unspecified");
    }
}
