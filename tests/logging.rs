//! Log lines stay bounded whatever a handler says: a huge handler error is shortened in the log
//! (the dead letter keeps its own, larger, bounded copy).

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

// One thread: the worker's tasks run where the thread-local subscriber below is installed.
#[tokio::test(flavor = "current_thread")]
async fn a_huge_handler_error_is_shortened_in_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("protoqueue=debug")
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let huge = "e".repeat(2 * 1024 * 1024);
    let error = huge.clone();
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
    lifecycle::enqueue(&connection, task(b"{}".to_vec()))
        .await
        .expect("enqueue");
    settled_with_dead_letters(&connection, 1).await;
    worker.stop().await;

    let log = String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8");
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
