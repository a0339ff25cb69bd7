//! Writing task records: a worker's records go out in groups, one confirmation a group.
//!
//! Each record must be stored before its task is acknowledged (a waiter never misses an
//! outcome). Confirming each one costs the server a reply and the client a reply to wait for,
//! as much again as storing it. So the records that tasks settling together write are sent
//! together: all but the last without a reply, the last as a JetStream publish whose
//! acknowledgement confirms the group — the server stores a connection's messages to a stream
//! in the order it sent them, so once the last is stored, the ones before it were handled. While
//! a group waits for its confirmation, the next one gathers; a record written alone goes at once.
//! A refused confirmation fails every record of its group (each task still completes; the
//! failure is logged).

use std::{
    collections::HashMap,
    mem,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::{ending_filter, subject, Ending, Record};

use crate::{
    error::{Error, Result},
    nats::connection::Connection,
};

/// The header giving a message its own time to live.
const TTL_HEADER: &str = "Nats-TTL";
/// What a record takes besides the result and the task, at most (id, times, error text are
/// bounded).
const RECORD_OVERHEAD: usize = 16 * 1024;
/// The most records one confirmation stands for: a refused one fails no more than these.
const GROUP_MAX: usize = 256;
/// What a group's write is said to be doing, in errors.
const WRITING: &str = "writing the task's record";

/// Writes a worker's task records in groups, and keeps each ending's records to its count.
#[derive(Default, Clone)]
pub struct Writer {
    gathering: Arc<Mutex<Gathering>>,
    trim: Trim,
    refusals: Arc<Mutex<Refusals>>,
}

/// The least time between two warnings about records not written: a history stream that
/// refuses every write would otherwise log a line per task.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Records not written since the last warning, and when that was.
#[derive(Default)]
struct Refusals {
    warned: Option<tokio::time::Instant>,
    unsaid: u64,
}

/// The records waiting for the next group, and whether a group is being written.
#[derive(Default)]
struct Gathering {
    waiting: Vec<Prepared>,
    writing: bool,
}

/// A record ready to send, and who waits for it to be stored.
struct Prepared {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    stored: oneshot::Sender<Result<()>>,
}

impl Writer {
    /// Writes `record` before its task is acknowledged, kept as the queue's options say for its
    /// ending (nothing when they keep none). A result too large for the server is left out and
    /// said so (the task still completes). Errors are the caller's to log: a record never holds
    /// its task back.
    pub async fn write(&self, connection: &Connection, record: Record) -> Result<()> {
        let config = connection.config();
        let Some(kept) = record.state.kept(config) else {
            return Ok(());
        };
        let ending = record.state;
        let subject = subject(config, ending, &record.id);
        let payload = payload_of(record, connection.max_payload())?;
        let mut headers = HeaderMap::new();
        if let Some(age) = kept.age {
            headers.insert(TTL_HEADER, ttl_value(age).as_str());
        }
        let (stored, confirmed) = oneshot::channel();
        let start = {
            let mut gathering = self
                .gathering
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            gathering.waiting.push(Prepared {
                subject,
                headers,
                payload,
                stored,
            });
            !mem::replace(&mut gathering.writing, true)
        };
        if start {
            tokio::spawn(write_groups(connection.clone(), self.gathering.clone()));
        }
        confirmed
            .await
            .map_err(|_| Error::Nats(format!("{WRITING}: the writer stopped")))??;
        if let Some(count) = kept.count {
            self.trim.after_write(connection, ending, count);
        }
        Ok(())
    }
}

impl Writer {
    /// Logs that a record was not written (its task still completes; its waiters time out): the
    /// first at once, then at most one warning every [`WARN_EVERY`], counting those between.
    pub fn refused(&self, id: &str, err: &Error) {
        let now = tokio::time::Instant::now();
        let unsaid = {
            let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
            if refusals.warned.is_some_and(|at| now < at + WARN_EVERY) {
                refusals.unsaid += 1;
                return;
            }
            refusals.warned = Some(now);
            mem::take(&mut refusals.unsaid)
        };
        let more = match unsaid {
            0 => String::new(),
            n => format!(" ({n} more not written since the last warning)"),
        };
        tracing::warn!(%id, "the task's record was not written; waiters of it time out{more}: {err}");
    }
}

/// Writes the gathered records a group at a time until none wait.
async fn write_groups(connection: Connection, gathering: Arc<Mutex<Gathering>>) {
    loop {
        // Tasks that settle together settle within a turn of each other: let them join.
        tokio::task::yield_now().await;
        let group = {
            let mut gathering = gathering.lock().unwrap_or_else(PoisonError::into_inner);
            if gathering.waiting.is_empty() {
                gathering.writing = false;
                return;
            }
            let take = gathering.waiting.len().min(GROUP_MAX);
            gathering.waiting.drain(..take).collect::<Vec<_>>()
        };
        let (waiting, messages): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|prepared| {
                let message = (prepared.subject, prepared.headers, prepared.payload);
                (prepared.stored, message)
            })
            .unzip();
        let written = write_group(&connection, messages).await;
        for stored in waiting {
            let _ = stored.send(written.clone());
        }
    }
}

