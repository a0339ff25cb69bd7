//! Reading the user's settings: the JavaScript `ProtoqueueConfig` object, and `processDLQ`'s
//! options. Every mistake is an [`Error::InvalidConfig`] before anything touches the network.

use std::time::Duration;

use serde_json::Value;

use crate::{
    config::{
        auth::Auth,
        backoff::Backoff,
        defaults::*,
        json::{integer_option, invalid, kind, present, reject_unknown_keys, required_string},
        settings::{Config, Keep, RateLimit},
        tls::Tls,
        urls::validate_urls,
    },
    error::{Error, Result},
};

impl Config {
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
                "results",
                "keepCompleted",
                "keepFailed",
                "events",
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
            self.schedules_option = Some(self.schedules);
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
                Error::InvalidConfig,
            )?);
        }
        self.global_concurrency =
            integer_option(options, "globalConcurrency", 1, MAX_GLOBAL_CONCURRENCY)?
                .map(|n| n as u32);
        if let Some(results) = present(options, "results") {
            self.results_ttl = Some(results_ttl(results)?);
        }
        if let Some(keep) = present(options, "keepCompleted") {
            self.keep_completed = Some(kept("keepCompleted", keep)?);
        }
        if let Some(keep) = present(options, "keepFailed") {
            self.keep_failed = Some(kept("keepFailed", keep)?);
        }
        if let Some(events) = present(options, "events") {
            self.events_from_queue = match events.as_str() {
                Some("queue") => true,
                Some("object") => false,
                _ => {
                    return Err(invalid(format!(
                        "config.options.events must be 'object' (this object's worker) or \
                         'queue' (every worker of the queue), got {}",
                        kind(events)
                    )))
                }
            };
        }
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

/// Reads `options.results`: `{ ttl }` (ms).
fn results_ttl(value: &Value) -> Result<Duration> {
    let object = value.as_object().ok_or_else(|| {
        invalid(format!(
            "options.results must be an object like {{ ttl: 3600000 }} (ms to keep each result), got {}",
            kind(value)
        ))
    })?;
    reject_unknown_keys("options.results", object, &["ttl"])?;
    let ttl =
        integer_option(object, "ttl", MIN_RESULT_TTL_MS, MAX_RESULT_TTL_MS)?.ok_or_else(|| {
            invalid("options.results.ttl is required (ms to keep each result)".into())
        })?;
    Ok(Duration::from_millis(ttl))
}

/// Reads `options.keepCompleted` / `options.keepFailed`: `{ age?, count? }` (BullMQ's
/// `removeOnComplete` / `removeOnFail` meaning), or `true`: every record, for ever.
fn kept(name: &str, value: &Value) -> Result<Keep> {
    if value.as_bool() == Some(true) {
        return Ok(Keep::default());
    }
    let object = value.as_object().ok_or_else(|| {
        invalid(format!(
            "options.{name} must be true or an object like {{ age: 86400000, count: 1000 }} \
             (keep records up to that many ms and/or that many tasks), got {}",
            kind(value)
        ))
    })?;
    reject_unknown_keys(&format!("options.{name}"), object, &["age", "count"])?;
    let age = integer_option(object, "age", MIN_RESULT_TTL_MS, MAX_RESULT_TTL_MS)?;
    let count = integer_option(object, "count", 1, MAX_KEPT_COUNT)?;
    Ok(Keep {
        age: age.map(Duration::from_millis),
        count,
    })
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{
        auth::Secret,
        backoff,
        names::{validate_publish_subject, MAX_STREAM_NAME_LEN, MAX_SUBJECT_LEN},
    };

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
        assert_eq!(config.auth, Auth::Token(Secret::new("hunter3")));
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
}
