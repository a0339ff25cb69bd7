//! A queue's shape — its subject (or subject tree), whether it has priority levels and message
//! schedules — as its task stream on the server says, not as a caller's options say. Everyone
//! who needs the layout (the library once connected, the command line, the dashboard,
//! `listQueues`) asks the stream, so a tool opened with only a stream name acts on the whole
//! queue: every priority level, every part of a tree.

use async_nats::jetstream::stream;

use crate::{
    config::Config,
    error::{Error, Result},
};

/// The stream metadata key that marks a stream made by Protoqueue (nats-server ≥ 2.10 keeps
/// stream metadata); its value says which part of a queue the stream is ([`MARK_TASKS`] or
/// [`MARK_DEAD_LETTERS`]). `crate::admin::queues::list` finds queues by it.
pub const MARKER_KEY: &str = "protoqueue";
/// [`MARKER_KEY`]'s value on a task stream.
pub const MARK_TASKS: &str = "tasks";
/// [`MARKER_KEY`]'s value on a dead-letter stream.
pub const MARK_DEAD_LETTERS: &str = "dead-letters";
/// The metadata key holding, on a task stream, the queue's subject.
pub const SUBJECT_KEY: &str = "protoqueue.subject";
/// The metadata key naming the queue's task stream (on both of its streams).
pub const QUEUE_KEY: &str = "protoqueue.stream";

/// A stream beside a queue's task stream keeping one message per subject under `prefix` (a
/// worker's record, a task's record, a task's cancel mark): marked `mark` as part of `config`'s
/// queue, replicated like it, the oldest messages dropped first. Each caller adds its limits.
pub fn side_stream(
    config: &Config,
    name: String,
    prefix: String,
    mark: &str,
    holding: &str,
) -> stream::Config {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(MARKER_KEY.to_owned(), mark.to_owned());
    metadata.insert(QUEUE_KEY.to_owned(), config.stream_name.clone());
    stream::Config {
        name,
        subjects: vec![format!("{prefix}*")],
        retention: stream::RetentionPolicy::Limits,
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        description: Some(format!(
            "Protoqueue {holding} of stream {}",
            config.stream_name
        )),
        metadata,
        ..Default::default()
    }
}

/// Where the subjects of the non-default priority levels start: `protoqueue.prio.<stream>`.
const PRIORITY_SUBJECT_PREFIX: &str = "protoqueue.prio.";

/// `protoqueue.prio.<stream>`: the subjects of the non-default priority levels follow it.
pub fn priority_prefix(config: &Config) -> String {
    format!("{PRIORITY_SUBJECT_PREFIX}{}", config.stream_name)
}

/// What a task stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueShape {
    /// The queue's subject; for a subject tree, its root.
    pub root: String,
    /// The queue owns the subject tree under `root` (`<root>.>`).
    pub tree: bool,
    /// The stream holds the subjects of the priority levels.
    pub priorities: bool,
    /// The stream allows message schedules (delayed and recurring tasks).
    pub schedules: bool,
}

impl QueueShape {
    /// The shape of the task stream `stream`: its subject from the metadata Protoqueue puts on
    /// new streams, else (older versions) the first subject that is not one of Protoqueue's own.
    pub fn of(stream: &stream::Config) -> Option<Self> {
        let names = Config::new(stream.name.clone(), "protoqueue.probe").ok()?;
        let internal = [names.schedule_prefix(), priority_prefix(&names)];
        let given = stream.metadata.get(SUBJECT_KEY).cloned().or_else(|| {
            stream
                .subjects
                .iter()
                .find(|s| !internal.iter().any(|prefix| s.starts_with(prefix.as_str())))
                .cloned()
        })?;
        let root = given.strip_suffix(".>").unwrap_or(&given).to_owned();
        let tree = given.ends_with(".>") || stream.subjects.contains(&format!("{root}.>"));
        let priorities = stream
            .subjects
            .contains(&format!("{}.>", priority_prefix(&names)));
        Some(QueueShape {
            root,
            tree,
            priorities,
            schedules: stream.allow_message_schedules,
        })
    }

    /// The subject as a caller gives it: `<root>.>` for a tree.
    pub fn subject(&self) -> String {
        if self.tree {
            format!("{}.>", self.root)
        } else {
            self.root.clone()
        }
    }

    /// `config` acting on this shape: it takes on the stream's priorities, schedules and tree
    /// (a caller that did not ask for them still acts on every level, every schedule, the whole
    /// tree); a subject that names another queue is refused.
    pub fn applied_to(&self, config: &Config) -> Result<Config> {
        if config.subject != self.root {
            return Err(Error::StreamConflict(format!(
                "stream {:?} is the queue of subject {:?}, not {:?}",
                config.stream_name,
                self.subject(),
                config.subject
            )));
        }
        let mut shaped = config.clone();
        shaped.tree |= self.tree;
        shaped.priorities |= self.priorities;
        shaped.schedules |= self.schedules;
        shaped.check_combinations()?;
        Ok(shaped)
    }
}
