//! The id index: producer-chosen task ids (`enqueue({ id })`) deduplicated for as long as the
//! task is stored, not only within the stream's 2-minute duplicate window.
//!
//! Beside the task stream, a stream `<streamName>_IDS` holds one marker per id, on the subject
//! `protoqueue.ids.<streamName>.<id as hex>` (one message per subject). This module is the
//! marker store: claiming an id, recording where its task was stored, releasing it. The steps of
//! an enqueue with an id, and their failure windows, are in [`crate::lifecycle::enqueue`].
//!
//! A marker says one of:
//! - **pending** (since a time, with a nonce): a producer is storing the task now. The task is
//!   published with `Nats-Msg-Id` `<id>:<nonce>`, so a re-send of *this* enqueue is stored once,
//!   while a later enqueue of the same id (a new claim, a new nonce) is never taken for a
//!   re-send by the stream's duplicate window.
//! - **unconfirmed** (with the nonce): the publish got no answer; it may or may not be stored. The
//!   next enqueue of the id takes the nonce over, so within the duplicate window the server
//!   answers "duplicate" if the first one was stored, and stores it otherwise.
//! - **stored** at a sequence of the task stream: taken while the stream still holds that
//!   message (the task waits or runs), stale once it is gone (acked, dead-lettered, purged).
//! - **scheduled** at a sequence: a delayed task, taken while its schedule waits *and* after the
//!   server fired it, until the fired task is settled: the first worker that receives the fired
//!   task points the marker at it ([`fired`]), and from then on it is a stored marker; `cancel()`
//!   and `purge()` remove the marker of a task they remove. One whose schedule is gone and whose
//!   fired task no worker pointed it at yet is checked by looking for that task (a claim points
//!   it at the task, or finds it stale: a write lost when a server was killed).
//!
//! Workers remove the marker of a task they acked or dead-lettered when it may still name that
//! task ([`Stamp`]: a stored marker naming it, the scheduled one of a fired task, or the pending
//! one its producer has not recorded yet — the worker records it first, then removes it);
//! correctness never depends on it (a stale marker is recognised by its sequence), it only
//! keeps the index small. Tasks without an id never touch the index; its stream is created on
//! the first enqueue with an id.

use std::time::Duration;

use async_nats::{
    header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
    jetstream::{
        self,
        context::PublishErrorKind,
        stream::{
            self, DiscardPolicy, LastRawMessageErrorKind, RawMessageErrorKind, RetentionPolicy,
            StorageType,
        },
    },
    HeaderMap,
};
use bytes::Bytes;
use tokio::time::Instant;

use crate::{
    config::Config,
    envelope,
    error::{Error, Result},
    nats::connection::Connection,
    schedules,
};

/// How much older than `enqueueTimeout` a pending marker must be to count as stale (clocks of
/// producers differ a little).
pub const PENDING_MARGIN: Duration = Duration::from_secs(5);
/// How often a claim retries when other producers keep replacing the marker it read.
const MAX_ROUNDS: usize = 8;
/// First and longest pause between two looks at another producer's pending marker.
const PENDING_POLL: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(200));

/// The id index's stream: one message per id subject, kept until removed.
pub fn stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: config.id_index_stream(),
        subjects: vec![format!("{}*", config.id_index_prefix())],
        retention: RetentionPolicy::Limits,
        max_messages_per_subject: 1,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: config.replicas,
        description: Some(format!(
            "Protoqueue ids of stream {} (enqueue with your own id)",
            config.stream_name
        )),
        ..Default::default()
    }
}

/// The marker subject of `id`: its bytes as hex, so any id is one subject token.
pub fn subject(config: &Config, id: &str) -> String {
    crate::config::names::id_subject(config.id_index_prefix(), id)
}

/// What a marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// A producer is storing the task since this time (ms since the epoch), publishing it under
    /// this nonce (`None` in markers of versions before nonces).
    Pending(i64, Option<u64>),
    /// The publish under this nonce was not confirmed: it may be stored.
    Unconfirmed(u64),
    /// The task is stored at this sequence of the task stream.
    Stored(u64),
    /// The task is delayed: its schedule is stored at this sequence (and once fired, the task
    /// is stored where no marker names it yet).
    Scheduled(u64),
}

