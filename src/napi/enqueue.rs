//! Tasks to enqueue as the shim sends them, converted to the core's [`NewTask`]; and the
//! answer to one `enqueueEach` call.

use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, Either};
use napi_derive::napi;

use super::{
    errors::coded,
    settle::{NativeEnqueueFailure, NativeEnqueued},
};
use crate::{
    config::backoff::Backoff,
    envelope,
    error::{Error, Result},
    layout,
    producer::{self, NewTask},
    queue::Queue,
    schedules, trace_context,
};

/// A task to enqueue, as the shim sends it. (Its name, if any, travels beside it, in a `names`
/// argument: a task without one costs no more to convert than before names existed.)
#[napi(object)]
pub struct NativeTaskInput {
    /// The task's data as JSON text, or as bytes the queue's serializer encoded
    /// (`useSerializer`).
    pub data: Either<String, Buffer>,
    /// The task's metadata as JSON object text, if any.
    pub metadata: Option<String>,
    /// The producer's own task id.
    pub id: Option<String>,
    /// The task's own `maxRetries`.
    pub max_retries: Option<f64>,
    /// The task's own backoff object (`{ type, delay, maxDelay?, jitter? }`).
    pub backoff: Option<serde_json::Value>,
    /// Milliseconds from now before workers get the task.
    pub delay: Option<f64>,
    /// When workers get the task, ms since the epoch.
    pub run_at: Option<f64>,
    /// The W3C `traceparent` of the enqueueing code (dropped when not valid).
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that goes with it.
    pub tracestate: Option<String>,
    /// The task's priority, 1 (most urgent) to 10 (`options.priorities`).
    pub priority: Option<f64>,
    /// The subject the task is routed to, in the queue's subject tree.
    pub subject: Option<String>,
}

/// The answer to `enqueueEach` call `call`: the tasks converted (a task that does not convert
/// fails alone), the rest enqueued, one string of ids and the failures.
pub(super) async fn enqueue_each(
    queue: &Queue,
    call: u32,
    tasks: Vec<Either<String, NativeTaskInput>>,
    names: Option<Vec<Option<String>>>,
    content_type: Option<&str>,
) -> NativeEnqueued {
    let now = envelope::now_ms();
    let mut names = names.unwrap_or_default().into_iter();
    let mut results: Vec<Option<Result<String>>> = Vec::with_capacity(tasks.len());
    let mut valid = Vec::with_capacity(tasks.len());
    for task in tasks {
        let name = names.next().flatten();
        let task = match task {
            Either::A(data) => Ok(data_only_task(data)),
            Either::B(input) => new_task(input, name, content_type, now),
        };
        match task {
            Ok(task) => {
                valid.push(task);
                results.push(None);
            }
            Err(err) => results.push(Some(Err(err))),
        }
    }
    let mut answer = NativeEnqueued {
        call,
        ids: String::with_capacity(results.len() * 37),
        failures: None,
        error: None,
    };
    let mut enqueued = match queue.enqueue_each(valid).await {
        Ok(enqueued) => enqueued.into_iter(),
        Err(err) => {
            answer.error = Some(coded(&err));
            return answer;
        }
    };
    for (index, result) in results.into_iter().enumerate() {
        let result = result
            .or_else(|| enqueued.next())
            .unwrap_or_else(|| Err(Error::Nats("enqueue lost its result".into())));
        if index > 0 {
            answer.ids.push('\n');
        }
        match result {
            Ok(id) => answer.ids.push_str(&id),
            Err(err) => answer
                .failures
                .get_or_insert_with(Vec::new)
                .push(NativeEnqueueFailure {
                    index: index as u32,
                    error: coded(&err),
                }),
        }
    }
    answer
}

/// A task that is only its data (JSON text).
pub(super) fn data_only_task(data: String) -> NewTask {
    NewTask {
        data: Bytes::from(data.into_bytes()),
        ..Default::default()
    }
}

/// The task `input` (named `name`): JSON text, or bytes labelled `content_type` (the queue's
/// serializer's; bytes on a queue without one are an error).
pub(super) fn new_task(
    input: NativeTaskInput,
    name: Option<String>,
    content_type: Option<&str>,
    now_ms: i64,
) -> Result<NewTask> {
    let (data, content_type) = match (input.data, content_type) {
        (Either::A(text), _) => (Bytes::from(text.into_bytes()), None),
        (Either::B(bytes), Some(content_type)) => {
            (Bytes::from(bytes.to_vec()), Some(content_type.to_owned()))
        }
        (Either::B(_), None) => {
            return Err(Error::InvalidTask(
                "task data given as bytes needs a serializer (useSerializer)".into(),
            ))
        }
    };
    Ok(NewTask {
        run_at: schedules::run_at(input.delay, input.run_at, now_ms)?,
        data,
        content_type,
        name,
        metadata: input
            .metadata
            .map(|m| Bytes::from(m.into_bytes()))
            .unwrap_or_default(),
        id: input.id,
        max_retries: input
            .max_retries
            .map(producer::checked_max_retries)
            .transpose()?,
        backoff: input
            .backoff
            .filter(|b| !b.is_null())
            .map(|b| Backoff::from_json("task.backoff", &b, Error::InvalidTask))
            .transpose()?,
        trace: input.traceparent.and_then(|traceparent| {
            trace_context::checked(&traceparent, input.tracestate.as_deref())
        }),
        priority: input.priority.map(layout::priority_level).transpose()?,
        subject: input.subject,
    })
}

/// `err` about the `index`th task of a batch.
pub(super) fn at_index(index: usize, err: Error) -> Error {
    match err {
        Error::InvalidTask(message) => Error::InvalidTask(format!("tasks[{index}]: {message}")),
        other => other,
    }
}
