//! A snapshot of a queue: the stream's counters, the shared consumer's progress and the number of
//! dead letters.

use serde::Serialize;

use crate::{
    admin::schedules,
    config::CONSUMER_NAME,
    error::{Error, Result},
    layout,
    nats::connection::Connection,
};

/// Queue statistics. The first five fields are the README's `QueueStats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Tasks stored in the stream (waiting or in flight); delayed tasks and recurring schedules
    /// not counted.
    pub messages: u64,
    /// Bytes stored in the stream, schedules included.
    pub bytes: u64,
    /// Sequence number of the oldest stored task.
    pub first_sequence: u64,
    /// Sequence number of the newest task ever stored.
    pub last_sequence: u64,
    /// Consumers on the stream (one shared durable consumer per queue).
    pub consumer_count: u64,
    /// Tasks not yet delivered to any worker.
    pub pending: u64,
    /// Tasks delivered and not yet settled (being handled, or waiting for a retry).
    pub in_flight: u64,
    /// Tasks delivered more than once and not yet settled.
    pub redelivered: u64,
    /// Tasks on the dead-letter stream.
    pub dead_lettered: u64,
    /// Whether the workers are paused (`pause()`).
    pub paused: bool,
    /// Delayed tasks waiting for their time (stored schedules, not yet tasks).
    pub delayed: u64,
    /// Recurring schedules (`schedule()`).
    pub recurring: u64,
    /// With `options.priorities`: the tasks not yet delivered at each level, 1 first (they add
    /// up to `pending`). Empty without.
    pub pending_by_priority: Vec<u64>,
}

/// Adds up the consumers of the priority levels; a level whose consumer does not exist yet
/// counts its stored tasks as pending.
async fn levels(
    stream: &async_nats::jetstream::stream::Stream,
    config: &crate::Config,
    stats: &mut Stats,
) -> Result<()> {
    for lane in layout::task_lanes(config) {
        let pending = match stream.consumer_info(&lane.consumer).await {
            Ok(consumer) => {
                stats.in_flight += consumer.num_ack_pending as u64;
                stats.redelivered += consumer.num_redelivered as u64;
                if lane.consumer == CONSUMER_NAME {
                    stats.paused = consumer.paused;
                }
                consumer.num_pending
            }
            Err(_) => {
                let subject = lane.filters.first().cloned().unwrap_or_default();
                let info = stream
                    .info_with_subjects(subject.clone())
                    .await
                    .map_err(|e| Error::request("reading the task stream", e))?;
                let counts: std::collections::HashMap<String, usize> =
                    futures::TryStreamExt::try_collect(info)
                        .await
                        .map_err(|e| Error::request("reading the task stream", e))?;
                counts.values().map(|&n| n as u64).sum()
            }
        };
        stats.pending += pending;
        stats.pending_by_priority.push(pending);
    }
    Ok(())
}

/// Reads the current statistics from the server.
pub async fn snapshot(connection: &Connection) -> Result<Stats> {
    let config = connection.config();
    let js = &connection.jetstream;
    let stream = js
        .get_stream(&config.stream_name)
        .await
        .map_err(|e| Error::request("reading the task stream", e))?;
    // `get_stream` answers with the stream's info: no second request for it.
    let info = stream.cached_info();
    let mut stats = Stats {
        messages: info.state.messages,
        bytes: info.state.bytes,
        first_sequence: info.state.first_sequence,
        last_sequence: info.state.last_sequence,
        consumer_count: info.state.consumer_count as u64,
        ..Stats::default()
    };
    // A stream with schedules also stores them; only then is counting per subject needed.
    if info.config.allow_message_schedules {
        let counts = schedules::counts(connection, info.state.messages).await?;
        stats.messages = counts.tasks;
        stats.delayed = counts.delayed;
        stats.recurring = counts.recurring;
    }
    // The consumer exists once a worker has started; before that everything is pending.
    if config.priorities {
        levels(&stream, config, &mut stats).await?;
    } else {
        match stream.consumer_info(CONSUMER_NAME).await {
            Ok(consumer) => {
                stats.pending = consumer.num_pending;
                stats.in_flight = consumer.num_ack_pending as u64;
                stats.redelivered = consumer.num_redelivered as u64;
                stats.paused = consumer.paused;
            }
            Err(_) => stats.pending = stats.messages,
        }
    }
    let dead_letters = js
        .get_stream(config.dead_letter_stream())
        .await
        .map_err(|e| Error::request("reading the dead-letter stream", e))?;
    stats.dead_lettered = dead_letters.cached_info().state.messages;
    Ok(stats)
}