impl Marker {
    fn to_bytes(self) -> Bytes {
        Bytes::from(match self {
            Marker::Pending(ms, Some(nonce)) => format!("p{ms}:{nonce:x}"),
            Marker::Pending(ms, None) => format!("p{ms}"),
            Marker::Unconfirmed(nonce) => format!("u{nonce:x}"),
            Marker::Stored(seq) => format!("s{seq}"),
            Marker::Scheduled(seq) => format!("d{seq}"),
        })
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let nonce = |hex: &str| u64::from_str_radix(hex, 16).ok();
        match text.split_at_checked(1)? {
            ("p", rest) => match rest.split_once(':') {
                Some((ms, n)) => Some(Marker::Pending(ms.parse().ok()?, Some(nonce(n)?))),
                None => rest.parse().ok().map(|ms| Marker::Pending(ms, None)),
            },
            ("u", n) => nonce(n).map(Marker::Unconfirmed),
            ("s", seq) => seq.parse().ok().map(Marker::Stored),
            ("d", seq) => seq.parse().ok().map(Marker::Scheduled),
            _ => None,
        }
    }
}

/// A new nonce: random, so no two claims of an id share one.
fn fresh_nonce() -> u64 {
    uuid::Uuid::now_v7().as_u64_pair().1
}

/// Why a marker was not written.
enum Refused {
    /// Another marker is there (or not the one expected).
    Taken,
    /// The index stream does not exist yet.
    NoStream,
}

/// What claiming an id found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The id is ours to store: the marker's sequence in the index, and the nonce to publish
    /// under ([`Claim::message_id`]).
    Ours {
        /// The pending marker's sequence in the index stream.
        marker: u64,
        /// The nonce of this claim (or of the unconfirmed one it took over).
        nonce: u64,
    },
    /// A task with this id is stored: nothing is to be published.
    Taken,
}

/// The `Nats-Msg-Id` of a task with its own id, published under `nonce`.
pub fn message_id(id: &str, nonce: u64) -> String {
    format!("{id}:{nonce:x}")
}

/// What a stored task with its own id says of the marker that may name it, read from its
/// headers by the worker or purge that settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Fired from a delayed task's schedule: its marker may still name the schedule.
    pub fired: bool,
    /// The nonce its producer published it under (its `Nats-Msg-Id`, [`message_id`]): until that
    /// producer records where the task was stored, the marker is pending with this nonce. `None`
    /// for a retry or a requeued task (published under ids of their own).
    pub nonce: Option<u64>,
}

impl Stamp {
    /// The stamp of a delivered or stored task with `id` from the message's headers.
    pub fn of(id: &str, headers: Option<&HeaderMap>) -> Self {
        let nonce = headers
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .and_then(|message_id| message_id.as_str().strip_prefix(id)?.strip_prefix(':'))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        Stamp {
            fired: schedules::fired_from_schedule(headers),
            nonce,
        }
    }

    /// Whether `marker` may name the task with this stamp stored at `sequence`.
    fn names(self, marker: Marker, sequence: u64) -> bool {
        match marker {
            Marker::Stored(stored) => stored == sequence,
            Marker::Scheduled(_) => self.fired,
            Marker::Pending(_, Some(nonce)) | Marker::Unconfirmed(nonce) => {
                self.nonce == Some(nonce)
            }
            Marker::Pending(_, None) => false,
        }
    }
}

