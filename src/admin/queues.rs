//! Every Protoqueue queue on a server, for tools that look at all of them (the dashboard).
//!
//! A queue is found by the stream metadata its streams carry since this version
//! ([`topology::MARKER_KEY`]: `"tasks"` on the task stream, with its subject). Streams made by
//! older versions carry none; such a stream is taken as a queue when it has WorkQueue retention
//! and a `<name>_DLQ` stream whose subject is `protoqueue.dlq.<name>` beside it (the pair that
//! every version of Protoqueue creates). Other streams are never listed.

use std::collections::HashMap;

use async_nats::jetstream::{
    self,
    stream::{self, RetentionPolicy},
};
use futures::TryStreamExt;
use serde::Serialize;

use crate::{
    config::Config,
    error::{Error, Result},
    nats::{
        connection::{Connection, CLOSE_TIMEOUT},
        topology,
    },
    shape::QueueShape,
};

/// How a stream was recognised as a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FoundBy {
    /// Its metadata marks it (made by this version or a later one).
    Marker,
    /// No marker: a WorkQueue stream with its Protoqueue dead-letter stream beside it (made by an
    /// older version).
    DeadLetterStream,
}

/// One queue on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueInfo {
    /// The task stream (the `streamName` of a `Protoqueue` for this queue).
    pub stream_name: String,
    /// The queue's subject (the `subject` of a `Protoqueue` for this queue: `<root>.>` for a
    /// subject tree).
    pub subject: String,
    /// The dead-letter stream, when it exists.
    pub dead_letter_stream: Option<String>,
    /// Whether the task stream allows message schedules (delayed and recurring tasks).
    pub schedules: bool,
    /// Whether the task stream has priority levels.
    pub priorities: bool,
    /// Whether the queue owns a subject tree.
    pub tree: bool,
    /// How the stream was recognised.
    pub found_by: FoundBy,
}

/// Lists the queues on the server `connection` talks to, by stream name. Needs only a connection
/// ([`Connection::open_bare`]): no queue of its own.
pub async fn list(connection: &Connection) -> Result<Vec<QueueInfo>> {
    list_in(&connection.jetstream).await
}

/// [`list`] on a JetStream context.
pub async fn list_in(js: &jetstream::Context) -> Result<Vec<QueueInfo>> {
    let infos: Vec<stream::Info> = js
        .streams()
        .try_collect()
        .await
        .map_err(|err| Error::request("listing the streams", err))?;
    Ok(recognise(infos.iter().map(|info| &info.config)))
}

/// The queues among `streams` (their configurations), sorted by name.
pub fn recognise<'a>(streams: impl IntoIterator<Item = &'a stream::Config>) -> Vec<QueueInfo> {
    let by_name: HashMap<&str, &stream::Config> =
        streams.into_iter().map(|s| (s.name.as_str(), s)).collect();
    let mut queues: Vec<QueueInfo> = by_name
        .values()
        .filter_map(|stream| queue_of(stream, &by_name))
        .collect();
    queues.sort_by(|a, b| a.stream_name.cmp(&b.stream_name));
    queues
}

/// `stream` as a queue, when it is the task stream of one.
fn queue_of(stream: &stream::Config, all: &HashMap<&str, &stream::Config>) -> Option<QueueInfo> {
    let names = Config::new(stream.name.clone(), "protoqueue.probe").ok()?;
    let letters = all
        .get(names.dead_letter_stream().as_str())
        .filter(|letters| {
            letters
                .subjects
                .iter()
                .any(|s| *s == names.dead_letter_subject())
                && letters
                    .metadata
                    .get(topology::MARKER_KEY)
                    .map(String::as_str)
                    != Some(topology::MARK_TASKS)
        });
    let marked = stream
        .metadata
        .get(topology::MARKER_KEY)
        .map(String::as_str);
    let found_by = match marked {
        Some(topology::MARK_TASKS) => FoundBy::Marker,
        // A queue's dead-letter stream, or a marker from a later version this one cannot read.
        Some(_) => return None,
        None if stream.retention == RetentionPolicy::WorkQueue && letters.is_some() => {
            FoundBy::DeadLetterStream
        }
        None => return None,
    };
    let shape = QueueShape::of(stream)?;
    Some(QueueInfo {
        stream_name: stream.name.clone(),
        subject: shape.subject(),
        dead_letter_stream: letters.map(|letters| letters.name.clone()),
        schedules: shape.schedules,
        priorities: shape.priorities,
        tree: shape.tree,
        found_by,
    })
}

