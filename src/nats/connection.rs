//! One connection to NATS and its JetStream context, with the queue's streams in place.
//!
//! The first connect is bounded (`connectTimeout`); once connected, a lost connection is retried
//! without end and everything built on it (producers, workers) resumes by itself.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::{jetstream, ClientError, ConnectErrorKind, ConnectOptions, Event};
use tokio::sync::watch;

use crate::{
    config::Config,
    error::{Error, Result},
    nats::{credentials::Target, files::Deadline, topology},
    observe::Observer,
};

/// How long one JetStream API request (stream info, consumer create...) may take.
pub(crate) const API_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// While reconnects keep being refused (credentials, TLS), every this many refusals is a warning;
/// the others are debug lines.
const REFUSALS_PER_WARNING: u32 = 30;
/// The "delay" before a reconnect attempt of a closed connection: it parks the client's
/// reconnect loop (async-nats has no way to end it while the server is unreachable).
const PARKED: Duration = Duration::from_secs(24 * 60 * 60);

/// A connected queue: the client, its JetStream context and the validated configuration.
#[derive(Clone, Debug)]
pub struct Connection {
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) config: Arc<Config>,
    /// Set by [`Connection::close`]: the client stops trying to reconnect.
    closed: Arc<AtomicBool>,
    /// Counts the client's (re)connections; see [`Connection::reconnections`].
    connections: watch::Receiver<u64>,
    /// The metrics and events of the queue object that opened it.
    observer: Arc<Observer>,
}

impl Connection {
    /// Connects to `urls` (comma-separated servers of one cluster) and makes sure the queue's
    /// streams exist. Credentials and TLS files are read and checked before anything is sent, off
    /// the runtime's threads, and within `connectTimeout` like the connect itself; refused
    /// credentials and failed TLS reject at once, without waiting for `connectTimeout`.
    pub async fn open(config: Arc<Config>, urls: &str) -> Result<Self> {
        Self::open_observed(config, urls, Arc::default()).await
    }

    /// [`Connection::open`], reporting to `observer` (the queue object's, kept across
    /// reconnects): what the producer and the worker count, and connection trouble.
    pub async fn open_observed(
        config: Arc<Config>,
        urls: &str,
        observer: Arc<Observer>,
    ) -> Result<Self> {
        let deadline = Deadline::after(config.connect_timeout);
        let target = Target::new(urls, &config.auth, config.tls.as_ref())?;
        let closed = Arc::new(AtomicBool::new(false));
        let parked = closed.clone();
        let (connected, connections) = watch::channel(0);
        let events = Arc::new(EventLog {
            url: target.shown.clone(),
            refusals: AtomicU32::new(0),
            connected,
            observer: observer.clone(),
        });
        let options = ConnectOptions::new()
            .name("protoqueue")
            .connection_timeout(config.connect_timeout)
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempt| {
                if parked.load(Ordering::Relaxed) {
                    return PARKED;
                }
                (Duration::from_millis(50) * attempt.min(40) as u32).min(MAX_RECONNECT_DELAY)
            })
            .event_callback(move |event| {
                let events = events.clone();
                async move { events.log(event) }
            });
        let options = target.apply(options, deadline).await?;
        let client = tokio::time::timeout_at(deadline.at, options.connect(target.servers.clone()))
            .await
            .map_err(|_| Error::Connect {
                url: target.shown.clone(),
                reason: format!("no answer within {}ms", config.connect_timeout.as_millis()),
            })?
            .map_err(|err| {
                let err = target.connect_error(&err);
                tracing::debug!(code = err.code(), "connect failed: {err}");
                err
            })?;
        tracing::debug!(url = %target.shown, "connected to NATS");

