//! The `setLogger()` function: the core's log lines handed to a JavaScript function instead of
//! written to stderr ([`crate::logging::LogSink`]).
// napi registers the function only outside `cargo test`.
#![cfg_attr(test, allow(dead_code))]

use std::sync::Arc;

use napi::{
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
    Status,
};
use napi_derive::napi;

use crate::logging::{self, LogSink};

/// One log line as the shim's logger function takes it.
#[napi(object)]
pub struct NativeLogLine {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    pub message: String,
    /// The line's other fields (`id`, `seq`, `url`, …).
    pub fields: serde_json::Value,
}

/// A JavaScript function taking log lines on the event loop; weak, so it never keeps the process
/// alive.
type Forward = ThreadsafeFunction<NativeLogLine, (), NativeLogLine, Status, false, true>;

struct JsSink(Forward);

impl LogSink for JsSink {
    fn log(
        &self,
        level: tracing::Level,
        message: String,
        fields: serde_json::Map<String, serde_json::Value>,
    ) {
        let line = NativeLogLine {
            level: level.as_str().to_ascii_lowercase(),
            message,
            fields: fields.into(),
        };
        // Never blocks; a line that cannot be queued (the environment is closing) is dropped.
        self.0.call(line, ThreadsafeFunctionCallMode::NonBlocking);
    }
}

/// Sends the core's later log lines to `forward` (on the event loop) instead of stderr; without
/// it, to stderr again.
#[napi(ts_args_type = "forward?: ((line: NativeLogLine) => void) | undefined | null")]
pub fn set_logger(forward: Option<Forward>) {
    logging::set_sink(forward.map(|forward| Arc::new(JsSink(forward)) as Arc<dyn LogSink>));
}
