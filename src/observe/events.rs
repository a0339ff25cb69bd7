//! Events for the `Protoqueue` object's listeners: what happened to each attempt (`completed`,
//! `failed`, `deadLettered`) and connection trouble (`error`).
//!
//! Nothing is recorded for a kind nobody listens to: the JavaScript side sets the [`mask`](Events::set_mask)
//! from its listeners, and a worker with none pays one atomic load per settled attempt. Recorded
//! events wait in a buffer; the sink (a call into JavaScript, tens of microseconds each) is woken
//! [`WAKE_DELAY`] after the buffer turns non-empty and takes everything buffered by then, so a
//! busy worker crosses once per batch of events, not once per event.

use std::sync::{
    atomic::{AtomicU32, AtomicU64, Ordering},
    Arc, Mutex, MutexGuard, PoisonError,
};

use serde::Serialize;

/// `completed` in the mask.
pub const COMPLETED: u32 = 1;
/// `failed` in the mask.
pub const FAILED: u32 = 2;
/// `deadLettered` in the mask.
pub const DEAD_LETTERED: u32 = 4;
/// `error` in the mask.
pub const ERROR: u32 = 8;
/// `progress` in the mask.
pub const PROGRESS: u32 = 16;
/// `cancelled` in the mask.
pub const CANCELLED: u32 = 32;
/// The kinds a worker's events may be heard by other processes in ([`super::remote`]): all but
/// `error`, which is each object's own connection trouble.
pub const QUEUE_KINDS: u32 = COMPLETED | FAILED | DEAD_LETTERED | PROGRESS | CANCELLED;

/// How long after the first waiting event the sink is woken: the events of that time go together.
pub const WAKE_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// The most events kept while the sink does not take them (JavaScript blocked); later ones are
/// dropped and counted.
pub const MAX_BUFFERED: usize = 100_000;

/// One event, as JSON the JavaScript side emits as it is (the `type` names the event).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Event {
    /// A handler succeeded and the task was acked.
    #[serde(rename = "completed", rename_all = "camelCase")]
    Completed {
        #[serde(flatten)]
        attempt: AttemptInfo,
        #[serde(flatten)]
        timing: Timing,
    },
    /// An attempt failed; `will_retry` says whether another follows.
    #[serde(rename = "failed", rename_all = "camelCase")]
    Failed {
        #[serde(flatten)]
        attempt: AttemptInfo,
        #[serde(flatten)]
        timing: Timing,
        error: String,
        will_retry: bool,
        /// The wait before the next attempt, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_delay_ms: Option<f64>,
    },
    /// A task (or a message that is no task: no id) was stored on the dead-letter stream.
    #[serde(rename = "deadLettered", rename_all = "camelCase")]
    DeadLettered {
        #[serde(flatten)]
        attempt: AttemptInfo,
        reason: &'static str,
        error: String,
    },
    /// A handler reported its task's progress (`task.progress(value)`).
    #[serde(rename = "progress", rename_all = "camelCase")]
    Progress {
        id: String,
        /// The value, as JSON (a number, an object or an array).
        progress: RawJson,
    },
    /// A task was cancelled (`cancel(id)`): refused when taken, or stopped while it ran.
    #[serde(rename = "cancelled", rename_all = "camelCase")]
    Cancelled {
        #[serde(flatten)]
        attempt: AttemptInfo,
    },
    /// An event another process's worker recorded, as the row it sent ([`Events::push_rows`]).
    #[serde(skip)]
    Heard(RawJson),
    /// Connection trouble; the client keeps reconnecting.
    #[serde(rename = "error", rename_all = "camelCase")]
    Error {
        /// A stable code (`ERR_PQ_DISCONNECTED`, `ERR_PQ_RECONNECT_REFUSED`, `ERR_PQ_SERVER`,
        /// `ERR_PQ_NATS`, `ERR_PQ_SLOW_CONSUMER`).
        code: &'static str,
        message: String,
    },
}

/// JSON text kept as it came (compared by its text).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// Which attempt an event is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptInfo {
    /// The task id; `None` for a message that is not a task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Which delivery, from 1.
    pub attempt: u64,
    /// The most deliveries the task gets (0 when unknown).
    pub max_attempts: u64,
    /// The message's sequence number in the task stream.
    pub sequence: u64,
}

/// How long an attempt took and waited, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    /// The handler's run time.
    pub duration_ms: f64,
    /// From enqueue to the handler's start.
    pub wait_ms: f64,
    /// From enqueue to the outcome.
    pub since_enqueue_ms: f64,
}

