//! Delayed and recurring tasks as a whole: cancelling a delayed task, creating, replacing,
//! removing and listing recurring schedules, and counting them (see [`crate::schedules`] for
//! the subjects and the design).

use std::time::Duration;

use async_nats::{
    header::{NATS_SCHEDULE, NATS_SCHEDULE_NEXT, NATS_SCHEDULE_TARGET, NATS_SCHEDULE_TIME_ZONE},
    jetstream::{
        self, context::PublishErrorKind, message::PublishMessage, stream::Stream, ErrorCode,
    },
    HeaderMap,
};
use bytes::Bytes;
use futures::TryStreamExt;
use serde_json::Value;

use crate::{
    config::json::{invalid, kind, reject_unknown_keys},
    envelope::{self, Task},
    error::{Error, Result},
    nats::connection::Connection,
    producer::NewTask,
    schedules::{self, check_name, require_enabled, require_server, RECURRING_SINCE},
};

/// The server's code for a schedule pattern (cron, `@every`, time zone) it cannot read.
const PATTERN_INVALID: ErrorCode = ErrorCode(10189);
/// The server's code for a schedule on a stream without `allow_msg_schedules`.
const SCHEDULES_DISABLED: ErrorCode = ErrorCode(10188);
/// The server's code for a `Nats-Schedule-Time-Zone` it does not know.
const TIME_ZONE_INVALID: ErrorCode = ErrorCode(10223);
/// Longest cron expression or time zone name accepted, in bytes.
const MAX_PATTERN_LEN: usize = 256;

/// When a recurring task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A cron expression of 6 fields, seconds first (or `@hourly`, `@daily`…), as the server
    /// takes it.
    Cron(String),
    /// A fixed interval, at least one second.
    Every(Duration),
}

/// A recurring task: when, in which time zone, and what it enqueues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring {
    /// When it runs.
    pub spec: Spec,
    /// The IANA time zone of a cron expression (`Nats-Schedule-Time-Zone`); UTC when absent.
    pub time_zone: Option<String>,
}

impl Recurring {
    /// Reads `{ cron } | { every }` with an optional `timeZone`; every mistake is
    /// `ERR_PQ_INVALID_CONFIG`.
    pub fn from_json(value: &Value) -> Result<Self> {
        let object = value.as_object().ok_or_else(|| {
            invalid(format!(
                "a schedule's spec must be an object like {{ cron }} or {{ every }}, got {}",
                kind(value)
            ))
        })?;
        reject_unknown_keys("spec", object, &["cron", "every", "timeZone"])?;
        let present = |key: &str| object.get(key).filter(|v| !v.is_null());
        let spec = match (present("cron"), present("every")) {
            (Some(_), Some(_)) => {
                return Err(invalid("spec takes cron or every, not both".into()));
            }
            (None, None) => return Err(invalid("spec needs cron or every".into())),
            (Some(cron), None) => {
                let cron = cron.as_str().ok_or_else(|| {
                    invalid(format!("spec.cron must be a string, got {}", kind(cron)))
                })?;
                Spec::Cron(check_cron(cron)?)
            }
            (None, Some(every)) => {
                let ms = every
                    .as_u64()
                    .filter(|&ms| (schedules::MIN_EVERY_MS..=schedules::MAX_DELAY_MS).contains(&ms))
                    .ok_or_else(|| {
                        invalid(format!(
                            "spec.every must be an integer number of milliseconds from {} to {}, \
                             got {every}",
                            schedules::MIN_EVERY_MS,
                            schedules::MAX_DELAY_MS
                        ))
                    })?;
                Spec::Every(Duration::from_millis(ms))
            }
        };
        let time_zone = match present("timeZone") {
            None => None,
            Some(zone) => {
                let zone = zone.as_str().ok_or_else(|| {
                    invalid(format!(
                        "spec.timeZone must be a string, got {}",
                        kind(zone)
                    ))
                })?;
                if zone.is_empty()
                    || zone.len() > MAX_PATTERN_LEN
                    || zone.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(invalid(format!(
                        "spec.timeZone {zone:?} is not a time zone name (e.g. \"Europe/Paris\")"
                    )));
                }
                if let Spec::Every(_) = spec {
                    return Err(invalid(format!(
                        "spec.timeZone {zone:?} applies to cron only: every runs at a fixed \
                         interval, whatever the time zone"
                    )));
                }
                Some(zone.to_owned())
            }
        };
        Ok(Recurring { spec, time_zone })
    }

    /// The `Nats-Schedule` header.
    fn pattern(&self) -> String {
        match &self.spec {
            Spec::Cron(cron) => cron.clone(),
            Spec::Every(every) => format!("@every {}ms", every.as_millis()),
        }
    }

    /// Reads a stored schedule's headers back.
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let pattern = headers.get(NATS_SCHEDULE)?.as_str();
        let spec = match pattern.strip_prefix("@every ") {
            Some(every) => Spec::Every(parse_go_duration(every)?),
            None => Spec::Cron(pattern.to_owned()),
        };
        let time_zone = headers
            .get(NATS_SCHEDULE_TIME_ZONE)
            .map(|zone| zone.as_str().to_owned());
        Some(Recurring { spec, time_zone })
    }
}

