//! Queue configuration: the user's settings, their defaults and their validation.
//!
//! [`Config::from_json`] reads the object a JavaScript user passes to `new Protoqueue(config)`
//! and rejects every mistake (wrong names, wrong types, out-of-range values, unknown keys) with
//! [`Error::InvalidConfig`](crate::Error::InvalidConfig) before anything touches the network.

pub mod auth;
pub mod backoff;
pub(crate) mod json;
pub mod tls;
pub mod urls;

use std::{fmt, time::Duration};

use serde_json::Value;

pub use crate::config::urls::validate_urls;
use crate::{
    config::{
        auth::Auth,
        backoff::Backoff,
        json::{integer_option, invalid, kind, present, reject_unknown_keys, required_string},
        tls::Tls,
        urls::redact,
    },
    error::{Error, Result},
};

/// Default of `options.maxRetries`: retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default of `options.ackWait`: how long a silent worker keeps a task before it is redelivered.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_millis(30_000);
/// Default of `options.batchSize`: tasks pulled and handled at once by one worker.
pub const DEFAULT_BATCH_SIZE: u32 = 10;
/// Default of `options.prefetch`: the most tasks one worker keeps ready beyond those running.
pub const DEFAULT_PREFETCH: u32 = 1_000;
/// Default of `options.retryDelay`: the least time before a failed task is delivered again.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(1_000);
/// Default of `options.enqueueTimeout`: how long an enqueue waits for the server's
/// acknowledgement (retrying through outages and leader elections) before it rejects.
pub const DEFAULT_ENQUEUE_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Default of `options.connectTimeout`: how long `connect()` tries before it rejects.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Default of `options.taskTimeout`: the longest a handler may run before its attempt counts as
/// failed (a handler that never settles would otherwise hold its task forever).
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_millis(300_000);
/// Default of `options.shutdownTimeout`: how long `disconnect()` waits for in-flight handlers.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Default of `options.replicas`: copies of each stream kept by a JetStream cluster.
pub const DEFAULT_REPLICAS: usize = 1;
/// JetStream keeps at most five replicas of a stream.
const MAX_REPLICAS: u64 = 5;
/// The NATS URL used when neither `connect(url)`, `config.url` nor `NATS_URL` names one.
pub const DEFAULT_URL: &str = "nats://localhost:4222";
/// The durable consumer shared by every worker of a queue.
pub const CONSUMER_NAME: &str = "protoqueue-workers";
/// The durable consumer shared by every dead-letter worker (`processDLQ()`) of a queue.
pub const DEAD_LETTER_CONSUMER_NAME: &str = "protoqueue-dlq-workers";
/// The duplicate window of the task stream: a re-sent publish with the same id within this window
/// is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Longest stream name accepted, in bytes (JetStream allows 255; the dead-letter suffix must still
/// fit).
pub const MAX_STREAM_NAME_LEN: usize = 255 - DEAD_LETTER_SUFFIX.len();
/// Longest subject accepted, in bytes. The server refuses a protocol line longer than its
/// `max_control_line` (4096 bytes by default) and drops the connection; a publish line carries the
/// subject and a reply inbox, a delivery carries the subject and an ack subject naming the stream,
/// and the consumer's create request carries the subject in its own subject. 1024 leaves room for
/// all of them.
pub const MAX_SUBJECT_LEN: usize = 1024;
/// The largest value of a duration option, in milliseconds: 2^31 - 1 (about 24.8 days, the
/// largest delay JavaScript's `setTimeout` takes). The server counts `ackWait` and NAK delays in
/// nanoseconds as an `i64`, which overflows near 106 days; deadlines on the runtime's clock need
/// room too.
pub const MAX_DURATION_MS: u64 = (1 << 31) - 1;
/// The longest `options.deadLetterMaxAge`, in milliseconds: ten years.
pub const MAX_DEAD_LETTER_AGE_MS: u64 = 10 * 366 * 24 * 3600 * 1000;
/// The most letters `options.deadLetterMaxCount` may keep (JavaScript's largest safe integer).
pub const MAX_DEAD_LETTER_COUNT: u64 = (1 << 53) - 1;
const DEAD_LETTER_SUFFIX: &str = "_DLQ";
const DEAD_LETTER_SUBJECT_PREFIX: &str = "protoqueue.dlq.";
const SCHEDULE_SUBJECT_PREFIX: &str = "protoqueue.sched.";
const MAX_BATCH_SIZE: u64 = 10_000;
const MAX_PREFETCH: u64 = 10_000;
const MIN_ACK_WAIT_MS: u64 = 100;
/// The largest `options.globalConcurrency`.
pub const MAX_GLOBAL_CONCURRENCY: u64 = 1_000_000;
/// The largest `options.rateLimit.max`: the worker remembers that many delivery times.
pub const MAX_RATE_LIMIT: u64 = 100_000;

