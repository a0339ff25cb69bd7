//! The JetStream objects a queue lives in: the task stream, the dead-letter stream and the durable
//! pull consumer shared by all workers. Created when missing; an existing stream whose
//! configuration Protoqueue cannot use is reported, never rewritten.

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    stream::{self, RetentionPolicy, StorageType},
};

use crate::{
    config::{Config, CONSUMER_NAME, DUPLICATE_WINDOW},
    error::{Error, Result},
};

/// The task stream: WorkQueue retention (an acked task is removed), file storage, a duplicate
/// window so a re-sent publish is stored once.
pub fn task_stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![config.subject.clone()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.replicas,
        description: Some("Protoqueue tasks".into()),
        ..Default::default()
    }
}

/// The dead-letter stream: kept until removed (Limits retention), file storage, deduplicated by
/// the id of the original message so a crash between dead-lettering and acking stores it once.
pub fn dead_letter_stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: config.dead_letter_stream(),
        subjects: vec![config.dead_letter_subject()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.replicas,
        description: Some(format!(
            "Protoqueue dead letters of stream {}",
            config.stream_name
        )),
        ..Default::default()
    }
}

/// The durable consumer of a queue: explicit acks, redelivery after `ack_wait`, no server-side
/// delivery limit (the executor counts deliveries and dead-letters, so a task is never stranded
/// in the stream when its last delivery dies with its worker).
pub fn consumer_config(config: &Config) -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER_NAME.into()),
        description: Some("Protoqueue workers".into()),
        filter_subject: config.subject.clone(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: config.ack_wait,
        max_deliver: -1,
        max_ack_pending: -1,
        ..Default::default()
    }
}

/// Makes sure both streams exist and fit this queue.
pub async fn ensure_streams(js: &jetstream::Context, config: &Config) -> Result<()> {
    let tasks = ensure_stream(js, task_stream_config(config)).await?;
    if tasks.retention != RetentionPolicy::WorkQueue {
        return Err(Error::StreamConflict(format!(
            "stream {:?} exists with {:?} retention; a Protoqueue stream needs WorkQueue retention. \
             Use another streamName or delete the stream",
            tasks.name, tasks.retention
        )));
    }
    ensure_stream(js, dead_letter_stream_config(config)).await?;
    Ok(())
}

/// Gets or creates a stream; an existing stream must capture the wanted subject.
async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<stream::Config> {
    let subject = wanted.subjects[0].clone();
    let name = wanted.name.clone();
    let stream = js
        .get_or_create_stream(wanted)
        .await
        .map_err(|err| match err.kind() {
            jetstream::context::CreateStreamErrorKind::JetStreamUnavailable => {
                Error::Nats(format!(
                    "JetStream is not enabled on the server (start nats-server with -js): {err}"
                ))
            }
            // The server refused (e.g. the subjects overlap another stream's): a conflict.
            jetstream::context::CreateStreamErrorKind::JetStream(_) => {
                Error::StreamConflict(format!("cannot create or open stream {name:?}: {err}"))
            }
            // No answer, a closed connection: not something another streamName would fix.
            _ => Error::nats(&format!("creating or opening stream {name:?}"), err),
        })?;
    // The get-or-create answer already carries the stream's configuration.
    let existing = stream.cached_info().config.clone();
    if !existing
        .subjects
        .iter()
        .any(|pattern| subject_matches(pattern, &subject))
    {
        return Err(Error::StreamConflict(format!(
            "stream {name:?} exists with subjects {:?}, which do not include {subject:?}. \
             Use another streamName, or the subject the stream was made for",
            existing.subjects
        )));
    }
    Ok(existing)
}

/// Creates the shared durable consumer, or updates its editable settings (such as `ack_wait`).
pub async fn ensure_consumer(js: &jetstream::Context, config: &Config) -> Result<()> {
    let stream = js
        .get_stream(&config.stream_name)
        .await
        .map_err(|e| Error::nats("opening the task stream", e))?;
    stream
        .create_consumer(consumer_config(config))
        .await
        .map_err(|err| match err.kind() {
            jetstream::stream::ConsumerErrorKind::JetStream(_) => Error::StreamConflict(format!(
                "cannot create or update consumer {CONSUMER_NAME:?} on stream {:?}: {err}",
                config.stream_name
            )),
            _ => Error::nats(&format!("creating consumer {CONSUMER_NAME:?}"), err),
        })?;
    Ok(())
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
    use super::subject_matches;

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
