//! Dead letters as JavaScript sees them: reading, filtering, progress of a requeue or purge,
//! and the dead-letter worker's handler (`processDLQ()`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use napi::{
    bindgen_prelude::{Buffer, Promise},
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
    Status,
};
use napi_derive::napi;

use super::worker::{outcome_of, NativeFailure, NativeOutcome};
use crate::{
    content_type,
    dead_letters::{
        redrive::{Filter, Progress},
        stored::StoredDeadLetter,
        write as dead_letter,
    },
    envelope::{DeadLetterReason, Task},
    error::{Error, Result},
    worker::{
        executor::{BoxFuture, Failure, Outcome},
        handoff,
        letters::{LetterAttempt, LetterHandler},
    },
};

/// A task as a dead letter carries it. Its data and metadata come as JSON text when they are
/// JSON (a JSON object for the metadata), else as their bytes.
#[napi(object)]
pub struct NativeTask {
    /// The task id.
    pub id: String,
    /// The data as JSON text, when it is JSON.
    pub data: Option<String>,
    /// The data's bytes, when they are not JSON (and were not dropped).
    pub raw_data: Option<Buffer>,
    /// How the data is encoded, as the producer said (`application/json` from JavaScript).
    pub content_type: String,
    /// The task's name, when it has one.
    pub name: Option<String>,
    /// The user's metadata as JSON object text, when there is metadata and it is one.
    pub metadata: Option<String>,
    /// The metadata's bytes, when they are not a JSON object.
    pub raw_metadata: Option<Buffer>,
    /// The data and metadata were dropped to fit the server's `max_payload`.
    pub data_dropped: bool,
    /// Enqueue time, ms since the epoch.
    pub timestamp: f64,
    /// Which delivery this is, from 1.
    pub attempt: u32,
    /// The most deliveries the task gets.
    pub max_attempts: u32,
}

/// A dead letter as `getDeadLetters()` returns it before the shim decodes the JSON.
#[napi(object)]
pub struct NativeDeadLetter {
    /// The task, when the original message was a valid envelope.
    pub task: Option<NativeTask>,
    /// The original bytes, when it was not.
    pub raw: Option<Buffer>,
    /// `retriesExhausted`, `rejected`, `invalidEnvelope`, `invalidData`, `deliveriesExhausted`
    /// or `unspecified`.
    pub reason: String,
    /// The last error message.
    pub error: String,
    /// The handler's `details` as JSON text, when they are JSON.
    pub details: Option<String>,
    /// The stored details' bytes, when they are not JSON.
    pub raw_details: Option<Buffer>,
    /// How many times the task was delivered.
    pub attempts: u32,
    /// When it was dead-lettered, ms since the epoch.
    pub failed_at: f64,
    /// Its sequence number in the dead-letter stream.
    pub stream_sequence: f64,
}

/// Which dead letters `requeueDeadLetters`/`purgeDeadLetters` act on (checked by the shim).
#[napi(object)]
pub struct NativeLetterFilter {
    /// Only the letters stored at these sequences of the dead-letter stream.
    pub sequences: Option<Vec<f64>>,
    /// Only the letters of these task ids.
    pub ids: Option<Vec<String>>,
    /// Only the letters with this reason.
    pub reason: Option<String>,
    /// At most this many letters, oldest first.
    pub limit: Option<f64>,
}

/// How far a dead-letter requeue or purge is.
#[napi(object)]
pub struct NativeProgress {
    /// Letters looked at so far.
    pub seen: f64,
    /// Letters stored when the operation began.
    pub total: f64,
    /// Letters acted on (requeued or removed) so far.
    pub done: f64,
}

/// Dead-letter reasons by the names JavaScript sees.
const REASONS: [(&str, DeadLetterReason); 5] = crate::observe::metrics::DEAD_LETTER_REASONS;

fn reason_named(name: &str) -> Option<DeadLetterReason> {
    REASONS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, reason)| *reason)
}

pub(super) fn native_task(
    task: Task,
    attempt: u64,
    max_attempts: u64,
    data_dropped: bool,
) -> NativeTask {
    // Data of another content type is handed over as bytes, even when they happen to be JSON.
    let data = (!data_dropped && content_type::is_json(&task.content_type))
        .then(|| handoff::json_text(&task.data).map(str::to_owned))
        .flatten();
    let raw_data = (!data_dropped && data.is_none()).then(|| Buffer::from(task.data.to_vec()));
    let metadata = handoff::json_text(&task.metadata)
        .filter(|text| text.trim_start().starts_with('{'))
        .map(str::to_owned);
    let raw_metadata = (metadata.is_none() && !task.metadata.is_empty())
        .then(|| Buffer::from(task.metadata.to_vec()));
    NativeTask {
        id: task.id,
        data,
        raw_data,
        content_type: task.content_type,
        name: (!task.name.is_empty()).then_some(task.name),
        metadata,
        raw_metadata,
        data_dropped,
        timestamp: task.enqueued_at_ms as f64,
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
    }
}

