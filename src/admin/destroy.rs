//! Deleting a queue (`destroy()`, the command line's `delete`): its task stream (with its
//! consumers, delayed tasks and recurring schedules), its dead-letter stream, its id index, its
//! workers' records, its task history and its cancel marks.
//!
//! A queue some worker still uses is refused unless forced: a running worker keeps pull requests
//! waiting on its consumer, and a task it handles is pending acknowledgement there, so either on
//! any durable consumer of the queue's streams counts as a worker (one stopped or killed stops
//! counting once its requests expire). Forced, the workers lose their queue: their pulls fail
//! until they stop, and what they held is gone with the streams.

use async_nats::jetstream::{context::DeleteStreamErrorKind, stream::Stream, ErrorCode};
use futures::StreamExt;

use crate::{
    error::{Error, Result},
    nats::connection::Connection,
};

/// The queue's streams, in the order they are deleted: the tasks first (no worker gets one once
/// deletion started), then the dead letters, the id index, the worker records, the history and
/// the cancel marks.
fn streams(connection: &Connection) -> [String; 6] {
    let config = connection.config();
    [
        config.stream_name.clone(),
        config.dead_letter_stream(),
        config.id_index_stream(),
        config.workers_stream(),
        config.history_stream(),
        config.cancels_stream(),
    ]
}

/// Deletes the queue's streams; the names of those that existed. Unless `force`, refuses with
/// [`Error::QueueInUse`] while a worker uses the queue (nothing deleted).
pub async fn destroy(connection: &Connection, force: bool) -> Result<Vec<String>> {
    if !force {
        if let Some(user) = first_user(connection).await? {
            return Err(Error::QueueInUse(format!(
                "{user}: stop its workers first (disconnect() them), or destroy it anyway with \
                 force"
            )));
        }
    }
    let mut deleted = Vec::new();
    for name in streams(connection) {
        match connection.jetstream.delete_stream(&name).await {
            Ok(_) => deleted.push(name),
            Err(err) => match err.kind() {
                DeleteStreamErrorKind::JetStream(server)
                    if server.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
                _ => {
                    let done = if deleted.is_empty() {
                        String::new()
                    } else {
                        format!(" (deleted before it: {})", deleted.join(", "))
                    };
                    return Err(Error::nats(&format!("deleting stream {name:?}{done}"), err));
                }
            },
        }
    }
    tracing::info!(streams = %deleted.join(", "), "queue deleted");
    Ok(deleted)
}

/// A worker using the queue, in words: the first durable consumer of its streams with pull
/// requests waiting or tasks in flight.
async fn first_user(connection: &Connection) -> Result<Option<String>> {
    for name in &streams(connection)[..2] {
        let stream = match connection.jetstream.get_stream(name).await {
            Ok(stream) => stream,
            Err(_) => continue,
        };
        if let Some(user) = user_of(&stream, name).await? {
            return Ok(Some(user));
        }
    }
    Ok(None)
}

async fn user_of(stream: &Stream, name: &str) -> Result<Option<String>> {
    let mut consumers = stream.consumers();
    while let Some(info) = consumers.next().await {
        let info = info.map_err(|err| Error::nats("listing the queue's consumers", err))?;
        if info.config.durable_name.is_none() {
            // A reader of the moment (a dead-letter listing), not a worker.
            continue;
        }
        if info.num_waiting > 0 || info.num_ack_pending > 0 {
            return Ok(Some(format!(
                "a worker uses stream {name:?} (consumer {:?}: {} pull requests waiting, {} \
                 tasks in flight)",
                info.name, info.num_waiting, info.num_ack_pending
            )));
        }
    }
    Ok(None)
}