impl Event {
    /// Appends the event as a JSON array:
    /// - `completed`: `[1, id, attempt, maxAttempts, sequence, durationMs, waitMs, sinceEnqueueMs]`
    /// - `failed`: `[2, (the same seven), error, willRetry, retryDelayMs | null]`
    /// - `deadLettered`: `[4, id | null, attempt, maxAttempts, sequence, reason, error]`
    /// - `error`: `[8, code, message]`
    /// - `progress`: `[16, id, progress]`
    /// - `cancelled`: `[32, id, attempt, maxAttempts, sequence]`
    /// - one heard from another process: its row as it came
    pub fn write_row(&self, out: &mut String) {
        use std::fmt::Write as _;
        let text = |value: &str| serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into());
        let attempt = |out: &mut String, kind: u32, info: &AttemptInfo| {
            let id = info.id.as_deref().map_or_else(|| "null".into(), text);
            let _ = write!(
                out,
                "[{kind},{id},{},{},{}",
                info.attempt, info.max_attempts, info.sequence
            );
        };
        let timing = |out: &mut String, timing: &Timing| {
            let _ = write!(
                out,
                ",{},{},{}",
                timing.duration_ms, timing.wait_ms, timing.since_enqueue_ms
            );
        };
        match self {
            Event::Completed {
                attempt: info,
                timing: t,
            } => {
                attempt(out, COMPLETED, info);
                timing(out, t);
            }
            Event::Failed {
                attempt: info,
                timing: t,
                error,
                will_retry,
                retry_delay_ms,
            } => {
                attempt(out, FAILED, info);
                timing(out, t);
                let _ = write!(out, ",{},{will_retry},", text(error));
                match retry_delay_ms {
                    Some(ms) => {
                        let _ = write!(out, "{ms}");
                    }
                    None => out.push_str("null"),
                }
            }
            Event::DeadLettered {
                attempt: info,
                reason,
                error,
            } => {
                attempt(out, DEAD_LETTERED, info);
                let _ = write!(out, ",{},{}", text(reason), text(error));
            }
            Event::Error { code, message } => {
                let _ = write!(out, "[{ERROR},{},{}", text(code), text(message));
            }
            Event::Progress { id, progress } => {
                let _ = write!(out, "[{PROGRESS},{},{}", text(id), progress.0.get());
            }
            Event::Cancelled { attempt: info } => attempt(out, CANCELLED, info),
            Event::Heard(row) => {
                out.push_str(row.0.get());
                return;
            }
        }
        out.push(']');
    }
}

type Sink = Arc<dyn Fn() + Send + Sync>;

