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
    error::{Error, Result, API_TIMEOUT},
    nats::{credentials::Target, files::Deadline, shared, topology},
    observe::Observer,
};

/// The most time closing the connection may add to `disconnect()` after `shutdownTimeout`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// While reconnects keep being refused (credentials, TLS), every this many refusals is a warning;
/// the others are debug lines.
const REFUSALS_PER_WARNING: u32 = 30;
/// The "delay" before a reconnect attempt of a closed connection: it parks the client's
/// reconnect loop (async-nats has no way to end it while the server is unreachable).
const PARKED: Duration = Duration::from_secs(24 * 60 * 60);

/// A connected queue: the client, its JetStream context and the validated configuration.
///
/// The client may be shared with other queues of the process connected with the same settings
/// ([`shared`]); this queue's use of it is its own lease, ended by [`Connection::close`].
#[derive(Clone, Debug)]
pub struct Connection {
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) config: Arc<Config>,
    lease: Arc<shared::Lease>,
    /// The metrics and events of the queue object that opened it.
    observer: Arc<Observer>,
}

impl Connection {
    /// Connects to `urls` (comma-separated servers of one cluster) and makes sure the queue's
    /// streams exist. Credentials and TLS files are read and checked before anything is sent, off
    /// the runtime's threads, and within `connectTimeout` like the connect itself; refused
    /// credentials and failed TLS reject at once, without waiting for `connectTimeout`.
    ///
    /// Queues of the process with the same servers, credentials and TLS settings share one
    /// client ([`shared`]): only the first of them connects.
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
        Self::open_with(config, urls, true, observer).await
    }

    /// Like [`Connection::open`], with a client of its own that no other queue shares, as a
    /// queue in another process would have (tests of several workers use it).
    pub async fn open_unshared(config: Arc<Config>, urls: &str) -> Result<Self> {
        Self::open_with(config, urls, false, Arc::default()).await
    }

    async fn open_with(
        config: Arc<Config>,
        urls: &str,
        share: bool,
        observer: Arc<Observer>,
    ) -> Result<Self> {
        let mut connection = Connection::connect(config, urls, share, observer).await?;
        match topology::ensure_streams(&connection.jetstream, &connection.config).await {
            // From here on the queue acts on its shape as the server has it.
            Ok(shaped) => {
                connection.config = Arc::new(shaped);
                Ok(connection)
            }
            Err(err) => {
                connection.close().await;
                Err(err)
            }
        }
    }

    /// Connects as [`Connection::open`] does, without looking at the queue's streams: for
    /// operations on the server as a whole ([`crate::admin::queues::list`]).
    pub async fn open_bare(config: Arc<Config>, urls: &str) -> Result<Self> {
        Connection::connect(config, urls, true, Arc::default()).await
    }

    async fn connect(
        config: Arc<Config>,
        urls: &str,
        share: bool,
        observer: Arc<Observer>,
    ) -> Result<Self> {
        let deadline = Deadline::after(config.connect_timeout);
        let target = Target::new(urls, &config.auth, config.tls.as_ref())?;
        let key = shared::Key::new(&target.servers, &target.auth, target.tls.as_ref());
        let key = if share { key } else { key.unshared() };
        let timeout = config.connect_timeout;
        let timed_out = || Error::Connect {
            url: target.shown.clone(),
            reason: format!("no answer within {}ms", timeout.as_millis()),
        };
        let lease = shared::acquire(
            key,
            &observer,
            deadline.at,
            || connect_client(&target, timeout, deadline),
            timed_out,
        )
        .await?;
        let client = lease.shared.client.clone();
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(API_TIMEOUT)
            .build(client.clone());
        Ok(Connection {
            client,
            jetstream,
            config,
            lease: Arc::new(lease),
            observer,
        })
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

    /// The observer, shared (for tasks that outlive a call).
    pub fn observer_arc(&self) -> Arc<Observer> {
        self.observer.clone()
    }

    /// Changes whenever the client (re)connects. State the server kept for the old connection,
    /// such as open pull requests, may be gone after a change.
    pub fn reconnections(&self) -> watch::Receiver<u64> {
        self.lease.shared.connections.clone()
    }

    /// Whether [`Connection::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lease.is_released()
    }

    /// Resolves once [`Connection::close`] was called.
    pub async fn closed(&self) {
        self.lease.released().await
    }

    /// `future`'s output, or `None` when [`Connection::close`] is called first (the client may
    /// stay open for other queues, so what this queue waits for is cut short here).
    pub async fn unless_closed<F: std::future::Future>(&self, future: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            output = future => Some(output),
            () = self.closed() => None,
        }
    }

    /// The id the server gave the client, which queues sharing it have in common (it changes
    /// when the client reconnects).
    pub fn client_id(&self) -> u64 {
        self.client.server_info().client_id
    }

    /// The queue's task stream (its cached info as of now).
    pub(crate) async fn task_stream(&self) -> Result<jetstream::stream::Stream> {
        self.jetstream
            .get_stream(&self.config.stream_name)
            .await
            .map_err(|err| Error::request("opening the task stream", err))
    }

    /// The largest message the connected server accepts.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Ends this queue's use of the connection, giving up after `limit` (the server may be
    /// unreachable): see [`Connection::close`].
    pub async fn close_within(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.close()).await.is_err() {
            tracing::warn!("closing the connection did not finish in time; dropping it");
        }
    }

    /// Ends this queue's use of the connection. The last queue using the client flushes what is
    /// buffered and closes it; the client then stops reconnecting.
    pub async fn close(&self) {
        self.lease.release().await;
    }
}

