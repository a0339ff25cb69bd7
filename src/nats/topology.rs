//! The JetStream objects a queue lives in: the task stream, the dead-letter stream and the durable
//! pull consumer shared by all workers. Created when missing; an existing stream or consumer whose
//! configuration Protoqueue cannot use (one that could drop a stored task, a dead letter, or stall
//! the workers) is reported as [`Error::StreamConflict`], never rewritten.

use std::{borrow::Cow, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{self, pull, AckPolicy, DeliverPolicy},
    context::ConsumerInfoErrorKind,
    stream::{self, ConsumerCreateStrictErrorKind, DiscardPolicy, RetentionPolicy, StorageType},
    ErrorCode,
};

use super::elections::through_elections;
use crate::{
    config::{Config, DUPLICATE_WINDOW},
    error::{Error, Result, API_TIMEOUT},
    layout::{self, subject_matches, Lane},
    schedules,
};

pub use crate::shape::{MARKER_KEY, MARK_DEAD_LETTERS, MARK_TASKS, QUEUE_KEY, SUBJECT_KEY};

/// The metadata that marks a new stream of `config`'s queue as `part` of it. Only set when a
/// stream is created: streams made by older versions have none (see the fallback in
/// [`crate::admin::queues`]).
fn marker(part: &str, config: &Config) -> std::collections::HashMap<String, String> {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(MARKER_KEY.to_owned(), part.to_owned());
    metadata.insert(QUEUE_KEY.to_owned(), config.stream_name.clone());
    if part == MARK_TASKS {
        metadata.insert(SUBJECT_KEY.to_owned(), config.subject.clone());
    }
    metadata
}

/// The task stream: WorkQueue retention (an acked task is removed), file storage, a duplicate
/// window so a re-sent publish is stored once.
///
/// With [`Config::schedules`], it also holds the queue's schedule subjects and allows message
/// schedules (see [`crate::schedules`]).
pub fn task_stream_config(config: &Config) -> stream::Config {
    // The queue's subject, or its tree's root and everything under it, always come first.
    let mut subjects = layout::queue_filters(config);
    if config.schedules {
        subjects.push(schedules::all_subjects(config));
    }
    if config.priorities {
        subjects.push(layout::all_priority_subjects(config));
    }
    stream::Config {
        name: config.stream_name.clone(),
        subjects,
        allow_message_schedules: config.schedules,
        allow_rollup: config.schedules,
        // Statistics count the tasks under a subject tree or a priority level with one direct
        // get, whatever the number of subjects (`crate::nats::stored_on`).
        allow_direct: true,
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.replicas,
        description: Some("Protoqueue tasks".into()),
        metadata: marker(MARK_TASKS, config),
        ..Default::default()
    }
}

/// The dead-letter stream: kept until removed or, with the retention options, until too old or
/// too many (Limits retention, the oldest go first), file storage, deduplicated by the id of the
/// original message so a crash between dead-lettering and acking stores it once.
pub fn dead_letter_stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: config.dead_letter_stream(),
        subjects: vec![config.dead_letter_subject()],
        retention: RetentionPolicy::Limits,
        max_age: config.dead_letter_max_age.unwrap_or_default(),
        max_messages: config
            .dead_letter_max_count
            .and_then(|n| i64::try_from(n).ok())
            .unwrap_or(-1),
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.replicas,
        description: Some(format!(
            "Protoqueue dead letters of stream {}",
            config.stream_name
        )),
        metadata: marker(MARK_DEAD_LETTERS, config),
        ..Default::default()
    }
}

/// The durable consumer of a queue: explicit acks, redelivery after `ack_wait`, no server-side
/// delivery limit (the executor counts deliveries and dead-letters, so a task is never stranded
/// in the stream when its last delivery dies with its worker).
pub fn consumer_config(config: &Config) -> pull::Config {
    lane_consumer_config(config, &Lane::tasks(config))
}

/// The durable consumer of `lane`, as [`consumer_config`] describes it.
pub fn lane_consumer_config(config: &Config, lane: &Lane) -> pull::Config {
    pull::Config {
        durable_name: Some(lane.consumer.clone()),
        description: Some(lane.description.into()),
        filter_subject: match lane.filters.as_slice() {
            [one] => one.clone(),
            _ => String::new(),
        },
        filter_subjects: match lane.filters.as_slice() {
            [_] => Vec::new(),
            many => many.to_vec(),
        },
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: config.ack_wait,
        max_deliver: -1,
        max_ack_pending: max_ack_pending(config, lane),
        ..Default::default()
    }
}