/// Claims `id` for a new task, by `deadline`: writes a pending marker unless a task with the id
/// is stored. While another producer's pending marker is fresh, waits for it to be settled (its
/// task stored: taken; not confirmed or removed: ours to store).
pub async fn claim(connection: &Connection, id: &str, deadline: Instant) -> Result<Claim> {
    let config = connection.config();
    let subject = subject(config, id);
    let mut expected = 0;
    let mut nonce = fresh_nonce();
    let mut created = false;
    let mut rounds = 0;
    let mut patience = Patience::until(deadline);
    while rounds < MAX_ROUNDS {
        let pending = Marker::Pending(envelope::now_ms(), Some(nonce));
        match write(connection, &subject, expected, pending).await? {
            Ok(marker) => return Ok(Claim::Ours { marker, nonce }),
            Err(Refused::NoStream) if !created => {
                match ensure_stream(connection).await? {
                    Ensured::Ready => created = true,
                    // A node of the cluster is down or not current yet: try again shortly.
                    Ensured::NotYet(err) => {
                        tracing::debug!(%id, "the id index stream waits for its servers: {err}");
                        if !patience.wait().await {
                            return Err(err);
                        }
                    }
                }
                continue;
            }
            // Just created: on a cluster it answers once its leader is elected.
            Err(Refused::NoStream) if patience.wait().await => continue,
            Err(Refused::NoStream) => {
                return Err(Error::Nats(format!(
                    "the id index stream {:?} is missing",
                    config.id_index_stream()
                )))
            }
            Err(Refused::Taken) => {}
        }
        // Look at the marker that is there until it is settled.
        loop {
            let Some((sequence, marker)) = read(connection, &subject).await? else {
                // Removed meanwhile: create it again.
                expected = 0;
                break;
            };
            expected = sequence;
            match marker {
                Some(Marker::Pending(since, _)) if is_fresh(config, since) => {
                    // Another producer is storing it: wait until it says how that went.
                    if !patience.wait().await {
                        return Err(Error::Timeout {
                            operation: "publish".into(),
                            after: config.enqueue_timeout,
                            hint: " waiting for another producer that is enqueueing a task with \
                                   the same id to be confirmed",
                        });
                    }
                    continue;
                }
                // Its producer died, or its publish was not confirmed: it may be stored under
                // that nonce, so publish under the same one (the duplicate window then stores it
                // once).
                Some(Marker::Pending(_, Some(theirs)) | Marker::Unconfirmed(theirs)) => {
                    nonce = theirs
                }
                Some(Marker::Stored(stored)) if is_stored(connection, stored).await? => {
                    tracing::debug!(%id, "task id already stored; nothing enqueued");
                    return Ok(Claim::Taken);
                }
                // Delayed: its schedule waits, or it fired and its task is stored.
                Some(Marker::Scheduled(schedule))
                    if scheduled_task(connection, id, sequence, schedule, deadline)
                        .await?
                        .is_some() =>
                {
                    tracing::debug!(%id, "task id taken by a delayed task; nothing enqueued");
                    return Ok(Claim::Taken);
                }
                // A stale marker, or one Protoqueue did not write: replace it, with a nonce of
                // ours.
                _ => nonce = fresh_nonce(),
            }
            break;
        }
        rounds += 1;
    }
    Err(Error::Nats(format!(
        "task id {id:?}: other producers kept changing its marker; try again"
    )))
}

/// Records that the task of a claim was stored at `sequence` of the task stream (as a delayed
/// task's schedule when `delayed`).
pub async fn stored(connection: &Connection, id: &str, marker: u64, sequence: u64, delayed: bool) {
    let subject = subject(connection.config(), id);
    let stored = if delayed {
        Marker::Scheduled(sequence)
    } else {
        Marker::Stored(sequence)
    };
    match write(connection, &subject, marker, stored).await {
        Ok(Ok(_)) => {}
        // A worker that settled the task first recorded it in our place (and released it), or
        // a producer that judged our pending marker stale replaced it: it then owns the id.
        Ok(Err(_)) => {
            tracing::debug!(%id, "the id's marker was settled or replaced before it was recorded")
        }
        Err(err) => {
            tracing::warn!(%id, "the id's marker was not updated ({err}); it counts as stale after enqueueTimeout")
        }
    }
}

/// A worker received the fired task of a delayed task with `id`, stored at `sequence`: a
/// scheduled marker now names it, so it is settled (and goes stale) like any stored task.
pub async fn fired(connection: &Connection, id: &str, sequence: u64) {
    let subject = subject(connection.config(), id);
    let result = async {
        if let Some((marker, Some(Marker::Scheduled(_)))) = read(connection, &subject).await? {
            point(connection, id, &subject, marker, sequence).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%id, "the marker of a fired delayed task was not updated ({err})");
    }
}