/// The queues on the server `config` names (the URL argument, else `config.url`, else
/// `NATS_URL`, else localhost), over a connection of their own that is closed afterwards; with
/// the server's URL as messages show it (credentials masked).
pub async fn list_at(config: Config, url: Option<&str>) -> Result<(String, Vec<QueueInfo>)> {
    let urls = config.resolve_url(url)?;
    let shown = crate::config::urls::redact(&urls);
    let connection = Connection::open_bare(std::sync::Arc::new(config), &urls).await?;
    let listed = list(&connection).await;
    connection.close_within(CLOSE_TIMEOUT).await;
    Ok((shown, listed?))
}

/// Whether `stream_name` is a queue on the server, with what [`list`] says of it.
pub async fn find(connection: &Connection, stream_name: &str) -> Result<Option<QueueInfo>> {
    Ok(list(connection)
        .await?
        .into_iter()
        .find(|queue| queue.stream_name == stream_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, subjects: &[&str], retention: RetentionPolicy) -> stream::Config {
        stream::Config {
            name: name.into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            retention,
            ..Default::default()
        }
    }

    #[test]
    fn marked_streams_are_queues_with_their_subject() {
        let config = Config::new("ORDERS", "orders.new").unwrap();
        let tasks = topology::task_stream_config(&config);
        let letters = topology::dead_letter_stream_config(&config);
        let found = recognise([&tasks, &letters]);
        assert_eq!(
            found,
            vec![QueueInfo {
                stream_name: "ORDERS".into(),
                subject: "orders.new".into(),
                dead_letter_stream: Some("ORDERS_DLQ".into()),
                schedules: false,
                priorities: false,
                tree: false,
                found_by: FoundBy::Marker,
            }]
        );
    }

    #[test]
    fn the_shape_is_read_from_the_streams_subjects_in_old_and_new_streams() {
        let mut config = Config::new("SHAPED", "shop.orders.>").unwrap();
        config.priorities = true;
        config.schedules = true;
        let mut tasks = topology::task_stream_config(&config);
        let letters = topology::dead_letter_stream_config(&config);
        for metadata in [true, false] {
            if !metadata {
                tasks.metadata.clear();
            }
            let found = recognise([&tasks, &letters]);
            let queue = &found[0];
            assert_eq!(queue.subject, "shop.orders.>", "metadata: {metadata}");
            assert!(
                queue.tree && queue.priorities && queue.schedules,
                "{queue:?}"
            );
        }
    }

    #[test]
    fn unmarked_pairs_of_older_versions_are_queues() {
        let mut config = Config::new("OLD", "old.tasks").unwrap();
        config.schedules = true;
        let mut tasks = topology::task_stream_config(&config);
        let mut letters = topology::dead_letter_stream_config(&config);
        tasks.metadata.clear();
        letters.metadata.clear();
        let found = recognise([&letters, &tasks]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].subject, "old.tasks");
        assert_eq!(found[0].found_by, FoundBy::DeadLetterStream);
        assert!(found[0].schedules);
    }

    #[test]
    fn foreign_streams_are_not_queues() {
        let plain = stream("EVENTS", &["events.>"], RetentionPolicy::Limits);
        let work = stream("JOBS", &["jobs"], RetentionPolicy::WorkQueue);
        // A `_DLQ` stream that is not Protoqueue's (another subject).
        let other = stream("JOBS_DLQ", &["jobs.dead"], RetentionPolicy::Limits);
        // Limits retention with a Protoqueue-looking pair: not a task stream.
        let limits = stream("LOGS", &["logs"], RetentionPolicy::Limits);
        let limits_dlq = stream(
            "LOGS_DLQ",
            &["protoqueue.dlq.LOGS"],
            RetentionPolicy::Limits,
        );
        assert!(recognise([&plain, &work, &other, &limits, &limits_dlq]).is_empty());
    }

    #[test]
    fn a_marked_queue_without_its_dead_letter_stream_is_still_listed() {
        let config = Config::new("HALF", "half").unwrap();
        let tasks = topology::task_stream_config(&config);
        let found = recognise([&tasks]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].dead_letter_stream, None);
    }
}