/// The consumer's `max_ack_pending`: `globalConcurrency` on the task workers' consumer, else
/// unlimited (-1). The server delivers no more unacknowledged messages than that across all
/// workers; the last worker to start sets it ([`crate::nats::ack_wait::adopt`]).
pub fn max_ack_pending(config: &Config, lane: &Lane) -> i64 {
    match config.global_concurrency {
        Some(limit) if lane.tasks => i64::from(limit),
        _ => -1,
    }
}

/// Makes sure both streams exist and fit this queue. An existing stream whose settings could
/// drop a stored task or dead letter (or stall dead-lettering) is refused with
/// [`Error::StreamConflict`] naming the setting; streams are never rewritten.
///
/// With [`Config::create_streams`] off, both streams must exist already (a missing one is
/// [`Error::InvalidConfig`]: a tool named a queue that is not there), and the dead-letter
/// stream's retention is taken as it is rather than compared with the options.
///
/// Rides through a leader election ([`through_elections`](super::elections::through_elections)).
pub async fn ensure_streams(js: &jetstream::Context, config: &Config) -> Result<Config> {
    through_elections("opening the queue's streams", || {
        ensure_streams_once(js, config)
    })
    .await
}

async fn ensure_streams_once(js: &jetstream::Context, config: &Config) -> Result<Config> {
    let server = js.client().server_info();
    if config.schedules {
        let feature = "options.schedules (delayed and recurring tasks)";
        schedules::require_server(&server.version, schedules::SCHEDULES_SINCE, feature)?;
    }
    if config.keeps_history() {
        let feature = "options.results, keepCompleted and keepFailed (per-message TTLs)";
        schedules::require_server(
            &server.version,
            crate::history::layout::RESULTS_SINCE,
            feature,
        )?;
    }
    let max_payload = server.max_payload;
    let open = |wanted: stream::Config| async move {
        if config.create_streams {
            ensure_stream(js, wanted).await
        } else {
            existing_stream(js, wanted).await
        }
    };
    let creating = if !config.schedules && creates_with_schedules(config, &server.version) {
        Cow::Owned(Config {
            schedules: true,
            ..config.clone()
        })
    } else {
        Cow::Borrowed(config)
    };
    let mut tasks = match open(task_stream_config(&creating)).await {
        // Another stream holds the schedule subjects: a queue that did not ask for schedules
        // goes without them rather than fail.
        Err(Error::StreamConflict(_)) if matches!(creating, Cow::Owned(_)) => {
            open(task_stream_config(config)).await?
        }
        opened => opened?,
    };
    if config.schedules {
        tasks = widen(js, tasks, schedules_widening(config)).await?;
    }
    if config.priorities {
        tasks = widen(js, tasks, priorities_widening(config)).await?;
    }
    // The queue as its stream says (every level, the whole tree), not only as asked.
    let shaped = match crate::shape::QueueShape::of(&tasks) {
        Some(shape) => shape.applied_to(config)?,
        None => config.clone(),
    };
    let config = &shaped;
    for warning in check_task_stream(&tasks, config)? {
        tracing::warn!(stream = %tasks.name, "{warning}");
    }
    let letters = open(dead_letter_stream_config(config)).await?;
    let adopted;
    let letters_config = if config.create_streams {
        config
    } else {
        adopted = Config {
            dead_letter_max_age: (!letters.max_age.is_zero()).then_some(letters.max_age),
            dead_letter_max_count: u64::try_from(letters.max_messages).ok().filter(|&n| n > 0),
            ..config.clone()
        };
        &adopted
    };
    for warning in check_dead_letter_stream(&letters, letters_config, max_payload)? {
        tracing::warn!(stream = %letters.name, "{warning}");
    }
    if config.keeps_history() && config.create_streams {
        ensure_stream(js, crate::history::layout::stream_config(config)).await?;
    }
    Ok(shaped)
}

