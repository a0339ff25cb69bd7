//! The one error type of the crate. Every variant has a stable string code (`Error::code`) that
//! reaches JavaScript as `err.code`; messages say what went wrong and what to do about it.

use std::time::Duration;

/// How long one JetStream API request (stream info, consumer create...) may take; a server silent
/// for longer is an [`Error::Timeout`].
pub(crate) const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Protoqueue.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The queue's configuration (names, subject, options, URL) is not usable. Nothing was sent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A task given to `enqueue`/`enqueueBatch` is not well-formed. Nothing was sent.
    #[error("invalid task: {0}")]
    InvalidTask(String),

    /// The task's data or metadata cannot be encoded (not JSON-serializable). Nothing was sent.
    #[error("cannot serialize task: {0}")]
    Serialize(String),

    /// The encoded task is larger than the server accepts. Nothing was sent.
    #[error(
        "task is {size} bytes encoded, more than the server's max_payload of {max} bytes; \
         store large payloads elsewhere and enqueue a reference"
    )]
    PayloadTooLarge {
        /// The encoded size of the message.
        size: usize,
        /// The server's `max_payload`.
        max: usize,
    },

    /// The server refused to store a task or dead letter as too large (e.g. the stream's
    /// `max_msg_size` is below the server's `max_payload`). Nothing was stored.
    #[error(
        "the server refused the message as too large: {0}; store large payloads elsewhere and \
         enqueue a reference"
    )]
    PayloadRefused(String),

    /// The queue is not connected: `connect()` was not called, or `disconnect()` was (and
    /// `connect()` not again).
    #[error("not connected: call connect() first (after disconnect(), connect() again)")]
    NotConnected,

    /// `process()` was called while this queue already has a worker.
    #[error(
        "this queue is already processing tasks; create another Protoqueue for a second worker"
    )]
    AlreadyProcessing,

    /// No server could be reached or the connection was refused.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server URL(s) tried, credentials masked.
        url: String,
        /// What the client reported.
        reason: String,
    },

    /// The server refused the client: wrong or missing credentials (an authorization violation).
    /// Retrying with the same credentials cannot help.
    #[error("NATS at {url} refused the client: {reason}")]
    Auth {
        /// The server URL(s) tried, credentials masked.
        url: String,
        /// What the client reported and what to check.
        reason: String,
    },

    /// TLS could not be set up: the server's certificate is not trusted, the server wants a client
    /// certificate, or one side does not speak TLS.
    #[error("TLS with NATS at {url} failed: {reason}")]
    Tls {
        /// The server URL(s) tried, credentials masked.
        url: String,
        /// What failed and what to change.
        reason: String,
    },

    /// An operation did not complete in time (e.g. an enqueue during a long outage).
    #[error("{operation} timed out after {}ms{hint}", .after.as_millis())]
    Timeout {
        /// What timed out.
        operation: std::borrow::Cow<'static, str>,
        /// How long it waited.
        after: Duration,
        /// What the user can do about it (may be empty).
        hint: &'static str,
    },

    /// The stream exists with a configuration Protoqueue cannot use; it is never rewritten silently.
    #[error("stream conflict: {0}")]
    StreamConflict(String),

    /// A delayed task, `cancel` or a recurring schedule on a queue whose task stream does not
    /// allow message schedules (made with `schedules: false`, by an earlier version, or on a
    /// server older than 2.12). Nothing was sent.
    #[error(
        "delayed and recurring tasks are off for this queue: {0} needs a task stream that allows \
         message schedules, and this one was made without them (options.schedules: true turns \
         them on for good, with nats-server 2.12 or newer; see \
         docs/guides/delayed-and-recurring.md)"
    )]
    SchedulesOff(&'static str),

    /// `waitFor` where no task outcomes are kept: the waiting object has no `options.results`,
    /// or the queue has no history stream (its workers never kept results). Nothing was sent.
    #[error("task results are off for this queue: {0}")]
    ResultsOff(String),

    /// The cluster answered that JetStream is temporarily unavailable (code 10008: a stream or
    /// consumer has no leader while one is elected). The same code as a timeout: try again.
    #[error("{operation}: the NATS cluster is temporarily unavailable (a leader is being elected); try again")]
    Unavailable {
        /// What was refused.
        operation: String,
    },

    /// `destroy()` of a queue that workers use (without `force`). Nothing was deleted.
    #[error("the queue is in use: {0}")]
    QueueInUse(String),

    /// The server is too old for what was asked.
    #[error("{feature} needs nats-server {needed} or newer; the server is {found}")]
    ServerTooOld {
        /// What needs the newer server.
        feature: &'static str,
        /// The oldest version that has it.
        needed: String,
        /// The server's version.
        found: String,
    },

    /// The server or client reported an error.
    #[error("NATS error: {0}")]
    Nats(String),
}