/// A cron expression as far as it can be checked here: 6 fields (seconds first) of cron
/// characters, or one of the server's `@` shorthands. The server checks the rest.
fn check_cron(cron: &str) -> Result<String> {
    const SHORTHANDS: [&str; 7] = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    let cron = cron.trim();
    if SHORTHANDS.contains(&cron) {
        return Ok(cron.to_owned());
    }
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let characters_ok = cron
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '*' | ',' | '-' | '/' | '?'));
    if fields.len() != 6 || !characters_ok || cron.len() > MAX_PATTERN_LEN {
        return Err(invalid(format!(
            "spec.cron {cron:?} is not a cron expression of 6 fields, seconds first (e.g. \
             \"0 30 9 * * MON-FRI\"), nor @hourly, @daily, @weekly, @monthly or @yearly"
        )));
    }
    Ok(fields.join(" "))
}

/// A Go duration as the server writes `@every` (`1500ms`, `1s`, `1m30s`, `1h0m0s`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(number * unit).ok()?;
    }
    Some(total)
}

/// A recurring schedule as the server stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSchedule {
    /// Its name.
    pub name: String,
    /// When it runs (`None`: a pattern this build cannot read back).
    pub recurring: Option<Recurring>,
    /// The task each tick enqueues (its id is the schedule's name).
    pub task: Task,
    /// The next run, ms since the epoch, when the server says.
    pub next_run_ms: Option<i64>,
}

/// What cancelling a delayed task came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unscheduled {
    /// Its schedule was removed before its time: it never runs.
    Removed,
    /// It is due now, or about to be (the server may be firing it as the cancel arrives): it
    /// becomes an ordinary task.
    Due,
    /// No delayed task has this id (it ran already, was cancelled, or never was delayed).
    None,
}

/// Removes the schedule of the delayed task `id` if it is not yet due. On a stream without
/// schedules, there is none.
pub async fn cancel_delayed(connection: &Connection, id: &str) -> Result<Unscheduled> {
    if !connection.config().schedules {
        return Ok(Unscheduled::None);
    }
    // A request refused while a leader is elected did nothing: ask again (found by the lifecycle
    // model on a cluster: a cancel just after a node was killed was refused with code 10008).
    crate::nats::elections::while_unavailable("cancel()", || cancel_once(connection, id)).await
}

async fn cancel_once(connection: &Connection, id: &str) -> Result<Unscheduled> {
    let config = connection.config();
    let stream = connection.task_stream().await?;
    let Some((schedule, due)) = schedules::delayed_schedule(&stream, config, id).await? else {
        return Ok(Unscheduled::None);
    };
    let margin = i64::try_from(schedules::CANCEL_MARGIN.as_millis()).unwrap_or(i64::MAX);
    if due.is_some_and(|due| due <= envelope::now_ms() + margin) {
        return Ok(Unscheduled::Due);
    }
    if !remove_subject(connection, &schedules::delayed_subject(config, id)).await? {
        // Fired between the look and the removal.
        return Ok(Unscheduled::Due);
    }
    // Its id, when the producer chose it, is free again.
    crate::ids::unscheduled(connection, id).await;
    crate::history::cancelled_before_running(connection, id, &schedule.payload).await;
    Ok(Unscheduled::Removed)
}

/// Creates the recurring task `name`, or replaces it (one schedule per name, however many
/// processes call this): from its next tick on, the server enqueues `task` as `spec` says.
pub async fn schedule(
    connection: &Connection,
    name: &str,
    recurring: &Recurring,
    data: Bytes,
    metadata: Bytes,
) -> Result<()> {
    let task = NewTask {
        data,
        metadata,
        ..NewTask::default()
    };
    schedule_task(connection, name, recurring, task).await
}

