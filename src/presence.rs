//! Live workers: each running worker keeps a record of itself on the server — where it runs,
//! since when, what it holds — so any process (`getWorkers()`, the command line, the dashboard)
//! can tell which workers are alive. A queue's durable consumers outlive their workers, so the
//! consumer count cannot say it.
//!
//! Beside the task stream, a stream `<streamName>_WORKERS` holds one message per worker on the
//! subject `protoqueue.workers.<streamName>.<worker id>` (one message per subject, the newest
//! kept). A running worker writes its record every [`BEAT`]; one that stops removes it; one that
//! was killed stops writing, and the stream's `max_age` ([`GONE_AFTER`]) removes its last record.
//! So the stream holds exactly the workers that wrote in the last [`GONE_AFTER`].
//!
//! Presence never stops a worker: a record that cannot be written (a server down, a user not
//! allowed to create the stream) is logged at debug level and written again at the next beat.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use async_nats::jetstream::{
    self,
    stream::{self, LastRawMessageErrorKind},
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};

use crate::{
    config::Config,
    envelope,
    error::{Error, Result},
    nats::connection::Connection,
    shape::side_stream,
};

/// How often a running worker writes its record.
pub const BEAT: Duration = Duration::from_secs(5);
/// How long after its last record a worker counts as gone (a killed one): four beats, so a
/// worker whose beat is late (a busy machine, a leader election) is not taken for dead.
pub const GONE_AFTER: Duration = Duration::from_secs(20);
/// How long a stopping worker tries to remove its record.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a starting worker waits for its first record to be written (a server that is slow
/// to answer, e.g. during a leader election, delays no worker longer: the next beat writes it).
const FIRST_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// [`crate::shape::MARKER_KEY`]'s value on a workers stream.
pub const MARK_WORKERS: &str = "workers";

/// The workers stream of `config`'s queue: one record per worker subject, gone after
/// [`GONE_AFTER`] without a new one.
pub fn stream_config(config: &Config) -> stream::Config {
    stream::Config {
        max_age: GONE_AFTER,
        // Records carry no message ids; the window may not exceed max_age.
        duplicate_window: GONE_AFTER,
        ..side_stream(
            config,
            config.workers_stream(),
            config.workers_prefix(),
            MARK_WORKERS,
            "live workers",
        )
    }
}

/// A worker as its record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecord {
    /// This worker's id, random, one per started worker.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// What it works on: `tasks`, or `deadLetters` (a `processDLQ` worker).
    pub kind: String,
    /// The subjects it takes tasks of, when it works on part of a subject tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<String>>,
    /// When it started, ms since the epoch (its own clock).
    pub started_at: i64,
    /// When it wrote this record, ms since the epoch (its own clock).
    pub seen_at: i64,
    /// How many handlers it runs at once (`batchSize`).
    pub batch_size: u32,
    /// Tasks its handlers run now.
    pub in_flight: u64,
    /// Attempts its queue object completed, and failed, since it connected.
    pub completed: u64,
    pub failed: u64,
    /// The Protoqueue version it runs.
    pub version: String,
}

/// What a starting worker says of itself.
pub struct Identity {
    pub kind: &'static str,
    pub subjects: Option<Vec<String>>,
    pub batch_size: u32,
}

/// A running worker's record keeper: writes the record every [`BEAT`] until [`Beacon::stop`].
pub struct Beacon {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Beacon {
    /// Writes the record of a worker described by `identity` (so a worker is listed once it
    /// started), then again every [`BEAT`]; `running` counts the tasks its handlers run
    /// (`capacity` minus the semaphore's free permits).
    pub async fn start(
        connection: Connection,
        identity: Identity,
        running: Arc<Semaphore>,
        capacity: usize,
    ) -> Self {
        let record = WorkerRecord {
            id: new_id(),
            host: host_name(),
            pid: std::process::id(),
            kind: identity.kind.to_owned(),
            subjects: identity.subjects,
            started_at: envelope::now_ms(),
            seen_at: 0,
            batch_size: identity.batch_size,
            in_flight: 0,
            completed: 0,
            failed: 0,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let mut keeper = Keeper {
            subject: format!("{}{}", connection.config().workers_prefix(), record.id),
            connection,
            record,
            running,
            capacity,
            ensured: false,
        };
        if tokio::time::timeout(FIRST_WRITE_TIMEOUT, keeper.write())
            .await
            .is_err()
        {
            tracing::debug!(worker = %keeper.record.id, "first worker record not written in time");
        }
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + BEAT, BEAT);
            beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = beats.tick() => keeper.write().await,
                    _ = stopped.changed() => break,
                }
            }
            keeper.remove().await;
        });
        Beacon { stop, task }
    }

    /// Stops writing and removes the record (within about a second; else it expires).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for Beacon {
    /// A worker dropped without [`Beacon::stop`] writes no more records (its last one expires).
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The state of one worker's record.
struct Keeper {
    connection: Connection,
    subject: String,
    record: WorkerRecord,
    running: Arc<Semaphore>,
    capacity: usize,
    /// Whether this worker made sure the workers stream exists (again after a failed write).
    ensured: bool,
}