/// Whether a task stream `config`'s queue creates on a server of `version` allows message
/// schedules: when the queue asks for them, and, unless it says otherwise, where the server
/// supports them (a new stream, so nothing existing changes: `delay` just works).
pub fn creates_with_schedules(config: &Config, version: &str) -> bool {
    config.schedules
        || (config.schedules_option.is_none()
            && schedules::server_supports(version, schedules::SCHEDULES_SINCE))
}

/// Opens a stream that must exist; it must capture the wanted subject.
async fn existing_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Config> {
    let name = wanted.name.clone();
    let mut stream = js.get_stream(&name).await.map_err(|err| match err.kind() {
        jetstream::context::GetStreamErrorKind::JetStream(server)
            if server.error_code() == ErrorCode::STREAM_NOT_FOUND =>
        {
            Error::InvalidConfig(format!(
                "stream {name:?} does not exist (createStreams: false opens existing streams only)"
            ))
        }
        _ => Error::nats(&format!("opening stream {name:?}"), err),
    })?;
    let existing = stream
        .info()
        .await
        .map_err(|err| Error::nats(&format!("reading stream {name:?}"), err))?
        .config
        .clone();
    for subject in wanted.subjects.iter().take(queue_subjects(&wanted)) {
        captures_subject(&existing, subject)?;
    }
    Ok(existing)
}

/// How many of a wanted task stream's first subjects are the queue's own (2 for a tree: its
/// root and `<root>.>`; 1 otherwise, and for the dead-letter stream).
fn queue_subjects(wanted: &stream::Config) -> usize {
    match wanted.subjects.as_slice() {
        [root, tree, ..] if *tree == format!("{root}.>") => 2,
        _ => 1,
    }
}

/// An existing stream must capture the queue's subject.
fn captures_subject(existing: &stream::Config, subject: &str) -> Result<()> {
    if existing
        .subjects
        .iter()
        .any(|pattern| subject_matches(pattern, subject))
    {
        return Ok(());
    }
    Err(Error::StreamConflict(format!(
        "stream {:?} exists with subjects {:?}, which do not include {subject:?}. \
         Use another streamName, or the subject the stream was made for",
        existing.name, existing.subjects
    )))
}

/// What an option adds to an existing task stream ([`widen`]).
struct Widening {
    /// The option that asks for it, as messages name it.
    option: &'static str,
    /// A subject the stream must capture.
    probe: String,
    /// The subjects added when it does not.
    subjects: String,
    /// Also turn on `allow_msg_schedules` (which the server never lets turn off again) and
    /// `allow_rollup_hdrs`.
    schedules: bool,
    /// What is added, as messages name it.
    adding: &'static str,
    /// What the stream needs, as the refusal says it.
    needs: &'static str,
    /// The change, as errors name it (`<doing> stream "<name>"`).
    doing: &'static str,
}

/// Opts an existing task stream into schedules, as a queue with `options.schedules` asks: adds
/// the schedule subjects and turns on message schedules and rollups.
fn schedules_widening(config: &Config) -> Widening {
    Widening {
        option: "options.schedules",
        probe: format!("{}.at.x", config.schedule_prefix()),
        subjects: schedules::all_subjects(config),
        schedules: true,
        adding: "the schedule subjects and allow_msg_schedules",
        needs: "to allow message schedules and hold",
        doing: "adding schedules to",
    }
}

/// Opts an existing task stream into priorities, as a queue with `options.priorities` asks: adds
/// the subjects of the priority levels ([`layout`]).
fn priorities_widening(config: &Config) -> Widening {
    Widening {
        option: "options.priorities",
        probe: layout::stored_subject(config, &config.subject, 1),
        subjects: layout::all_priority_subjects(config),
        schedules: false,
        adding: "the subjects of the priority levels",
        needs: "to hold",
        doing: "adding priority subjects to",
    }
}

