//! Events heard anywhere (`options.events: 'queue'`): a process listening to a queue hears what
//! every worker of the queue decided — `completed`, `failed`, `deadLettered`, `progress`,
//! `cancelled` — carried by the server, not only its own worker's.
//!
//! Nobody listening costs the workers nothing: a listener says hello on
//! `protoqueue.listeners.<stream>` every [`HELLO_EVERY`] (and at once to a worker that asks as it
//! starts), and a worker records events for other processes only while it heard a hello within
//! [`LISTENING_FOR`] ([`Broadcast`]). It then sends what its queue object recorded, as rows
//! ([`super::Event::write_row`]), one message per [`super::events::WAKE_DELAY`] on
//! `protoqueue.events.<stream>`, which every [`Listener`] subscribes to and hands to its object's
//! listeners like its own events. Core NATS carries them: a listener away (or slow) misses what
//! was sent meanwhile, as with any event.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use futures::StreamExt;
use tokio::task::JoinHandle;

use super::{
    events::{Events, QUEUE_KINDS},
    Observer,
};
use crate::nats::connection::Connection;

/// How often a listener says hello.
pub const HELLO_EVERY: Duration = Duration::from_secs(5);
/// How long after the last hello a worker keeps sending events: three hellos, so one lost or
/// late hello loses no event.
pub const LISTENING_FOR: Duration = Duration::from_secs(15);
/// How long a starting worker waits for listeners to answer its question.
const ASK_TIMEOUT: Duration = Duration::from_millis(250);
/// The largest message of rows sent (the server takes 1 MiB by default).
const MAX_ROWS_MESSAGE: usize = 256 * 1024;

/// The subject a starting worker asks on whether anyone listens.
fn ask_subject(connection: &Connection) -> String {
    format!("{}.ask", connection.config().listeners_subject())
}

/// A worker's side: sends its queue object's events while any process listens. Stops with the
/// worker (dropped) or the connection.
pub struct Broadcast {
    task: JoinHandle<()>,
}

impl Drop for Broadcast {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Broadcast {
    /// Starts following the listeners' hellos, having asked whether anyone listens now.
    pub async fn start(connection: Connection) -> Self {
        let observer = connection.observer_arc();
        set_sink(&connection, &observer.remote);
        let hellos = connection
            .client
            .subscribe(connection.config().listeners_subject())
            .await;
        let asked = tokio::time::timeout(
            ASK_TIMEOUT,
            connection
                .client
                .request(ask_subject(&connection), Default::default()),
        )
        .await;
        if matches!(asked, Ok(Ok(_))) {
            observer.remote.set_mask(QUEUE_KINDS);
        }
        let task = match hellos {
            Ok(hellos) => tokio::spawn(follow(Arc::downgrade(&observer), hellos, connection)),
            Err(err) => {
                tracing::debug!("not following event listeners: {err}");
                tokio::spawn(async {})
            }
        };
        Broadcast { task }
    }
}

/// Sends what `remote` records, in messages of bounded size, on the queue's events subject. The
/// sink may be called on the JavaScript thread (a handler's progress): it sends from the
/// runtime the worker started on.
fn set_sink(connection: &Connection, remote: &Events) {
    let client = connection.client.clone();
    let subject = connection.config().events_subject();
    let observer = Arc::downgrade(&connection.observer_arc());
    let runtime = tokio::runtime::Handle::current();
    remote.set_sink(move || {
        let (client, subject, observer) = (client.clone(), subject.clone(), observer.clone());
        runtime.spawn(async move {
            let Some(observer) = observer.upgrade() else {
                return;
            };
            // Taken here, not when woken: what was recorded meanwhile goes along.
            let chunks = observer.remote.take_row_chunks(MAX_ROWS_MESSAGE);
            for chunk in chunks {
                if let Err(err) = client.publish(subject.clone(), chunk.into()).await {
                    tracing::debug!("events not sent to their listeners: {err}");
                }
            }
        });
    });
}

/// Keeps the remote mask on while hellos come, off once none came for [`LISTENING_FOR`].
async fn follow(
    observer: Weak<Observer>,
    mut hellos: async_nats::Subscriber,
    connection: Connection,
) {
    let mut last_hello = tokio::time::Instant::now();
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            hello = hellos.next() => match hello {
                Some(_) => {
                    last_hello = tokio::time::Instant::now();
                    let Some(observer) = observer.upgrade() else { return };
                    observer.remote.set_mask(QUEUE_KINDS);
                }
                None => return,
            },
            _ = check.tick() => {
                let Some(observer) = observer.upgrade() else { return };
                if last_hello.elapsed() > LISTENING_FOR {
                    observer.remote.set_mask(0);
                }
            }
            () = connection.closed() => return,
        }
    }
}

/// A listening object's side: hears the events every worker of the queue sends, and says hello
/// so they send them. Stops when dropped or the connection closes.
pub struct Listener {
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Subscribes to the queue's events and says hello (the workers send from then on).
    pub async fn start(connection: Connection) -> crate::error::Result<Self> {
        const LISTENING: &str = "listening to the queue's events";
        let client = &connection.client;
        let config = connection.config();
        let rows = client
            .subscribe(config.events_subject())
            .await
            .map_err(|err| crate::error::Error::nats(LISTENING, err))?;
        let asks = client
            .subscribe(ask_subject(&connection))
            .await
            .map_err(|err| crate::error::Error::nats(LISTENING, err))?;
        // Subscribed before the hello: no worker sends before this object hears.
        client
            .flush()
            .await
            .map_err(|err| crate::error::Error::nats(LISTENING, err))?;
        let task = tokio::spawn(hear(connection.clone(), rows, asks));
        Ok(Listener { task })
    }
}

async fn hear(
    connection: Connection,
    mut rows: async_nats::Subscriber,
    mut asks: async_nats::Subscriber,
) {
    let hello_subject = connection.config().listeners_subject();
    let observer = Arc::downgrade(&connection.observer_arc());
    let mut hello = tokio::time::interval(HELLO_EVERY);
    loop {
        tokio::select! {
            message = rows.next() => match message {
                Some(message) => {
                    let Some(observer) = observer.upgrade() else { return };
                    observer.events.push_rows(&message.payload);
                }
                None => return,
            },
            ask = asks.next() => match ask {
                Some(ask) => {
                    if let Some(reply) = ask.reply {
                        let _ = connection.client.publish(reply, Default::default()).await;
                    }
                }
                None => return,
            },
            _ = hello.tick() => {
                if let Err(err) = connection.client.publish(hello_subject.clone(), Default::default()).await {
                    tracing::debug!("hello to the queue's workers not sent: {err}");
                }
            }
            () = connection.closed() => return,
        }
    }
}
