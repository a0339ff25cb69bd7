//! Looking up one task by its id (`getTask`), wherever it is: its record in the task history
//! (completed or dead-lettered, with `options.results`), its schedule (delayed), or its letter
//! on the dead-letter stream (dead-lettered, with or without history).

use serde_json::value::RawValue;

use super::{Ending, Record};
use crate::{
    dead_letters::stored::{self, Filter},
    envelope::DeadLetterReason,
    error::Result,
    nats::connection::Connection,
    observe::metrics::reason_name,
    schedules,
};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A delayed task not yet due.
    Delayed,
    /// Its handler succeeded.
    Completed,
    /// It failed for good; its letter is on the dead-letter stream.
    DeadLettered,
    /// It was cancelled (`cancel(id)`).
    Cancelled,
}

impl State {
    /// The name JavaScript sees.
    pub fn name(self) -> &'static str {
        match self {
            State::Delayed => "delayed",
            State::Completed => "completed",
            State::DeadLettered => "deadLettered",
            State::Cancelled => "cancelled",
        }
    }
}

/// A task as `getTask` describes it.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub id: String,
    pub state: State,
    /// Attempts made (none yet for a delayed task).
    pub attempts: u64,
    /// When it was enqueued, ms since the epoch (the producer's clock); when known.
    pub enqueued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// When a delayed task is due, ms since the epoch.
    pub run_at: Option<i64>,
    pub result: Option<Box<RawValue>>,
    pub result_error: Option<String>,
    pub error: Option<String>,
    /// Why it was dead-lettered.
    pub reason: Option<String>,
}

impl From<Record> for TaskInfo {
    fn from(record: Record) -> Self {
        TaskInfo {
            id: record.id,
            state: match record.state {
                Ending::Completed => State::Completed,
                Ending::DeadLettered => State::DeadLettered,
                Ending::Cancelled => State::Cancelled,
            },
            attempts: record.attempts,
            enqueued_at: Some(record.enqueued_at),
            started_at: Some(record.started_at),
            finished_at: Some(record.finished_at),
            run_at: None,
            result: record.result,
            result_error: record.result_error,
            error: record.error,
            reason: record.reason,
        }
    }
}

/// Task `id` as the server knows it; `None` when no record, schedule or letter has it (see the
/// module's documentation for which states need which option).
pub async fn get(connection: &Connection, id: &str) -> Result<Option<TaskInfo>> {
    crate::producer::validate_task_id(id)?;
    if let Some(record) = super::read(connection, id).await? {
        return Ok(Some(record.into()));
    }
    if let Some(info) = delayed(connection, id).await? {
        return Ok(Some(info));
    }
    dead_lettered(connection, id).await
}

/// The delayed task `id` whose schedule waits, with its due time.
async fn delayed(connection: &Connection, id: &str) -> Result<Option<TaskInfo>> {
    let config = connection.config();
    if !config.schedules {
        return Ok(None);
    }
    let stream = connection.task_stream().await?;
    let Some((schedule, run_at)) = schedules::delayed_schedule(&stream, config, id).await? else {
        return Ok(None);
    };
    let enqueued_at = crate::envelope::Task::decode_checked(&schedule.payload)
        .ok()
        .map(|task| task.enqueued_at_ms);
    Ok(Some(TaskInfo {
        id: id.to_owned(),
        state: State::Delayed,
        attempts: 0,
        enqueued_at,
        started_at: None,
        finished_at: None,
        run_at,
        result: None,
        result_error: None,
        error: None,
        reason: None,
    }))
}

/// The dead-lettered task `id`, from its letter (the newest, when it has several).
async fn dead_lettered(connection: &Connection, id: &str) -> Result<Option<TaskInfo>> {
    let filter = Filter {
        ids: Some([id.to_owned()].into()),
        ..Filter::default()
    };
    let letters = stored::find(connection, &filter, usize::MAX).await?;
    Ok(letters.into_iter().last().map(|stored| {
        let letter = stored.letter;
        let reason = DeadLetterReason::try_from(letter.reason).unwrap_or_default();
        TaskInfo {
            id: id.to_owned(),
            state: State::DeadLettered,
            attempts: u64::from(letter.attempts),
            enqueued_at: letter.task.as_ref().map(|task| task.enqueued_at_ms),
            started_at: None,
            finished_at: Some(letter.failed_at_ms),
            run_at: None,
            result: None,
            result_error: None,
            error: Some(letter.error),
            reason: Some(reason_name(reason).to_owned()),
        }
    }))
}