/// Adds what `widening` asks for to an existing task stream. Nothing else changes; a stream
/// that has it already is left alone.
async fn widen(
    js: &jetstream::Context,
    existing: stream::Config,
    widening: Widening,
) -> Result<stream::Config> {
    let has_subject = existing
        .subjects
        .iter()
        .any(|pattern| subject_matches(pattern, &widening.probe));
    let has_flags =
        !widening.schedules || (existing.allow_message_schedules && existing.allow_rollup);
    if has_subject && has_flags {
        return Ok(existing);
    }
    let mut wanted = existing.clone();
    if !has_subject {
        wanted.subjects.push(widening.subjects.clone());
    }
    if widening.schedules {
        wanted.allow_message_schedules = true;
        wanted.allow_rollup = true;
    }
    tracing::info!(
        stream = %existing.name,
        "{}: adding {} to the stream", widening.option, widening.adding
    );
    let updated = js
        .update_stream(&wanted)
        .await
        .map_err(|err| match err.kind() {
            // The server's answer (subjects taken by another stream, a mirror…): the stream
            // cannot be used this way.
            jetstream::context::CreateStreamErrorKind::JetStream(server) => {
                Error::StreamConflict(format!(
                    "{} needs stream {:?} {} the subjects {:?}, and the server refused to change \
                     it: {server}",
                    widening.option, existing.name, widening.needs, widening.subjects
                ))
            }
            jetstream::context::CreateStreamErrorKind::TimedOut => Error::Timeout {
                operation: format!("{} the stream", widening.doing).into(),
                after: API_TIMEOUT,
                hint: "; is the NATS server reachable?",
            },
            _ => Error::nats(
                &format!("{} stream {:?}", widening.doing, existing.name),
                err,
            ),
        })?;
    Ok(updated.config)
}

/// Checks an existing task stream: refuses settings that can delete a stored task before it is
/// acked, or that break `enqueue`'s promise; returns warnings for settings that only weaken it.
pub fn check_task_stream(stream: &stream::Config, config: &Config) -> Result<Vec<String>> {
    let conflict = |setting: String| {
        Error::StreamConflict(format!(
            "stream {:?} exists with {setting}. Protoqueue never rewrites a stream: use another \
             streamName, or change or delete the stream",
            stream.name
        ))
    };
    if stream.retention != RetentionPolicy::WorkQueue {
        return Err(conflict(format!(
            "{:?} retention; a Protoqueue stream needs WorkQueue retention",
            stream.retention
        )));
    }
    if let Some(setting) = deleting_limit(stream, true) {
        return Err(conflict(format!(
            "{setting}, which can delete tasks before they are handled"
        )));
    }
    common_checks(stream).map_err(conflict)?;
    Ok(duplicate_window_warning(stream, config)
        .into_iter()
        .collect())
}

/// Checks an existing dead-letter stream: refuses settings that would drop dead letters, or
/// refuse them (dead-lettering would then stall: the task is retried without end).
pub fn check_dead_letter_stream(
    stream: &stream::Config,
    config: &Config,
    max_payload: usize,
) -> Result<Vec<String>> {
    let conflict = |setting: String| {
        Error::StreamConflict(format!(
            "dead-letter stream {:?} exists with {setting}. Protoqueue never rewrites a stream: \
             change or delete the stream, or use another streamName",
            stream.name
        ))
    };
    if stream.retention == RetentionPolicy::Interest {
        return Err(conflict(
            "Interest retention, which drops dead letters nobody consumes".into(),
        ));
    }
    // The retention the options ask for is the only limit a dead-letter stream may have.
    let wanted = dead_letter_stream_config(config);
    let retention = |s: &stream::Config| {
        let discard = (s.max_messages > 0).then_some(s.discard == DiscardPolicy::Old);
        (
            s.max_age,
            (s.max_messages > 0).then_some(s.max_messages),
            discard,
        )
    };
    if retention(stream) != retention(&wanted) {
        return Err(conflict(format!(
            "a retention other than the options ask for: {}, where options.deadLetterMaxAge and \
             options.deadLetterMaxCount ask for {}",
            describe_retention(stream),
            describe_retention(&wanted)
        )));
    }
    let without_retention = stream::Config {
        max_age: Duration::ZERO,
        max_messages: -1,
        ..stream.clone()
    };
    if let Some(setting) = deleting_limit(&without_retention, false) {
        return Err(conflict(format!(
            "{setting}, which drops dead letters or refuses them (dead-lettering would stall)"
        )));
    }
    let max_size = stream.max_message_size;
    if max_size > 0 && (max_size as usize) < max_payload {
        return Err(conflict(format!(
            "max_msg_size {max_size}, below the server's max_payload ({max_payload}): larger dead \
             letters would be refused and dead-lettering would stall"
        )));
    }
    common_checks(stream).map_err(conflict)?;
    Ok(duplicate_window_warning(stream, config)
        .into_iter()
        .collect())
}

