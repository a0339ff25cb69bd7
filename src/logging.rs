//! Logging: `tracing` events written to stderr. Quiet by default (warnings only); `verbose: true`
//! on any queue, or the `PROTOQUEUE_LOG` environment variable (an `EnvFilter` such as `debug` or
//! `protoqueue=trace`), turns on more. Secrets never reach a log line: URLs are redacted and
//! credentials are not logged.

use std::{io::IsTerminal, sync::OnceLock};

use tracing_subscriber::{filter::EnvFilter, fmt, prelude::*, reload, Registry};

/// The environment variable holding a log filter.
pub const LOG_ENV: &str = "PROTOQUEUE_LOG";
const QUIET: &str = "protoqueue=warn";
const VERBOSE: &str = "protoqueue=debug";

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
