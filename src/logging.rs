//! Logging: `tracing` events written to stderr, or — once the host sets a [`LogSink`] (the
//! JavaScript `setLogger()`) — handed to it instead. Quiet by default: warnings only, and only
//! about trouble — what events and metrics report (a task dead-lettered, retried) is logged at
//! `info` and below. `verbose: true` on any queue, or the `PROTOQUEUE_LOG` environment variable
//! (an `EnvFilter` such as `debug` or `protoqueue=trace`), turns on more, for stderr and the sink
//! alike. Secrets never reach a log line: URLs are redacted and credentials are not logged.

use std::{
    borrow::Cow,
    io::IsTerminal,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock, RwLock,
    },
};

use tracing::{field::Field, Event, Level, Subscriber};
use tracing_subscriber::{
    filter::{dynamic_filter_fn, EnvFilter},
    fmt,
    layer::Context,
    prelude::*,
    reload, Layer, Registry,
};

/// The environment variable holding a log filter.
pub const LOG_ENV: &str = "PROTOQUEUE_LOG";
/// The filter unless `PROTOQUEUE_LOG` or `verbose` says otherwise.
pub const QUIET: &str = "protoqueue=warn";
const VERBOSE: &str = "protoqueue=debug";

/// The most bytes of user- or handler-provided text (error messages) one log line shows.
pub const MAX_LOGGED_TEXT: usize = 1024;

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber once; later calls do nothing. Also fine when the host process
/// already installed one (then this crate's events go there, and a [`LogSink`] gets none).
pub fn init() {
    FILTER.get_or_init(|| {
        let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(QUIET));
        let (filter, handle) = reload::Layer::new(filter);
        // Lines go to stderr while no sink takes them.
        let stderr = fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .with_filter(dynamic_filter_fn(|_, _| !HAS_SINK.load(Ordering::Relaxed)));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(stderr)
            .with(SinkLayer)
            .try_init();
        handle
    });
}

/// Where log lines go instead of stderr: the host's logger. Called on the runtime's threads, so
/// it must not block (the JavaScript one queues the line for the event loop).
pub trait LogSink: Send + Sync {
    /// One line: its level, its message, and its other fields (`id`, `seq`, `url`, …) as JSON
    /// values.
    fn log(
        &self,
        level: Level,
        message: String,
        fields: serde_json::Map<String, serde_json::Value>,
    );
}

static SINK: RwLock<Option<Arc<dyn LogSink>>> = RwLock::new(None);
/// Whether [`SINK`] holds one (read for every line that passes the filter).
static HAS_SINK: AtomicBool = AtomicBool::new(false);

/// Sends every later log line of the process to `sink` instead of stderr; `None` sends them to
/// stderr again.
pub fn set_sink(sink: Option<Arc<dyn LogSink>>) {
    init();
    let mut slot = SINK
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    HAS_SINK.store(sink.is_some(), Ordering::Relaxed);
    *slot = sink;
}

fn sink() -> Option<Arc<dyn LogSink>> {
    if !HAS_SINK.load(Ordering::Relaxed) {
        return None;
    }
    SINK.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Hands each line that passed the filter to the [`LogSink`], if one is set.
struct SinkLayer;

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let Some(sink) = sink() else {
            return;
        };
        let mut line = Line::default();
        event.record(&mut line);
        sink.log(*event.metadata().level(), line.message, line.fields);
    }
}

/// A line's fields as the sink takes them.
#[derive(Default)]
struct Line {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Line {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(text)) => self.message = text,
            (name, value) => {
                self.fields.insert(name.to_owned(), value);
            }
        }
    }
}

impl tracing::field::Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` fields (and the message) arrive here, shown with `Display`.
        self.put(field, format!("{value:?}").into());
    }
}

/// Turns debug logging on (a queue with `verbose: true`). An explicit `PROTOQUEUE_LOG` wins.
pub fn enable_verbose() {
    init();
    if std::env::var_os(LOG_ENV).is_some() {
        return;
    }
    if let Some(handle) = FILTER.get() {
        let _ = handle.reload(EnvFilter::new(VERBOSE));
    }
}

/// `text` as a log line may show it: at most [`MAX_LOGGED_TEXT`] bytes, cut on a character
/// boundary and followed by `… (N bytes)` when it is longer. For any text a user or a handler
/// provides (a 2 MB handler error would otherwise be one 2 MB log line).
pub fn shorten(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_LOGGED_TEXT {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_LOGGED_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Captured(std::sync::Mutex<Vec<(Level, String, serde_json::Value)>>);

    impl LogSink for Captured {
        fn log(
            &self,
            level: Level,
            message: String,
            fields: serde_json::Map<String, serde_json::Value>,
        ) {
            if message.starts_with("sink test") {
                let mut lines = self.0.lock().expect("lines");
                lines.push((level, message, fields.into()));
            }
        }
    }

    #[test]
    fn a_sink_takes_the_lines_that_pass_the_filter_with_their_fields() {
        let captured = Arc::new(Captured::default());
        set_sink(Some(captured.clone()));
        tracing::warn!(id = %"order-1", seq = 7u64, retry = true, "sink test: {} failed", "a task");
        if std::env::var_os(LOG_ENV).is_none() {
            tracing::debug!("sink test: below the default filter");
        }
        set_sink(None);
        tracing::warn!("sink test: after the sink was removed");
        let lines = captured.0.lock().expect("lines").clone();
        assert_eq!(
            lines,
            vec![(
                Level::WARN,
                "sink test: a task failed".to_owned(),
                serde_json::json!({ "id": "order-1", "seq": 7, "retry": true })
            )]
        );
    }

    #[test]
    fn long_text_is_shortened_on_a_char_boundary() {
        assert_eq!(shorten("short"), "short");
        let exact = "x".repeat(MAX_LOGGED_TEXT);
        assert_eq!(shorten(&exact), exact);

        let huge = "é".repeat(1_000_000); // 2 MB, two bytes per character
        let shown = shorten(&huge);
        assert!(shown.len() < MAX_LOGGED_TEXT + 32, "{} bytes", shown.len());
        assert!(shown.starts_with(&"é".repeat(MAX_LOGGED_TEXT / 2)));
        assert!(shown.ends_with("… (2000000 bytes)"), "{shown:?}");

        let odd = format!("x{}", "é".repeat(1_000)); // the limit falls inside a character
        assert!(shorten(&odd).ends_with("… (2001 bytes)"));
    }
}
