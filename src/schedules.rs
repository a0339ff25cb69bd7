//! Delayed and recurring tasks on NATS message schedules (ADR-51): the subjects, headers and
//! checks they share. Producing them is in [`crate::producer`] and [`crate::admin::schedules`].
//!
//! A queue with `options.schedules` has a task stream with two kinds of subjects: the queue's
//! subject, which its workers' consumer takes (and only it), and the schedule subjects under
//! [`Config::schedule_prefix`]:
//!
//! - a delayed task is one schedule message `@at <time>` on `<prefix>.at.<task id>`, whose
//!   payload is the task's envelope. At its time the server publishes the payload on the queue's
//!   subject and removes the schedule. One subject per task: the server rolls up each schedule
//!   subject, so a re-sent enqueue replaces its own schedule instead of adding one, and `cancel`
//!   removes exactly that subject.
//! - a recurring task is one schedule message (`@every`, or a cron expression) on
//!   `<prefix>.recurring.<name>`; the server keeps it and publishes its payload at every tick.
//!   Every tick carries the same envelope, so the worker gives each occurrence its own id,
//!   `<name>:<stream sequence>` ([`occurrence`]).

use async_nats::{header::NATS_SCHEDULER, HeaderMap};

use crate::{
    config::Config,
    envelope::Task,
    error::{Error, Result},
};

/// The oldest nats-server with message schedules (`@at`).
pub const SCHEDULES_SINCE: (u64, u64) = (2, 12);
/// The oldest nats-server with cron and `@every` schedules.
pub const RECURRING_SINCE: (u64, u64) = (2, 14);
/// Longest task id or schedule name, in bytes (they are subject tokens).
pub const MAX_NAME_LEN: usize = 256;
/// The latest time a delayed task may run at: ten years from now, in milliseconds.
pub const MAX_DELAY_MS: u64 = 10 * 366 * 24 * 3600 * 1000;
/// The shortest interval of an `every` schedule (the server's limit).
pub const MIN_EVERY_MS: u64 = 1_000;

/// The schedule subject of the delayed task `id`: the id itself when it is a plain token (ids
/// Protoqueue makes: UUIDs), else `~` and its bytes in hex (`~` never starts a plain one), so any id (a producer's own may hold
/// dots or wildcards) is one subject token.
pub fn delayed_subject(config: &Config, id: &str) -> String {
    let plain = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        return format!("{}.at.{id}", config.schedule_prefix());
    }
    let hex: String = id.bytes().map(|byte| format!("{byte:02x}")).collect();
    format!("{}.at.~{hex}", config.schedule_prefix())
}

/// The subjects of every delayed task of the queue.
pub fn delayed_subjects(config: &Config) -> String {
    format!("{}.at.>", config.schedule_prefix())
}

/// The schedule subject of the recurring task `name`.
pub fn recurring_subject(config: &Config, name: &str) -> String {
    format!("{}.recurring.{name}", config.schedule_prefix())
}

/// The subjects of every recurring task of the queue.
pub fn recurring_subjects(config: &Config) -> String {
    format!("{}.recurring.>", config.schedule_prefix())
}

/// All schedule subjects of the queue, as the task stream lists them.
pub fn all_subjects(config: &Config) -> String {
    format!("{}.>", config.schedule_prefix())
}

