//! [`Config`]: everything a queue needs to know, validated, and the values derived from it.

use std::{fmt, time::Duration};

use crate::{
    config::{
        auth::Auth,
        backoff::Backoff,
        defaults::*,
        names::{
            validate_publish_subject, validate_stream_name, DEAD_LETTER_SUBJECT_PREFIX,
            DEAD_LETTER_SUFFIX, SCHEDULE_SUBJECT_PREFIX,
        },
        tls::Tls,
        urls::{redact, validate_urls},
    },
    error::{Error, Result},
};

/// At most `max` tasks delivered to one worker within any `duration` (`options.rateLimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tasks per window.
    pub max: u32,
    /// The window.
    pub duration: Duration,
}

/// How long and how many task records of one kind are kept (`options.keepCompleted`,
/// `options.keepFailed`): BullMQ's `removeOnComplete` / `removeOnFail`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    /// Each record for this long; `None`: no age limit (`results.ttl`, when set, applies).
    pub age: Option<Duration>,
    /// The newest this many records; `None`: no count limit.
    pub count: Option<u64>,
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
    /// `options.results.ttl`: workers record each finished task — its result, or why it
    /// failed — for this long ([`crate::history`]), for `waitFor` and `getTask`. `None`: off.
    pub results_ttl: Option<Duration>,
    /// `options.keepCompleted`: workers record each completed task, kept as it says. `None`:
    /// only with `results_ttl`.
    pub keep_completed: Option<Keep>,
    /// `options.keepFailed`: the same for tasks dead-lettered or cancelled.
    pub keep_failed: Option<Keep>,
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
    /// Delayed and recurring tasks: the task stream also holds the schedule subjects and allows
    /// message schedules (nats-server ≥ 2.12). Before `connect()`, whether the queue asked for
    /// them (`options.schedules: true`, which also changes an existing stream: the server never
    /// turns message schedules off again); once connected, whether its stream has them.
    pub schedules: bool,
    /// `options.schedules` as given. Unset (`None`), a task stream this queue creates on a
    /// server that supports message schedules allows them (nothing existing is changed);
    /// `Some(false)` creates it without.
    pub schedules_option: Option<bool>,
    /// Whether the object's listeners hear the events of every worker of the queue, in any
    /// process (`options.events: 'queue'`), rather than its own worker's.
    pub events_from_queue: bool,
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
            results_ttl: None,
            keep_completed: None,
            keep_failed: None,
            enqueue_timeout: DEFAULT_ENQUEUE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            task_timeout: DEFAULT_TASK_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            replicas: DEFAULT_REPLICAS,
            dead_letter_max_age: None,
            dead_letter_max_count: None,
            schedules: false,
            schedules_option: None,
            events_from_queue: false,
            priorities: false,
        };
        validate_stream_name(&config.stream_name)?;
        validate_publish_subject("subject", &config.subject)?;
        validate_publish_subject("the dead-letter subject", &config.dead_letter_subject())?;
        Ok(config)
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

    /// The stream of this queue's live workers ([`crate::presence`]).
    pub fn workers_stream(&self) -> String {
        format!("{}_WORKERS", self.stream_name)
    }

    /// The subjects of this queue's worker records: one token per worker follows this prefix.
    pub fn workers_prefix(&self) -> String {
        format!("protoqueue.workers.{}.", self.stream_name)
    }

    /// Whether this queue's workers record finished tasks: `options.results`,
    /// `options.keepCompleted` or `options.keepFailed`.
    pub fn keeps_history(&self) -> bool {
        self.results_ttl.is_some() || self.keep_completed.is_some() || self.keep_failed.is_some()
    }

    /// The stream of this queue's task history: what became of each finished task
    /// ([`crate::history`]).
    pub fn history_stream(&self) -> String {
        format!("{}_HISTORY", self.stream_name)
    }

    /// The subjects of this queue's task history: one token per task id follows this prefix.
    pub fn history_prefix(&self) -> String {
        format!("protoqueue.history.{}.", self.stream_name)
    }

    /// The stream of this queue's cancel requests ([`crate::cancelling`]).
    pub fn cancels_stream(&self) -> String {
        format!("{}_CANCELS", self.stream_name)
    }

    /// The subjects of this queue's cancel requests: one token per task id follows this prefix.
    pub fn cancels_prefix(&self) -> String {
        format!("protoqueue.cancels.{}.", self.stream_name)
    }

    /// The subject workers publish this queue's events on while anyone listens
    /// ([`crate::observe::remote`]).
    pub fn events_subject(&self) -> String {
        format!("protoqueue.events.{}", self.stream_name)
    }

    /// The subject this queue's task workers answer on what they run ([`crate::history::running`]).
    pub fn running_subject(&self) -> String {
        format!("protoqueue.running.{}", self.stream_name)
    }

    /// The subject listeners of this queue's events say hello on.
    pub fn listeners_subject(&self) -> String {
        format!("protoqueue.listeners.{}", self.stream_name)
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
            .field("results_ttl", &self.results_ttl)
            .field("keep_completed", &self.keep_completed)
            .field("keep_failed", &self.keep_failed)
            .field("schedules", &self.schedules)
            .field("schedules_option", &self.schedules_option)
            .field("events_from_queue", &self.events_from_queue)
            .field("priorities", &self.priorities)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
