//! The defaults of the user's settings, as named constants, and the bounds every option is
//! checked against.

use std::time::Duration;

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
pub(crate) const MAX_REPLICAS: u64 = 5;
/// The NATS URL used when neither `connect(url)`, `config.url` nor `NATS_URL` names one.
pub const DEFAULT_URL: &str = "nats://localhost:4222";
/// The duplicate window of the task stream: a re-sent publish with the same id within this window
/// is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The largest value of a duration option, in milliseconds: 2^31 - 1 (about 24.8 days, the
/// largest delay JavaScript's `setTimeout` takes). The server counts `ackWait` and NAK delays in
/// nanoseconds as an `i64`, which overflows near 106 days; deadlines on the runtime's clock need
/// room too.
pub const MAX_DURATION_MS: u64 = (1 << 31) - 1;
/// The longest `options.deadLetterMaxAge`, in milliseconds: ten years.
pub const MAX_DEAD_LETTER_AGE_MS: u64 = 10 * 366 * 24 * 3600 * 1000;
/// The most letters `options.deadLetterMaxCount` may keep (JavaScript's largest safe integer).
pub const MAX_DEAD_LETTER_COUNT: u64 = (1 << 53) - 1;
/// The shortest `options.results.ttl`: a result must outlive the round trip of its waiter.
pub const MIN_RESULT_TTL_MS: u64 = 1_000;
/// The longest `options.results.ttl` (a year).
pub const MAX_RESULT_TTL_MS: u64 = 366 * 24 * 3600 * 1000;
/// The most records `options.keepCompleted.count` / `keepFailed.count` may keep (JavaScript's
/// largest safe integer).
pub const MAX_KEPT_COUNT: u64 = (1 << 53) - 1;
/// The largest `options.batchSize` (and `processDLQ`'s `batchSize`).
pub(crate) const MAX_BATCH_SIZE: u64 = 10_000;
/// The largest `options.prefetch`.
pub(crate) const MAX_PREFETCH: u64 = 10_000;
/// The shortest `options.ackWait`, in milliseconds.
pub(crate) const MIN_ACK_WAIT_MS: u64 = 100;
/// The largest `options.globalConcurrency`.
pub const MAX_GLOBAL_CONCURRENCY: u64 = 1_000_000;
/// The largest `options.rateLimit.max`: the worker remembers that many delivery times.
pub const MAX_RATE_LIMIT: u64 = 100_000;
