//! The shared consumer's `ack_wait` when workers of one queue have different `ackWait`s, and the
//! pace of their heartbeats.
//!
//! The consumer has one `ack_wait` for every worker. The last worker to start sets it to its own
//! `ackWait`, so an operator changes it with a rolling restart. `max_ack_pending`
//! (`globalConcurrency`, unlimited without it) is set the same way, at once: lowering it never
//! takes back what is already delivered, it only holds back new deliveries. Every worker heartbeats at a third
//! of the smallest of its own `ackWait`, the consumer's `ack_wait` and a lower one announced by a
//! starting worker, and re-reads the consumer every half heartbeat interval
//! ([`HeartbeatPace`]): a worker started with a longer `ackWait` speeds up when the consumer's
//! gets shorter.
//!
//! Raising `ack_wait` is safe at once. Lowering it is done in two steps, since a running worker
//! could otherwise be seconds away from its next heartbeat when the shorter `ack_wait` applies:
//! the starting worker first announces the lower value in the consumer's metadata
//! ([`NEXT_ACK_WAIT_KEY`]); once every worker has had time to read it and speed up, it sets it.

use std::time::Duration;

use async_nats::jetstream::consumer;
use tokio::sync::watch;

use super::elections::through_elections;
use crate::{
    error::{Error, Result},
    layout::Lane,
    nats::{connection::Connection, topology},
};

/// Consumer metadata key: an `ack_wait` (in milliseconds) a starting worker is about to set.
pub const NEXT_ACK_WAIT_KEY: &str = "protoqueue.next_ack_wait_ms";
/// The shortest pause between two reads of the consumer.
const MIN_POLL: Duration = Duration::from_millis(50);
/// Added to the wait before a lower `ack_wait` is set: time for a read and a heartbeat to travel.
const LOWERING_MARGIN: Duration = Duration::from_millis(100);

/// The interval of a worker's progress heartbeats, kept up to date from the consumer.
#[derive(Clone, Debug)]
pub struct HeartbeatPace {
    interval: watch::Receiver<Duration>,
}

impl HeartbeatPace {
    /// A pace that never changes.
    pub fn fixed(interval: Duration) -> Self {
        let (_, interval) = watch::channel(interval);
        HeartbeatPace { interval }
    }

    /// The current heartbeat interval.
    pub fn interval(&self) -> Duration {
        *self.interval.borrow()
    }

    /// Resolves when the interval changes (never, for a fixed pace).
    pub async fn changed(&mut self) {
        if self.interval.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A third of the shortest of the worker's own `ackWait`, the consumer's `ack_wait` and the one
/// announced in its metadata.
pub fn heartbeat_interval(own: Duration, consumer: &consumer::Config) -> Duration {
    let announced = consumer
        .metadata
        .get(NEXT_ACK_WAIT_KEY)
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(Duration::from_millis);
    let mut shortest = own;
    if !consumer.ack_wait.is_zero() {
        shortest = shortest.min(consumer.ack_wait);
    }
    if let Some(announced) = announced {
        shortest = shortest.min(announced);
    }
    shortest / 3
}

/// How often a worker heartbeating every `interval` reads the consumer.
fn poll_period(interval: Duration) -> Duration {
    (interval / 2).max(MIN_POLL)
}

/// Makes the consumer's `ack_wait` this worker's `ackWait` (at once when raising it, in two steps
/// when lowering it), and starts following the consumer: the returned pace is updated until
/// every copy of it is dropped.
pub async fn adopt(
    connection: &Connection,
    lane: &Lane,
    info: consumer::Info,
) -> Result<HeartbeatPace> {
    let own = connection.config().ack_wait;
    let current = info.config.ack_wait;
    let announced = info.config.metadata.contains_key(NEXT_ACK_WAIT_KEY);
    let mut wanted = info.config.clone();
    // `globalConcurrency` travels the same way: the last worker to start sets it.
    wanted.max_ack_pending = topology::max_ack_pending(connection.config(), lane);
    let limit_changed = wanted.max_ack_pending != info.config.max_ack_pending;
    if own >= current {
        if own != current || announced || limit_changed {
            wanted.ack_wait = own;
            wanted.metadata.remove(NEXT_ACK_WAIT_KEY);
            update(connection, lane, wanted).await?;
        }
    } else {
        wanted
            .metadata
            .insert(NEXT_ACK_WAIT_KEY.into(), own.as_millis().to_string());
        update(connection, lane, wanted).await?;
        // Every worker reads the consumer at least this often, as its interval is at most a
        // third of `current`.
        let wait = 2 * poll_period(current / 3) + LOWERING_MARGIN;
        let connection = connection.clone();
        let lowering = lane.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Err(err) = lower(&connection, &lowering, own).await {
                tracing::warn!("ackWait not lowered on the consumer: {err}");
            }
        });
    }
    let (sender, pace) = watch::channel(heartbeat_interval(own, &info.config));
    tokio::spawn(follow(connection.clone(), lane.clone(), own, sender));
    Ok(HeartbeatPace { interval: pace })
}