/// At most `max` tasks delivered to one worker within any `duration` (`options.rateLimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tasks per window.
    pub max: u32,
    /// The window.
    pub duration: Duration,
}

/// Everything a queue needs to know, validated. Its `Debug` output shows no secrets.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// The JetStream stream holding the tasks.
    pub stream_name: String,
    /// The subject tasks are published to and consumed from; for a queue over a subject tree,
    /// the tree's root (`tasks.email` for `tasks.email.>`), where tasks enqueued without a
    /// subject go.
    pub subject: String,
    /// The queue owns the subject tree under [`Config::subject`] (given as `<root>.>`): tasks
    /// may be routed within it, and workers may take part of it ([`crate::layout`]).
    pub tree: bool,
    /// The server URL(s) from the config; `connect(url)` overrides it. May hold credentials.
    pub url: Option<String>,
    /// The credentials (`config.auth`); credentials in the URL are used when this is
    /// [`Auth::None`].
    pub auth: Auth,
    /// TLS settings (`config.tls`); `Some` makes the client talk TLS only.
    pub tls: Option<Tls>,
    /// Turn on debug logging.
    pub verbose: bool,
    /// `connect()` creates the streams when missing (the default); `false` only opens existing
    /// ones and takes the dead-letter stream's retention as it is (tools inspecting a queue).
    pub create_streams: bool,
    /// A task is delivered at most `1 + max_retries` times.
    pub max_retries: u32,
    /// How long the server waits for an ack (or a progress heartbeat) before redelivering.
    pub ack_wait: Duration,
    /// How many tasks one worker handles at once.
    pub batch_size: u32,
    /// The most tasks one worker keeps ready beyond those running (see [`crate::worker::prefetch`]).
    pub prefetch: u32,
    /// The least delay before a failed task is delivered again.
    pub retry_delay: Duration,
    /// `options.backoff`: how the delay grows from retry to retry. `None`: `retry_delay` every
    /// time ([`Config::backoff`]).
    pub backoff: Option<Backoff>,
    /// `options.globalConcurrency`: the most tasks in flight across all workers (the consumer's
    /// `max_ack_pending`). `None`: no limit.
    pub global_concurrency: Option<u32>,
    /// `options.rateLimit`: the most tasks one worker takes per window. `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    /// How long an enqueue may wait for the server's acknowledgement.
    pub enqueue_timeout: Duration,
    /// How long `connect()` may take.
    pub connect_timeout: Duration,
    /// The longest a handler may run.
    pub task_timeout: Duration,
    /// How long `disconnect()` waits for in-flight handlers.
    pub shutdown_timeout: Duration,
    /// Copies of the task and dead-letter streams in a JetStream cluster (1 on a single server).
    pub replicas: usize,
    /// Dead-letter retention, applied when the dead-letter stream is created: letters older than
    /// this are removed. `None`: kept until removed.
    pub dead_letter_max_age: Option<Duration>,
    /// Dead-letter retention, applied when the dead-letter stream is created: beyond this many
    /// letters the oldest are removed. `None`: no limit.
    pub dead_letter_max_count: Option<u64>,
    /// Delayed and recurring tasks (`options.schedules`): the task stream also holds the
    /// schedule subjects and allows message schedules (nats-server ≥ 2.12). Off by default: an
    /// existing stream is changed only when a queue asks for this.
    pub schedules: bool,
    /// `options.priorities`: tasks carry a priority from 1 (most urgent) to 10, one subject and
    /// one consumer per level ([`crate::layout`]). Off by default: an existing stream is changed
    /// only when a queue asks for this.
    pub priorities: bool,
}

impl Config {
    /// A configuration with every option at its default. Names are validated.
    pub fn new(stream_name: impl Into<String>, subject: impl Into<String>) -> Result<Self> {
        let mut subject: String = subject.into();
        let tree = subject.len() > 2 && subject.ends_with(".>");
        if tree {
            subject.truncate(subject.len() - 2);
        }
        let config = Config {
            stream_name: stream_name.into(),
            subject,
            tree,
            url: None,
            auth: Auth::None,
            tls: None,
            verbose: false,
            create_streams: true,
            max_retries: DEFAULT_MAX_RETRIES,
            ack_wait: DEFAULT_ACK_WAIT,
            batch_size: DEFAULT_BATCH_SIZE,
            prefetch: DEFAULT_PREFETCH,
            retry_delay: DEFAULT_RETRY_DELAY,
            backoff: None,
            global_concurrency: None,
            rate_limit: None,
            enqueue_timeout: DEFAULT_ENQUEUE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            task_timeout: DEFAULT_TASK_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            replicas: DEFAULT_REPLICAS,
            dead_letter_max_age: None,
            dead_letter_max_count: None,
            schedules: false,
            priorities: false,
        };
        validate_stream_name(&config.stream_name)?;
        validate_publish_subject("subject", &config.subject)?;
        validate_publish_subject("the dead-letter subject", &config.dead_letter_subject())?;
        Ok(config)
    }