/// Connects a new client to `target`, by `deadline`.
async fn connect_client(
    target: &Target,
    timeout: Duration,
    deadline: Deadline,
) -> Result<shared::SharedClient> {
    let parked = Arc::new(AtomicBool::new(false));
    let parked_reconnects = parked.clone();
    let (connected, connections) = watch::channel(0);
    let observers = shared::Observers::default();
    let events = Arc::new(EventLog {
        url: target.shown.clone(),
        refusals: AtomicU32::new(0),
        connected,
        observers: observers.clone(),
    });
    let options = ConnectOptions::new()
        .name("protoqueue")
        .connection_timeout(timeout)
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempt| {
            if parked_reconnects.load(Ordering::Relaxed) {
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
            reason: format!("no answer within {}ms", timeout.as_millis()),
        })?
        .map_err(|err| {
            let err = target.connect_error(&err);
            tracing::debug!(code = err.code(), "connect failed: {err}");
            err
        })?;
    tracing::debug!(url = %target.shown, "connected to NATS");
    Ok(shared::SharedClient {
        client,
        parked,
        connections,
        observers,
    })
}

/// Logs the client's connection events for one connection.
struct EventLog {
    /// The servers, credentials masked.
    url: String,
    /// Reconnect attempts refused in a row (credentials, TLS set-up).
    refusals: AtomicU32,
    /// Counts (re)connections.
    connected: watch::Sender<u64>,
    /// Where connection trouble goes as `error` events: every queue using the client.
    observers: shared::Observers,
}

impl EventLog {
    /// Tells every queue using the client about connection trouble.
    fn trouble(&self, code: &'static str, message: impl Fn() -> String) {
        let mut text: Option<String> = None;
        for observer in self.observers.live() {
            observer.connection_trouble(code, || text.get_or_insert_with(&message).clone());
        }
    }

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
                self.trouble("ERR_PQ_DISCONNECTED", || {
                    format!("NATS connection to {url} lost; reconnecting")
                });
            }
            Event::ServerError(err) => {
                tracing::warn!(%url, "NATS server error: {err}");
                self.trouble("ERR_PQ_SERVER", || format!("NATS server error: {err}"));
            }
            Event::ClientError(ClientError::Other(reason)) if is_refusal(&reason) => {
                let refusals = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
                self.trouble("ERR_PQ_RECONNECT_REFUSED", || {
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
                self.trouble("ERR_PQ_NATS", || format!("NATS client error: {err}"));
            }
            Event::SlowConsumer(sid) => {
                tracing::warn!(%url, "slow consumer on subscription {sid}");
                self.trouble("ERR_PQ_SLOW_CONSUMER", || {
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