/// Removes the marker of a delayed task with `id` whose schedule `cancel()` removed.
pub async fn unscheduled(connection: &Connection, id: &str) {
    let subject = subject(connection.config(), id);
    let result = async {
        if let Some((marker, Some(Marker::Scheduled(_)))) = read(connection, &subject).await? {
            delete(connection, marker).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%id, "the marker of a removed delayed task was not removed ({err})");
    }
}

/// Frees `id` from the task a cancel made before `at` covers, while that task waits to be taken
/// (and refused) by a worker: its marker is removed when it names a stored task (or the
/// schedule of a delayed one that is firing) whose life began by then
/// ([`crate::envelope::Task::life_began`]), so the id can be used again at once. A marker of a
/// task enqueued after the cancel is left alone. Best effort: the worker that refuses the task
/// releases the marker too.
pub async fn cancelled(connection: &Connection, id: &str, at: i64) {
    let subject = subject(connection.config(), id);
    let result = async {
        // A stored task, or a delayed one firing now (its schedule's envelope is the task's).
        let (marker, sequence) = match read(connection, &subject).await? {
            Some((marker, Some(Marker::Stored(sequence) | Marker::Scheduled(sequence)))) => {
                (marker, sequence)
            }
            _ => return Ok(()),
        };
        let stream = connection.task_stream().await?;
        let covered = match stream.get_raw_message(sequence).await {
            Ok(message) => crate::envelope::Task::decode_checked(&message.payload)
                .is_ok_and(|task| task.id == id && task.life_began() <= at),
            // A schedule gone has fired: its task (enqueued before the cancel) waits to be
            // refused. A stored task gone has ended: its marker is stale anyway.
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => true,
            Err(err) => return Err(Error::request("reading a cancelled task", err)),
        };
        if covered {
            delete(connection, marker).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%id, "the marker of a cancelled task was not removed yet ({err})");
    }
}