        let jetstream = jetstream::ContextBuilder::new()
            .timeout(API_TIMEOUT)
            .build(client.clone());
        let connection = Connection {
            client,
            jetstream,
            config,
            closed,
            connections,
            observer,
        };
        if let Err(err) = topology::ensure_streams(&connection.jetstream, &connection.config).await
        {
            connection.close().await;
            return Err(err);
        }
        Ok(connection)
    }

    /// The same connection, used with other settings (a dead-letter worker's own options).
    pub fn with_config(&self, config: Config) -> Self {
        Connection {
            config: Arc::new(config),
            ..self.clone()
        }
    }

    /// The validated configuration of this queue.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics and events of the queue object that opened it.
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Changes whenever the client (re)connects. State the server kept for the old connection,
    /// such as open pull requests, may be gone after a change.
    pub fn reconnections(&self) -> watch::Receiver<u64> {
        self.connections.clone()
    }

    /// Whether [`Connection::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// The largest message the connected server accepts.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Flushes what is buffered and closes the connection, giving up after `limit` (the server
    /// may be unreachable): the client then stops reconnecting and its buffer is dropped.
    pub async fn close_within(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.close()).await.is_err() {
            tracing::warn!("closing the connection did not finish in time; dropping it");
        }
    }

    /// Flushes what is buffered and closes the connection.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        if let Err(err) = tokio::time::timeout(API_TIMEOUT, self.client.flush()).await {
            tracing::warn!("flush before close did not finish: {err}");
        }
        if let Err(err) = self.client.drain().await {
            tracing::debug!("drain on close: {err}");
        }
    }
}

/// Logs the client's connection events for one connection.
struct EventLog {
    /// The servers, credentials masked.
    url: String,
    /// Reconnect attempts refused in a row (credentials, TLS set-up).
    refusals: AtomicU32,
    /// Counts (re)connections.
    connected: watch::Sender<u64>,
    /// Where connection trouble goes as `error` events.
    observer: Arc<Observer>,
}

impl EventLog {
    fn log(&self, event: Event) {
        let url = &self.url;
        match event {
            Event::Connected => {
                self.refusals.store(0, Ordering::Relaxed);
                self.connected.send_modify(|count| *count += 1);
                tracing::info!(%url, "NATS connection (re)established");
            }
            Event::Disconnected => {
                tracing::warn!(%url, "NATS connection lost; reconnecting");
                self.observer.connection_trouble("ERR_PQ_DISCONNECTED", || {
                    format!("NATS connection to {url} lost; reconnecting")
                });
            }
            Event::ServerError(err) => {
                tracing::warn!(%url, "NATS server error: {err}");
                self.observer
                    .connection_trouble("ERR_PQ_SERVER", || format!("NATS server error: {err}"));
            }
            Event::ClientError(ClientError::Other(reason)) if is_refusal(&reason) => {
                let refusals = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
                self.observer
                    .connection_trouble("ERR_PQ_RECONNECT_REFUSED", || {
                        format!(
                            "NATS at {url} refused to reconnect ({reason}), {refusals} times in a \
                         row; retrying until it accepts"
                        )
                    });
                if refusals % REFUSALS_PER_WARNING == 1 {
                    tracing::warn!(
                        %url,
                        refusals,
                        "NATS refused to reconnect ({reason}); retrying until it accepts: check \
                         the credentials (config.auth) and TLS settings (config.tls)"
                    );
                } else {
                    tracing::debug!(%url, refusals, "NATS refused to reconnect ({reason})");
                }
            }
            Event::ClientError(err) => {
                tracing::debug!(%url, "NATS client error: {err}");
                self.observer
                    .connection_trouble("ERR_PQ_NATS", || format!("NATS client error: {err}"));
            }
            Event::SlowConsumer(sid) => {
                tracing::warn!(%url, "slow consumer on subscription {sid}");
                self.observer
                    .connection_trouble("ERR_PQ_SLOW_CONSUMER", || {
                        format!("slow consumer on subscription {sid}: messages were dropped")
                    });
            }
            other => tracing::debug!(%url, "NATS connection event: {other}"),
        }
    }
}

/// Whether a failed reconnect attempt was refused (credentials, TLS set-up) rather than cut off:
/// the client reports only the kind's text.
fn is_refusal(reason: &str) -> bool {
    [
        ConnectErrorKind::AuthorizationViolation,
        ConnectErrorKind::Authentication,
        ConnectErrorKind::Tls,
    ]
    .iter()
    .any(|kind| reason == kind.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_other_failures() {
        assert!(is_refusal(
            &ConnectErrorKind::AuthorizationViolation.to_string()
        ));
        assert!(is_refusal(&ConnectErrorKind::Tls.to_string()));
        assert!(!is_refusal(&ConnectErrorKind::Io.to_string()));
        assert!(!is_refusal(&ConnectErrorKind::TimedOut.to_string()));
    }
}