    /// Reads and validates a JavaScript `ProtoqueueConfig` object.
    pub fn from_json(value: &Value) -> Result<Self> {
        let object = value
            .as_object()
            .ok_or_else(|| invalid(format!("config must be an object, got {}", kind(value))))?;
        reject_unknown_keys(
            "config",
            object,
            &[
                "streamName",
                "subject",
                "url",
                "auth",
                "tls",
                "options",
                "verbose",
                "createStreams",
            ],
        )?;

        let stream_name = required_string(object, "streamName")?;
        let subject = required_string(object, "subject")?;
        let mut config = Config::new(stream_name, subject)?;

        if let Some(url) = present(object, "url") {
            let url = url.as_str().ok_or_else(|| {
                invalid(format!("config.url must be a string, got {}", kind(url)))
            })?;
            validate_urls(url)?;
            config.url = Some(url.to_owned());
        }
        if let Some(auth) = present(object, "auth") {
            config.auth = Auth::from_json(auth)?;
        }
        if let Some(tls) = present(object, "tls") {
            config.tls = Tls::from_json(tls)?;
        }
        if let Some(verbose) = present(object, "verbose") {
            config.verbose = verbose.as_bool().ok_or_else(|| {
                invalid(format!(
                    "config.verbose must be a boolean, got {}",
                    kind(verbose)
                ))
            })?;
        }
        if let Some(create) = present(object, "createStreams") {
            config.create_streams = create.as_bool().ok_or_else(|| {
                invalid(format!(
                    "config.createStreams must be a boolean, got {}",
                    kind(create)
                ))
            })?;
        }
        if let Some(options) = present(object, "options") {
            config.apply_options(options)?;
        }
        Ok(config)
    }

    fn apply_options(&mut self, options: &Value) -> Result<()> {
        let options = options.as_object().ok_or_else(|| {
            invalid(format!(
                "config.options must be an object, got {}",
                kind(options)
            ))
        })?;
        reject_unknown_keys(
            "config.options",
            options,
            &[
                "maxRetries",
                "ackWait",
                "batchSize",
                "prefetch",
                "retryDelay",
                "enqueueTimeout",
                "connectTimeout",
                "taskTimeout",
                "shutdownTimeout",
                "replicas",
                "deadLetterMaxAge",
                "deadLetterMaxCount",
                "schedules",
                "backoff",
                "globalConcurrency",
                "rateLimit",
                "priorities",
            ],
        )?;
        let u32_max = u64::from(u32::MAX);
        if let Some(n) = integer_option(options, "maxRetries", 0, u32_max)? {
            self.max_retries = n as u32;
        }
        if let Some(n) = integer_option(options, "batchSize", 1, MAX_BATCH_SIZE)? {
            self.batch_size = n as u32;
        }
        if let Some(n) = integer_option(options, "prefetch", 0, MAX_PREFETCH)? {
            self.prefetch = n as u32;
        }
        if let Some(n) = integer_option(options, "replicas", 1, MAX_REPLICAS)? {
            self.replicas = n as usize;
        }
        let millis = |key: &str, min: u64| -> Result<Option<Duration>> {
            Ok(integer_option(options, key, min, MAX_DURATION_MS)?.map(Duration::from_millis))
        };
        if let Some(d) = millis("ackWait", MIN_ACK_WAIT_MS)? {
            self.ack_wait = d;
        }
        if let Some(d) = millis("retryDelay", 0)? {
            self.retry_delay = d;
        }
        if let Some(d) = millis("enqueueTimeout", 1)? {
            self.enqueue_timeout = d;
        }
        if let Some(d) = millis("connectTimeout", 1)? {
            self.connect_timeout = d;
        }
        if let Some(d) = millis("taskTimeout", 1)? {
            self.task_timeout = d;
        }
        if let Some(d) = millis("shutdownTimeout", 0)? {
            self.shutdown_timeout = d;
        }
        if let Some(ms) = integer_option(options, "deadLetterMaxAge", 1, MAX_DEAD_LETTER_AGE_MS)? {
            self.dead_letter_max_age = Some(Duration::from_millis(ms));
        }
        self.dead_letter_max_count =
            integer_option(options, "deadLetterMaxCount", 1, MAX_DEAD_LETTER_COUNT)?;
        if let Some(schedules) = present(options, "schedules") {
            self.schedules = schedules.as_bool().ok_or_else(|| {
                invalid(format!(
                    "config.options.schedules must be a boolean, got {}",
                    kind(schedules)
                ))
            })?;
        }
        if let Some(backoff) = present(options, "backoff") {
            if present(options, "retryDelay").is_some() {
                return Err(invalid(
                    "give options.retryDelay or options.backoff, not both".into(),
                ));
            }
            self.backoff = Some(Backoff::from_json(
                "options.backoff",
                backoff,
                crate::Error::InvalidConfig,
            )?);
        }
        self.global_concurrency =
            integer_option(options, "globalConcurrency", 1, MAX_GLOBAL_CONCURRENCY)?
                .map(|n| n as u32);
        if let Some(limit) = present(options, "rateLimit") {
            self.rate_limit = Some(rate_limit(limit)?);
        }
        if let Some(priorities) = present(options, "priorities") {
            self.priorities = priorities.as_bool().ok_or_else(|| {
                invalid(format!(
                    "config.options.priorities must be a boolean, got {}",
                    kind(priorities)
                ))
            })?;
        }
        self.check_combinations()?;
        Ok(())
    }

