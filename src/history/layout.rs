//! The layout of a queue's task history on the server: its stream and the subject of each
//! task's record. Plain functions of the configuration (the streams' set-up reads them).

use async_nats::jetstream::stream;

use crate::{
    config::{
        names::{id_in_subject, id_subject},
        Config,
    },
    shape::side_stream,
};

/// [`crate::shape::MARKER_KEY`]'s value on a history stream.
pub const MARK_HISTORY: &str = "history";
/// The first nats-server with per-message TTLs.
pub const RESULTS_SINCE: (u64, u64) = (2, 11);

/// The history stream of `config`'s queue: one record per task subject, each with its own TTL.
pub fn stream_config(config: &Config) -> stream::Config {
    stream::Config {
        allow_message_ttl: true,
        ..side_stream(
            config,
            config.history_stream(),
            config.history_prefix(),
            MARK_HISTORY,
            "task history",
        )
    }
}

/// The record subject of task `id`: its bytes as hex, so any id is one subject token.
pub fn subject(config: &Config, id: &str) -> String {
    id_subject(config.history_prefix(), id)
}

/// The task id of a record subject; `None` for a subject that is not one.
pub fn id_of(config: &Config, subject: &str) -> Option<String> {
    id_in_subject(&config.history_prefix(), subject)
}
