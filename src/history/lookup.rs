//! Looking up one task by its id (`getTask`), wherever it is: its record in the task history
//! (completed, dead-lettered or cancelled, with `options.results`), its schedule (delayed), its
//! message in the task stream (waiting or retrying; running when a live worker says it runs
//! it, with its progress: [`super::running`]), or its letter on the dead-letter stream
//! (dead-lettered, with or without history).

use serde_json::value::RawValue;

use super::{Ending, Record};
use crate::{
    cancelling::watch::RunningTask,
    config::Config,
    dead_letters::stored::{self, Filter},
    envelope::DeadLetterReason,
    envelope::Task,
    error::Result,
    nats::connection::Connection,
    observe::metrics::reason_name,
    schedules,
};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In the task stream, waiting for a worker.
    Waiting,
    /// A delayed task not yet due.
    Delayed,
    /// A handler runs it now.
    Running,
    /// An attempt failed; it waits for the next (`runAt`: not before then).
    Retrying,
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
            State::Waiting => "waiting",
            State::Delayed => "delayed",
            State::Running => "running",
            State::Retrying => "retrying",
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
    /// A running task's latest `task.progress(value)`, as JSON.
    pub progress: Option<Box<RawValue>>,
    /// Its priority level, on a queue with `options.priorities`.
    pub priority: Option<u8>,
    /// The task as it was stored (data, metadata, name), where the server still has it: in the
    /// task stream, its schedule, its letter, or a record kept with it.
    pub task: Option<Task>,
    /// Its data and metadata were dropped from its letter (to fit the server's `max_payload`).
    pub data_dropped: bool,
}

impl TaskInfo {
    /// This queued task, as the running attempt `running` makes it.
    pub(crate) fn run(&mut self, running: RunningTask) {
        self.state = State::Running;
        self.attempts = running.attempt;
        self.started_at = Some(running.started_at);
        self.progress = running.progress;
        self.enqueued_at = self.enqueued_at.or(Some(running.enqueued_at));
        self.priority = self.priority.or(running.priority);
    }

    /// A task of `state` known by its id alone; the other fields are filled by the caller.
    pub(crate) fn new(id: &str, state: State) -> Self {
        TaskInfo {
            id: id.to_owned(),
            state,
            attempts: 0,
            enqueued_at: None,
            started_at: None,
            finished_at: None,
            run_at: None,
            result: None,
            result_error: None,
            error: None,
            reason: None,
            progress: None,
            priority: None,
            task: None,
            data_dropped: false,
        }
    }
}

impl From<Record> for TaskInfo {
    fn from(record: Record) -> Self {
        let task = record.task();
        TaskInfo {
            id: record.id,
            state: match record.state {
                Ending::Completed => State::Completed,
                Ending::DeadLettered => State::DeadLettered,
                Ending::Cancelled => State::Cancelled,
                // Its outcome is to come ([`super::read`] never returns these).
                Ending::Requeued => State::Waiting,
            },
            attempts: record.attempts,
            enqueued_at: Some(record.enqueued_at),
            started_at: (record.started_at != super::NEVER_STARTED).then_some(record.started_at),
            finished_at: Some(record.finished_at),
            run_at: None,
            result: record.result,
            result_error: record.result_error,
            error: record.error,
            reason: record.reason,
            progress: None,
            priority: None,
            task,
            data_dropped: false,
        }
    }
}

/// Task `id` as the server knows it; `None` when no record, schedule, message or letter has it
/// (see the module's documentation for which states need which option). A task with its own id
/// is looked for in the stream first (its marker says where, at once): the id may have been
/// enqueued again since a record of its earlier task was written.
pub async fn get(connection: &Connection, id: &str) -> Result<Option<TaskInfo>> {
    crate::producer::validate_task_id(id)?;
    let generated = super::queued::made_at(id).is_some();
    if !generated {
        if let Some(info) = in_stream(connection, id).await? {
            return Ok(Some(info));
        }
    }
    if let Some(record) = super::read(connection, id).await? {
        return Ok(Some(record.into()));
    }
    if let Some(info) = delayed(connection, id).await? {
        return Ok(Some(info));
    }
    if generated {
        if let Some(info) = in_stream(connection, id).await? {
            return Ok(Some(info));
        }
    }
    dead_lettered(connection, id).await
}

/// Task `id` while the task stream holds it: running when a worker runs it, else retrying
/// (an attempt failed) or waiting.
async fn in_stream(connection: &Connection, id: &str) -> Result<Option<TaskInfo>> {
    let Some(queued) = super::queued::find(connection, id).await? else {
        return Ok(None);
    };
    let running = super::running::of(connection, id).await?;
    let since = queued.task.life_began();
    let mut info = queued_info(connection.config(), queued.task, &queued.subject);
    if let Some(latest) = running.into_iter().max_by_key(|running| running.started_at) {
        info.run(latest);
    } else if crate::cancelling::mark_of(connection, id)
        .await?
        .is_some_and(|mark| mark.covers(since))
    {
        // `cancel(id)` marked it: the worker that takes it ends it without running it.
        info.state = State::Cancelled;
    }
    Ok(Some(info))
}

/// A task the task stream holds on `subject`, as waiting or retrying (a worker may run it:
/// [`TaskInfo::run`]).
pub(crate) fn queued_info(config: &Config, task: Task, subject: &str) -> TaskInfo {
    let state = if task.attempts_made == 0 {
        State::Waiting
    } else {
        State::Retrying
    };
    let mut info = TaskInfo::new(&task.id, state);
    info.attempts = u64::from(task.attempts_made);
    info.enqueued_at = Some(task.enqueued_at_ms);
    info.run_at = (task.not_before_ms > 0).then_some(task.not_before_ms);
    info.error = task
        .failed_attempts
        .last()
        .map(|failed| failed.error.clone());
    info.priority = config
        .priorities
        .then(|| crate::layout::level_of(config, subject));
    info.task = Some(task);
    info
}

/// The delayed task `id` from its schedule's task (none when another tool's schedule holds
/// none), due at `run_at`.
pub(crate) fn delayed_info(id: &str, task: Option<Task>, run_at: Option<i64>) -> TaskInfo {
    let mut info = TaskInfo::new(id, State::Delayed);
    info.enqueued_at = task.as_ref().map(|task| task.enqueued_at_ms);
    info.run_at = run_at;
    info.task = task;
    info
}

/// The delayed task `id` whose schedule waits, with its due time.
async fn delayed(connection: &Connection, id: &str) -> Result<Option<TaskInfo>> {
    let config = connection.config();
    if !config.schedules {
        return Ok(None);
    }
    let stream = connection.task_stream().await?;
    let found = schedules::delayed_schedule(&stream, config, id).await?;
    Ok(found.map(|(schedule, run_at)| {
        delayed_info(id, Task::decode_checked(&schedule.payload).ok(), run_at)
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
        let mut info = TaskInfo::new(id, State::DeadLettered);
        info.attempts = u64::from(letter.attempts);
        info.enqueued_at = letter.task.as_ref().map(|task| task.enqueued_at_ms);
        info.finished_at = Some(letter.failed_at_ms);
        info.data_dropped = crate::dead_letters::write::data_was_dropped(&letter);
        info.error = Some(letter.error);
        info.reason = Some(reason_name(reason).to_owned());
        info.task = letter.task;
        info
    }))
}