/// A dead-letter stream's retention in words.
fn describe_retention(stream: &stream::Config) -> String {
    let age = match stream.max_age.as_millis() {
        0 => "no max_age".to_owned(),
        ms => format!("max_age {ms}ms"),
    };
    match stream.max_messages {
        n if n > 0 => format!("{age}, max_msgs {n} (discard {:?})", stream.discard),
        _ => format!("{age}, no max_msgs"),
    }
}

/// The first limit of `stream` that deletes stored messages, or (unless `refusing_ok`) refuses
/// new ones. With `refusing_ok`, a limit with `discard: new` only refuses publishes, which the
/// publisher sees.
fn deleting_limit(stream: &stream::Config, refusing_ok: bool) -> Option<String> {
    if !stream.max_age.is_zero() {
        return Some(format!("max_age {}ms", stream.max_age.as_millis()));
    }
    let discard_new = stream.discard == DiscardPolicy::New;
    let spares = |limit: i64| limit <= 0 || (refusing_ok && discard_new);
    if !spares(stream.max_messages) {
        return Some(format!(
            "max_msgs {} (discard {:?})",
            stream.max_messages, stream.discard
        ));
    }
    if !spares(stream.max_bytes) {
        return Some(format!(
            "max_bytes {} (discard {:?})",
            stream.max_bytes, stream.discard
        ));
    }
    let per_subject = stream.max_messages_per_subject;
    if per_subject > 0 && !(refusing_ok && discard_new && stream.discard_new_per_subject) {
        return Some(format!(
            "max_msgs_per_subject {per_subject} (discard {:?}{})",
            stream.discard,
            if stream.discard_new_per_subject {
                ", per subject"
            } else {
                ""
            }
        ));
    }
    None
}

/// Settings refused on both streams: a stored message would not survive a server restart, or a
/// publish would never be confirmed or stored.
fn common_checks(stream: &stream::Config) -> std::result::Result<(), String> {
    if stream.storage == StorageType::Memory {
        return Err(
            "memory storage, which loses every stored message when the server \
                    restarts; Protoqueue needs file storage"
                .into(),
        );
    }
    if stream.sealed {
        return Err("sealed: true, so nothing can be stored".into());
    }
    if stream.no_ack {
        return Err("no_ack: true, so no publish is ever confirmed".into());
    }
    Ok(())
}

/// A duplicate window shorter than `enqueueTimeout` lets a publish re-sent after a lost answer
/// be stored twice: a weaker promise, not a loss, so a warning.
fn duplicate_window_warning(stream: &stream::Config, config: &Config) -> Option<String> {
    (stream.duplicate_window < config.enqueue_timeout).then(|| {
        format!(
            "duplicate_window {}ms is shorter than enqueueTimeout ({}ms): a publish re-sent after \
             a lost confirmation may be stored twice",
            stream.duplicate_window.as_millis(),
            config.enqueue_timeout.as_millis()
        )
    })
}

/// JetStream API errors that mean "this name or these subjects are taken": another streamName
/// fixes them. Anything else the server refuses (replicas it cannot place, limits of the account)
/// is reported as what the server said.
const CONFLICT_CODES: [ErrorCode; 3] = [
    ErrorCode::STREAM_SUBJECT_OVERLAP,
    ErrorCode::STREAM_NAME_EXIST,
    ErrorCode::STREAM_MISMATCH,
];

