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
//! A queue over a subject tree (`subject: 'tasks.email.>'`) stores a task on the subject it was
//! routed to (`tasks.email.eu`; the root, `tasks.email`, without one), and with a priority on
//! `protoqueue.prio.<stream>.<L>.<routed subject>`: the routed subject stays whole in every
//! level's subject, so a part of the tree is one filter per level. Workers of the whole tree share
//! `protoqueue-workers` (filters `<root>` and `<root>.>`); workers of a part (`process(handler,
//! { subjects })`) share `protoqueue-part-<hash of the part's filters>`, the same name in every
//! process ([`part_lanes`]). On a WorkQueue stream the server refuses consumers whose filters
//! overlap, so a tree is served by whole-tree workers or by workers of parts that do not overlap.
//!
//! Workers pull the levels in order ([`crate::worker::pull`]): a worker asks the most urgent level
//! first and a less urgent one only for the room the more urgent ones left; priority is strict.

use crate::{
    config::{Config, CONSUMER_NAME, DEAD_LETTER_CONSUMER_NAME},
    error::{Error, Result},
};

/// Priority levels: 1 (most urgent) to this.
pub const LEVELS: u8 = 10;
/// The priority of a task enqueued without one: stored on the queue's subject.
pub const DEFAULT_PRIORITY: u8 = 5;
pub use crate::shape::priority_prefix;

/// A durable pull consumer that workers share: the queue's task workers (`process()`, one per
/// priority level with `options.priorities`), or its dead-letter workers (`processDLQ()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// The stream it reads.
    pub stream: String,
    /// The consumer's durable name.
    pub consumer: String,
    /// The subjects it takes.
    pub filters: Vec<String>,
    /// Whether it takes tasks (not dead letters): `globalConcurrency` and `rateLimit` apply.
    pub tasks: bool,
    pub(crate) description: &'static str,
}

impl Lane {
    /// The task workers' consumer on the task stream (the default priority level).
    pub fn tasks(config: &Config) -> Self {
        Lane {
            stream: config.stream_name.clone(),
            consumer: CONSUMER_NAME.into(),
            filters: vec![config.subject.clone()],
            tasks: true,
            description: "Protoqueue workers",
        }
    }

