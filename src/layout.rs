//! The subject layout of a queue's task stream: on which subject a task is stored, given its
//! priority, and which durable consumers take what.
//!
//! - A task without a priority, or with the default priority ([`DEFAULT_PRIORITY`]), is stored on
//!   the queue's subject, exactly as on a queue without priorities, and taken by the shared
//!   consumer `protoqueue-workers`. A queue that turns priorities on keeps its stored tasks, and
//!   workers without the option still serve that level.
//! - A task with another priority `L` is stored on `protoqueue.prio.<stream>.<L>.<subject>`
//!   ([`stored_subject`]): a subject of its own per level, outside the user's subject space and
//!   never matched by another level's consumer. Each level has its own durable consumer,
//!   `protoqueue-workers-p<L>`, filtered to exactly that subject.
//! - Everything a task goes through keeps its subject, so it keeps its level: a retry is a NAK
//!   (the message stays where it is), a delayed task's schedule targets the level's subject, and
//!   a dead letter records the subject its task was delivered on, which `requeue` publishes to.
//!
//! Workers pull the levels in order ([`crate::worker::pull`]): a worker asks the most urgent level
//! first and a less urgent one only for the room the more urgent ones left; priority is strict.

use crate::{
    config::{Config, CONSUMER_NAME},
    error::{Error, Result},
    nats::topology::{subject_matches, Lane},
};

/// Priority levels: 1 (most urgent) to this.
pub const LEVELS: u8 = 10;
/// The priority of a task enqueued without one: stored on the queue's subject.
pub const DEFAULT_PRIORITY: u8 = 5;
/// Where the subjects of the non-default levels start: `protoqueue.prio.<stream>`.
const PRIORITY_SUBJECT_PREFIX: &str = "protoqueue.prio.";

/// `protoqueue.prio.<stream>`: the subjects of the non-default priority levels follow it.
pub fn priority_prefix(config: &Config) -> String {
    format!("{PRIORITY_SUBJECT_PREFIX}{}", config.stream_name)
}

/// Checks options that do not go together with `options.priorities`.
pub fn check_options(config: &Config) -> Result<()> {
    if config.priorities && config.global_concurrency.is_some() {
        return Err(Error::InvalidConfig(
            "options.globalConcurrency cannot be combined with options.priorities: each priority \
             level is its own JetStream consumer, and the server limits unacknowledged tasks per \
             consumer, not across them"
                .into(),
        ));
    }
    Ok(())
}

/// A task's `priority`: an integer from 1 to [`LEVELS`], on a queue with `options.priorities`.
pub fn checked_priority(config: &Config, priority: f64) -> Result<u8> {
    if !config.priorities {
        return Err(Error::InvalidTask(
            "task.priority needs a queue created with options.priorities: true".into(),
        ));
    }
    priority_level(priority)
}

/// A `priority` as a level: an integer from 1 to [`LEVELS`].
pub fn priority_level(priority: f64) -> Result<u8> {
    if priority.fract() != 0.0 || !(1.0..=f64::from(LEVELS)).contains(&priority) {
        return Err(Error::InvalidTask(format!(
            "task.priority must be an integer from 1 (most urgent) to {LEVELS}, got {priority}"
        )));
    }
    Ok(priority as u8)
}

/// The subject a task published to `subject` with priority `level` is stored on.
pub fn stored_subject(config: &Config, subject: &str, level: u8) -> String {
    if level == DEFAULT_PRIORITY {
        subject.to_owned()
    } else {
        format!("{}.{level}.{subject}", priority_prefix(config))
    }
}

/// The stream subjects of every non-default level, as the task stream lists them.
pub fn all_priority_subjects(config: &Config) -> String {
    format!("{}.>", priority_prefix(config))
}

/// The durable consumer of level `level` for consumers named `base` at the default level.
pub fn consumer_name(base: &str, level: u8) -> String {
    if level == DEFAULT_PRIORITY {
        base.to_owned()
    } else {
        format!("{base}-p{level}")
    }
}

/// The consumers a task worker pulls from, most urgent first: one without priorities, one per
/// level with them.
pub fn task_lanes(config: &Config) -> Vec<Lane> {
    if !config.priorities {
        return vec![Lane::tasks(config)];
    }
    (1..=LEVELS)
        .map(|level| Lane {
            consumer: consumer_name(CONSUMER_NAME, level),
            filters: vec![stored_subject(config, &config.subject, level)],
            ..Lane::tasks(config)
        })
        .collect()
}

/// The priority of a task stored on `subject` (the default for a subject outside the levels).
pub fn level_of(config: &Config, subject: &str) -> u8 {
    let prefix = priority_prefix(config);
    subject
        .strip_prefix(prefix.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.split('.').next())
        .and_then(|level| level.parse().ok())
        .filter(|level| (1..=LEVELS).contains(level))
        .unwrap_or(DEFAULT_PRIORITY)
}

/// Whether `subject` is one a task of this queue is stored on (for requeueing a dead letter
/// where its task was: its priority level).
pub fn holds_tasks(config: &Config, subject: &str) -> bool {
    task_lanes(config)
        .iter()
        .flat_map(|lane| lane.filters.iter())
        .any(|filter| subject_matches(filter, subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(priorities: bool) -> Config {
        let mut config = Config::new("S", "tasks.email").unwrap();
        config.priorities = priorities;
        config
    }

    #[test]
    fn levels_have_subjects_and_consumers_of_their_own() {
        let config = config(true);
        assert_eq!(stored_subject(&config, "tasks.email", 5), "tasks.email");
        assert_eq!(
            stored_subject(&config, "tasks.email", 1),
            "protoqueue.prio.S.1.tasks.email"
        );
        let lanes = task_lanes(&config);
        assert_eq!(lanes.len(), 10);
        assert_eq!(lanes[0].consumer, "protoqueue-workers-p1");
        assert_eq!(lanes[4].consumer, "protoqueue-workers");
        assert_eq!(lanes[4].filters, ["tasks.email"]);
        assert_eq!(lanes[9].filters, ["protoqueue.prio.S.10.tasks.email"]);
        for level in 1..=LEVELS {
            let subject = stored_subject(&config, "tasks.email", level);
            assert_eq!(level_of(&config, &subject), level);
            assert!(holds_tasks(&config, &subject));
        }
        assert!(!holds_tasks(&config, "protoqueue.sched.S.at.x"));
        assert_eq!(task_lanes(&super::tests::config(false)).len(), 1);
    }

    #[test]
    fn priorities_are_integers_in_range_on_queues_with_the_option() {
        let on = config(true);
        assert_eq!(checked_priority(&on, 1.0).unwrap(), 1);
        assert_eq!(checked_priority(&on, 10.0).unwrap(), 10);
        for bad in [0.0, 11.0, 1.5, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                checked_priority(&on, bad).unwrap_err().code(),
                "ERR_PQ_INVALID_TASK"
            );
        }
        let err = checked_priority(&config(false), 1.0).unwrap_err();
        assert_eq!(err.code(), "ERR_PQ_INVALID_TASK");
        assert!(err.to_string().contains("options.priorities"));
    }
}
