//! Queue statistics as `getStats()` returns them.

use napi_derive::napi;

use crate::{admin::stats::Stats, history::lookup::TaskInfo, presence::WorkerRecord};

/// Queue statistics.
#[napi(object)]
pub struct NativeStats {
    pub messages: i64,
    pub bytes: i64,
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub consumer_count: i64,
    pub pending: i64,
    pub in_flight: i64,
    pub redelivered: i64,
    pub dead_lettered: i64,
    pub paused: bool,
    pub delayed: i64,
    pub recurring: i64,
    /// Tasks not yet delivered per priority level, 1 first (`options.priorities`); else empty.
    pub pending_by_priority: Vec<i64>,
    /// Workers running now, in any process.
    pub workers: i64,
    /// Records kept in the task history: completed, dead-lettered and cancelled tasks.
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// A live worker, as `getWorkers()` returns it.
#[napi(object)]
pub struct NativeWorker {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub kind: String,
    pub subjects: Option<Vec<String>>,
    pub started_at: i64,
    pub seen_at: i64,
    pub batch_size: u32,
    pub in_flight: i64,
    pub completed: i64,
    pub failed: i64,
    pub version: String,
}

impl From<WorkerRecord> for NativeWorker {
    fn from(w: WorkerRecord) -> Self {
        NativeWorker {
            id: w.id,
            host: w.host,
            pid: w.pid,
            kind: w.kind,
            subjects: w.subjects,
            started_at: w.started_at,
            seen_at: w.seen_at,
            batch_size: w.batch_size,
            in_flight: w.in_flight as i64,
            completed: w.completed as i64,
            failed: w.failed as i64,
            version: w.version,
        }
    }
}

impl From<Stats> for NativeStats {
    fn from(s: Stats) -> Self {
        let n = |v: u64| v as i64;
        NativeStats {
            messages: n(s.messages),
            bytes: n(s.bytes),
            first_sequence: n(s.first_sequence),
            last_sequence: n(s.last_sequence),
            consumer_count: n(s.consumer_count),
            pending: n(s.pending),
            in_flight: n(s.in_flight),
            redelivered: n(s.redelivered),
            dead_lettered: n(s.dead_lettered),
            paused: s.paused,
            delayed: n(s.delayed),
            recurring: n(s.recurring),
            pending_by_priority: s.pending_by_priority.iter().map(|&v| n(v)).collect(),
            workers: n(s.workers),
            completed: n(s.completed),
            failed: n(s.failed),
            cancelled: n(s.cancelled),
        }
    }
}

/// A page of `getTasks()`: its tasks, and the cursor of the next (`None`: the last).
#[napi(object)]
pub struct NativeTaskPage {
    pub tasks: Vec<NativeTaskInfo>,
    pub cursor: Option<String>,
}

impl From<crate::history::listing::Page> for NativeTaskPage {
    fn from(page: crate::history::listing::Page) -> Self {
        NativeTaskPage {
            tasks: page.tasks.into_iter().map(NativeTaskInfo::from).collect(),
            cursor: page.cursor,
        }
    }
}

/// A task as `getTask()` and `waitFor()` describe it; `result` is JSON text.
#[napi(object)]
pub struct NativeTaskInfo {
    pub id: String,
    pub state: String,
    pub attempts: i64,
    pub enqueued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub run_at: Option<i64>,
    pub result: Option<String>,
    pub result_error: Option<String>,
    pub error: Option<String>,
    pub reason: Option<String>,
    /// A running task's latest progress, as JSON text.
    pub progress: Option<String>,
    pub priority: Option<u32>,
    /// The task as it was stored (data, metadata, name), where the server still has it.
    pub task: Option<super::dead_letters::NativeTask>,
    /// Its failed attempts, oldest first, as the stored task carries them.
    pub failures: Vec<NativeFailedAttempt>,
}

/// A failed attempt of a task (`TaskInfo.failures`).
#[napi(object)]
pub struct NativeFailedAttempt {
    pub attempt: u32,
    pub started_at: i64,
    pub failed_at: i64,
    pub error: String,
}

impl From<TaskInfo> for NativeTaskInfo {
    fn from(t: TaskInfo) -> Self {
        let attempts = t.attempts;
        NativeTaskInfo {
            id: t.id,
            state: t.state.name().to_owned(),
            attempts: t.attempts as i64,
            enqueued_at: t.enqueued_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            run_at: t.run_at,
            result: t.result.map(|json| json.get().to_owned()),
            result_error: t.result_error,
            error: t.error,
            reason: t.reason,
            progress: t.progress.map(|json| json.get().to_owned()),
            priority: t.priority.map(u32::from),
            failures: t
                .task
                .as_ref()
                .map(|task| {
                    task.failed_attempts
                        .iter()
                        .map(|failed| NativeFailedAttempt {
                            attempt: failed.number,
                            started_at: failed.started_at_ms,
                            failed_at: failed.failed_at_ms,
                            error: failed.error.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            task: t.task.map(|task| {
                let max = task.max_retries.map_or(0, |retries| u64::from(retries) + 1);
                super::dead_letters::native_task(task, attempts, max, t.data_dropped)
            }),
        }
    }
}
