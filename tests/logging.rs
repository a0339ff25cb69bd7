//! Log lines stay bounded whatever a handler says: a huge handler error is shortened in the log
//! (the dead letter keeps its own, larger, bounded copy). And the default log is quiet about what
//! events and metrics report.

mod common;

use protoqueue::lifecycle;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use common::*;
use protoqueue::{logging::MAX_LOGGED_TEXT, Failure, Outcome};

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Under `filter`, dead-letters `tasks` tasks whose handler fails for good with `error`, and
/// more that are not tasks at all; what was logged.
async fn log_of_dead_letters(filter: &str, tasks: usize, error: String) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter(filter)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let worker = start_worker(
        &connection,
        handler(move |_| {
            let error = error.clone();
            async move {
                Outcome::Failure(Failure {
                    error,
                    retry: false,
                    ..Failure::default()
                })
            }
        }),
    )
    .await;
    for _ in 0..tasks {
        lifecycle::enqueue(&connection, task(b"{}".to_vec()))
            .await
            .expect("enqueue");
    }
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.publish(config.subject.clone(), "not a task".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    settled_with_dead_letters(&connection, tasks as u64 + 1).await;
    worker.stop().await;
    let log = captured.0.lock().expect("log buffer").clone();
    String::from_utf8(log).expect("utf-8")
}

// One thread: the worker's tasks run where the thread-local subscriber below is installed.
#[tokio::test(flavor = "current_thread")]
async fn a_huge_handler_error_is_shortened_in_the_log() {
    let huge = "e".repeat(2 * 1024 * 1024);
    let log = log_of_dead_letters("protoqueue=debug", 1, huge).await;
    let line = log
        .lines()
        .find(|line| line.contains("dead-lettering"))
        .expect("the dead-lettering warning is logged");
    assert!(line.contains("bytes)"), "says how long the text was");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < MAX_LOGGED_TEXT + 512,
        "a log line of {longest} bytes"
    );
}

/// Issue 25: the library wrote a warning per dead letter to stderr by itself. A dead letter is an
/// event (and a metric), not trouble: the default log says nothing of it.
#[tokio::test(flavor = "current_thread")]
async fn dead_letters_are_not_logged_by_default() {
    let log = log_of_dead_letters(protoqueue::logging::QUIET, 20, "downstream".into()).await;
    assert_eq!(log, "", "nothing logged");
}