    /// The most deliveries a task gets: the first attempt plus the retries.
    pub fn max_deliveries(&self) -> u64 {
        1 + u64::from(self.max_retries)
    }

    /// The queue's retry backoff: `options.backoff`, else `retryDelay` after every failure.
    pub fn retry_backoff(&self) -> Backoff {
        self.backoff.unwrap_or(Backoff::fixed(self.retry_delay))
    }

    /// The most tasks a worker keeps ready beyond those running: `options.prefetch`, or none with
    /// `globalConcurrency` (a prefetched task is delivered, so it counts against the global limit
    /// while it waits, and would keep another worker's free slot idle).
    pub fn effective_prefetch(&self) -> u32 {
        if self.global_concurrency.is_some() {
            0
        } else {
            self.prefetch
        }
    }

    /// The stream holding this queue's dead letters.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}{DEAD_LETTER_SUFFIX}", self.stream_name)
    }

    /// The subject of this queue's dead-letter stream.
    pub fn dead_letter_subject(&self) -> String {
        format!("{DEAD_LETTER_SUBJECT_PREFIX}{}", self.stream_name)
    }

    /// Checks options that do not go together with `options.priorities`.
    pub fn check_combinations(&self) -> Result<()> {
        if self.priorities && self.global_concurrency.is_some() {
            return Err(Error::InvalidConfig(
                "options.globalConcurrency cannot be combined with options.priorities: each \
                 priority level is its own JetStream consumer, and the server limits \
                 unacknowledged tasks per consumer, not across them"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The subjects of this queue's schedules (`protoqueue.sched.<stream>`): delayed tasks under
    /// `.at.<task id>`, recurring ones under `.recurring.<name>`. In the task stream, never matched
    /// by the workers' consumer (it takes exactly [`Config::subject`]).
    pub fn schedule_prefix(&self) -> String {
        format!("{SCHEDULE_SUBJECT_PREFIX}{}", self.stream_name)
    }

    /// The stream of this queue's id index (producer-chosen ids, [`crate::ids`]).
    pub fn id_index_stream(&self) -> String {
        format!("{}_IDS", self.stream_name)
    }

    /// The subjects of this queue's id index: one token per id follows this prefix.
    pub fn id_index_prefix(&self) -> String {
        format!("protoqueue.ids.{}.", self.stream_name)
    }

    /// How often a running handler's task is kept alive with a progress heartbeat:
    /// well inside `ack_wait`, so one late heartbeat does not cause a redelivery.
    pub fn heartbeat_interval(&self) -> Duration {
        self.ack_wait / 3
    }

    /// The URL to connect to: `connect(url)`'s argument, else `config.url`, else `NATS_URL`,
    /// else [`DEFAULT_URL`].
    pub fn resolve_url(&self, explicit: Option<&str>) -> Result<String> {
        let url = explicit
            .map(str::to_owned)
            .or_else(|| self.url.clone())
            .or_else(|| {
                std::env::var("NATS_URL")
                    .ok()
                    .filter(|u| !u.trim().is_empty())
            })
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        validate_urls(&url)?;
        Ok(url)
    }
}

/// What a dead-letter worker (`processDLQ(handler, options)`) may do differently from the queue's
/// options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LetterOptions {
    /// Letters handled at once (`batchSize`).
    pub batch_size: Option<u32>,
    /// The least time before a failed letter is offered again (`retryDelay`).
    pub retry_delay: Option<Duration>,
    /// The longest one handler call may run (`taskTimeout`).
    pub task_timeout: Option<Duration>,
}

impl LetterOptions {
    /// Reads and validates `processDLQ`'s options object (absent: none).
    pub fn from_json(value: &Value) -> Result<Self> {
        if value.is_null() {
            return Ok(LetterOptions::default());
        }
        let options = value.as_object().ok_or_else(|| {
            invalid(format!(
                "processDLQ options must be an object, got {}",
                kind(value)
            ))
        })?;
        reject_unknown_keys(
            "processDLQ options",
            options,
            &["batchSize", "retryDelay", "taskTimeout"],
        )?;
        let millis = |key: &str, min: u64| -> Result<Option<Duration>> {
            Ok(integer_option(options, key, min, MAX_DURATION_MS)?.map(Duration::from_millis))
        };
        Ok(LetterOptions {
            batch_size: integer_option(options, "batchSize", 1, MAX_BATCH_SIZE)?.map(|n| n as u32),
            retry_delay: millis("retryDelay", 0)?,
            task_timeout: millis("taskTimeout", 1)?,
        })
    }

    /// `config` with these options applied.
    pub fn apply(&self, config: &Config) -> Config {
        let mut config = config.clone();
        config.batch_size = self.batch_size.unwrap_or(config.batch_size);
        config.retry_delay = self.retry_delay.unwrap_or(config.retry_delay);
        config.task_timeout = self.task_timeout.unwrap_or(config.task_timeout);
        config
    }
}

/// Reads `options.rateLimit`: `{ max, duration }`.
fn rate_limit(value: &Value) -> Result<RateLimit> {
    let object = value.as_object().ok_or_else(|| {
        invalid(format!(
            "options.rateLimit must be an object like {{ max: 100, duration: 1000 }}, got {}",
            kind(value)
        ))
    })?;
    reject_unknown_keys("options.rateLimit", object, &["max", "duration"])?;
    let max = integer_option(object, "max", 1, MAX_RATE_LIMIT)?
        .ok_or_else(|| invalid("options.rateLimit.max is required".into()))?;
    let duration = integer_option(object, "duration", 1, MAX_DURATION_MS)?
        .ok_or_else(|| invalid("options.rateLimit.duration is required (ms)".into()))?;
    Ok(RateLimit {
        max: max as u32,
        duration: Duration::from_millis(duration),
    })
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("stream_name", &self.stream_name)
            .field("subject", &self.subject)
            .field("tree", &self.tree)
            .field("url", &self.url.as_deref().map(redact))
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("verbose", &self.verbose)
            .field("create_streams", &self.create_streams)
            .field("max_retries", &self.max_retries)
            .field("ack_wait", &self.ack_wait)
            .field("batch_size", &self.batch_size)
            .field("prefetch", &self.prefetch)
            .field("retry_delay", &self.retry_delay)
            .field("backoff", &self.backoff)
            .field("global_concurrency", &self.global_concurrency)
            .field("rate_limit", &self.rate_limit)
            .field("enqueue_timeout", &self.enqueue_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("task_timeout", &self.task_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("replicas", &self.replicas)
            .field("dead_letter_max_age", &self.dead_letter_max_age)
            .field("dead_letter_max_count", &self.dead_letter_max_count)
            .field("schedules", &self.schedules)
            .field("priorities", &self.priorities)
            .finish()
    }
}

/// JetStream stream name rules: printable, no whitespace, no `.`, `*`, `>`, path separators.
pub fn validate_stream_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("streamName must not be empty".into()));
    }
    if name.len() > MAX_STREAM_NAME_LEN {
        return Err(invalid(format!(
            "streamName is {} bytes long; at most {MAX_STREAM_NAME_LEN} are allowed",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(invalid(format!(
            "streamName {name:?} contains {c:?}; stream names may not contain whitespace, \
             '.', '*', '>', '/' or '\\'"
        )));
    }
    Ok(())
}

/// A subject tasks can be published to: dot-separated non-empty tokens, no wildcards, no
/// whitespace, not in the server's reserved `$` namespace.
pub fn validate_publish_subject(field: &str, subject: &str) -> Result<()> {
    if subject.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(invalid(format!(
            "{field} is {} bytes long; at most {MAX_SUBJECT_LEN} are allowed",
            subject.len()
        )));
    }
    if let Some(c) = subject
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(format!(
            "{field} {subject:?} contains {c:?}; subjects have no whitespace"
        )));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(invalid(format!(
                "{field} {subject:?} has an empty token; write tokens separated by single dots, \
                 e.g. \"tasks.email\""
            )));
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Err(invalid(format!(
                "{field} {subject:?} contains a wildcard; a queue's subject must be a concrete \
                 subject, or a subject tree ending in '.>' such as \"tasks.email.>\""
            )));
        }
    }
    if subject.starts_with('$') {
        return Err(invalid(format!(
            "{field} {subject:?} is in the server's reserved '$' namespace"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn code_of(value: Value) -> &'static str {
        Config::from_json(&value)
            .err()
            .map(|e| e.code())
            .unwrap_or("ok")
    }

    #[test]
    fn defaults_match_the_readme() {
        let config = Config::from_json(&json!({"streamName": "s", "subject": "tasks.email"}))
            .expect("valid config");
        assert_eq!(config.max_retries, 3);
        assert_eq!(config.ack_wait, Duration::from_millis(30_000));
        assert_eq!(config.batch_size, 10);
        assert_eq!(config.prefetch, 1_000);
        assert_eq!(config.retry_delay, Duration::from_millis(1_000));
        assert_eq!(config.max_deliveries(), 4);
        assert_eq!(config.dead_letter_stream(), "s_DLQ");
        assert!(config.create_streams);
    }

    #[test]
    fn create_streams_is_a_boolean() {
        let read = |value| {
            Config::from_json(&json!({"streamName": "s", "subject": "a", "createStreams": value}))
        };
        assert!(!read(json!(false)).expect("valid config").create_streams);
        assert!(read(json!(null)).expect("valid config").create_streams);
        assert_eq!(
            read(json!("no")).map(|_| ()).unwrap_err().code(),
            "ERR_PQ_INVALID_CONFIG"
        );
    }

    #[test]
    fn options_are_read() {
        let config = Config::from_json(&json!({
            "streamName": "s", "subject": "a.b", "url": "nats://127.0.0.1:1,nats://127.0.0.1:2",
            "verbose": true,
            "options": {"maxRetries": 0, "ackWait": 500, "batchSize": 7, "prefetch": 0, "retryDelay": 0,
                        "enqueueTimeout": 10, "taskTimeout": 20, "shutdownTimeout": 0,
                        "connectTimeout": 30, "replicas": 3}
        }))
        .expect("valid config");
        assert_eq!(config.max_retries, 0);
        assert_eq!(config.ack_wait, Duration::from_millis(500));
        assert_eq!(config.batch_size, 7);
        assert_eq!(config.prefetch, 0);
        assert_eq!(config.retry_delay, Duration::ZERO);
        assert_eq!(config.enqueue_timeout, Duration::from_millis(10));
        assert_eq!(config.task_timeout, Duration::from_millis(20));
        assert_eq!(config.connect_timeout, Duration::from_millis(30));
        assert_eq!(config.replicas, 3);
        assert!(config.verbose);
    }

    #[test]
    fn null_means_absent() {
        let config = Config::from_json(&json!({
            "streamName": "s", "subject": "a", "url": null, "options": {"batchSize": null}
        }))
        .expect("valid config");
        assert_eq!(config.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(config.url, None);
    }

    #[test]
    fn every_mistake_is_invalid_config() {
        let bad = [
            json!(null),
            json!("s"),
            json!({"subject": "a"}),
            json!({"streamName": "s"}),
            json!({"streamName": 1, "subject": "a"}),
            json!({"streamName": "", "subject": "a"}),
            json!({"streamName": "a.b", "subject": "a"}),
            json!({"streamName": "a b", "subject": "a"}),
            json!({"streamName": "a*", "subject": "a"}),
            json!({"streamName": "a>", "subject": "a"}),
            json!({"streamName": "a/b", "subject": "a"}),
            json!({"streamName": "x".repeat(300), "subject": "a"}),
            json!({"streamName": "s", "subject": ""}),
            json!({"streamName": "s", "subject": "a..b"}),
            json!({"streamName": "s", "subject": ".a"}),
            json!({"streamName": "s", "subject": "a."}),
            json!({"streamName": "s", "subject": "a.*"}),
            json!({"streamName": "s", "subject": "a.>.b"}),
            json!({"streamName": "s", "subject": ">"}),
            json!({"streamName": "s", "subject": "a.*.>"}),
            json!({"streamName": "s", "subject": "a..>"}),
            json!({"streamName": "s", "subject": "a b"}),
            json!({"streamName": "s", "subject": "$JS.API"}),
            json!({"streamName": "s", "subject": "a", "url": 5}),
            json!({"streamName": "s", "subject": "a", "url": ""}),
            json!({"streamName": "s", "subject": "a", "url": "http://[::1"}),
            json!({"streamName": "s", "subject": "a", "verbose": "yes"}),
            json!({"streamName": "s", "subject": "a", "extra": 1}),
            json!({"streamName": "s", "subject": "a", "options": 3}),
            json!({"streamName": "s", "subject": "a", "options": {"batchSize": 0}}),
            json!({"streamName": "s", "subject": "a", "options": {"batchSize": "10"}}),
            json!({"streamName": "s", "subject": "a", "options": {"batchSize": 1.5}}),
            json!({"streamName": "s", "subject": "a", "options": {"prefetch": -1}}),
            json!({"streamName": "s", "subject": "a", "options": {"prefetch": 10_001}}),
            json!({"streamName": "s", "subject": "a", "options": {"maxRetries": -1}}),
            json!({"streamName": "s", "subject": "a", "options": {"ackWait": 5}}),
            json!({"streamName": "s", "subject": "a", "options": {"retryDelay": -10}}),
            json!({"streamName": "s", "subject": "a", "options": {"batchsize": 5}}),
            json!({"streamName": "s", "subject": "a", "auth": "user:pass"}),
            json!({"streamName": "s", "subject": "a", "auth": {"token": 1}}),
            json!({"streamName": "s", "subject": "a", "auth": {"user": "u"}}),
            json!({"streamName": "s", "subject": "a", "tls": "on"}),
            json!({"streamName": "s", "subject": "a", "tls": {"caFile": false}}),
            json!({"streamName": "s", "subject": "a", "tls": {"certFile": "c.pem"}}),
            json!({"streamName": "s", "subject": "a", "options": {"replicas": 0}}),
            json!({"streamName": "s", "subject": "a", "options": {"replicas": 6}}),
            json!({"streamName": "s", "subject": "a", "options": {"replicas": "3"}}),
            json!({"streamName": "s", "subject": "a", "options": {"schedules": "yes"}}),
            json!({"streamName": "s", "subject": "a", "options": {"schedules": 1}}),
            json!({"streamName": "s", "subject": "a", "options": {"backoff": "exponential"}}),
            json!({"streamName": "s", "subject": "a", "options": {"backoff": {"type": "fixed"}}}),
            json!({"streamName": "s", "subject": "a",
                   "options": {"retryDelay": 5, "backoff": {"type": "fixed", "delay": 5}}}),
            json!({"streamName": "s", "subject": "a", "options": {"globalConcurrency": 0}}),
            json!({"streamName": "s", "subject": "a", "options": {"globalConcurrency": 2.5}}),
            json!({"streamName": "s", "subject": "a", "options": {"globalConcurrency": 1e9}}),
            json!({"streamName": "s", "subject": "a", "options": {"rateLimit": 5}}),
            json!({"streamName": "s", "subject": "a", "options": {"rateLimit": {"max": 5}}}),
            json!({"streamName": "s", "subject": "a", "options": {"rateLimit": {"duration": 5}}}),
            json!({"streamName": "s", "subject": "a",
                   "options": {"rateLimit": {"max": 0, "duration": 5}}}),
            json!({"streamName": "s", "subject": "a",
                   "options": {"rateLimit": {"max": 5, "duration": 0}}}),
            json!({"streamName": "s", "subject": "a",
                   "options": {"rateLimit": {"max": 5, "duration": 5, "burst": 1}}}),
        ];
        for value in bad {
            assert_eq!(
                code_of(value.clone()),
                "ERR_PQ_INVALID_CONFIG",
                "accepted {value}"
            );
        }
    }

    #[test]
    fn limits_and_backoff_are_read() {
        let config = Config::from_json(&json!({"streamName": "s", "subject": "a", "options": {
            "backoff": {"type": "exponential", "delay": 100, "maxDelay": 1000, "jitter": 0.2},
            "globalConcurrency": 3, "rateLimit": {"max": 10, "duration": 1000}, "prefetch": 50}}))
        .expect("valid config");
        let backoff = config.retry_backoff();
        assert_eq!(backoff.kind, backoff::BackoffKind::Exponential);
        assert_eq!(backoff.max_delay, Some(Duration::from_millis(1000)));
        assert_eq!(config.global_concurrency, Some(3));
        assert_eq!(
            config.effective_prefetch(),
            0,
            "no prefetch under a global limit"
        );
        assert_eq!(
            config.rate_limit,
            Some(RateLimit {
                max: 10,
                duration: Duration::from_secs(1)
            })
        );
        let plain = Config::new("s", "a").expect("valid");
        assert_eq!(plain.retry_backoff(), Backoff::fixed(DEFAULT_RETRY_DELAY));
        assert_eq!(plain.effective_prefetch(), DEFAULT_PREFETCH);
    }

    fn with_option(key: &str, value: Value) -> Value {
        json!({"streamName": "s", "subject": "a", "options": {key: value}})
    }

    #[test]
    fn dead_letter_retention_is_read_and_bounded() {
        let config = Config::from_json(&json!({"streamName": "s", "subject": "a",
            "options": {"deadLetterMaxAge": 86_400_000u64, "deadLetterMaxCount": 10_000}}))
        .expect("valid");
        assert_eq!(
            (config.dead_letter_max_age, config.dead_letter_max_count),
            (Some(Duration::from_secs(86_400)), Some(10_000))
        );
        let default = Config::new("s", "a").expect("valid");
        assert_eq!(
            (default.dead_letter_max_age, default.dead_letter_max_count),
            (None, None)
        );
        for (key, value) in [
            ("deadLetterMaxAge", json!(0)),
            ("deadLetterMaxAge", json!(MAX_DEAD_LETTER_AGE_MS + 1)),
            ("deadLetterMaxCount", json!(0)),
            ("deadLetterMaxCount", json!(-1)),
            ("deadLetterMaxCount", json!(1.5)),
            ("deadLetterMaxCount", json!("5")),
        ] {
            assert_eq!(
                code_of(with_option(key, value.clone())),
                "ERR_PQ_INVALID_CONFIG",
                "{key}: {value}"
            );
        }
        assert!(Config::from_json(&with_option(
            "deadLetterMaxAge",
            json!(MAX_DEAD_LETTER_AGE_MS)
        ))
        .is_ok());
    }

    #[test]
    fn every_duration_has_a_maximum_that_survives_the_server_and_the_clock() {
        let durations = [
            "ackWait",
            "retryDelay",
            "enqueueTimeout",
            "connectTimeout",
            "taskTimeout",
            "shutdownTimeout",
        ];
        for key in durations {
            assert_eq!(
                code_of(with_option(key, json!(MAX_DURATION_MS))),
                "ok",
                "{key}"
            );
            for too_long in [
                json!(MAX_DURATION_MS + 1),
                json!(9.3e12),
                json!(1e13),
                json!(u64::MAX),
                json!(1e300),
            ] {
                assert_eq!(
                    code_of(with_option(key, too_long.clone())),
                    "ERR_PQ_INVALID_CONFIG",
                    "{key}: {too_long}"
                );
            }
        }
        let longest = Config::from_json(&json!({"streamName": "s", "subject": "a", "options": {
            "ackWait": MAX_DURATION_MS, "retryDelay": MAX_DURATION_MS,
            "enqueueTimeout": MAX_DURATION_MS, "connectTimeout": MAX_DURATION_MS,
            "taskTimeout": MAX_DURATION_MS, "shutdownTimeout": MAX_DURATION_MS}}))
        .expect("valid config");
        for duration in [
            longest.ack_wait,
            longest.retry_delay,
            longest.enqueue_timeout,
            longest.connect_timeout,
            longest.task_timeout,
            longest.shutdown_timeout,
        ] {
            // As the server counts them (ack wait, NAK delay), and as deadlines.
            assert!(i64::try_from(duration.as_nanos()).is_ok());
            assert!(tokio::time::Instant::now()
                .checked_add(duration * 2)
                .is_some());
            assert!(std::time::Instant::now()
                .checked_add(duration * 2)
                .is_some());
        }
    }

    #[test]
    fn names_have_maximum_lengths_and_the_derived_names_fit() {
        let name = |stream: &str, subject: &str| json!({"streamName": stream, "subject": subject});
        let longest_subject = format!("{}.b", "a".repeat(MAX_SUBJECT_LEN - 2));
        assert_eq!(code_of(name("s", &longest_subject)), "ok");
        assert_eq!(
            code_of(name("s", &format!("a{longest_subject}"))),
            "ERR_PQ_INVALID_CONFIG"
        );
        assert_eq!(
            code_of(name("s", &"a".repeat(5_000))),
            "ERR_PQ_INVALID_CONFIG"
        );

        let longest_stream = "S".repeat(MAX_STREAM_NAME_LEN);
        let config = Config::from_json(&name(&longest_stream, "a")).expect("valid config");
        assert_eq!(config.dead_letter_stream().len(), 255);
        validate_publish_subject("dlq", &config.dead_letter_subject()).expect("valid subject");
        assert_eq!(
            code_of(name(&format!("S{longest_stream}"), "a")),
            "ERR_PQ_INVALID_CONFIG"
        );
        assert_eq!(
            code_of(name(&"é".repeat(MAX_STREAM_NAME_LEN / 2 + 1), "a")),
            "ERR_PQ_INVALID_CONFIG",
            "lengths count bytes"
        );
    }

    #[test]
    fn auth_and_tls_are_read_and_never_shown() {
        let config = Config::from_json(&json!({
            "streamName": "s", "subject": "a", "url": "nats://ada:hunter2@h:4222",
            "auth": {"token": "hunter3"}, "tls": {"caFile": "/ca.pem"}
        }))
        .expect("valid config");
        assert_eq!(config.auth, Auth::Token(crate::Secret::new("hunter3")));
        assert_eq!(
            config.tls.as_ref().and_then(|t| t.ca_file.as_deref()),
            Some(std::path::Path::new("/ca.pem"))
        );
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert!(shown.contains("ca.pem"), "{shown}");

        let err = Config::from_json(&json!({"streamName": "s", "subject": "a",
                                            "url": "nats://ada:hunter2@h:99999"}))
        .expect_err("a port out of range");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn url_resolution_prefers_the_argument_then_the_config() {
        let mut config = Config::new("s", "a").expect("valid");
        config.url = Some("nats://127.0.0.1:1111".into());
        assert_eq!(
            config
                .resolve_url(Some("nats://127.0.0.1:2222"))
                .expect("valid"),
            "nats://127.0.0.1:2222"
        );
        assert_eq!(
            config.resolve_url(None).expect("valid"),
            "nats://127.0.0.1:1111"
        );
        assert!(config.resolve_url(Some(" , ")).is_err());
    }
}