/// [`schedule`] for a task of any content type, with its name, its own `maxRetries` and backoff,
/// if any (its `run_at`, id, priority and subject are refused by [`crate::Queue::schedule`]).
pub async fn schedule_task(
    connection: &Connection,
    name: &str,
    recurring: &Recurring,
    task: NewTask,
) -> Result<()> {
    let config = connection.config();
    check_name(name)?;
    require_enabled(config, "schedule()")?;
    let version = connection.client.server_info().version;
    require_server(&version, RECURRING_SINCE, "recurring tasks (schedule())")?;
    let content_type = match &task.content_type {
        Some(content_type) => {
            crate::content_type::validate(content_type)?;
            content_type.as_str()
        }
        None => envelope::JSON,
    };
    let mut envelope = Task::create(
        name.to_owned(),
        task.data,
        content_type,
        task.metadata,
        envelope::now_ms(),
    );
    if let Some(task_name) = task.name {
        crate::content_type::validate_name(&task_name)?;
        envelope.name = task_name;
    }
    // Every tick is a copy of this envelope: each task of the schedule keeps the retry policy.
    envelope.max_retries = task.max_retries;
    envelope.backoff = task.backoff.map(Into::into);
    let payload = envelope.to_bytes();
    let max = connection.max_payload();
    let size = payload.len() + 512 + config.subject.len() * 2;
    if size > max {
        return Err(Error::PayloadTooLarge { size, max });
    }
    let mut publish = PublishMessage::build()
        .payload(payload)
        .header(NATS_SCHEDULE, recurring.pattern().as_str())
        .header(NATS_SCHEDULE_TARGET, config.subject.as_str());
    if let Some(zone) = &recurring.time_zone {
        publish = publish.header(NATS_SCHEDULE_TIME_ZONE, zone.as_str());
    }
    // No `Nats-Msg-Id`: calling again within the duplicate window must replace the schedule.
    let subject = schedules::recurring_subject(config, name);
    let timeout = config.enqueue_timeout;
    let acked = tokio::time::timeout(timeout, async {
        connection
            .jetstream
            .send_publish(subject, publish)
            .await?
            .await
    })
    .await
    .map_err(|_| Error::Timeout {
        operation: "schedule".into(),
        after: timeout,
        hint: " waiting for JetStream to confirm; is the NATS server reachable?",
    })?;
    acked.map_err(schedule_error)?;
    Ok(())
}

/// What a refused schedule means: a pattern or time zone the server cannot read is the user's
/// mistake (`ERR_PQ_INVALID_CONFIG`).
fn schedule_error(err: jetstream::context::PublishError) -> Error {
    let server_code = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code);
    match server_code {
        Some(PATTERN_INVALID | TIME_ZONE_INVALID) => Error::InvalidConfig(format!(
            "the server refused the schedule's cron expression, interval or time zone: {err}"
        )),
        Some(SCHEDULES_DISABLED) => Error::SchedulesOff("schedule()"),
        _ if err.kind() == PublishErrorKind::MaxPayloadExceeded => {
            Error::PayloadRefused(err.to_string())
        }
        _ => Error::nats("schedule failed", err),
    }
}

/// Removes the recurring task `name`: `true` when it existed.
pub async fn unschedule(connection: &Connection, name: &str) -> Result<bool> {
    let config = connection.config();
    check_name(name)?;
    require_enabled(config, "unschedule()")?;
    remove_subject(connection, &schedules::recurring_subject(config, name)).await
}

/// The recurring tasks of the queue, by name.
pub async fn list(connection: &Connection) -> Result<Vec<StoredSchedule>> {
    let config = connection.config();
    require_enabled(config, "getSchedules()")?;
    let stream = connection.task_stream().await?;
    let prefix = format!("{}.recurring.", config.schedule_prefix());
    let mut names: Vec<String> = stream
        .info_with_subjects(schedules::recurring_subjects(config))
        .await
        .map_err(|err| Error::request("listing the schedules", err))?
        .map_ok(|(subject, _)| subject)
        .try_collect()
        .await
        .map_err(|err| Error::nats("listing the schedules", err))?;
    names.sort();
    let mut listed = Vec::with_capacity(names.len());
    for subject in names {
        let message = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            // Removed since it was listed.
            Err(err)
                if err.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                continue
            }
            Err(err) => return Err(Error::nats("reading a schedule", err)),
        };
        let Ok(task) = Task::decode_checked(&message.payload) else {
            tracing::warn!(%subject, "skipping a schedule whose payload is not a task");
            continue;
        };
        let next_run_ms = message
            .headers
            .get(NATS_SCHEDULE_NEXT)
            .and_then(|next| async_nats::datetime::parse_rfc3339(next.as_str()).ok())
            .map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64);
        listed.push(StoredSchedule {
            name: subject.strip_prefix(&prefix).unwrap_or(&subject).to_owned(),
            recurring: Recurring::from_headers(&message.headers),
            task,
            next_run_ms,
        });
    }
    Ok(listed)
}