/// Gets or creates a stream; an existing stream must capture the wanted subject.
async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<stream::Config> {
    use jetstream::context::CreateStreamErrorKind;
    let subjects: Vec<String> = wanted.subjects[..queue_subjects(&wanted)].to_vec();
    let name = wanted.name.clone();
    let stream = match js.get_or_create_stream(wanted.clone()).await {
        Ok(stream) => stream,
        Err(err) => {
            return Err(match err.kind() {
                CreateStreamErrorKind::JetStreamUnavailable => Error::Nats(format!(
                    "JetStream is not enabled on the server (start nats-server with -js): {err}"
                )),
                CreateStreamErrorKind::JetStream(server)
                    if server.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP =>
                {
                    subjects_taken(js, &wanted, &server).await
                }
                CreateStreamErrorKind::JetStream(server)
                    if CONFLICT_CODES.contains(&server.error_code()) =>
                {
                    Error::StreamConflict(format!(
                        "cannot create stream {name:?}: {server}. Use another streamName"
                    ))
                }
                CreateStreamErrorKind::JetStream(server) => Error::Nats(format!(
                    "the server refused to create stream {name:?}: {server}"
                )),
                CreateStreamErrorKind::TimedOut => Error::Timeout {
                    operation: "creating or opening the stream".into(),
                    after: API_TIMEOUT,
                    hint: "; is the NATS server reachable?",
                },
                // No answer, a closed connection: not something another streamName would fix.
                _ => Error::nats(&format!("creating or opening stream {name:?}"), err),
            });
        }
    };
    // The get-or-create answer already carries the stream's configuration.
    let existing = stream.cached_info().config.clone();
    for subject in &subjects {
        captures_subject(&existing, subject)?;
    }
    Ok(existing)
}

/// The error for a stream the server would not create because another stream stores some of its
/// subjects: names that stream and the subject (a subject is stored by one stream, so another
/// `streamName` cannot help: either that stream's name or a subject of its own).
async fn subjects_taken(
    js: &jetstream::Context,
    wanted: &stream::Config,
    server: &jetstream::Error,
) -> Error {
    for subject in &wanted.subjects {
        if let Ok(owner) = js.stream_by_subject(subject.as_str()).await {
            if owner != wanted.name {
                return Error::StreamConflict(format!(
                    "cannot create stream {:?}: subject {subject:?} is stored by stream \
                     {owner:?} (a subject belongs to one stream). To use that queue, give \
                     streamName {owner:?}; for a queue of its own, give a subject no stream has",
                    wanted.name
                ));
            }
        }
    }
    Error::StreamConflict(format!(
        "cannot create stream {:?}: {server}. Another stream stores some of its subjects {:?}: \
         give that stream's name as streamName, or subjects no stream has",
        wanted.name, wanted.subjects
    ))
}

/// Creates the shared durable consumer if it is missing, and returns its info. An existing one
/// is checked, never rewritten: settings under which a worker would lose, strand or mis-read
/// tasks are refused with [`Error::StreamConflict`]. Its `ack_wait` is the workers' business
/// (see [`crate::nats::ack_wait`]).
pub async fn ensure_consumer(js: &jetstream::Context, config: &Config) -> Result<consumer::Info> {
    ensure_lane(js, config, &Lane::tasks(config)).await
}

/// Creates (or checks) the durable consumer of `lane`, as [`ensure_consumer`] does; rides
/// through a leader election ([`through_elections`](super::elections::through_elections)).
pub async fn ensure_lane(
    js: &jetstream::Context,
    config: &Config,
    lane: &Lane,
) -> Result<consumer::Info> {
    through_elections("opening the workers' consumer", || {
        ensure_lane_once(js, config, lane)
    })
    .await
}

async fn ensure_lane_once(
    js: &jetstream::Context,
    config: &Config,
    lane: &Lane,
) -> Result<consumer::Info> {
    let name = lane.consumer.as_str();
    let stream = js
        .get_stream(&lane.stream)
        .await
        .map_err(|e| Error::nats(&format!("opening stream {:?}", lane.stream), e))?;
    match stream.consumer_info(name).await {
        Ok(info) => {
            check_lane(&info.config, lane)?;
            return Ok(info);
        }
        Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => {}
        Err(err) => return Err(Error::nats(&format!("reading consumer {name:?}"), err)),
    }
    // Strict: a worker starting at the same moment with another ackWait made it first; then its
    // consumer is checked like any existing one (and `ack_wait` adopted in two steps).
    let wanted = lane_consumer_config(config, lane);
    let mut created = match stream.create_consumer_strict(wanted).await {
        Ok(created) => created,
        Err(err) if err.kind() == ConsumerCreateStrictErrorKind::AlreadyExists => {
            let info = stream
                .consumer_info(name)
                .await
                .map_err(|e| Error::nats(&format!("reading consumer {name:?}"), e))?;
            check_lane(&info.config, lane)?;
            return Ok(info);
        }
        Err(err) => {
            return Err(match err.kind() {
                ConsumerCreateStrictErrorKind::JetStream(server)
                    if server.error_code() == ErrorCode::CONSUMER_WQ_CONSUMER_NOT_UNIQUE =>
                {
                    Error::StreamConflict(format!(
                        "consumer {name:?} (subjects {:?}) overlaps another consumer of stream \
                         {:?}, and a WorkQueue stream gives each task to one consumer only: a \
                         queue over a subject tree is served either by workers of the whole tree \
                         or by workers of parts (process options.subjects) that do not overlap. \
                         Stop the other workers, or delete their consumer",
                        lane.filters, lane.stream
                    ))
                }
                ConsumerCreateStrictErrorKind::JetStream(server) => Error::Nats(format!(
                    "the server refused to create consumer {name:?} on stream {:?}: {server}",
                    lane.stream
                )),
                _ => Error::nats(&format!("creating consumer {name:?}"), err),
            })
        }
    };
    let info = created
        .info()
        .await
        .map_err(|e| Error::nats(&format!("reading consumer {name:?}"), e))?
        .clone();
    check_lane(&info.config, lane)?;
    Ok(info)
}

