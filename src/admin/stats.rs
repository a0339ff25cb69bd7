//! A snapshot of a queue: the stream's counters, the shared consumer's progress and the number of
//! dead letters.

use serde::Serialize;

use crate::{
    admin::schedules,
    config::CONSUMER_NAME,
    error::{Error, Result},
    history::Ending,
    layout,
    nats::connection::Connection,
    observe::metrics::Gauges,
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
    /// Workers running now, in any process ([`crate::presence`]); unlike `consumer_count`,
    /// which counts the durable consumers that outlive their workers.
    pub workers: u64,
    /// Records kept in the task history ([`crate::history`]): completed tasks, dead-lettered
    /// ones (`failed`) and cancelled ones. 0 for a queue that keeps none.
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl Stats {
    /// The gauges the queue's metrics show.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            pending: self.pending,
            in_flight: self.in_flight,
            delayed: self.delayed,
            dead_lettered: self.dead_lettered,
            consumers: self.consumer_count,
        }
    }
}

/// A queue over a subject tree may have a consumer per part (and per level): every task stored
/// is either waiting or delivered and not yet acked (WorkQueue retention), so what waits is what
/// is stored less what the queue's consumers have in flight, whichever consumers exist.
async fn tree(
    js: &async_nats::jetstream::Context,
    stream: &async_nats::jetstream::stream::Stream,
    config: &crate::config::Config,
    stats: &mut Stats,
) -> Result<()> {
    let mut in_flight_by_level = [0u64; layout::LEVELS as usize];
    let mut consumers = stream.consumers();
    while let Some(info) = futures::StreamExt::next(&mut consumers).await {
        let info = info.map_err(|e| Error::request("listing the queue's consumers", e))?;
        if !layout::is_task_consumer(&info.name) {
            continue;
        }
        let in_flight = info.num_ack_pending as u64;
        stats.in_flight += in_flight;
        stats.redelivered += info.num_redelivered as u64;
        stats.paused |= info.paused;
        in_flight_by_level[usize::from(layout::consumer_level(&info.name)) - 1] += in_flight;
    }
    stats.pending = stats.messages.saturating_sub(stats.in_flight);
    if config.priorities {
        for lane in layout::task_lanes(config) {
            let mut stored = 0;
            for filter in &lane.filters {
                stored += stored_under(js, stream, filter).await?;
            }
            let level = usize::from(layout::consumer_level(&lane.consumer)) - 1;
            stats
                .pending_by_priority
                .push(stored.saturating_sub(in_flight_by_level[level]));
        }
    }
    Ok(())
}

/// How many messages the stream holds on subjects matching `filter`: a cost that does not grow
/// with the subjects under it on a stream with direct gets ([`crate::nats::stored_on`]).
async fn stored_under(
    js: &async_nats::jetstream::Context,
    stream: &async_nats::jetstream::stream::Stream,
    filter: &str,
) -> Result<u64> {
    crate::nats::stored_on(js, stream, filter, "reading the task stream").await
}

/// Adds up the consumers of the priority levels; a level whose consumer does not exist yet
/// counts its stored tasks as pending.
async fn levels(
    js: &async_nats::jetstream::Context,
    stream: &async_nats::jetstream::stream::Stream,
    config: &crate::config::Config,
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
                stored_under(js, stream, &subject).await?
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
        let counts = schedules::counts(js, config, &stream).await?;
        stats.messages = counts.tasks;
        stats.delayed = counts.delayed;
        stats.recurring = counts.recurring;
    }
    // The consumer exists once a worker has started; before that everything is pending.
    if config.tree {
        tree(js, &stream, config, &mut stats).await?;
    } else if config.priorities {
        levels(js, &stream, config, &mut stats).await?;
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
    stats.workers = crate::presence::count(connection).await?;
    if let Some(history) = crate::history::stream_of(connection).await? {
        let history = &history;
        let count = |ending| {
            let filter = crate::history::ending_filter(config, ending);
            async move { crate::nats::stored_on(js, history, &filter, "counting task records").await }
        };
        stats.completed = count(Ending::Completed).await?;
        stats.failed = count(Ending::DeadLettered).await?;
        stats.cancelled = count(Ending::Cancelled).await?;
    }
    Ok(stats)
}