impl Error {
    /// The stable code of this error, as JavaScript sees it in `err.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidConfig(_) => "ERR_PQ_INVALID_CONFIG",
            Error::InvalidTask(_) => "ERR_PQ_INVALID_TASK",
            Error::Serialize(_) => "ERR_PQ_SERIALIZE",
            Error::PayloadTooLarge { .. } | Error::PayloadRefused(_) => "ERR_PQ_PAYLOAD_TOO_LARGE",
            Error::NotConnected => "ERR_PQ_NOT_CONNECTED",
            Error::AlreadyProcessing => "ERR_PQ_ALREADY_PROCESSING",
            Error::Connect { .. } => "ERR_PQ_CONNECT",
            Error::Auth { .. } => "ERR_PQ_AUTH",
            Error::Tls { .. } => "ERR_PQ_TLS",
            Error::Timeout { .. } | Error::Unavailable { .. } => "ERR_PQ_TIMEOUT",
            Error::StreamConflict(_) => "ERR_PQ_STREAM_CONFLICT",
            Error::SchedulesOff(_) => "ERR_PQ_SCHEDULES_OFF",
            Error::ResultsOff(_) => "ERR_PQ_RESULTS_OFF",
            Error::ServerTooOld { .. } => "ERR_PQ_SERVER_TOO_OLD",
            Error::QueueInUse(_) => "ERR_PQ_QUEUE_IN_USE",
            Error::Nats(_) => "ERR_PQ_NATS",
        }
    }

    /// Wraps any client or server error: [`Error::Timeout`] when the server did not answer in
    /// time (an outage, a leader election), else [`Error::Nats`] keeping its message. The same
    /// failure gets the same code whatever the call: async-nats gives every operation its own
    /// error kind, each with a `TimedOut` that reads "timed out", so the kind is read from there.
    pub(crate) fn nats(context: &str, err: impl std::fmt::Display) -> Self {
        let text = err.to_string();
        if says_timed_out(&text) {
            Error::server_silent(context.to_owned())
        } else if text.contains("error code 10008") {
            Error::Unavailable {
                operation: context.to_owned(),
            }
        } else {
            Error::Nats(format!("{context}: {text}"))
        }
    }

    /// Wraps the error of a JetStream API request, as [`Error::nats`], also finding a timeout
    /// among its causes.
    pub(crate) fn request(operation: &'static str, err: impl std::error::Error + 'static) -> Self {
        if timed_out(&err) {
            Error::server_silent(operation.to_owned())
        } else {
            Error::nats(operation, err)
        }
    }

    fn server_silent(operation: String) -> Self {
        Error::Timeout {
            operation: operation.into(),
            after: API_TIMEOUT,
            hint: "; is the NATS server reachable?",
        }
    }
}

/// Whether an async-nats error's text is that of a `TimedOut` kind ("timed out", "request timed
/// out", "jetstream request timed out", "timed out: didn't receive ack in time").
fn says_timed_out(text: &str) -> bool {
    text.starts_with("timed out")
        || text.starts_with("request error: timed out")
        || text.starts_with("request timed out")
        || text.starts_with("jetstream request timed out")
}