/// Sends a group of records (subject, headers, payload): all but the last without a reply,
/// the last one confirmed.
async fn write_group(
    connection: &Connection,
    mut group: Vec<(String, HeaderMap, Bytes)>,
) -> Result<()> {
    let Some((subject, headers, payload)) = group.pop() else {
        return Ok(());
    };
    for (subject, headers, payload) in group {
        connection
            .client
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|err| Error::nats(WRITING, err))?;
    }
    connection
        .jetstream
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(|err| Error::nats(WRITING, err))?
        .await
        .map_err(|err| Error::nats(WRITING, err))?;
    Ok(())
}

/// `record` as stored: without a task or a result that would not fit the server's `limit`
/// (a result left out says so).
fn payload_of(mut record: Record, limit: usize) -> Result<Bytes> {
    let task_size = record.task.as_ref().map_or(0, String::len);
    if task_size > 0
        && task_size + record.result.as_ref().map_or(0, |r| r.get().len()) + RECORD_OVERHEAD > limit
    {
        record.task = None;
    }
    if let Some(result) = &record.result {
        let size = result.get().len();
        if size + RECORD_OVERHEAD > limit {
            record.result = None;
            record.result_error = Some(format!(
                "the result is {size} bytes; the server takes messages of at most {limit} bytes \
                 (max_payload), so it was not kept"
            ));
        }
    }
    serde_json::to_vec(&record)
        .map(Bytes::from)
        .map_err(|err| Error::Nats(err.to_string()))
}

/// Keeps each ending's records to its count: a worker's purges of all but the newest `count`,
/// at most one per ending every [`TRIM_EVERY`], the last one after the last write (so the count
/// may be exceeded by a second's records, never for longer).
#[derive(Default, Clone)]
struct Trim {
    state: Arc<Mutex<HashMap<Ending, Trimming>>>,
}

/// When an ending was last trimmed, and whether a trim is due.
#[derive(Clone, Copy)]
struct Trimming {
    at: tokio::time::Instant,
    due: bool,
}

/// The least time between two trims of one ending by one worker.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

impl Trim {
    /// After writing a record of `ending`: trims now, or once [`TRIM_EVERY`] has passed since
    /// the last trim.
    fn after_write(&self, connection: &Connection, ending: Ending, count: u64) {
        let now = tokio::time::Instant::now();
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match state.get_mut(&ending) {
                Some(trimming) if trimming.due => return,
                Some(trimming) if now < trimming.at + TRIM_EVERY => {
                    trimming.due = true;
                    trimming.at + TRIM_EVERY - now
                }
                _ => {
                    state.insert(ending, Trimming { at: now, due: true });
                    Duration::ZERO
                }
            }
        };
        let (trim, connection) = (self.clone(), connection.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            trim.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    ending,
                    Trimming {
                        at: tokio::time::Instant::now(),
                        due: false,
                    },
                );
            if let Err(err) = keep_newest(&connection, ending, count).await {
                tracing::debug!("task records of {ending:?} not trimmed to {count} yet: {err}");
            }
        });
    }
}

/// Removes all but the newest `count` records of `ending`.
async fn keep_newest(connection: &Connection, ending: Ending, count: u64) -> Result<()> {
    const TRIMMING: &str = "trimming the task records";
    let config = connection.config();
    connection
        .jetstream
        .get_stream_no_info(config.history_stream())
        .await
        .map_err(|err| Error::nats(TRIMMING, err))?
        .purge()
        .filter(ending_filter(config, ending))
        .keep(count)
        .await
        .map_err(|err| Error::nats(TRIMMING, err))?;
    Ok(())
}

/// A `Nats-TTL` value: whole seconds, rounded up (the server's unit).
fn ttl_value(ttl: Duration) -> String {
    format!("{}s", ttl.as_millis().div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_whole_seconds_rounded_up() {
        assert_eq!(ttl_value(Duration::from_millis(1_000)), "1s");
        assert_eq!(ttl_value(Duration::from_millis(1_001)), "2s");
        assert_eq!(ttl_value(Duration::from_secs(3_600)), "3600s");
    }
}