    /// The dead-letter workers' consumer on the dead-letter stream.
    pub fn dead_letters(config: &Config) -> Self {
        Lane {
            stream: config.dead_letter_stream(),
            consumer: DEAD_LETTER_CONSUMER_NAME.into(),
            filters: vec![config.dead_letter_subject()],
            tasks: false,
            description: "Protoqueue dead-letter workers",
        }
    }
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

/// The subjects of the queue's tasks at the default level: its subject, or its tree's root and
/// everything under it.
pub fn queue_filters(config: &Config) -> Vec<String> {
    if config.tree {
        vec![config.subject.clone(), format!("{}.>", config.subject)]
    } else {
        vec![config.subject.clone()]
    }
}

/// The consumers a worker of the whole queue pulls from, most urgent first: one without
/// priorities, one per level with them.
pub fn task_lanes(config: &Config) -> Vec<Lane> {
    lanes(config, CONSUMER_NAME, &queue_filters(config))
}

/// The consumers a worker of part of the queue's tree pulls from (`filters`, checked by
/// [`checked_part`]), most urgent first. Their names derive from the filters alone, so every
/// worker of the same part, in any process, shares them.
pub fn part_lanes(config: &Config, filters: &[String]) -> Vec<Lane> {
    lanes(config, &part_consumer(filters), filters)
}

fn lanes(config: &Config, base: &str, filters: &[String]) -> Vec<Lane> {
    let levels: Vec<u8> = if config.priorities {
        (1..=LEVELS).collect()
    } else {
        vec![DEFAULT_PRIORITY]
    };
    levels
        .into_iter()
        .map(|level| Lane {
            consumer: consumer_name(base, level),
            filters: filters
                .iter()
                .map(|filter| stored_subject(config, filter, level))
                .collect(),
            description: if base == CONSUMER_NAME {
                "Protoqueue workers"
            } else {
                "Protoqueue workers of part of the subject tree"
            },
            ..Lane::tasks(config)
        })
        .collect()
}

/// Where the names of the consumers of parts of a tree start.
pub const PART_CONSUMER_PREFIX: &str = "protoqueue-part-";

/// `protoqueue-part-<16 hex digits>`: an FNV-1a hash of the sorted filters, stable across
/// processes, versions and platforms.
pub fn part_consumer(filters: &[String]) -> String {
    let mut sorted: Vec<&str> = filters.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sorted.join(" ").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{PART_CONSUMER_PREFIX}{hash:016x}")
}

/// A task's `subject`: a concrete subject in the queue's tree (the root or under it). Returns
/// the subject to store it on at the default level.
pub fn routed(config: &Config, subject: &str) -> Result<String> {
    if !config.tree {
        return Err(Error::InvalidTask(format!(
            "task.subject needs a queue over a subject tree (config.subject like \"{}.>\"); \
             this queue's subject is {:?}",
            config.subject, config.subject
        )));
    }
    crate::config::validate_publish_subject("task.subject", subject).map_err(|err| match err {
        Error::InvalidConfig(message) => Error::InvalidTask(message),
        other => other,
    })?;
    if !in_tree(config, subject) {
        return Err(Error::InvalidTask(format!(
            "task.subject {subject:?} is outside this queue's subject tree {:?}",
            format!("{}.>", config.subject)
        )));
    }
    Ok(subject.to_owned())
}

/// Whether `subject` (which may hold wildcards) is the tree's root or under it: its first tokens
/// are the root's, literally.
fn in_tree(config: &Config, subject: &str) -> bool {
    subject == config.subject
        || subject
            .strip_prefix(config.subject.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The filters of a worker for part of the tree (`process(handler, { subjects })`): each the
/// root or under it, wildcards allowed after the root (`tasks.email.*.urgent`,
/// `tasks.email.eu.>`); sorted, without duplicates.
pub fn checked_part(config: &Config, subjects: &[String]) -> Result<Vec<String>> {
    if !config.tree {
        return Err(Error::InvalidConfig(format!(
            "process options.subjects needs a queue over a subject tree (config.subject like \
             \"{}.>\")",
            config.subject
        )));
    }
    if subjects.is_empty() {
        return Err(Error::InvalidConfig(
            "process options.subjects must list at least one subject".into(),
        ));
    }
    let mut filters = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let bad = |why: &str| {
            Error::InvalidConfig(format!(
                "process options.subjects: {subject:?} {why}; give subjects of the tree {:?}",
                format!("{}.>", config.subject)
            ))
        };
        if subject.len() > crate::config::MAX_SUBJECT_LEN {
            return Err(bad("is too long"));
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        let well_formed = tokens.iter().enumerate().all(|(i, token)| {
            !token.is_empty()
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
                && (!token.contains(['*', '>']) || *token == "*" || *token == ">")
                && (*token != ">" || i == tokens.len() - 1)
        });
        if !well_formed {
            return Err(bad(
                "is not a subject filter (tokens separated by single dots, '*' or a last '>')",
            ));
        }
        let root_tokens = config.subject.split('.').count();
        if !in_tree(config, subject) || tokens.len() < root_tokens {
            return Err(bad("is outside the queue's subject tree"));
        }
        filters.push(subject.clone());
    }
    filters.sort_unstable();
    filters.dedup();
    Ok(filters)
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

/// Where a delivered task was routed, and its priority, as its handler sees them: the subject
/// on a queue over a subject tree, the priority on a queue with priorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The task's subject in the tree (without the priority level's prefix).
    pub subject: Option<String>,
    /// The task's priority, 1 to [`LEVELS`].
    pub priority: Option<u8>,
}

/// The [`Route`] of a task delivered from `stored` (its stream subject); `None` on a plain queue.
pub fn route_of(config: &Config, stored: &str) -> Option<Route> {
    if !config.tree && !config.priorities {
        return None;
    }
    let level = level_of(config, stored);
    let subject = if level == DEFAULT_PRIORITY {
        stored
    } else {
        let prefix = format!("{}.{level}.", priority_prefix(config));
        stored.strip_prefix(prefix.as_str()).unwrap_or(stored)
    };
    Some(Route {
        subject: config.tree.then(|| subject.to_owned()),
        priority: config.priorities.then_some(level),
    })
}

/// Whether `consumer` is one of the queue's task consumers (whole queue or a part, any level).
pub fn is_task_consumer(consumer: &str) -> bool {
    consumer.starts_with(CONSUMER_NAME) || consumer.starts_with(PART_CONSUMER_PREFIX)
}

/// The priority level of the task consumer `consumer` (by its `-p<L>` suffix).
pub fn consumer_level(consumer: &str) -> u8 {
    consumer
        .rsplit_once("-p")
        .and_then(|(_, level)| level.parse().ok())
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

/// Whether `subject` is matched by `pattern`, which may hold `*` and `>` wildcards.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
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
    fn a_tree_routes_within_itself_and_parts_have_stable_names() {
        let mut config = Config::new("S", "tasks.email.>").unwrap();
        assert!(config.tree);
        assert_eq!(config.subject, "tasks.email");
        assert_eq!(routed(&config, "tasks.email.eu").unwrap(), "tasks.email.eu");
        assert_eq!(routed(&config, "tasks.email").unwrap(), "tasks.email");
        for bad in [
            "tasks.emailx",
            "tasks",
            "tasks.sms.eu",
            "tasks.email.*",
            "tasks.email.>",
            "tasks.email..eu",
            "tasks.email.e u",
            "",
        ] {
            assert_eq!(
                routed(&config, bad).unwrap_err().code(),
                "ERR_PQ_INVALID_TASK",
                "{bad:?}"
            );
        }
        let part = |s: &[&str]| {
            checked_part(
                &config,
                &s.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            part(&["tasks.email.us", "tasks.email.eu", "tasks.email.eu"]).unwrap(),
            ["tasks.email.eu", "tasks.email.us"]
        );
        assert!(part(&["tasks.email.*.urgent", "tasks.email.eu.>"]).is_ok());
        for bad in [
            &["tasks.>"][..],
            &["tasks.*.eu"],
            &["tasks.sms"],
            &["tasks.email.>.x"],
            &["tasks.email.e*"],
            &[],
        ] {
            assert_eq!(part(bad).unwrap_err().code(), "ERR_PQ_INVALID_CONFIG");
        }
        let eu = vec!["tasks.email.eu".to_string()];
        let name = part_consumer(&eu);
        assert!(name.starts_with(PART_CONSUMER_PREFIX));
        assert_eq!(name, part_consumer(&eu), "stable");
        assert_ne!(name, part_consumer(&["tasks.email.us".to_string()]));
        assert_eq!(
            part_lanes(&config, &eu)[0].filters,
            ["tasks.email.eu".to_string()]
        );
        config.priorities = true;
        let lanes = part_lanes(&config, &eu);
        assert_eq!(lanes[0].consumer, format!("{name}-p1"));
        assert_eq!(lanes[0].filters, ["protoqueue.prio.S.1.tasks.email.eu"]);
        assert_eq!(consumer_level(&lanes[0].consumer), 1);
        assert_eq!(consumer_level(&lanes[4].consumer), 5);
        assert_eq!(
            task_lanes(&config)[0].filters,
            [
                "protoqueue.prio.S.1.tasks.email",
                "protoqueue.prio.S.1.tasks.email.>"
            ]
        );
        assert!(holds_tasks(&config, "protoqueue.prio.S.3.tasks.email.eu"));
        assert!(holds_tasks(&config, "tasks.email.eu.x"));
        assert!(!holds_tasks(&config, "tasks.sms"));
        assert_eq!(
            route_of(&config, "protoqueue.prio.S.3.tasks.email.eu"),
            Some(Route {
                subject: Some("tasks.email.eu".into()),
                priority: Some(3)
            })
        );
        assert_eq!(
            route_of(&config, "tasks.email"),
            Some(Route {
                subject: Some("tasks.email".into()),
                priority: Some(5)
            })
        );
        let plain = Config::new("S", "tasks.email").unwrap();
        assert_eq!(route_of(&plain, "tasks.email"), None);
        assert_eq!(
            routed(&plain, "tasks.email").unwrap_err().code(),
            "ERR_PQ_INVALID_TASK"
        );
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

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("tasks.email", "tasks.email"));
        assert!(subject_matches("tasks.*", "tasks.email"));
        assert!(subject_matches("tasks.>", "tasks.email.urgent"));
        assert!(subject_matches(">", "a"));
        assert!(!subject_matches("tasks.*", "tasks.email.urgent"));
        assert!(!subject_matches("tasks.email", "tasks.email.urgent"));
        assert!(!subject_matches("tasks.email.urgent", "tasks.email"));
        assert!(!subject_matches("tasks.>", "tasks"));
    }
}