/// Records that the task with `id` stored at `from` (with `stamp`) was stored again at `to` (a
/// retry): its marker follows it when it may still name `from` ([`Stamp`]). Best effort: a
/// marker left behind is stale, and the id is free while the retry waits.
pub async fn moved(connection: &Connection, id: &str, from: u64, stamp: Stamp, to: u64) {
    let subject = subject(connection.config(), id);
    let result = async {
        // The marker may be replaced between the read and the write (by the producer recording
        // it, or a fired task's pointing): then read again and move the marker it wrote (else it
        // would keep naming `from`, left behind once the retry is done — found by the lifecycle
        // model).
        for _ in 0..3 {
            let marker = match read(connection, &subject).await? {
                Some((marker, Some(says))) if stamp.names(says, from) => marker,
                _ => return Ok(()),
            };
            if point(connection, id, &subject, marker, to).await? {
                return Ok(());
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%id, "id marker not moved to the task's retry ({err})");
    }
}

/// Points the marker of `id` (now stored at `marker`) at the task stored at `sequence`; whether it
/// was written. The pointing runs beside the task's handler ([`fired`]) or after its retry was
/// stored ([`moved`]): that task may be done, and its release past, before the pointing lands —
/// the release found the marker still naming the schedule or the failed attempt and left it. So
/// a pointing that landed looks again: a task already done takes its marker with it. (Seen by the
/// lifecycle model: a retry due 20 ms later done before its marker followed it; on an R3 cluster,
/// a pointing proposed while the release's delete was in flight stored after it.)
async fn point(
    connection: &Connection,
    id: &str,
    subject: &str,
    marker: u64,
    sequence: u64,
) -> Result<bool> {
    if write(connection, subject, marker, Marker::Stored(sequence))
        .await?
        .is_err()
    {
        return Ok(false);
    }
    if !is_stored(connection, sequence).await? {
        release(connection, id, sequence, Stamp::default()).await;
    }
    Ok(true)
}

/// Gives up a claim whose task was not confirmed: `sent` says whether it may be stored (the
/// marker then keeps its nonce for the next enqueue of the id); when it was never sent, the
/// marker is removed.
pub async fn abandon(connection: &Connection, id: &str, marker: u64, nonce: u64, sent: bool) {
    let result = if sent {
        let subject = subject(connection.config(), id);
        write(connection, &subject, marker, Marker::Unconfirmed(nonce))
            .await
            .map(|_| ())
    } else {
        delete(connection, marker).await.map(|_| ())
    };
    if let Err(err) = result {
        tracing::debug!(%id, "the marker of an unconfirmed task was not settled ({err}); it goes stale after enqueueTimeout");
    }
}

/// Growing pauses between two looks of a claim ([`PENDING_POLL`]), none ending past its deadline.
struct Patience {
    pause: Duration,
    deadline: Instant,
}

impl Patience {
    fn until(deadline: Instant) -> Self {
        Patience {
            pause: PENDING_POLL.0,
            deadline,
        }
    }

    /// Sleeps the next pause and lengthens the one after; `false`, without sleeping, when the
    /// pause would end past the deadline.
    async fn wait(&mut self) -> bool {
        if Instant::now() + self.pause > self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(PENDING_POLL.1);
        true
    }
}

/// Where the delayed task with `id` whose schedule was stored at `schedule` (its marker at
/// `marker`) is now: `schedule` while the schedule waits, else the sequence of the task the
/// schedule fired if the task stream still holds it (the marker is then pointed at it, as the
/// worker that receives it would have done), else `None`: the marker is stale.
///
/// A scheduled marker outlives its task only when a write was lost (a server killed before it
/// flushed the worker's pointing or release): the fired task is then looked for among the
/// messages stored after the schedule (the stream keeps only tasks not yet acked), one request
/// each, until `deadline`; found once, the marker names it and the next claim is one lookup.
async fn scheduled_task(
    connection: &Connection,
    id: &str,
    marker: u64,
    schedule: u64,
    deadline: Instant,
) -> Result<Option<u64>> {
    if is_stored(connection, schedule).await? {
        return Ok(Some(schedule));
    }
    let scheduler = schedules::delayed_subject(connection.config(), id);
    let stream = connection.task_stream().await?;
    let mut next = schedule + 1;
    loop {
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                operation: "publish".into(),
                after: connection.config().enqueue_timeout,
                hint: " looking for the task a delayed task with the same id fired",
            });
        }
        let Some(message) =
            crate::nats::next_on_subject(&stream, ">", next, "looking for a fired delayed task")
                .await?
        else {
            return Ok(None);
        };
        let sequence = message.sequence;
        if schedules::scheduler(Some(&message.headers)) == Some(scheduler.as_str()) {
            let subject = subject(connection.config(), id);
            write(connection, &subject, marker, Marker::Stored(sequence))
                .await?
                .ok();
            return Ok(Some(sequence));
        }
        next = sequence + 1;
    }
}

fn is_fresh(config: &Config, since: i64) -> bool {
    let fresh = (config.enqueue_timeout + PENDING_MARGIN).as_millis() as i64;
    envelope::now_ms().saturating_sub(since) < fresh
}

/// Whether the task stream still holds the message at `sequence`.
async fn is_stored(connection: &Connection, sequence: u64) -> Result<bool> {
    let stream = &connection.config().stream_name;
    crate::nats::is_stored(&connection.jetstream, stream, sequence).await
}

/// Writes `marker` on `subject` if the subject's last message is `expected` (0: none); the
/// marker's sequence on success.
async fn write(
    connection: &Connection,
    subject: &str,
    expected: u64,
    marker: Marker,
) -> Result<std::result::Result<u64, Refused>> {
    let mut headers = HeaderMap::new();
    headers.insert(
        NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        expected.to_string().as_str(),
    );
    let sent = connection
        .jetstream
        .publish_with_headers(subject.to_owned(), headers, marker.to_bytes())
        .await
        .map_err(|e| Error::nats("writing an id marker", e))?;
    let answer = tokio::time::timeout(connection.config().enqueue_timeout, sent).await;
    match answer {
        Ok(Ok(ack)) => Ok(Ok(ack.sequence)),
        Ok(Err(err)) if err.kind() == PublishErrorKind::WrongLastSequence => {
            Ok(Err(Refused::Taken))
        }
        // The same refusal as a clustered stream words it (10164), or its "not ready" (10163:
        // another write of the subject is under way): either way the marker is read again.
        Ok(Err(err)) if refused_by_cluster(&err) => Ok(Err(Refused::Taken)),
        Ok(Err(err)) if err.kind() == PublishErrorKind::StreamNotFound => {
            Ok(Err(Refused::NoStream))
        }
        Ok(Err(err)) => Err(Error::nats("writing an id marker", err)),
        Err(_) => Err(Error::Timeout {
            operation: "publish".into(),
            after: connection.config().enqueue_timeout,
            hint: " writing the marker of a task id; is the NATS server reachable?",
        }),
    }
}

