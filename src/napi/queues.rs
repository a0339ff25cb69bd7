//! `listQueues()`: every Protoqueue queue on a server (conversion and delegation only).
// napi registers the function only outside `cargo test`.
#![cfg_attr(test, allow(dead_code))]

use napi_derive::napi;

use crate::{
    admin::queues::{self, FoundBy},
    config::Config,
};

/// A queue on the server, as `listQueues()` returns it.
#[napi(object)]
pub struct NativeQueueInfo {
    /// The task stream (a `Protoqueue`'s `streamName`).
    pub stream_name: String,
    /// The queue's subject (a `Protoqueue`'s `subject`).
    pub subject: String,
    /// The dead-letter stream, when it exists.
    pub dead_letter_stream: Option<String>,
    /// Whether the task stream allows delayed and recurring tasks.
    pub schedules: bool,
    /// Whether the task stream has priority levels (`options.priorities`).
    pub priorities: bool,
    /// Whether the queue owns a subject tree (its `subject` ends in `.>`).
    pub tree: bool,
    /// `"marker"` (its stream metadata) or `"deadLetterStream"` (no marker: a stream made by an
    /// older version, recognised by its dead-letter stream).
    pub found_by: String,
}

/// The queues on a server and the server's URL with credentials masked.
#[napi(object)]
pub struct NativeQueueListing {
    /// The server's URL(s), credentials masked.
    pub server: String,
    /// The queues, by stream name.
    pub queues: Vec<NativeQueueInfo>,
}

/// Lists every Protoqueue queue on the server `config` (a `ProtoqueueConfig` whose `streamName`
/// and `subject` may be left out) connects to, over a connection of its own.
#[napi(catch_unwind)]
pub async fn list_queues(
    mut config: serde_json::Value,
    url: Option<String>,
) -> napi::Result<NativeQueueListing> {
    if let Some(object) = config.as_object_mut() {
        // Any valid names: the listing opens no queue.
        object
            .entry("streamName")
            .or_insert_with(|| "protoqueue_list".into());
        object
            .entry("subject")
            .or_insert_with(|| "protoqueue.list".into());
    }
    let config = Config::from_json(&config).map_err(super::errors::to_js)?;
    let (server, listed) = queues::list_at(config, url.as_deref())
        .await
        .map_err(super::errors::to_js)?;
    Ok(NativeQueueListing {
        server,
        queues: listed
            .into_iter()
            .map(|queue| NativeQueueInfo {
                stream_name: queue.stream_name,
                subject: queue.subject,
                dead_letter_stream: queue.dead_letter_stream,
                schedules: queue.schedules,
                priorities: queue.priorities,
                tree: queue.tree,
                found_by: match queue.found_by {
                    FoundBy::Marker => "marker",
                    FoundBy::DeadLetterStream => "deadLetterStream",
                }
                .into(),
            })
            .collect(),
    })
}
