//! The layout of a queue's task history on the server: its stream and the subject of each
//! task's record — one per ending, so each ending is kept, trimmed, counted and listed apart.
//! Plain functions of the configuration (the streams' set-up reads them).

use async_nats::jetstream::stream;

use super::Ending;

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

/// The history stream of `config`'s queue: one record per task and ending
/// (`protoqueue.history.<stream>.<ending>.<id as hex>`), each with its own TTL.
pub fn stream_config(config: &Config) -> stream::Config {
    let mut stream = side_stream(
        config,
        config.history_stream(),
        config.history_prefix(),
        MARK_HISTORY,
        "task history",
    );
    stream.subjects = vec![format!("{}*.*", config.history_prefix())];
    stream.allow_message_ttl = true;
    // Counted per ending and listed without a consumer ([`crate::nats::direct`]).
    stream.allow_direct = true;
    stream
}

/// The subject of task `id`'s record of `ending`: its bytes as hex, so any id is one token.
pub fn subject(config: &Config, ending: Ending, id: &str) -> String {
    id_subject(ending_prefix(config, ending), id)
}

/// The subjects of task `id`'s records, whatever their ending (a wildcard).
pub fn any_subject(config: &Config, id: &str) -> String {
    id_subject(format!("{}*.", config.history_prefix()), id)
}

/// The subjects of every record of `ending` (a wildcard).
pub fn ending_filter(config: &Config, ending: Ending) -> String {
    format!("{}*", ending_prefix(config, ending))
}

/// The subjects of every record (a wildcard).
pub fn every_record(config: &Config) -> String {
    format!("{}>", config.history_prefix())
}

fn ending_prefix(config: &Config, ending: Ending) -> String {
    format!("{}{}.", config.history_prefix(), ending.token())
}

/// The ending and task id of a record subject; `None` for a subject that is not one.
pub fn id_of(config: &Config, subject: &str) -> Option<(Ending, String)> {
    let rest = subject.strip_prefix(&config.history_prefix())?;
    let (token, _) = rest.split_once('.')?;
    let ending = Ending::of_token(token)?;
    Some((
        ending,
        id_in_subject(&ending_prefix(config, ending), subject)?,
    ))
}