/// Whether a cluster refused a marker write for its expected last sequence: async-nats 0.51
/// names only the single server's code (10071) `WrongLastSequence`.
fn refused_by_cluster(err: &jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|server| {
            [
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT,
                ErrorCode::STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY,
            ]
            .contains(&server.error_code())
        })
}

/// The marker on `subject` (its sequence, and what it says if Protoqueue wrote it).
async fn read(connection: &Connection, subject: &str) -> Result<Option<(u64, Option<Marker>)>> {
    let stream = index_stream(connection).await?;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some((message.sequence, Marker::parse(&message.payload)))),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(Error::nats("reading an id marker", err)),
    }
}

/// Removes the marker stored at `sequence`; `false` when it was gone already (replaced by a
/// newer marker of its id, or removed by another worker).
async fn delete(connection: &Connection, sequence: u64) -> Result<bool> {
    let stream = connection.config().id_index_stream();
    crate::nats::delete_message(&connection.jetstream, &stream, sequence).await
}

/// Removes the marker of the task with `id` (with `stamp`) that was stored at `sequence` and is
/// now acked, dead-lettered or purged, if the marker may still name it ([`Stamp`]): a stored
/// marker naming it; for a fired task, the scheduled one ([`fired`] may not have pointed it at
/// the task yet); or the pending one of its producer, which has not recorded where the task was
/// stored (a batch records its markers once all its tasks are stored — found by the lifecycle
/// model). Best effort: a stored marker left behind is stale.
pub async fn release(connection: &Connection, id: &str, sequence: u64, stamp: Stamp) {
    let subject = subject(connection.config(), id);
    let result = async {
        // A write may replace the marker between the read and the removal (a pointing, the
        // producer recording it): then the new one is read and removed.
        for _ in 0..3 {
            let marker = match read(connection, &subject).await? {
                Some((marker, Some(says))) if stamp.names(says, sequence) => {
                    if let Marker::Pending(..) | Marker::Unconfirmed(_) = says {
                        // Record it in the producer's place first: a removal is not ordered
                        // with writes that expect the marker (on a cluster, the producer's
                        // write could be stored after it), a write is.
                        match write(connection, &subject, marker, Marker::Stored(sequence)).await? {
                            Ok(recorded) => recorded,
                            Err(_) => continue,
                        }
                    } else {
                        marker
                    }
                }
                _ => return Ok(()),
            };
            if delete(connection, marker).await? {
                return Ok(());
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%id, "id marker not removed ({err}); it is stale and will be replaced");
    }
}

/// Whether a task with the producer-chosen `id` is in the queue — waiting, retrying, running or
/// delayed: its marker names a task still stored (or one being stored).
pub async fn held(connection: &Connection, id: &str) -> Result<bool> {
    if !any_held(connection).await? {
        return Ok(false);
    }
    match read(connection, &subject(connection.config(), id)).await? {
        Some((_, Some(Marker::Stored(sequence)))) => is_stored(connection, sequence).await,
        Some((_, Some(_))) => Ok(true),
        Some((_, None)) | None => Ok(false),
    }
}

/// Where the task with the producer-chosen `id` is stored in the task stream, as its marker
/// says (it may be gone since); `None` when the marker names no stored task.
pub async fn stored_at(connection: &Connection, id: &str) -> Result<Option<u64>> {
    if !any_held(connection).await? {
        return Ok(None);
    }
    match read(connection, &subject(connection.config(), id)).await? {
        Some((_, Some(Marker::Stored(sequence)))) => Ok(Some(sequence)),
        _ => Ok(None),
    }
}

/// Whether the queue's id index holds any marker (`false` too when no task with an own id was
/// ever enqueued: then the index does not exist).
pub async fn any_held(connection: &Connection) -> Result<bool> {
    use async_nats::jetstream::{context::GetStreamErrorKind, ErrorCode};
    let name = connection.config().id_index_stream();
    match connection.jetstream.get_stream(&name).await {
        Ok(stream) => Ok(stream.cached_info().state.messages > 0),
        Err(err) => match err.kind() {
            GetStreamErrorKind::JetStream(server)
                if server.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(false)
            }
            _ => Err(Error::nats("reading the id index stream", err)),
        },
    }
}