/// Whether a client error, or one of its causes, is a request that got no answer in time.
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{RequestError, RequestErrorKind};
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(request) = err.downcast_ref::<RequestError>() {
            if request.kind() == RequestErrorKind::TimedOut {
                return true;
            }
        }
        if let Some(request) = err.downcast_ref::<async_nats::RequestError>() {
            if request.kind() == async_nats::RequestErrorKind::TimedOut {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_prefixed() {
        let errors = [
            Error::InvalidConfig("x".into()),
            Error::InvalidTask("x".into()),
            Error::Serialize("x".into()),
            Error::PayloadTooLarge { size: 2, max: 1 },
            Error::NotConnected,
            Error::AlreadyProcessing,
            Error::Connect {
                url: "u".into(),
                reason: "r".into(),
            },
            Error::Auth {
                url: "u".into(),
                reason: "r".into(),
            },
            Error::Tls {
                url: "u".into(),
                reason: "r".into(),
            },
            Error::Timeout {
                operation: "enqueue".into(),
                after: Duration::from_millis(5),
                hint: "",
            },
            Error::StreamConflict("x".into()),
            Error::SchedulesOff("x"),
            Error::ResultsOff("x".into()),
            Error::ServerTooOld {
                feature: "x",
                needed: "2.12".into(),
                found: "2.10.0".into(),
            },
            Error::QueueInUse("x".into()),
            Error::Nats("x".into()),
        ];
        let mut codes: std::collections::HashSet<_> = errors.iter().map(Error::code).collect();
        // Refused by the server rather than by the client's own check: the same code.
        assert!(!codes.insert(Error::PayloadRefused("x".into()).code()));
        // Refused while a leader is elected: as good as no answer.
        let unavailable = Error::Unavailable {
            operation: "x".into(),
        };
        assert!(!codes.insert(unavailable.code()));
        assert_eq!(codes.len(), errors.len(), "every variant has its own code");
        assert!(codes.iter().all(|c| c.starts_with("ERR_PQ_")));
    }

    #[test]
    fn a_cluster_without_a_leader_yet_is_unavailable_with_the_timeout_code() {
        let refused = "JetStream error: JetStream system temporarily unavailable (code 503, error code 10008)";
        let err = Error::nats("reading a delayed task", refused);
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert_eq!(err.code(), "ERR_PQ_TIMEOUT");
        assert!(
            err.to_string().starts_with("reading a delayed task: "),
            "{err}"
        );
    }

    #[test]
    fn every_kind_of_timed_out_is_a_timeout_whatever_the_call() {
        use async_nats::jetstream::{
            context::{PublishError, PublishErrorKind, RequestError, RequestErrorKind},
            stream::{ConsumerError, ConsumerErrorKind, PurgeError, PurgeErrorKind},
        };
        let silent = [
            Error::nats("pausing", ConsumerError::new(ConsumerErrorKind::TimedOut)),
            Error::nats("purging", PurgeError::new(PurgeErrorKind::TimedOut)),
            Error::nats("publishing", PublishError::new(PublishErrorKind::TimedOut)),
            Error::nats("a request", RequestError::new(RequestErrorKind::TimedOut)),
            Error::request("stats", RequestError::new(RequestErrorKind::TimedOut)),
            // Opening a stream (`GetStreamError` of a timed-out request), as a worker starting
            // during an election saw it.
            Error::nats(
                "opening stream",
                "request error: timed out: request timed out: deadline has elapsed",
            ),
        ];
        for err in silent {
            assert_eq!(err.code(), "ERR_PQ_TIMEOUT", "{err}");
        }
        let refused = Error::nats("pausing", ConsumerError::new(ConsumerErrorKind::Other));
        assert_eq!(refused.code(), "ERR_PQ_NATS");
        assert_eq!(
            Error::nats("x", "a stream that timed out").code(),
            "ERR_PQ_NATS"
        );
    }

    #[test]
    fn timeout_message_names_the_operation_and_duration() {
        let err = Error::Timeout {
            operation: "enqueue".into(),
            after: Duration::from_millis(1500),
            hint: "; is the server up?",
        };
        assert_eq!(
            err.to_string(),
            "enqueue timed out after 1500ms; is the server up?"
        );
    }
}
