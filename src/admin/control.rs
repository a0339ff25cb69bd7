//! Control over a running queue, for every worker in every process at once: pause and resume
//! (JetStream consumer pause, nats-server ≥ 2.11), and purging the tasks that wait.
//!
//! A pause is the shared consumer's `pause_until`, kept by the server: workers started later, in
//! any process, find the queue paused too. While paused the server delivers nothing to the
//! consumer's pull requests; tasks already delivered finish normally.

use std::time::Duration;

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use futures::{stream::FuturesUnordered, StreamExt};

use crate::{
    config::CONSUMER_NAME,
    error::{Error, Result},
    layout,
    nats::{self, connection::Connection, topology, topology::Lane},
};

/// How long "paused until resumed" lasts: a century.
const INDEFINITELY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// How long `purge()` holds the workers while it removes waiting tasks; should it die midway,
/// they resume by themselves after this.
const PURGE_PAUSE: Duration = Duration::from_secs(60);
/// Deletions in flight at once.
const WINDOW: usize = 256;

/// Stops every worker of the queue from receiving tasks until [`resume`].
pub async fn pause(connection: &Connection) -> Result<()> {
    pause_for(connection, INDEFINITELY).await
}

/// Lets the workers of the queue receive tasks again.
pub async fn resume(connection: &Connection) -> Result<()> {
    let stream = task_stream(connection).await?;
    // Every consumer of the queue's workers: one per priority level with priorities, and on a
    // subject tree those of its parts.
    for consumer in task_consumers(connection, &stream).await? {
        stream
            .resume_consumer(&consumer)
            .await
            .map_err(|err| pause_error("resuming the queue", err))?;
    }
    Ok(())
}

/// On a subject tree, a worker's consumers created after a `pause()` (a part's first worker)
/// are paused until the same time as the queue's other consumers, so a pause holds for workers
/// started later too. Does nothing when none of them is paused.
pub async fn inherit_pause(connection: &Connection, lanes: &[Lane]) -> Result<()> {
    if !connection.config().tree {
        return Ok(());
    }
    let stream = task_stream(connection).await?;
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
    let stream = task_stream(connection).await?;
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

/// Removes the tasks waiting in the queue (never delivered to a worker; not those being handled
/// or waiting for a retry); returns how many. The workers are held for the moment it takes, so
/// none of the tasks removed is delivered meanwhile.
pub async fn purge(connection: &Connection) -> Result<u64> {
    let stream = task_stream(connection).await?;
    let was_paused = is_paused(connection).await?;
    if !was_paused {
        pause_for(connection, PURGE_PAUSE).await?;
    }
    let mut purged = Ok(0);
    for lane in purged_lanes(connection, &stream).await? {
        // One subject at a time: the consumer's progress tells which of its tasks wait.
        for filter in &lane.filters {
            let one = Lane {
                filters: vec![filter.clone()],
                ..lane.clone()
            };
            purged = match (purged, purge_undelivered(connection, &stream, &one).await) {
                (Ok(total), Ok(n)) => Ok(total + n),
                (Err(err), _) | (_, Err(err)) => Err(err),
            };
        }
    }
    if !was_paused {
        resume(connection).await?;
    }
    purged
}

/// The consumers whose waiting tasks `purge` removes: the queue's (one per level), or on a
/// subject tree every consumer of its workers that exists, with its filters.
async fn purged_lanes(connection: &Connection, stream: &Stream) -> Result<Vec<Lane>> {
    let config = connection.config();
    if !config.tree {
        return Ok(layout::task_lanes(config));
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

async fn purge_undelivered(connection: &Connection, stream: &Stream, lane: &Lane) -> Result<u64> {
    let subject = lane.filters.first().cloned().unwrap_or_default();
    let consumer = stream
        .consumer_info(&lane.consumer)
        .await
        .map_err(|err| Error::nats("reading the queue's consumer", err))?;
    if consumer.num_ack_pending == 0 && consumer.delivered.stream_sequence == 0 {
        // Only the queue's subject: delayed tasks and recurring schedules stay.
        let purged = stream
            .purge()
            .filter(subject)
            .await
            .map_err(|err| Error::nats("purging the queue", err))?;
        return Ok(purged.purged);
    }
    let last = stream.cached_info().state.last_sequence;
    let first = consumer.delivered.stream_sequence + 1;
    // A stream with schedules or priorities stores other subjects too: only messages on the
    // consumer's subject go.
    let schedules_too = stream.cached_info().config.subjects.len() > 1;
    let mut deleting = FuturesUnordered::new();
    let mut removed = 0;
    let mut next = first;
    while next <= last || !deleting.is_empty() {
        while next <= last && deleting.len() < WINDOW {
            let sequence = if schedules_too {
                match next_task(stream, &subject, next).await? {
                    Some(sequence) if sequence <= last => sequence,
                    _ => {
                        next = last + 1;
                        break;
                    }
                }
            } else {
                next
            };
            let name = &connection.config().stream_name;
            deleting.push(nats::delete_message(&connection.jetstream, name, sequence));
            next = sequence + 1;
        }
        if let Some(deleted) = deleting.next().await {
            if deleted? {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The sequence of the first task (a message on the queue's subject) from `from` on.
async fn next_task(stream: &Stream, subject: &str, from: u64) -> Result<Option<u64>> {
    let found = stream
        .raw_message_builder()
        .sequence(from)
        .next_by_subject(subject.to_owned())
        .send()
        .await;
    match found {
        Ok(message) => Ok(Some(message.sequence)),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(Error::nats("reading the queue", err)),
    }
}

async fn pause_for(connection: &Connection, length: Duration) -> Result<()> {
    let stream = task_stream(connection).await?;
    let until = async_nats::datetime::add_std_duration(async_nats::datetime::now(), length)
        .map_err(|err| Error::nats("computing the pause's end", err))?;
    for consumer in task_consumers(connection, &stream).await? {
        stream
            .pause_consumer(&consumer, until)
            .await
            .map_err(|err| pause_error("pausing the queue", err))?;
    }
    Ok(())
}

async fn task_stream(connection: &Connection) -> Result<Stream> {
    connection
        .jetstream
        .get_stream(&connection.config().stream_name)
        .await
        .map_err(|err| Error::nats("opening the task stream", err))
}

fn pause_error(what: &str, err: async_nats::jetstream::stream::ConsumerError) -> Error {
    Error::nats(
        &format!("{what} (consumer pause needs nats-server 2.11 or newer)"),
        err,
    )
}