/// How many delayed tasks wait for their time, and how many recurring schedules exist, and how
/// many messages are tasks (on the queue's subject).
pub(crate) struct Counts {
    pub delayed: u64,
    pub recurring: u64,
    pub tasks: u64,
}

/// Counts the schedules of the task stream. Delayed tasks are counted as what is neither a task
/// nor a recurring schedule: listing their subjects would cost one entry per task. The stream's
/// message count is read from the same answer as the count of tasks on the queue's subject, so a
/// task acknowledged between two requests is never counted as delayed. The other subjects (a
/// tree's, the priority levels') are counted at a cost that does not grow with how many
/// distinct subjects they hold ([`crate::nats::stored_on`]). On a stream shared with other
/// subjects (a wildcard stream made by another tool), their messages count as delayed. `stream`
/// is the queue's task stream.
pub(crate) async fn counts(
    js: &jetstream::Context,
    config: &crate::config::Config,
    stream: &Stream,
) -> Result<Counts> {
    const COUNTING: &str = "counting the schedules";
    // Recurring schedules first: they change only when a user adds or removes one.
    let recurring =
        crate::nats::stored_on(js, stream, &schedules::recurring_subjects(config), COUNTING)
            .await?;
    // The queue's own subject (a literal: one entry), with the stream's count in the same answer.
    let subjects = stream
        .info_with_subjects(config.subject.clone())
        .await
        .map_err(|err| Error::request(COUNTING, err))?;
    let messages = subjects.info.state.messages;
    let mut tasks = subjects
        .try_fold(0u64, |sum, (_, n)| async move { Ok(sum + n as u64) })
        .await
        .map_err(|err| Error::nats(COUNTING, err))?;
    let mut others: Vec<String> = crate::layout::queue_filters(config)
        .into_iter()
        .filter(|filter| *filter != config.subject)
        .collect();
    if config.priorities {
        others.push(crate::layout::all_priority_subjects(config));
    }
    for filter in others {
        tasks += crate::nats::stored_on(js, stream, &filter, COUNTING).await?;
    }
    Ok(Counts {
        delayed: messages.saturating_sub(tasks + recurring),
        recurring,
        tasks,
    })
}

/// Removes every message on `subject` (one schedule): whether there was one.
async fn remove_subject(connection: &Connection, subject: &str) -> Result<bool> {
    let stream = connection.task_stream().await?;
    let purged = stream
        .purge()
        .filter(subject)
        .await
        .map_err(|err| Error::request("removing a schedule", err))?;
    Ok(purged.purged > 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn specs_are_read_and_checked() {
        let every = Recurring::from_json(&json!({"every": 1500})).expect("valid");
        assert_eq!(every.pattern(), "@every 1500ms");
        let cron = Recurring::from_json(
            &json!({"cron": "0  30 9 * * MON-FRI", "timeZone": "Europe/Paris"}),
        )
        .expect("valid");
        assert_eq!(cron.pattern(), "0 30 9 * * MON-FRI");
        assert_eq!(cron.time_zone.as_deref(), Some("Europe/Paris"));
        assert!(Recurring::from_json(&json!({"cron": "@hourly"})).is_ok());
        for bad in [
            json!(null),
            json!("* * * * * *"),
            json!({}),
            json!({"cron": "* * * * * *", "every": 1000}),
            json!({"cron": "* * * * *"}),
            json!({"cron": "* * * * * * *"}),
            json!({"cron": "* * * * * *; rm"}),
            json!({"cron": 5}),
            json!({"every": 999}),
            json!({"every": -1000}),
            json!({"every": 1000.5}),
            json!({"every": "1s"}),
            json!({"every": 1000, "timezone": "UTC"}),
            json!({"every": 1000, "timeZone": "Europe/ Paris"}),
            json!({"every": 1000, "timeZone": ""}),
            json!({"every": 1000, "timeZone": "Europe/Paris"}),
            json!({"every": 1000, "extra": 1}),
        ] {
            assert_eq!(
                Recurring::from_json(&bad).map_err(|e| e.code()),
                Err("ERR_PQ_INVALID_CONFIG"),
                "{bad}"
            );
        }
    }

    #[test]
    fn go_durations_read_back() {
        assert_eq!(
            parse_go_duration("1500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("soon"), None);
    }
}