/// `stored` as JavaScript sees it.
pub(super) fn native_dead_letter(stored: StoredDeadLetter) -> NativeDeadLetter {
    let letter = stored.letter;
    let reason = REASONS
        .iter()
        .find(|(_, reason)| *reason == letter.reason())
        .map_or("unspecified", |(name, _)| name);
    let attempts = u64::from(letter.attempts);
    let data_dropped = dead_letter::data_was_dropped(&letter);
    let details = handoff::json_text(&letter.details).map(str::to_owned);
    let raw_details = (details.is_none() && !letter.details.is_empty())
        .then(|| Buffer::from(letter.details.to_vec()));
    NativeDeadLetter {
        task: letter
            .task
            .map(|task| native_task(task, attempts, attempts, data_dropped)),
        raw: (!letter.raw.is_empty()).then(|| Buffer::from(letter.raw.to_vec())),
        reason: reason.into(),
        error: letter.error,
        details,
        raw_details,
        attempts: letter.attempts,
        failed_at: letter.failed_at_ms as f64,
        stream_sequence: stored.sequence as f64,
    }
}

/// The filter the shim checked, as the core takes it.
pub(super) fn letter_filter(filter: NativeLetterFilter) -> Result<Filter> {
    let reason = match filter.reason.as_deref() {
        None => None,
        Some(name) => Some(reason_named(name).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "filter.reason {name:?} is not a dead-letter reason ({})",
                REASONS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
    };
    Ok(Filter {
        sequences: filter
            .sequences
            .map(|sequences| sequences.into_iter().map(|n| n as u64).collect()),
        ids: filter.ids.map(|ids| ids.into_iter().collect()),
        reason,
        limit: filter.limit.map(|limit| limit as u64),
    })
}

/// The least time between two progress calls to JavaScript.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// A progress callback called at most every [`PROGRESS_INTERVAL`] (the first report and the last
/// one, when everything was looked at, always go through), without waiting for JavaScript.
pub(super) struct Throttled {
    function: Option<ThreadsafeFunction<NativeProgress, (), NativeProgress, Status, false>>,
    last: Mutex<Option<Instant>>,
}

impl Throttled {
    pub(super) fn new(
        function: Option<ThreadsafeFunction<NativeProgress, (), NativeProgress, Status, false>>,
    ) -> Self {
        Throttled {
            function,
            last: Mutex::new(None),
        }
    }

    pub(super) fn call(&self, status: Progress) {
        let Some(function) = &self.function else {
            return;
        };
        let finished = status.seen >= status.total;
        {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            if !finished && last.is_some_and(|at| now.duration_since(at) < PROGRESS_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        let progress = NativeProgress {
            seen: status.seen as f64,
            total: status.total as f64,
            done: status.done as f64,
        };
        function.call(progress, ThreadsafeFunctionCallMode::NonBlocking);
    }
}

/// Calls the shim's dead-letter function on the JavaScript thread, one letter per call (dead
/// letters are few; each call's cost does not matter here).
pub(super) struct JsLetters {
    pub(super) function: Arc<
        ThreadsafeFunction<
            NativeDeadLetter,
            Promise<NativeOutcome>,
            NativeDeadLetter,
            Status,
            false,
        >,
    >,
}

impl LetterHandler for JsLetters {
    fn handle(&self, attempt: LetterAttempt) -> BoxFuture<Outcome> {
        let function = self.function.clone();
        let letter = native_dead_letter(attempt.letter);
        Box::pin(async move {
            // `_catch`: a synchronous throw becomes an `Err` instead of a fatal exception.
            let result = match function.call_async_catch(letter).await {
                Ok(promise) => promise.await,
                Err(err) => Err(err),
            };
            match result {
                Ok(outcome) if outcome.success => Outcome::Success,
                Ok(outcome) => outcome_of(NativeFailure {
                    token: 0,
                    error: outcome.error,
                    details: outcome.details,
                    retry: outcome.retry,
                    retry_delay: None,
                    invalid_data: None,
                }),
                Err(err) => {
                    Outcome::Failure(Failure::new(format!("handler failed: {}", err.reason)))
                }
            }
        })
    }
}
