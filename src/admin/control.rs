//! Control over a running queue, for every worker in every process at once: pause and resume
//! (JetStream consumer pause, nats-server ≥ 2.11), and purging the tasks that wait.
//!
//! A pause is the shared consumer's `pause_until`, kept by the server: workers started later, in
//! any process, find the queue paused too. While paused the server delivers nothing to the
//! consumer's pull requests; tasks already delivered finish normally.
//!
//! # Purge
//!
//! A purge must never remove a task a worker holds: a worker's failed attempt of a removed task
//! could then be neither retried nor dead-lettered. So on a queue that is not paused, `purge()`
//! takes the waiting tasks *through the workers' own consumer* and acknowledges them: the server
//! hands every message to one puller, so each task goes either to a worker or to the purge,
//! never both — whatever other purges, pauses or resumes run meanwhile, in any process.
//!
//! A paused consumer hands nothing out, so on a paused queue the purge deletes the waiting tasks
//! by sequence (those after the consumer's last delivery). It marks the pause as its own
//! ([`PURGE_MARK`]): `pause()` leaves such a pause alone and `resume()` waits until the purge
//! restored the pause it found (for at most [`PURGE_WAIT`]), so no worker is handed a task the
//! purge is deleting. Each window of deletions first checks the queue is still paused.

use std::time::Duration;

use async_nats::jetstream::{
    consumer::PullConsumer, context::ConsumerInfoErrorKind, stream::Stream, AckKind,
};
use futures::{stream::FuturesUnordered, StreamExt};

use crate::{
    config::CONSUMER_NAME,
    error::{Error, Result},
    ids::Stamp,
    layout::{self, Lane},
    nats::{self, connection::Connection, topology},
};

/// How long "paused until resumed" lasts: a century.
const INDEFINITELY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// A pause a purge holds is until a time in this day (2200-01-01, seconds since the epoch), a
/// millisecond of its own: told apart from a user's pause (until a century from now) and from
/// another purge's.
const PURGE_MARK: i64 = 7_258_118_400;
/// How long `resume()` waits for a purge of a paused queue to end before resuming anyway.
const PURGE_WAIT: Duration = Duration::from_secs(120);
/// Deletions, or acknowledgements, in flight at once.
const WINDOW: usize = 256;

/// Stops every worker of the queue from receiving tasks until [`resume`]. A consumer a purge
/// holds paused is left to it: the purge restores a pause when it ends.
pub async fn pause(connection: &Connection) -> Result<()> {
    let stream = connection.task_stream().await?;
    let until = from_now(INDEFINITELY)?;
    for consumer in task_consumers(connection, &stream).await? {
        if purge_holds(&stream, &consumer).await? {
            continue;
        }
        stream
            .pause_consumer(&consumer, until)
            .await
            .map_err(|err| pause_error("pausing the queue", err))?;
    }
    Ok(())
}

/// Lets the workers of the queue receive tasks again, once no purge deletes from a paused
/// consumer of the queue (waiting up to [`PURGE_WAIT`]).
pub async fn resume(connection: &Connection) -> Result<()> {
    let stream = connection.task_stream().await?;
    // Every consumer of the queue's workers: one per priority level with priorities, and on a
    // subject tree those of its parts.
    let consumers = task_consumers(connection, &stream).await?;
    let deadline = tokio::time::Instant::now() + PURGE_WAIT;
    // The pause each consumer had when it was resumed.
    let mut cleared = Vec::new();
    for consumer in consumers {
        let until = wait_for_purges(&stream, &consumer, deadline).await?;
        stream
            .resume_consumer(&consumer)
            .await
            .map_err(|err| pause_error("resuming the queue", err))?;
        cleared.push((consumer, until));
    }
    // A purge of the paused queue that read the pause just before it was resumed holds the
    // consumer under its own pause a moment later, and gives back the pause it read when it is
    // done, undoing this resume: look again once such a purge would have begun, and resume what
    // it gave back. (The server offers no compare-and-set; the window left is a purge whose
    // read and write of the pause lie further apart than `LATE_PURGE`.)
    tokio::time::sleep(LATE_PURGE).await;
    for (consumer, until) in cleared {
        let Some(until) = until else { continue };
        let now = wait_for_purges(&stream, &consumer, deadline).await?;
        if now == Some(until) {
            stream
                .resume_consumer(&consumer)
                .await
                .map_err(|err| pause_error("resuming the queue", err))?;
        }
    }
    Ok(())
}

