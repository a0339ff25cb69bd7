//! Logging: `tracing` events written to stderr. Quiet by default: warnings only, and only about
//! trouble — what events and metrics report (a task dead-lettered, retried) is logged at `info`
//! and below. `verbose: true`
//! on any queue, or the `PROTOQUEUE_LOG` environment variable (an `EnvFilter` such as `debug` or
//! `protoqueue=trace`), turns on more. Secrets never reach a log line: URLs are redacted and
//! credentials are not logged.

use std::{borrow::Cow, io::IsTerminal, sync::OnceLock};

use tracing_subscriber::{filter::EnvFilter, fmt, prelude::*, reload, Registry};

/// The environment variable holding a log filter.
pub const LOG_ENV: &str = "PROTOQUEUE_LOG";
/// The filter unless `PROTOQUEUE_LOG` or `verbose` says otherwise.
pub const QUIET: &str = "protoqueue=warn";
const VERBOSE: &str = "protoqueue=debug";

/// The most bytes of user- or handler-provided text (error messages) one log line shows.
pub const MAX_LOGGED_TEXT: usize = 1024;

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber once; later calls do nothing. Also fine when the host process
/// already installed one (then this crate's events go there).
pub fn init() {
    FILTER.get_or_init(|| {
        let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(QUIET));
        let (filter, handle) = reload::Layer::new(filter);
        let layer = fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false);
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .try_init();
        handle
    });
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
