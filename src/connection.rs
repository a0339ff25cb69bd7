//! One connection to NATS and its JetStream context, with the queue's streams in place.
//!
//! The first connect is bounded (`connectTimeout`); once connected, a lost connection is retried
//! without end and everything built on it (producers, workers) resumes by itself.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::{jetstream, ConnectOptions, Event, ServerAddr};

use crate::{
    config::Config,
    error::{Error, Result},
    topology,
};

/// How long one JetStream API request (stream info, consumer create...) may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
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
}

impl Connection {
    /// Connects to `urls` (comma-separated servers of one cluster) and makes sure the queue's
    /// streams exist.
    pub async fn open(config: Arc<Config>, urls: &str) -> Result<Self> {
        let addrs = parse_urls(urls)?;
        let connect_error = |reason: String| Error::Connect {
            url: urls.to_owned(),
            reason,
        };
        let closed = Arc::new(AtomicBool::new(false));
        let parked = closed.clone();
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
            .event_callback(|event| async move { log_event(event) });
        let client = tokio::time::timeout(config.connect_timeout, options.connect(addrs))
            .await
            .map_err(|_| {
                connect_error(format!(
                    "no answer within {}ms",
                    config.connect_timeout.as_millis()
                ))
            })?
            .map_err(|err| connect_error(err.to_string()))?;
        tracing::debug!(url = %redact(urls), "connected to NATS");

        let jetstream = jetstream::ContextBuilder::new()
            .timeout(API_TIMEOUT)
            .build(client.clone());
        let connection = Connection {
            client,
            jetstream,
            config,
            closed,
        };
        if let Err(err) = topology::ensure_streams(&connection.jetstream, &connection.config).await
        {
            connection.close().await;
            return Err(err);
        }
        Ok(connection)
    }

    /// The validated configuration of this queue.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The largest message the connected server accepts.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
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

fn parse_urls(urls: &str) -> Result<Vec<ServerAddr>> {
    crate::config::validate_urls(urls)?;
    urls.split(',')
        .map(|url| {
            url.trim()
                .parse::<ServerAddr>()
                .map_err(|e| Error::InvalidConfig(format!("{url:?} is not a NATS URL: {e}")))
        })
        .collect()
}

/// A URL list without user info, for logs.
pub(crate) fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn log_event(event: Event) {
    match event {
        Event::Connected => tracing::info!("NATS connection (re)established"),
        Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
        Event::ServerError(err) => tracing::warn!("NATS server error: {err}"),
        Event::ClientError(err) => tracing::debug!("NATS client error: {err}"),
        Event::SlowConsumer(sid) => tracing::warn!("slow consumer on subscription {sid}"),
        other => tracing::debug!("NATS connection event: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_redacted_from_urls() {
        assert_eq!(
            redact("nats://user:secret@host:4222,nats://h2:4222"),
            "nats://***@host:4222,nats://h2:4222"
        );
        assert_eq!(redact("nats://token@host"), "nats://***@host");
    }
}