/// How long after a resume a purge that read the pause before it may still pause the consumer.
const LATE_PURGE: Duration = Duration::from_millis(250);

/// Waits (until `deadline`) while a purge holds `consumer` paused; the pause it has then.
async fn wait_for_purges(
    stream: &Stream,
    consumer: &str,
    deadline: tokio::time::Instant,
) -> Result<Option<async_nats::datetime::DateTime>> {
    loop {
        let until = pause_of(stream, consumer).await?;
        if !until.is_some_and(is_purge_mark) {
            return Ok(until);
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                consumer,
                "a purge still holds the queue paused; resuming anyway"
            );
            return Ok(until);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a purge holds `consumer` paused ([`PURGE_MARK`]).
async fn purge_holds(stream: &Stream, consumer: &str) -> Result<bool> {
    Ok(pause_of(stream, consumer).await?.is_some_and(is_purge_mark))
}

/// Until when `consumer` is paused; `None` when it is not (or does not exist).
async fn pause_of(
    stream: &Stream,
    consumer: &str,
) -> Result<Option<async_nats::datetime::DateTime>> {
    match stream.consumer_info(consumer).await {
        Ok(info) if info.paused => Ok(info.config.pause_until),
        Ok(_) => Ok(None),
        Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::nats("reading the queue's consumer", err)),
    }
}

fn is_purge_mark(until: async_nats::datetime::DateTime) -> bool {
    (PURGE_MARK..PURGE_MARK + 86_400).contains(&until.unix_timestamp())
}

/// A time `length` from now, as the server takes it.
fn from_now(length: Duration) -> Result<async_nats::datetime::DateTime> {
    async_nats::datetime::add_std_duration(async_nats::datetime::now(), length)
        .map_err(|err| Error::nats("computing the pause's end", err))
}

/// A purge's own mark: a millisecond of the day [`PURGE_MARK`] names.
fn purge_mark() -> Result<async_nats::datetime::DateTime> {
    let own = Duration::from_millis(u64::from(
        uuid::Uuid::now_v7().as_u64_pair().1 as u32 % 86_000_000,
    ));
    let now_ms = crate::envelope::now_ms();
    let to_mark = Duration::from_millis(u64::try_from(PURGE_MARK * 1_000 - now_ms).unwrap_or(0));
    from_now(to_mark + own)
}

/// On a subject tree, a worker's consumers created after a `pause()` (a part's first worker)
/// are paused until the same time as the queue's other consumers, so a pause holds for workers
/// started later too. Does nothing when none of them is paused.
pub async fn inherit_pause(connection: &Connection, lanes: &[Lane]) -> Result<()> {
    if !connection.config().tree {
        return Ok(());
    }
    let stream = connection.task_stream().await?;
    let mut until = None;
    for name in task_consumers(connection, &stream).await? {
        if lanes.iter().any(|lane| lane.consumer == name) {
            continue;
        }
        if let Ok(info) = stream.consumer_info(&name).await {
            if info.paused {
                until = info.config.pause_until.or(until);
            }
        }
    }
    let Some(until) = until else {
        return Ok(());
    };
    for lane in lanes {
        let paused = stream
            .consumer_info(&lane.consumer)
            .await
            .map(|info| info.paused)
            .unwrap_or(false);
        if !paused {
            stream
                .pause_consumer(&lane.consumer, until)
                .await
                .map_err(|err| pause_error("pausing a new part like the rest of the queue", err))?;
        }
    }
    Ok(())
}

/// The consumers a pause applies to. Those of the whole queue are created when missing, so
/// workers started later find them paused; on a subject tree, whose workers may each take a
/// part (and must not overlap the whole tree's consumer), the queue's consumers that exist.
async fn task_consumers(connection: &Connection, stream: &Stream) -> Result<Vec<String>> {
    let config = connection.config();
    if !config.tree {
        let mut names = Vec::new();
        for lane in layout::task_lanes(config) {
            topology::ensure_lane(&connection.jetstream, config, &lane).await?;
            names.push(lane.consumer);
        }
        return Ok(names);
    }
    let mut names = Vec::new();
    let mut listed = stream.consumer_names();
    while let Some(name) = futures::StreamExt::next(&mut listed).await {
        let name = name.map_err(|err| Error::nats("listing the queue's consumers", err))?;
        if layout::is_task_consumer(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Whether the queue's workers are paused.
pub async fn is_paused(connection: &Connection) -> Result<bool> {
    let stream = connection.task_stream().await?;
    if connection.config().tree {
        // Paused when any consumer of its workers is (a pause pauses them all).
        for name in task_consumers(connection, &stream).await? {
            if let Ok(info) = stream.consumer_info(&name).await {
                if info.paused {
                    return Ok(true);
                }
            }
        }
        return Ok(false);
    }
    match stream.consumer_info(CONSUMER_NAME).await {
        Ok(info) => Ok(info.paused),
        // No worker ever started: nothing is paused.
        Err(_) => Ok(false),
    }
}

/// Removes the tasks that wait to be handled (never one a worker holds: not those being handled
/// or waiting out a retry delay); returns how many. See the module documentation for how.
pub async fn purge(connection: &Connection) -> Result<u64> {
    let stream = connection.task_stream().await?;
    let mut purged = 0;
    for lane in purged_lanes(connection, &stream).await? {
        purged += purge_lane(connection, &stream, &lane).await?;
    }
    Ok(purged)
}

/// Purges one consumer's waiting tasks: through the consumer while it is not paused, by
/// deletion under a purge's pause when it is (or becomes) paused.
async fn purge_lane(connection: &Connection, stream: &Stream, lane: &Lane) -> Result<u64> {
    let mut removed = 0;
    loop {
        removed += take_waiting(connection, stream, lane).await?;
        let info = stream
            .consumer_info(&lane.consumer)
            .await
            .map_err(|err| Error::nats("reading the queue's consumer", err))?;
        if info.num_pending == 0 {
            return Ok(removed);
        }
        if !info.paused {
            // Tasks kept coming, or went to workers: take what is still waiting.
            continue;
        }
        // Paused: nothing is handed out. Hold the pause as the purge's own, delete, then give
        // back the pause that was there unless someone changed it meanwhile.
        let found = info.config.pause_until;
        let mark = purge_mark()?;
        stream
            .pause_consumer(&lane.consumer, mark)
            .await
            .map_err(|err| pause_error("holding the queue paused for a purge", err))?;
        let deleted = delete_waiting(connection, stream, lane).await;
        let still_ours = stream
            .consumer_info(&lane.consumer)
            .await
            .map(|info| info.config.pause_until == Some(mark))
            .unwrap_or(false);
        if still_ours {
            let restored = match found {
                // A purge that found another purge's pause gives back a plain pause: the other
                // purge, seeing its mark gone, leaves it.
                Some(until) if !is_purge_mark(until) => until,
                _ => from_now(INDEFINITELY)?,
            };
            stream
                .pause_consumer(&lane.consumer, restored)
                .await
                .map_err(|err| pause_error("giving back the pause a purge found", err))?;
        }
        return Ok(removed + deleted?);
    }
}

/// Takes the tasks the consumer hands out and acknowledges (removes) them, until it hands out
/// nothing more; returns how many were removed.
async fn take_waiting(connection: &Connection, stream: &Stream, lane: &Lane) -> Result<u64> {
    let consumer: PullConsumer = stream
        .get_consumer(&lane.consumer)
        .await
        .map_err(|err| Error::nats("opening the queue's consumer", err))?;
    let mut removed = 0;
    let mut given_back = std::collections::HashSet::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(WINDOW)
            .messages()
            .await
            .map_err(|err| Error::nats("taking waiting tasks", err))?;
        let mut acks = FuturesUnordered::new();
        let mut kept_again = false;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|err| Error::nats("taking waiting tasks", err))?;
            let task = crate::envelope::Task::decode_checked(&message.payload).ok();
            let kind = match kept(&message, task.as_ref()) {
                None => AckKind::Ack,
                Some(wait) => {
                    let sequence = message.info().map_or(0, |info| info.stream_sequence);
                    kept_again |= !given_back.insert(sequence);
                    AckKind::Nak(Some(wait.max(GIVE_BACK)))
                }
            };
            let removing = matches!(kind, AckKind::Ack);
            let own = own_id(task, message.headers.as_ref());
            acks.push(async move {
                let settled = message.double_ack_with(kind).await;
                if let (true, Ok(()), Ok(info)) = (removing, &settled, message.info()) {
                    release_own_id(connection, own, info.stream_sequence).await;
                }
                (removing, settled)
            });
        }
        if acks.is_empty() {
            return Ok(removed);
        }
        while let Some((removing, acked)) = acks.next().await {
            match acked {
                Ok(()) if removing => removed += 1,
                Ok(()) => {}
                // Not confirmed: it may be redelivered (to a worker) after ackWait.
                Err(err) => tracing::debug!("a purged task's settlement was not confirmed: {err}"),
            }
        }
        if kept_again {
            // Only tasks it keeps come back: nothing else waits.
            return Ok(removed);
        }
    }
}

/// A task's own id, if it has one, and what its headers say of its marker.
fn own_id(
    task: Option<crate::envelope::Task>,
    headers: Option<&async_nats::HeaderMap>,
) -> Option<(String, Stamp)> {
    task.filter(|task| task.custom_id).map(|task| {
        let stamp = Stamp::of(&task.id, headers);
        (task.id, stamp)
    })
}

/// Frees the own id of a task a purge removed from `sequence` (its marker, [`crate::ids`]). A
/// task fired from a delayed task's schedule has a marker that still names the schedule, or
/// already this task (pointed at it by a worker, or by an enqueue of the id that found the
/// schedule gone — found by the lifecycle model): either is removed.
async fn release_own_id(connection: &Connection, own: Option<(String, Stamp)>, sequence: u64) {
    if let Some((id, stamp)) = own {
        crate::ids::release(connection, &id, sequence, stamp).await;
    }
}

/// How long a task a purge keeps is held back at least (so the purge does not take it again).
const GIVE_BACK: Duration = Duration::from_millis(500);

/// Whether a purge keeps a delivered task, and for how long it is then held back: a retry (a
/// task whose handler failed, waiting for its next attempt, or delivered before) is not a
/// waiting task, and keeps the rest of its delay.
fn kept(
    message: &async_nats::jetstream::Message,
    task: Option<&crate::envelope::Task>,
) -> Option<Duration> {
    let redelivered = message.info().is_ok_and(|info| info.delivered > 1);
    let retry = task.is_some_and(|task| task.attempts_made > 0);
    if !redelivered && !retry {
        return None;
    }
    let not_before = task.map_or(0, |task| task.not_before_ms);
    let wait = not_before.saturating_sub(crate::envelope::now_ms()).max(0);
    Some(Duration::from_millis(wait.unsigned_abs()))
}

/// The consumers whose waiting tasks `purge` removes: the queue's (one per level), or on a
/// subject tree every consumer of its workers that exists, with its filters.
async fn purged_lanes(connection: &Connection, stream: &Stream) -> Result<Vec<Lane>> {
    let config = connection.config();
    if !config.tree {
        let lanes = layout::task_lanes(config);
        for lane in &lanes {
            topology::ensure_lane(&connection.jetstream, config, lane).await?;
        }
        return Ok(lanes);
    }
    let mut lanes = Vec::new();
    for name in task_consumers(connection, stream).await? {
        let info = stream
            .consumer_info(&name)
            .await
            .map_err(|err| Error::nats("reading the queue's consumers", err))?;
        let mut filters = info.config.filter_subjects.clone();
        if filters.is_empty() && !info.config.filter_subject.is_empty() {
            filters.push(info.config.filter_subject.clone());
        }
        lanes.push(Lane {
            consumer: name,
            filters,
            ..Lane::tasks(config)
        });
    }
    Ok(lanes)
}

/// Deletes the tasks after the consumer's last delivery on each of the lane's subjects, while the
/// consumer stays paused.
async fn delete_waiting(connection: &Connection, stream: &Stream, lane: &Lane) -> Result<u64> {
    let mut removed = 0;
    // One subject at a time: the consumer's progress tells which of its tasks wait.
    for filter in &lane.filters {
        let one = Lane {
            filters: vec![filter.clone()],
            ..lane.clone()
        };
        removed += delete_undelivered(connection, stream, &one).await?;
    }
    Ok(removed)
}

async fn delete_undelivered(connection: &Connection, stream: &Stream, lane: &Lane) -> Result<u64> {
    let subject = lane.filters.first().cloned().unwrap_or_default();
    let consumer = stream
        .consumer_info(&lane.consumer)
        .await
        .map_err(|err| Error::nats("reading the queue's consumer", err))?;
    if !consumer.paused {
        return Ok(0);
    }
    if consumer.num_ack_pending == 0
        && consumer.delivered.stream_sequence == 0
        && !crate::ids::any_held(connection).await?
    {
        // Nothing was ever delivered, and nothing is while paused: every message on the subject
        // waits. Only the queue's subject: delayed tasks and recurring schedules stay. Not when
        // an id is held: a task with its own id is removed one by one below, freeing its marker
        // (a purge by subject would leave the marker behind — stale, so the id is free, but the
        // index would keep one marker per such id). An own-id enqueue racing this check can
        // still leave one: stale, and replaced on the id's next use.
        let purged = stream
            .purge()
            .filter(subject)
            .await
            .map_err(|err| Error::nats("purging the queue", err))?;
        return Ok(purged.purged);
    }
    let last = stream.cached_info().state.last_sequence;
    let first = consumer.delivered.stream_sequence + 1;
    // Read one by one: a stream with schedules or priorities stores other subjects too, and a
    // retry waiting for its next attempt is stored as a new message too; both stay.
    let mut deleting = FuturesUnordered::new();
    let mut removed = 0;
    let mut next = first;
    while next <= last || !deleting.is_empty() {
        if deleting.is_empty() && !still_paused(stream, &lane.consumer).await? {
            // Resumed meanwhile (after PURGE_WAIT): what is left goes to the workers.
            tracing::warn!("the queue was resumed during a purge; the purge stops");
            break;
        }
        while next <= last && deleting.len() < WINDOW {
            let Some((sequence, is_retry, own_id)) = next_task(stream, &subject, next).await?
            else {
                next = last + 1;
                break;
            };
            if sequence > last {
                next = last + 1;
                break;
            }
            next = sequence + 1;
            if !is_retry {
                let name = &connection.config().stream_name;
                deleting.push(async move {
                    let deleted = nats::delete_message(&connection.jetstream, name, sequence).await;
                    if let Ok(true) = deleted {
                        release_own_id(connection, own_id, sequence).await;
                    }
                    deleted
                });
            }
        }
        if let Some(deleted) = deleting.next().await {
            if deleted? {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

async fn still_paused(stream: &Stream, consumer: &str) -> Result<bool> {
    let info = stream
        .consumer_info(consumer)
        .await
        .map_err(|err| Error::nats("reading the queue's consumer", err))?;
    Ok(info.paused)
}

/// The sequence of the first task (a message on the queue's subject) from `from` on, whether
/// it is a retry waiting for its next attempt, and its own id if it has one (with whether it was
/// fired from a delayed task's schedule).
async fn next_task(
    stream: &Stream,
    subject: &str,
    from: u64,
) -> Result<Option<(u64, bool, Option<(String, Stamp)>)>> {
    let found = nats::next_on_subject(stream, subject, from, "reading the queue").await?;
    Ok(found.map(|message| {
        let task = crate::envelope::Task::decode_checked(&message.payload).ok();
        let is_retry = task.as_ref().is_some_and(|task| task.attempts_made > 0);
        let own_id = own_id(task, Some(&message.headers));
        (message.sequence, is_retry, own_id)
    }))
}

fn pause_error(what: &str, err: async_nats::jetstream::stream::ConsumerError) -> Error {
    Error::nats(
        &format!("{what} (consumer pause needs nats-server 2.11 or newer)"),
        err,
    )
}