/// The event buffer of one queue object.
#[derive(Default)]
pub struct Events {
    mask: AtomicU32,
    buffer: Mutex<Vec<Event>>,
    sink: Mutex<Option<Sink>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("mask", &self.mask.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Whether anyone listens to events of `kind` (one of the mask bits).
    #[inline]
    pub fn wants(&self, kind: u32) -> bool {
        self.mask.load(Ordering::Relaxed) & kind != 0
    }

    /// Which kinds are recorded now.
    pub fn mask(&self) -> u32 {
        self.mask.load(Ordering::Relaxed)
    }

    /// Which kinds are recorded from now on.
    pub fn set_mask(&self, mask: u32) {
        self.mask.store(mask, Ordering::Relaxed);
    }

    /// Where to signal that events wait: called (from any thread) [`WAKE_DELAY`] after the buffer
    /// turns non-empty; it must not block, and should lead to [`Events::take`].
    pub fn set_sink(&self, sink: impl Fn() + Send + Sync + 'static) {
        *lock(&self.sink) = Some(Arc::new(sink));
    }

    /// Records nothing more, drops what waits and the sink: the queue object is gone (its
    /// worker may still run, and must not fill a buffer nobody takes).
    pub fn detach(&self) {
        self.set_mask(0);
        *lock(&self.sink) = None;
        lock(&self.buffer).clear();
    }

    /// Records `event` if its kind is wanted (`kind` is its mask bit).
    pub fn push(&self, kind: u32, event: impl FnOnce() -> Event) {
        if !self.wants(kind) {
            return;
        }
        let first = {
            let mut buffer = lock(&self.buffer);
            if buffer.len() >= MAX_BUFFERED {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "{MAX_BUFFERED} events wait for their listeners (is the event loop \
                         blocked?); dropping new events until they are taken"
                    );
                }
                return;
            }
            buffer.push(event());
            buffer.len() == 1
        };
        if first {
            let Some(sink) = lock(&self.sink).clone() else {
                return;
            };
            // Outside a runtime (unit tests) there is nothing to wait on: wake at once.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        tokio::time::sleep(WAKE_DELAY).await;
                        sink();
                    });
                }
                Err(_) => sink(),
            }
        }
    }

    /// Records the rows another process's worker sent ([`Event::write_row`]'s form, one JSON
    /// array of them), those of a wanted kind; a text that is not such rows is skipped.
    pub fn push_rows(&self, rows: &[u8]) {
        let rows: Vec<Box<serde_json::value::RawValue>> = match serde_json::from_slice(rows) {
            Ok(rows) => rows,
            Err(err) => {
                tracing::debug!("skipping event rows that are not rows: {err}");
                return;
            }
        };
        for row in rows {
            let kind = row_kind(&row);
            if kind.is_power_of_two() && kind & QUEUE_KINDS == kind {
                self.push(kind, || Event::Heard(RawJson(row)));
            }
        }
    }

    /// Everything buffered, oldest first.
    pub fn take(&self) -> Vec<Event> {
        let taken = std::mem::take(&mut *lock(&self.buffer));
        self.dropped.store(0, Ordering::Relaxed);
        taken
    }

    /// [`Events::take`] as one JSON array of rows, the form JavaScript takes (a row parses about
    /// twice as fast as an object with its keys): `[kind, ...fields]` with `kind` the event's
    /// mask bit, fields in the order of [`Event::write_row`].
    pub fn take_rows(&self) -> String {
        let events = self.take();
        let mut rows = String::with_capacity(events.len() * 96 + 2);
        rows.push('[');
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                rows.push(',');
            }
            event.write_row(&mut rows);
        }
        rows.push(']');
        rows
    }

    /// [`Events::take`] as JSON arrays of rows of at most about `limit` bytes each (a row larger
    /// than that goes alone): what is sent to other processes in messages of bounded size.
    pub fn take_row_chunks(&self, limit: usize) -> Vec<String> {
        let mut chunks = Vec::new();
        let mut chunk = String::from("[");
        for event in self.take() {
            let mut row = String::new();
            event.write_row(&mut row);
            if chunk.len() > 1 && chunk.len() + row.len() + 2 > limit {
                chunk.push(']');
                chunks.push(std::mem::replace(&mut chunk, String::from("[")));
            }
            if chunk.len() > 1 {
                chunk.push(',');
            }
            chunk.push_str(&row);
        }
        if chunk.len() > 1 {
            chunk.push(']');
            chunks.push(chunk);
        }
        chunks
    }

    /// [`Events::take`] as one JSON array of objects (`{"type": ..., ...}`).
    pub fn take_json(&self) -> String {
        let events = self.take();
        serde_json::to_string(&events).unwrap_or_else(|err| {
            tracing::warn!("events not serializable: {err}");
            "[]".into()
        })
    }
}