/// Refuses an existing consumer whose settings differ from Protoqueue's where it matters.
pub fn check_consumer(existing: &consumer::Config, config: &Config) -> Result<()> {
    check_lane(existing, &Lane::tasks(config))
}

fn check_lane(existing: &consumer::Config, lane: &Lane) -> Result<()> {
    let filters: Vec<&str> = if !existing.filter_subjects.is_empty() {
        existing
            .filter_subjects
            .iter()
            .map(String::as_str)
            .collect()
    } else if !existing.filter_subject.is_empty() {
        vec![existing.filter_subject.as_str()]
    } else {
        Vec::new()
    };
    let problem = if existing.deliver_subject.is_some() {
        Some("is a push consumer (deliver_subject set); workers need a pull consumer".to_owned())
    } else if !same_filters(&filters, &lane.filters) {
        Some(format!(
            "filters {filters:?}; this queue's workers need exactly {:?}",
            lane.filters
        ))
    } else if existing.ack_policy != AckPolicy::Explicit {
        Some(format!(
            "ack_policy {:?}; workers need explicit acks",
            existing.ack_policy
        ))
    } else if existing.max_deliver > 0 {
        Some(format!(
            "max_deliver {}, which would strand tasks in the stream after that many deliveries",
            existing.max_deliver
        ))
    } else if !existing.backoff.is_empty() {
        Some("a backoff list, which overrides ack_wait and outruns heartbeats".to_owned())
    } else if existing.headers_only {
        Some("headers_only: true; workers need the task's payload".to_owned())
    } else if existing.max_batch > 0 || existing.max_bytes > 0 || !existing.max_expires.is_zero() {
        Some("limits on pull requests (max_batch, max_bytes or max_expires)".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::StreamConflict(format!(
            "consumer {:?} on stream {:?} {problem}. Protoqueue never rewrites it: delete the \
             consumer (workers create it again) or use another streamName",
            lane.consumer, lane.stream
        ))),
        None => Ok(()),
    }
}

/// Whether two lists hold the same filters, in any order.
fn same_filters(existing: &[&str], wanted: &[String]) -> bool {
    let mut existing = existing.to_vec();
    let mut wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    existing.sort_unstable();
    wanted.sort_unstable();
    existing == wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_stream_allows_schedules_unless_the_queue_says_no_or_the_server_cannot() {
        let unset = Config::new("S", "s").expect("config");
        let asked = |on: bool| Config {
            schedules: on,
            schedules_option: Some(on),
            ..unset.clone()
        };
        for (config, version, expected) in [
            (&unset, "2.12.0", true),
            (&unset, "2.15.1", true),
            (&unset, "v3.0.0-beta", true),
            (&unset, "2.11.9", false),
            (&unset, "", false),
            (&asked(false), "2.15.1", false),
            (&asked(true), "2.15.1", true),
            // Asked on an older server: refused by the version check, not silently dropped.
            (&asked(true), "2.11.9", true),
        ] {
            assert_eq!(
                creates_with_schedules(config, version),
                expected,
                "{:?} on {version:?}",
                config.schedules_option
            );
        }
    }
}
