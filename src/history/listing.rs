//! Listing the tasks of one state, newest first, a page at a time (`getTasks`): kept records of
//! the task history (completed, failed, cancelled), the task stream's messages (waiting,
//! retrying) and delayed tasks' schedules, read backwards from a cursor in windows of batched
//! direct gets ([`crate::nats::direct`]); the running tasks asked of the live workers.

use async_nats::jetstream::stream;

use crate::{
    envelope::Task,
    error::{Error, Result},
    nats::{
        connection::Connection,
        direct::{self, From, Stored},
    },
};

use super::{
    lookup::{delayed_info, queued_info, State, TaskInfo},
    Ending,
};

/// The most tasks one page holds.
pub const MAX_LIMIT: usize = 1_000;
/// Messages read per request.
const BATCH: usize = 1_000;
/// What listing is called in errors.
const LISTING: &str = "listing tasks";

/// A page of tasks, and where the next starts (`None`: this was the last).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub tasks: Vec<TaskInfo>,
    pub cursor: Option<String>,
}

/// The tasks of `state` (a [`State`] name, or `failed`: the dead-lettered tasks
/// `keepFailed` keeps), newest first, at most `limit`, after `cursor` (from a previous page).
pub async fn list(
    connection: &Connection,
    state: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::InvalidConfig(format!(
            "getTasks: limit must be an integer from 1 to {MAX_LIMIT}, got {limit}"
        )));
    }
    let before = match cursor {
        None => None,
        Some(cursor) => Some(cursor.parse::<u64>().map_err(|_| {
            Error::InvalidConfig(format!(
                "getTasks: cursor {cursor:?} is not one a page gave (pass page.cursor as it is)"
            ))
        })?),
    };
    let config = connection.config();
    match state {
        "completed" => records(connection, Ending::Completed, limit, before).await,
        "failed" | "deadLettered" => records(connection, Ending::DeadLettered, limit, before).await,
        "cancelled" => records(connection, Ending::Cancelled, limit, before).await,
        "running" => running(connection, limit).await,
        "waiting" | "retrying" => {
            let wanted = if state == "waiting" {
                State::Waiting
            } else {
                State::Retrying
            };
            queued(connection, wanted, limit, before).await
        }
        "delayed" => {
            let filter = crate::schedules::delayed_subjects(config);
            let stream = task_stream(connection).await?;
            newest_first(
                connection,
                &stream,
                Some(&filter),
                limit,
                before,
                |stored| {
                    let task = Task::decode_checked(&stored.payload).ok()?;
                    let due = crate::schedules::due_of(&stored.headers);
                    Some(delayed_info(&task.id.clone(), Some(task), due))
                },
            )
            .await
        }
        other => Err(Error::InvalidConfig(format!(
            "getTasks: state must be one of 'waiting', 'delayed', 'running', 'retrying', \
             'completed', 'failed', 'deadLettered' or 'cancelled', got {other:?}"
        ))),
    }
}

/// The kept records of `ending`, newest first; none when the queue keeps no history.
async fn records(
    connection: &Connection,
    ending: Ending,
    limit: usize,
    before: Option<u64>,
) -> Result<Page> {
    let config = connection.config();
    let Some(history) = super::stream_of(connection).await? else {
        return Ok(Page::default());
    };
    let filter = super::ending_filter(config, ending);
    newest_first(
        connection,
        &history,
        Some(&filter),
        limit,
        before,
        |stored| {
            let record = super::parse(&stored.payload)?;
            let (ending, id) = super::id_of(config, &stored.subject)?;
            (record.state == ending && record.id == id).then(|| TaskInfo::from(record))
        },
    )
    .await
}

/// The tasks the task stream holds in `wanted` state (waiting or retrying), those a worker runs
/// left out.
async fn queued(
    connection: &Connection,
    wanted: State,
    limit: usize,
    before: Option<u64>,
) -> Result<Page> {
    let config = connection.config();
    let running: std::collections::HashSet<String> =
        super::running::all(connection, super::running::MAX_LISTED)
            .await?
            .into_iter()
            .map(|running| running.id)
            .collect();
    let stream = task_stream(connection).await?;
    newest_first(connection, &stream, None, limit, before, |stored| {
        if !crate::layout::holds_tasks(config, &stored.subject) {
            return None;
        }
        let task = Task::decode_checked(&stored.payload).ok()?;
        if running.contains(&task.id) {
            return None;
        }
        let info = queued_info(config, task, &stored.subject);
        (info.state == wanted).then_some(info)
    })
    .await
}

/// The tasks running in every worker, the latest started first.
async fn running(connection: &Connection, limit: usize) -> Result<Page> {
    let mut running = super::running::all(connection, limit).await?;
    running.sort_by_key(|running| std::cmp::Reverse(running.started_at));
    running.truncate(limit);
    let tasks = running
        .into_iter()
        .map(|running| {
            let mut info = TaskInfo::new(&running.id, State::Waiting);
            info.run(running);
            info
        })
        .collect();
    Ok(Page {
        tasks,
        cursor: None,
    })
}

/// The task stream with its state as of now (where listing starts).
async fn task_stream(connection: &Connection) -> Result<stream::Stream> {
    connection
        .jetstream
        .get_stream(&connection.config().stream_name)
        .await
        .map_err(|err| Error::request(LISTING, err))
}

/// Up to `limit` of what `keep` makes of the messages of `stream` (as its info read when it was
/// opened says: from its end) on `filter`, newest first, from before sequence `before` (the
/// stream's end when `None`). Reads windows backwards, each twice the last, so a sparse filter
/// costs few requests.
async fn newest_first(
    connection: &Connection,
    stream: &stream::Stream,
    filter: Option<&str>,
    limit: usize,
    before: Option<u64>,
    keep: impl Fn(&Stored) -> Option<TaskInfo>,
) -> Result<Page> {
    let info = stream.cached_info();
    let (stream, state) = (&info.config.name, &info.state);
    let mut end = before
        .unwrap_or(state.last_sequence + 1)
        .min(state.last_sequence + 1);
    let first = state.first_sequence.max(1);
    let mut window = (limit as u64 * 2).max(64);
    let mut found: Vec<(u64, TaskInfo)> = Vec::new();
    while end > first && found.len() < limit {
        let start = end.saturating_sub(window).max(first);
        let mut chunk = Vec::new();
        let mut from = start;
        'reading: loop {
            let batch = direct::batch(
                &connection.jetstream,
                stream,
                From::Sequence(from),
                filter,
                BATCH,
                LISTING,
            )
            .await?;
            let Some(last) = batch.last().map(|stored| stored.sequence) else {
                break;
            };
            for stored in batch {
                if stored.sequence >= end {
                    break 'reading;
                }
                chunk.push(stored);
            }
            from = last + 1;
        }
        for stored in chunk.iter().rev() {
            if let Some(task) = keep(stored) {
                found.push((stored.sequence, task));
                if found.len() == limit {
                    break;
                }
            }
        }
        end = start;
        window = window.saturating_mul(2);
    }
    // A full page may have more before it (the next may come back empty).
    let cursor = (found.len() == limit)
        .then(|| found.last().map(|(sequence, _)| sequence.to_string()))
        .flatten();
    Ok(Page {
        tasks: found.into_iter().map(|(_, task)| task).collect(),
        cursor,
    })
}