async fn index_stream(connection: &Connection) -> Result<jetstream::stream::Stream<()>> {
    connection
        .jetstream
        .get_stream_no_info(connection.config().id_index_stream())
        .await
        .map_err(|e| Error::nats("opening the id index stream", e))
}

/// What creating the id index stream came to.
enum Ensured {
    Ready,
    /// Not now: its replicas cannot be placed (a server of the cluster is down or not current:
    /// a new R3 stream needs all three) or the cluster did not answer in time.
    NotYet(Error),
}

/// Creates the id index stream if it is missing. Claims of one batch create it together: on a
/// cluster all but one of those creates may fail while the first is under way, so a failed
/// create is fine once the stream is there.
async fn ensure_stream(connection: &Connection) -> Result<Ensured> {
    use async_nats::jetstream::{context::CreateStreamErrorKind, ErrorCode};
    let config = stream_config(connection.config());
    let name = config.name.clone();
    let created = connection.jetstream.get_or_create_stream(config).await;
    let Err(err) = created else {
        return Ok(Ensured::Ready);
    };
    if connection.jetstream.get_stream(&name).await.is_ok() {
        return Ok(Ensured::Ready);
    }
    let no_peers = matches!(err.kind(), CreateStreamErrorKind::JetStream(server)
        if server.error_code() == ErrorCode::CLUSTER_NO_PEERS);
    let err = Error::nats("creating the id index stream", err);
    if no_peers || matches!(err, Error::Timeout { .. }) {
        Ok(Ensured::NotYet(err))
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_junk_is_none() {
        for marker in [
            Marker::Pending(1_700_000_000_000, Some(0xdead_beef)),
            Marker::Pending(1_700_000_000_000, None),
            Marker::Unconfirmed(7),
            Marker::Stored(42),
            Marker::Scheduled(43),
        ] {
            assert_eq!(Marker::parse(&marker.to_bytes()), Some(marker));
        }
        for junk in [&b""[..], b"x", b"p", b"sx", b"\xff", b"s-1", b"p1:zz", b"u"] {
            assert_eq!(Marker::parse(junk), None);
        }
    }

    #[test]
    fn a_stamp_names_its_producers_pending_marker_and_not_anothers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id("order:1", 0xbeef).as_str(),
        );
        let stamp = Stamp::of("order:1", Some(&headers));
        assert_eq!(
            stamp,
            Stamp {
                fired: false,
                nonce: Some(0xbeef)
            }
        );
        assert!(stamp.names(Marker::Pending(1, Some(0xbeef)), 7));
        assert!(stamp.names(Marker::Unconfirmed(0xbeef), 7));
        assert!(stamp.names(Marker::Stored(7), 7));
        assert!(!stamp.names(Marker::Pending(1, Some(0xbee)), 7));
        assert!(!stamp.names(Marker::Pending(1, None), 7));
        assert!(!stamp.names(Marker::Stored(8), 7));
        assert!(!stamp.names(Marker::Scheduled(7), 7), "not fired");
        // A retry's or another id's message id carries no nonce of this id.
        for other in ["retry:S:7", "order:2:beef", "order:1:zz", "order:1"] {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, other);
            assert_eq!(Stamp::of("order:1", Some(&headers)).nonce, None, "{other}");
        }
        assert_eq!(Stamp::of("order:1", None), Stamp::default());
    }

    #[test]
    fn any_id_is_one_subject_token() {
        let config = Config::new("S", "t").expect("valid");
        let subject = subject(&config, "a.b *>é");
        assert_eq!(subject, "protoqueue.ids.S.612e62202a3ec3a9");
        crate::config::validate_publish_subject("marker", &subject).expect("a valid subject");
    }
}
