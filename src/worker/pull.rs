//! Pull requests for the queue's durable consumer, all answered on one inbox subscription, with
//! every requested message backed by a worker slot reserved for it.
//!
//! A subscription per pull request would cost the server a SUB and an UNSUB each time; one inbox
//! for the worker's lifetime costs nothing per request. Several requests may be open at once. The
//! slots they were sent for are kept together: each message delivered takes one, and when a
//! request ends early (it expired, or the server ended it) the server says how many of its
//! messages will not come, and those slots are freed. If the server goes silent past the longest
//! a request can stay open, or the client reconnects (a restart, a lost connection), every
//! reserved slot is freed; a message that still arrives for a forgotten request finds no slot and
//! is handed back.

use std::time::Duration;

use async_nats::{jetstream, StatusCode, Subscriber};
use futures::StreamExt;
use tokio::{
    sync::{watch, OwnedSemaphorePermit},
    time::Instant,
};

use crate::nats::{connection::Connection, topology::Lane};

/// How long one pull request waits at the server for messages.
pub const PULL_EXPIRY: Duration = Duration::from_secs(1);
/// How long after the last word from the server (or the last request) open requests are
/// presumed lost: their expiry plus room for a slow answer.
const PRESUMED_LOST_AFTER: Duration = Duration::from_millis(2_500);

/// What came in on the inbox.
pub enum Pulled {
    /// A message, with the slot it runs in.
    Message(jetstream::Message, OwnedSemaphorePermit),
    /// A message nobody reserved a slot for (its request was presumed lost): hand it back.
    Unrequested(jetstream::Message),
    /// A status that needs no action (a request ended, a heartbeat).
    Status,
    /// The consumer cannot be reached (no responders, deleted) or the subscription ended.
    Failed(String),
}

/// The pull side of one worker.
pub struct Puller {
    connection: Connection,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    request_subject: String,
    inbox: String,
    subscription: Subscriber,
    /// Slots reserved for messages requested and not delivered yet.
    reserved: Option<OwnedSemaphorePermit>,
    /// The last time the server sent anything, or a request went out.
    last_heard: Instant,
    /// The subscription ended (the client closed): open a new puller.
    closed: bool,
    /// Changes when the client reconnects: requests sent before may be gone with the old
    /// connection.
    reconnections: watch::Receiver<u64>,
}

impl Puller {
    /// Subscribes the worker's inbox, for pulls from `lane`'s consumer.
    pub async fn open(connection: Connection, lane: &Lane) -> Result<Self, async_nats::Error> {
        let inbox = connection.client.new_inbox();
        let mut reconnections = connection.reconnections();
        reconnections.mark_unchanged();
        let subscription = connection.client.subscribe(inbox.clone()).await?;
        let request_subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            lane.stream, lane.consumer
        );
        Ok(Puller {
            connection,
            request_subject,
            inbox,
            subscription,
            reserved: None,
            last_heard: Instant::now(),
            closed: false,
            reconnections,
        })
    }

    /// Whether the inbox subscription ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// How many requested messages have not arrived yet.
    pub fn outstanding(&self) -> usize {
        self.reserved
            .as_ref()
            .map_or(0, |slots| slots.num_permits())
    }

    /// Requests as many messages as `slots` holds; the slots stay reserved for them.
    pub async fn request(&mut self, slots: OwnedSemaphorePermit) -> Result<(), async_nats::Error> {
        let body = serde_json::json!({
            "batch": slots.num_permits(),
            "expires": PULL_EXPIRY.as_nanos() as u64,
        });
        self.connection
            .client
            .publish_with_reply(
                self.request_subject.clone(),
                self.inbox.clone(),
                body.to_string().into(),
            )
            .await?;
        match self.reserved.as_mut() {
            Some(reserved) => reserved.merge(slots),
            None => self.reserved = Some(slots),
        }
        self.last_heard = Instant::now();
        self.reconnections.mark_unchanged();
        Ok(())
    }

    /// Waits for the next message or status on the inbox.
    pub async fn next(&mut self) -> Pulled {
        loop {
            let presumed_lost = self.last_heard + PRESUMED_LOST_AFTER;
            let message = tokio::select! {
                message = self.subscription.next() => message,
                _ = tokio::time::sleep_until(presumed_lost), if self.outstanding() > 0 => {
                    tracing::debug!(
                        outstanding = self.outstanding(),
                        "no answer to open pull requests; presuming them lost"
                    );
                    self.reserved = None;
                    continue;
                }
                Ok(()) = self.reconnections.changed(), if self.outstanding() > 0 => {
                    tracing::debug!(
                        outstanding = self.outstanding(),
                        "reconnected; presuming the open pull requests lost"
                    );
                    self.reserved = None;
                    continue;
                }
            };
            let Some(message) = message else {
                self.reserved = None;
                self.closed = true;
                return Pulled::Failed("the inbox subscription ended".into());
            };
            self.last_heard = Instant::now();
            return self.classify(message);
        }
    }

    /// Unsubscribes the inbox, which ends every open request: the server does not deliver to a
    /// request nobody listens to. [`Puller::next`] still returns what had arrived, then ends.
    pub async fn unsubscribe(&mut self) {
        if let Err(err) = self.subscription.unsubscribe().await {
            tracing::debug!("inbox not unsubscribed: {err}");
        }
    }

    /// Unsubscribes and returns the messages that had arrived but were not taken yet.
    pub async fn close(&mut self) -> Vec<jetstream::Message> {
        self.unsubscribe().await;
        let mut arrived = Vec::new();
        loop {
            match self.next().await {
                Pulled::Message(message, _) | Pulled::Unrequested(message) => arrived.push(message),
                Pulled::Status => {}
                Pulled::Failed(_) => return arrived,
            }
        }
    }

    fn classify(&mut self, message: async_nats::Message) -> Pulled {
        match message.status {
            None | Some(StatusCode::OK) => {
                let message = jetstream::Message {
                    message,
                    context: self.connection.jetstream.clone(),
                };
                match self.reserved.as_mut().and_then(|slots| slots.split(1)) {
                    Some(slot) => Pulled::Message(message, slot),
                    None => Pulled::Unrequested(message),
                }
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Pulled::Status,
            Some(StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED) => {
                let description = message.description.clone().unwrap_or_default();
                if description.contains("Consumer Deleted") {
                    self.reserved = None;
                    return Pulled::Failed(format!("the consumer was deleted ({description})"));
                }
                match pending_messages(&message) {
                    Some(undelivered) => self.release(undelivered),
                    // An ended request that does not say how much it left: start afresh.
                    None => self.reserved = None,
                }
                Pulled::Status
            }
            Some(StatusCode::NO_RESPONDERS) => {
                self.reserved = None;
                Pulled::Failed("no responders: the stream or its consumer is not available".into())
            }
            Some(status) => {
                tracing::debug!(%status, description = ?message.description, "pull status");
                Pulled::Status
            }
        }
    }

    /// Frees the slots of `count` requested messages that will not come.
    fn release(&mut self, count: usize) {
        if let Some(reserved) = self.reserved.as_mut() {
            let count = count.min(reserved.num_permits());
            drop(reserved.split(count));
        }
    }
}

/// The number of messages an ended pull request did not deliver (`Nats-Pending-Messages`).
fn pending_messages(message: &async_nats::Message) -> Option<usize> {
    message
        .headers
        .as_ref()?
        .get("Nats-Pending-Messages")?
        .as_str()
        .parse()
        .ok()
}