impl Keeper {
    /// Writes the record as of now; a failure is logged, and the next beat tries again.
    async fn write(&mut self) {
        let metrics = &self.connection.observer().metrics;
        self.record.seen_at = envelope::now_ms();
        self.record.in_flight =
            self.capacity
                .saturating_sub(self.running.available_permits()) as u64;
        self.record.completed = metrics.completed.load(Ordering::Relaxed);
        self.record.failed = metrics.attempts_failed.load(Ordering::Relaxed);
        if let Err(err) = self.try_write().await {
            tracing::debug!(worker = %self.record.id, "worker record not written: {err}");
        }
    }

    /// Writes the record; when that fails on a stream this worker had made sure of, the stream
    /// may be gone (deleted, a server that lost its store): it is made again and the write
    /// tried once more.
    async fn try_write(&mut self) -> Result<()> {
        let payload: bytes::Bytes = serde_json::to_vec(&self.record)
            .map_err(|err| Error::Nats(err.to_string()))?
            .into();
        let retry = self.ensured;
        match self.publish(payload.clone()).await {
            Err(_) if retry => {
                self.ensured = false;
                self.publish(payload).await
            }
            written => written,
        }
    }

    async fn publish(&mut self, payload: bytes::Bytes) -> Result<()> {
        let js = &self.connection.jetstream;
        if !self.ensured {
            ensure_stream(js, self.connection.config()).await?;
            self.ensured = true;
        }
        js.publish(self.subject.clone(), payload)
            .await
            .map_err(|err| Error::nats("writing the worker record", err))?
            .await
            .map_err(|err| Error::nats("writing the worker record", err))?;
        Ok(())
    }

    /// Removes the record at once, so no tool shows a stopped worker as alive; gives up after
    /// [`REMOVE_TIMEOUT`] (the record then expires).
    async fn remove(&self) {
        let removal = crate::nats::purge_subject(
            &self.connection.jetstream,
            self.connection.config().workers_stream(),
            &self.subject,
            "removing the worker record",
        );
        match tokio::time::timeout(REMOVE_TIMEOUT, removal).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::debug!(worker = %self.record.id, "worker record not removed (it expires): {err}")
            }
            Err(_) => {
                tracing::debug!(worker = %self.record.id, "worker record not removed in time (it expires)")
            }
        }
    }
}

/// Creates the workers stream, or finds it; with `createStreams: false`, only finds it (a
/// write to a stream that is not there then fails, and the worker goes on unlisted).
async fn ensure_stream(js: &jetstream::Context, config: &Config) -> Result<()> {
    if config.create_streams {
        js.get_or_create_stream(stream_config(config))
            .await
            .map_err(|err| Error::nats("creating the workers stream", err))?;
    }
    Ok(())
}

/// How many task workers (`process()`) the queue has, in every process.
pub async fn task_workers(connection: &Connection) -> Result<usize> {
    let workers = list(connection).await?;
    Ok(workers
        .iter()
        .filter(|worker| worker.kind == "tasks")
        .count())
}

/// The live workers of the queue: those that wrote their record within [`GONE_AFTER`], oldest
/// first. None for a queue no worker of this version ever ran.
pub async fn list(connection: &Connection) -> Result<Vec<WorkerRecord>> {
    const LISTING: &str = "listing the workers";
    let config = connection.config();
    let Some(stream) = stream_of(connection, LISTING).await? else {
        return Ok(Vec::new());
    };
    let subjects: Vec<String> = stream
        .info_with_subjects(format!("{}*", config.workers_prefix()))
        .await
        .map_err(|err| Error::request(LISTING, err))?
        .map_ok(|(subject, _)| subject)
        .try_collect()
        .await
        .map_err(|err| Error::nats(LISTING, err))?;
    let mut workers = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let message = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            // Stopped or expired since it was listed.
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
            Err(err) => return Err(Error::nats(LISTING, err)),
        };
        match serde_json::from_slice::<WorkerRecord>(&message.payload) {
            Ok(record) => workers.push(record),
            Err(err) => {
                tracing::debug!(%subject, "skipping a worker record that is not one: {err}")
            }
        }
    }
    workers.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    Ok(workers)
}

/// How many workers are live: the subjects of the workers stream (one request).
pub async fn count(connection: &Connection) -> Result<u64> {
    let stream = stream_of(connection, "counting the workers").await?;
    Ok(stream.map_or(0, |stream| stream.cached_info().state.subjects_count))
}

/// The workers stream, when a worker of this version ever ran (its info read with it).
async fn stream_of(
    connection: &Connection,
    what: &'static str,
) -> Result<Option<jetstream::stream::Stream>> {
    let name = connection.config().workers_stream();
    crate::nats::stream_if_exists(&connection.jetstream, name, what).await
}

/// A random worker id: 12 hex digits (one subject token), the random end of a UUIDv7.
fn new_id() -> String {
    let uuid = uuid::Uuid::now_v7().simple().to_string();
    uuid[uuid.len() - 12..].to_owned()
}

/// This machine's name, as the operating system has it; `unknown` when it cannot say.
fn host_name() -> String {
    gethostname::gethostname()
        .into_string()
        .unwrap_or_else(|_| "unknown".to_owned())
}