/// The kind of a row (its first element); 0 for a row that is not one.
fn row_kind(row: &serde_json::value::RawValue) -> u32 {
    let text = row.get();
    let Some(rest) = text.strip_prefix('[') else {
        return 0;
    };
    let end = rest.find([',', ']']).unwrap_or(rest.len());
    rest[..end].trim().parse().unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(n: u64) -> Event {
        Event::Completed {
            attempt: AttemptInfo {
                id: Some(format!("t{n}")),
                attempt: 1,
                max_attempts: 3,
                sequence: n,
            },
            timing: Timing::default(),
        }
    }

    #[test]
    fn rows_heard_from_other_processes_keep_the_wanted_kinds_of_their_queue_only() {
        let events = Events::default();
        events.set_mask(COMPLETED | PROGRESS | ERROR);
        // Completed, progress, an error (never another process's), failed (not wanted), junk.
        events.push_rows(br#"[[1,"a",1,1,7,0.5,0,0.5],[16,"b",{"n":1}],[8,"ERR_PQ_X","no"],[2,"c"],[3,"d"],["x"],7]"#);
        events.push_rows(b"not json");
        events.push_rows(b"{\"an\":\"object\"}");
        assert_eq!(
            events.take_rows(),
            r#"[[1,"a",1,1,7,0.5,0,0.5],[16,"b",{"n":1}]]"#
        );
    }

    #[test]
    fn rows_go_out_in_chunks_of_bounded_size() {
        let events = Events::default();
        events.set_mask(COMPLETED);
        for n in 0..100 {
            events.push(COMPLETED, || completed(n));
        }
        let chunks = events.take_row_chunks(1_000);
        assert!(chunks.len() > 2, "{}", chunks.len());
        let mut total = 0;
        for chunk in &chunks {
            assert!(chunk.len() <= 1_000, "{}", chunk.len());
            let rows: Vec<serde_json::Value> = serde_json::from_str(chunk).expect("rows");
            total += rows.len();
        }
        assert_eq!(total, 100);
        assert!(events.take_row_chunks(1_000).is_empty());
    }

    #[test]
    fn nothing_is_recorded_without_listeners_and_the_sink_is_woken_once_per_batch() {
        let events = Arc::new(Events::default());
        let wakes = Arc::new(AtomicU64::new(0));
        let counted = wakes.clone();
        events.set_sink(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let mut built = 0;
        events.push(COMPLETED, || {
            built += 1;
            completed(0)
        });
        assert_eq!(built, 0, "no event built without a listener");
        events.set_mask(COMPLETED | ERROR);
        events.push(FAILED, || completed(0));
        for n in 1..=3 {
            events.push(COMPLETED, || completed(n));
        }
        assert_eq!(wakes.load(Ordering::Relaxed), 1);
        let json: serde_json::Value = serde_json::from_str(&events.take_json()).expect("json");
        assert_eq!(json.as_array().map(Vec::len), Some(3));
        assert_eq!(json[0]["type"], "completed");
        assert_eq!(json[0]["id"], "t1");
        assert_eq!(json[0]["maxAttempts"], 3);
        assert_eq!(json[0]["durationMs"], 0.0);
        events.push(COMPLETED, || completed(4));
        assert_eq!(wakes.load(Ordering::Relaxed), 2, "woken again once emptied");

        // Detached (the queue object is gone): nothing kept, nobody woken.
        events.detach();
        events.push(COMPLETED, || completed(5));
        assert!(events.take().is_empty());
        assert_eq!(wakes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn rows_carry_every_field_in_order() {
        let events = Events::default();
        events.set_mask(COMPLETED | FAILED | DEAD_LETTERED | ERROR);
        let info = AttemptInfo {
            id: Some("a\"b".into()),
            attempt: 2,
            max_attempts: 3,
            sequence: 9,
        };
        let timing = Timing {
            duration_ms: 1.5,
            wait_ms: 0.25,
            since_enqueue_ms: 1.75,
        };
        events.push(COMPLETED, || Event::Completed {
            attempt: info.clone(),
            timing,
        });
        events.push(FAILED, || Event::Failed {
            attempt: info.clone(),
            timing,
            error: "e\n".into(),
            will_retry: true,
            retry_delay_ms: Some(10.0),
        });
        events.push(FAILED, || Event::Failed {
            attempt: info.clone(),
            timing,
            error: String::new(),
            will_retry: false,
            retry_delay_ms: None,
        });
        events.push(DEAD_LETTERED, || Event::DeadLettered {
            attempt: AttemptInfo {
                id: None,
                ..info.clone()
            },
            reason: "invalidEnvelope",
            error: "x".into(),
        });
        events.push(ERROR, || Event::Error {
            code: "ERR_PQ_DISCONNECTED",
            message: "lost".into(),
        });
        let rows: serde_json::Value = serde_json::from_str(&events.take_rows()).expect("json");
        assert_eq!(
            rows,
            serde_json::json!([
                [1, "a\"b", 2, 3, 9, 1.5, 0.25, 1.75],
                [2, "a\"b", 2, 3, 9, 1.5, 0.25, 1.75, "e\n", true, 10],
                [2, "a\"b", 2, 3, 9, 1.5, 0.25, 1.75, "", false, null],
                [4, null, 2, 3, 9, "invalidEnvelope", "x"],
                [8, "ERR_PQ_DISCONNECTED", "lost"],
            ])
        );
        assert_eq!(events.take_rows(), "[]");
    }

    #[test]
    fn a_full_buffer_drops_new_events() {
        let events = Events::default();
        events.set_mask(ERROR);
        for _ in 0..MAX_BUFFERED + 5 {
            events.push(ERROR, || Event::Error {
                code: "ERR_PQ_DISCONNECTED",
                message: String::new(),
            });
        }
        assert_eq!(events.take().len(), MAX_BUFFERED);
        assert!(events.take().is_empty());
    }
}
