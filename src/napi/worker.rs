//! The worker's JavaScript end: batches of tasks handed to the shim's dispatcher, and the
//! outcomes the shim reports, converted.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use napi::{
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
    Status,
};
use napi_derive::napi;

use super::errors::to_js;
use crate::{
    config::MAX_DURATION_MS,
    content_type::Accepted,
    error::Error,
    queue::Queue,
    worker::{
        abort::AbortReason,
        batching::{BatchSink, PendingOutcomes, Taken},
        executor::{Attempt, BoxFuture, Failure, Outcome},
        handoff,
    },
};

/// A success that returned a result, as the shim reports it (only on a queue that keeps
/// results).
#[napi(object)]
pub struct NativeReturned {
    /// The token of the attempt (from the batch it came in).
    pub token: u32,
    /// The handler's `result` (or `details`) as JSON text.
    pub result: Option<String>,
    /// Why the handler's value has no JSON text (a cycle, a BigInt…).
    pub result_error: Option<String>,
}

/// A failed attempt as the shim reports it: the handler's result (normalised) or what it threw.
#[napi(object)]
pub struct NativeFailure {
    /// The token of the attempt (from the batch it came in).
    pub token: u32,
    /// The error message.
    pub error: Option<String>,
    /// `details` as JSON object text.
    pub details: Option<String>,
    /// `false` dead-letters a failure without further attempts.
    pub retry: Option<bool>,
    /// The wait before the next attempt in ms, from the worker's `backoff` function; absent:
    /// the task's or the queue's backoff decides.
    pub retry_delay: Option<f64>,
    /// The task's data could not be decoded: dead-lettered at once as `invalidData`.
    pub invalid_data: Option<bool>,
}

/// A handler's result as the shim normalised it.
#[napi(object)]
pub struct NativeOutcome {
    pub success: bool,
    /// The error message of a failure.
    pub error: Option<String>,
    /// `details` as JSON object text.
    pub details: Option<String>,
    /// `false`: do not offer again.
    pub retry: Option<bool>,
}

/// Hands batches of tasks to the shim's dispatch function on the JavaScript thread, as one JSON
/// text each ([`handoff`]). The shim runs at most `limit` (`batchSize`) at once and queues the
/// rest, so the worker hands over prefetched tasks as they arrive: when a handler finishes, the
/// next task starts on the JavaScript thread without waiting for a round trip through Rust.
pub(super) struct JsDispatch {
    pub(super) function: Arc<ThreadsafeFunction<String, (), String, Status, false>>,
    pub(super) limit: u32,
    /// The content types besides JSON the shim decodes.
    pub(super) accepted: Arc<Accepted>,
}

impl BatchSink for JsDispatch {
    type Item = (u32, String);

    fn item(&self, token: u32, attempt: Attempt) -> Result<(u32, String), Outcome> {
        match handoff::task_json(&attempt, &self.accepted) {
            Ok(json) => Ok((token, json)),
            Err(failure) => Err(Outcome::InvalidData(failure)),
        }
    }

    fn queues_attempts(&self) -> bool {
        true
    }

    fn send(&self, batch: Vec<(u32, String)>, taken: Taken) {
        // A throw from the shim arrives as an `Err` instead of a fatal exception. When the call
        // cannot be queued (the environment is closing), `taken` is dropped: the batch fails.
        self.function.call_with_return_value(
            handoff::batch_json(self.limit, &batch),
            ThreadsafeFunctionCallMode::NonBlocking,
            move |result: napi::Result<()>, _| {
                taken.report(result.map_err(|err| format!("handler failed: {}", err.reason)));
                Ok(())
            },
        );
    }

    fn abort(&self, aborted: Vec<(u32, AbortReason)>) {
        let call = self.function.call(
            handoff::abort_json(&aborted),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
        if call != Status::Ok {
            // Only when the environment is going away: no handler is left to stop.
            tracing::debug!(?call, "an abort could not reach JavaScript");
        }
    }

    fn close(&self) -> BoxFuture<Result<(), String>> {
        let function = self.function.clone();
        Box::pin(async move {
            function
                .call_async_catch(handoff::CLOSE_JSON.to_owned())
                .await
                .map_err(|err| format!("dispatcher not closed: {}", err.reason))
        })
    }
}

/// Takes what a dispatcher reported: the attempts whose handler started (first, so one report
/// may start and settle an attempt), those that succeeded, returned a result, or failed.
pub(super) fn report(
    outcomes: &PendingOutcomes,
    succeeded: &[u32],
    failed: Vec<NativeFailure>,
    started: Option<&[u32]>,
    returned: Option<Vec<NativeReturned>>,
) {
    for &token in started.unwrap_or_default() {
        outcomes.started(token);
    }
    for &token in succeeded {
        outcomes.complete(token, Outcome::Success);
    }
    for returned in returned.into_iter().flatten() {
        let result = match (returned.result, returned.result_error) {
            (Some(json), _) => Ok(json),
            (None, why) => {
                Err(why.unwrap_or_else(|| "the handler's result has no JSON form".into()))
            }
        };
        outcomes.complete(returned.token, Outcome::Returned(result));
    }
    for failure in failed {
        outcomes.complete(failure.token, outcome_of(failure));
    }
}

/// A handler's progress on task `id` (`task.progress(value)`), as JSON text.
pub(super) fn progress(queue: &Queue, id: &str, json: String) -> napi::Result<()> {
    let progress = serde_json::value::RawValue::from_string(json).map_err(|err| {
        to_js(Error::InvalidTask(format!(
            "a task's progress must be JSON: {err}"
        )))
    })?;
    queue.progress(id, &progress);
    Ok(())
}

/// A failure the shim reported, as the executor takes it.
pub(super) fn outcome_of(failure: NativeFailure) -> Outcome {
    let invalid_data = failure.invalid_data == Some(true);
    let failure = Failure {
        error: failure
            .error
            .unwrap_or_else(|| "handler returned { success: false }".into()),
        details: failure
            .details
            .map(|d| Bytes::from(d.into_bytes()))
            .unwrap_or_default(),
        retry: failure.retry.unwrap_or(true),
        retry_delay: failure
            .retry_delay
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_millis((ms as u64).min(MAX_DURATION_MS))),
    };
    if invalid_data {
        Outcome::InvalidData(failure)
    } else {
        Outcome::Failure(failure)
    }
}