/// Sets the announced `ack_wait`, unless another worker changed the announcement meanwhile (then
/// the last one to start decides).
async fn lower(connection: &Connection, lane: &Lane, own: Duration) -> Result<()> {
    let mut wanted = read(connection, lane).await?.config;
    let still_ours = wanted.metadata.get(NEXT_ACK_WAIT_KEY) == Some(&own.as_millis().to_string());
    if !still_ours {
        return Ok(());
    }
    wanted.ack_wait = own;
    wanted.metadata.remove(NEXT_ACK_WAIT_KEY);
    update(connection, lane, wanted).await?;
    tracing::debug!(ack_wait_ms = own.as_millis(), "consumer ack_wait lowered");
    Ok(())
}

/// Re-reads the consumer and updates the pace until nobody holds it any more.
async fn follow(connection: Connection, lane: Lane, own: Duration, pace: watch::Sender<Duration>) {
    loop {
        let period = poll_period(*pace.borrow());
        tokio::select! {
            () = pace.closed() => return,
            () = tokio::time::sleep(period) => {}
        }
        match read(&connection, &lane).await {
            Ok(info) => {
                let interval = heartbeat_interval(own, &info.config);
                pace.send_if_modified(|current| {
                    let changed = *current != interval;
                    *current = interval;
                    changed
                });
            }
            // The last known pace stays; the consumer may be back after an outage.
            Err(err) => tracing::debug!("consumer not read for the heartbeat pace: {err}"),
        }
    }
}

async fn read(connection: &Connection, lane: &Lane) -> Result<consumer::Info> {
    let stream = connection
        .jetstream
        .get_stream(&lane.stream)
        .await
        .map_err(|e| Error::request("opening the stream", e))?;
    stream
        .consumer_info(&lane.consumer)
        .await
        .map_err(|e| Error::request("reading the consumer", e))
}

/// Writes `wanted` (read a while ago and changed) as the consumer's configuration. A `pause()` or
/// `resume()` made since it was read stays: the server keeps a consumer's pause through an
/// update, whatever `pause_until` it carries (`tests/lifecycle.rs`
/// a_consumer_update_never_changes_its_pause, issue 23 B4).
///
/// Rides through a leader election (the same configuration written again is no change): a
/// worker starting just after the node leading its consumer failed waits the election out (found
/// by the lifecycle model on a cluster).
async fn update(connection: &Connection, lane: &Lane, wanted: consumer::Config) -> Result<()> {
    let what = format!("updating consumer {:?}", lane.consumer);
    through_elections(&what, || async {
        connection
            .jetstream
            .update_consumer_on_stream(wanted.clone(), &lane.stream)
            .await
            .map_err(|e| Error::nats(&what, e))
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_follow_the_shortest_ack_wait() {
        let own = Duration::from_secs(30);
        let mut consumer = consumer::Config {
            ack_wait: Duration::from_secs(9),
            ..Default::default()
        };
        assert_eq!(heartbeat_interval(own, &consumer), Duration::from_secs(3));
        consumer.ack_wait = Duration::from_secs(60);
        assert_eq!(heartbeat_interval(own, &consumer), Duration::from_secs(10));
        consumer
            .metadata
            .insert(NEXT_ACK_WAIT_KEY.into(), "3000".into());
        assert_eq!(heartbeat_interval(own, &consumer), Duration::from_secs(1));
    }
}