/// Checks a task id or schedule name: one subject token (no whitespace, dots or wildcards), not
/// empty, at most [`MAX_NAME_LEN`] bytes. `what` names it in the error.
pub fn check_token(what: &str, value: &str, invalid: fn(String) -> Error) -> Result<()> {
    if value.is_empty() {
        return Err(invalid(format!("{what} must not be empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{what} is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
    {
        return Err(invalid(format!(
            "{what} {value:?} contains {c:?}; it may not contain whitespace, '.', '*' or '>'"
        )));
    }
    Ok(())
}

/// Checks a recurring schedule's name: a subject token as [`check_token`] says, without ':'
/// (which separates the name from the sequence in the ids of its occurrences).
pub fn check_name(name: &str) -> Result<()> {
    check_token("schedule name", name, Error::InvalidConfig)?;
    if name.contains(':') {
        return Err(Error::InvalidConfig(format!(
            "schedule name {name:?} contains ':', which separates it from the sequence in the \
             ids of its tasks"
        )));
    }
    Ok(())
}

/// Refuses schedules on a queue without `options.schedules`.
pub fn require_enabled(config: &Config, what: &'static str) -> Result<()> {
    if config.schedules {
        Ok(())
    } else {
        Err(Error::SchedulesOff(what))
    }
}

/// Whether a server of `version` (e.g. `2.12.1`, `v2.14.0-RC.1`) is `since` or newer.
pub fn server_supports(version: &str, since: (u64, u64)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|part| part.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= since
}

/// Refuses a server older than `since` for `feature`.
pub fn require_server(version: &str, since: (u64, u64), feature: &'static str) -> Result<()> {
    if server_supports(version, since) {
        return Ok(());
    }
    Err(Error::ServerTooOld {
        feature,
        needed: format!("{}.{}", since.0, since.1),
        found: version.to_owned(),
    })
}

/// When a task given `delay` (ms from now) or `runAt` (ms since the epoch) runs, ms since the
/// epoch; `None` for neither. Both, a negative, fractional or non-finite value, or a time more
/// than [`MAX_DELAY_MS`] away are `ERR_PQ_INVALID_TASK`. A `runAt` in the past runs at once.
pub fn run_at(delay: Option<f64>, run_at: Option<f64>, now_ms: i64) -> Result<Option<i64>> {
    let whole = |what: &str, value: f64, min: f64, max: f64| {
        if value.is_finite() && value.fract() == 0.0 && (min..=max).contains(&value) {
            Ok(value as i64)
        } else {
            Err(Error::InvalidTask(format!(
                "{what} must be a whole number of milliseconds from {min} to {max}, got {value}"
            )))
        }
    };
    let latest = (now_ms as f64) + MAX_DELAY_MS as f64;
    match (delay, run_at) {
        (Some(_), Some(_)) => Err(Error::InvalidTask(
            "a task takes delay or runAt, not both".into(),
        )),
        (Some(delay), None) => Ok(Some(
            now_ms + whole("delay", delay, 0.0, MAX_DELAY_MS as f64)?,
        )),
        (None, Some(at)) => Ok(Some(whole("runAt", at, 0.0, latest)?)),
        (None, None) => Ok(None),
    }
}

/// The header of a delayed task's schedule holding when it is due (ms since the epoch), which
/// `cancel()` reads.
pub const DUE_HEADER: &str = "Protoqueue-Due-Ms";

/// When the delayed task whose schedule has `headers` is due, ms since the epoch.
pub fn due_of(headers: &async_nats::HeaderMap) -> Option<i64> {
    headers
        .get(DUE_HEADER)
        .and_then(|due| due.as_str().parse::<i64>().ok())
}

/// The schedule of the delayed task `id` in the task stream `stream`, with when it is due (ms
/// since the epoch, from [`DUE_HEADER`]); `None` when the task has no schedule (it ran, was
/// cancelled, or never was delayed).
pub(crate) async fn delayed_schedule(
    stream: &async_nats::jetstream::stream::Stream,
    config: &Config,
    id: &str,
) -> Result<Option<(async_nats::jetstream::message::StreamMessage, Option<i64>)>> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream
        .get_last_raw_message_by_subject(&delayed_subject(config, id))
        .await
    {
        Ok(schedule) => {
            let due = due_of(&schedule.headers);
            Ok(Some((schedule, due)))
        }
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(Error::request("reading a delayed task", err)),
    }
}

/// How close to its time a delayed task can no longer be cancelled: the server may be firing it
/// as the cancel arrives (its clock and ours differ a little), and a cancel must never answer
/// `true` for a task that runs.
pub const CANCEL_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// `ms` since the epoch as RFC 3339 in UTC with milliseconds, as `@at` takes it.
pub fn rfc3339(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

/// The schedule subject a message was published from by the server (`Nats-Scheduler`), if any.
pub(crate) fn scheduler(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?
        .get(NATS_SCHEDULER)
        .map(|scheduler| scheduler.as_str())
}

/// Whether a message with `headers` was published by the server from a delayed task's schedule.
pub fn fired_from_schedule(headers: Option<&HeaderMap>) -> bool {
    scheduler(headers).is_some_and(|scheduler| !scheduler.contains(".recurring."))
}

/// The task a delivered message carries. A tick of a recurring schedule (a message the server
/// generated from a schedule on a `.recurring.` subject) carries the schedule's envelope
/// unchanged; it becomes its own occurrence: id `<schedule id>:<stream sequence>`, enqueued at
/// the time of the tick. Everything else is the envelope as stored.
pub fn occurrence(
    mut task: Task,
    headers: Option<&HeaderMap>,
    tick: impl FnOnce() -> (u64, i64),
) -> Task {
    let recurring = scheduler(headers).is_some_and(|scheduler| scheduler.contains(".recurring."));
    if recurring {
        let (sequence, at_ms) = tick();
        task.id = format!("{}:{sequence}", task.id);
        task.enqueued_at_ms = at_ms;
    }
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_563_696_789), "2025-12-01T04:34:56.789Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn delays_and_times_are_checked() {
        let now = 1_000_000;
        assert_eq!(run_at(None, None, now).ok(), Some(None));
        assert_eq!(run_at(Some(0.0), None, now).ok(), Some(Some(now)));
        assert_eq!(run_at(Some(1500.0), None, now).ok(), Some(Some(now + 1500)));
        assert_eq!(
            run_at(None, Some(5.0), now).ok(),
            Some(Some(5)),
            "past: at once"
        );
        for (delay, at) in [
            (Some(-1.0), None),
            (Some(1.5), None),
            (Some(f64::NAN), None),
            (Some(f64::INFINITY), None),
            (Some(MAX_DELAY_MS as f64 + 1.0), None),
            (None, Some(-1.0)),
            (None, Some(1e300)),
            (Some(1.0), Some(1.0)),
        ] {
            let err = run_at(delay, at, now).expect_err("refused");
            assert_eq!(err.code(), "ERR_PQ_INVALID_TASK", "{delay:?} {at:?}");
        }
    }

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert!(require_server("2.12.0", SCHEDULES_SINCE, "x").is_ok());
        assert!(require_server("2.15.1", RECURRING_SINCE, "x").is_ok());
        assert!(require_server("v3.0.0-beta", RECURRING_SINCE, "x").is_ok());
        for old in ["2.11.9", "2.9.25", "", "junk"] {
            let err = require_server(old, SCHEDULES_SINCE, "x").expect_err(old);
            assert_eq!(err.code(), "ERR_PQ_SERVER_TOO_OLD");
        }
        assert!(require_server("2.13.0", RECURRING_SINCE, "x").is_err());
    }

    #[test]
    fn tokens_are_single_subject_tokens() {
        let invalid = Error::InvalidTask;
        assert!(check_token("id", "abc-DEF_123", invalid).is_ok());
        for bad in ["", "a b", "a.b", "a*", ">", "a\n", &"x".repeat(257)] {
            let err = check_token("id", bad, invalid).expect_err(bad);
            assert_eq!(err.code(), "ERR_PQ_INVALID_TASK");
            assert_eq!(
                check_name(bad).map_err(|e| e.code()),
                Err("ERR_PQ_INVALID_CONFIG")
            );
        }
        assert!(check_name("nightly-report").is_ok());
        assert!(check_name("a:b").is_err());
    }
}
