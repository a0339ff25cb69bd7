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
//!
//! A worker of a queue with priorities pulls from one consumer per level ([`crate::layout`]), on
//! the same inbox (`<inbox>.<level index>` as reply subjects, so an ended request names its
//! level), one request per level at a time, and in priority order ([`Levels`]): a *sweep* asks the
//! most urgent level for all the room the worker has, with `no_wait` (the server delivers what it
//! has and ends the request at once), and each next level only for what the level before left.
//! A level a sweep finds empty keeps a *waiting* request (one message, `no_wait` with expiry)
//! while the sweep goes on below it with the rest of its room (when that is more than
//! `batchSize`: waiting requests hold prefetch room, never a running slot), and later sweeps pass
//! over a level whose request is open: a backlog at a less urgent level costs one request per
//! sweep, not one per empty level above it. A sweep that finds nothing leaves a waiting request
//! on every level; when one is answered (a task came to that level) or expires, or new room
//! comes, a sweep starts again from the top. A sweep under way carries only the room it started
//! with down the levels; room freed meanwhile waits for the next sweep from the top. So once a
//! task is stored, a less urgent one is fetched before it only with room the worker had reserved
//! already: at most its room (`batchSize` + prefetch) of less urgent tasks starts before it.

use std::time::Duration;

use async_nats::{jetstream, StatusCode, Subscriber};
use futures::StreamExt;
use tokio::{
    sync::{watch, OwnedSemaphorePermit},
    time::Instant,
};

use crate::{layout::Lane, nats::connection::Connection};

/// How long one pull request waits at the server for messages.
pub const PULL_EXPIRY: Duration = Duration::from_secs(1);
/// How long after the last word from the server (or the last request) open requests are
/// presumed lost: their expiry plus room for a slow answer.
const PRESUMED_LOST_AFTER: Duration = Duration::from_millis(2_500);

/// What came in on the inbox.
pub enum Pulled {
    /// A message, with the slot it runs in and its rank (the index of its consumer among the
    /// worker's, most urgent first; 0 with one consumer).
    Message(jetstream::Message, OwnedSemaphorePermit, u8),
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
    /// With several consumers (priority levels): their requests. `None`: one consumer, whose
    /// requests are `request_subject` and `reserved`.
    levels: Option<Levels>,
}

/// The requests of a worker that pulls from several consumers, most urgent first.
struct Levels {
    lanes: Vec<LevelLane>,
    /// Room given to the puller and not requested yet.
    spare: Option<OwnedSemaphorePermit>,
    /// The room of the sweep under way, between two of its requests.
    carried: Option<OwnedSemaphorePermit>,
    /// The lane whose sweep request is open.
    sweeping: Option<usize>,
    /// The sweep's request on this lane's level ended: it goes on from the next level.
    continue_from: Option<usize>,
    /// Requests to send: (subject, reply subject, body).
    outbox: Vec<(String, String, serde_json::Value)>,
    /// New room came, or a waiting request was answered, since the current sweep began: sweep
    /// again from the top when it ends.
    again: bool,
}

/// One consumer of a worker with several.
struct LevelLane {
    request_subject: String,
    /// `<inbox>.<index>`.
    reply: String,
    /// `$JS.ACK.<stream>.<consumer>.`: how its deliveries' reply subjects start.
    ack_prefix: String,
    /// Room of its open request not delivered yet.
    reserved: Option<OwnedSemaphorePermit>,
    open: Open,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Sweep,
    Wait,
}

impl Puller {
    /// Subscribes the worker's inbox, for pulls from the consumers of `lanes`, most urgent first.
    pub async fn open(connection: Connection, lanes: &[Lane]) -> Result<Self, async_nats::Error> {
        let inbox = connection.client.new_inbox();
        let mut reconnections = connection.reconnections();
        reconnections.mark_unchanged();
        let next = |lane: &Lane| {
            format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                lane.stream, lane.consumer
            )
        };
        let (subscription, request_subject, levels) = match lanes {
            [lane] => (
                connection.client.subscribe(inbox.clone()).await?,
                next(lane),
                None,
            ),
            _ => {
                let lanes = lanes
                    .iter()
                    .enumerate()
                    .map(|(index, lane)| LevelLane {
                        request_subject: next(lane),
                        reply: format!("{inbox}.{index}"),
                        ack_prefix: format!("$JS.ACK.{}.{}.", lane.stream, lane.consumer),
                        reserved: None,
                        open: Open::None,
                    })
                    .collect();
                let levels = Levels {
                    lanes,
                    spare: None,
                    carried: None,
                    sweeping: None,
                    continue_from: None,
                    outbox: Vec::new(),
                    again: false,
                };
                let subscription = connection.client.subscribe(format!("{inbox}.*")).await?;
                (subscription, String::new(), Some(levels))
            }
        };
        Ok(Puller {
            levels,
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

    /// How many requested messages have not arrived yet (with several consumers, room given
    /// and not requested yet too).
    pub fn outstanding(&self) -> usize {
        let permits = |slots: &Option<OwnedSemaphorePermit>| {
            slots.as_ref().map_or(0, |slots| slots.num_permits())
        };
        match &self.levels {
            None => permits(&self.reserved),
            Some(levels) => {
                permits(&levels.spare)
                    + permits(&levels.carried)
                    + levels
                        .lanes
                        .iter()
                        .map(|lane| permits(&lane.reserved))
                        .sum::<usize>()
            }
        }
    }

    /// Requests as many messages as `slots` holds; the slots stay reserved for them.
    pub async fn request(&mut self, slots: OwnedSemaphorePermit) -> Result<(), async_nats::Error> {
        if let Some(levels) = self.levels.as_mut() {
            merge(&mut levels.spare, slots);
            levels.again = true;
            self.sweep();
            return self.flush().await;
        }
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
                    self.forget_requests();
                    continue;
                }
                Ok(()) = self.reconnections.changed(), if self.outstanding() > 0 => {
                    tracing::debug!(
                        outstanding = self.outstanding(),
                        "reconnected; presuming the open pull requests lost"
                    );
                    self.forget_requests();
                    continue;
                }
            };
            let Some(message) = message else {
                self.forget_requests();
                self.closed = true;
                return Pulled::Failed("the inbox subscription ended".into());
            };
            self.last_heard = Instant::now();
            if self.levels.is_some() {
                return self.classify_level(message);
            }
            return self.classify(message);
        }
    }

    /// Frees every reserved slot: the open requests are presumed gone.
    fn forget_requests(&mut self) {
        self.reserved = None;
        if let Some(levels) = self.levels.as_mut() {
            levels.spare = None;
            levels.carried = None;
            levels.sweeping = None;
            levels.continue_from = None;
            levels.outbox.clear();
            for lane in &mut levels.lanes {
                lane.reserved = None;
                lane.open = Open::None;
            }
        }
    }

    /// Sends the next request of a sweep: all the spare room, to the most urgent level without
    /// an open request (below the level just swept, when a sweep is under way). When no level is
    /// left, a sweep begins again from the top if room came meanwhile, or else every level
    /// without a request gets a waiting one.
    ///
    /// Requests are queued in the outbox ([`Puller::flush`] sends them): this runs inside
    /// [`Puller::next`], which must stay cancel-safe.
    fn sweep(&mut self) {
        let Some(levels) = self.levels.as_mut() else {
            return;
        };
        if levels.sweeping.is_some() {
            return;
        }
        let free = |levels: &Levels, from: usize| {
            (from..levels.lanes.len()).find(|&i| levels.lanes[i].open == Open::None)
        };
        // A sweep under way goes on below the level it just swept with the room it carries
        // (reserved before anything more urgent could have come). Room that came meanwhile
        // waits for the next sweep, which starts from the top: so no task is fetched with room
        // freed after a more urgent task was stored, before that task.
        if let Some(from) = levels.continue_from.take() {
            match (free(levels, from), levels.carried.take()) {
                (Some(index), Some(room)) => {
                    Self::sweep_request(levels, index, room);
                    return;
                }
                (_, carried) => {
                    if let Some(room) = carried {
                        merge(&mut levels.spare, room);
                    }
                    if !levels.again {
                        self.wait_on_every_level();
                        return;
                    }
                }
            }
        }
        // A new sweep from the top, with all the spare room.
        levels.again = false;
        let Some(index) = free(levels, 0) else {
            self.wait_on_every_level();
            return;
        };
        let Some(room) = levels.spare.take() else {
            return;
        };
        Self::sweep_request(levels, index, room);
    }

    /// Queues a sweep request for `room` on level `index`.
    fn sweep_request(levels: &mut Levels, index: usize, room: OwnedSemaphorePermit) {
        let body = serde_json::json!({ "batch": room.num_permits(), "no_wait": true });
        tracing::trace!(level = index, batch = room.num_permits(), "sweep request");
        let lane = &mut levels.lanes[index];
        lane.open = Open::Sweep;
        lane.reserved = Some(room);
        levels.sweeping = Some(index);
        let request = (lane.request_subject.clone(), lane.reply.clone(), body);
        levels.outbox.push(request);
    }

    /// Leaves a request for one message, waiting up to [`PULL_EXPIRY`], on every level without
    /// a request, most urgent first, as far as the spare room goes.
    fn wait_on_every_level(&mut self) {
        if let Some(levels) = self.levels.as_mut() {
            for index in 0..levels.lanes.len() {
                if levels.lanes[index].open != Open::None {
                    continue;
                }
                let Some(spare) = levels.spare.as_mut() else {
                    break;
                };
                let Some(one) = spare.split(1) else { break };
                if spare.num_permits() == 0 {
                    levels.spare = None;
                }
                Self::wait_request(levels, index, one);
            }
        }
    }

    /// Queues a waiting request on level `index`: one message (the room `one`), `no_wait` with
    /// expiry, so the server answers as soon as a task comes to that level.
    fn wait_request(levels: &mut Levels, index: usize, one: OwnedSemaphorePermit) {
        let body = serde_json::json!({
            "batch": 1,
            "no_wait": true,
            "expires": PULL_EXPIRY.as_nanos() as u64,
        });
        let lane = &mut levels.lanes[index];
        lane.open = Open::Wait;
        lane.reserved = Some(one);
        tracing::trace!(request = %lane.request_subject, "waiting request");
        let request = (lane.request_subject.clone(), lane.reply.clone(), body);
        levels.outbox.push(request);
    }

    /// Sends the requests a worker with several consumers has queued. Should one not go out,
    /// every open request is forgotten (their room freed), so the pull loop starts afresh.
    pub async fn flush(&mut self) -> Result<(), async_nats::Error> {
        let Some(levels) = self.levels.as_mut() else {
            return Ok(());
        };
        if levels.outbox.is_empty() {
            return Ok(());
        }
        let outbox = std::mem::take(&mut levels.outbox);
        tracing::trace!(requests = outbox.len(), "flush");
        for (subject, reply, body) in outbox {
            let sent = self
                .connection
                .client
                .publish_with_reply(subject, reply, body.to_string().into())
                .await;
            if let Err(err) = sent {
                self.forget_requests();
                return Err(err.into());
            }
        }
        self.last_heard = Instant::now();
        self.reconnections.mark_unchanged();
        Ok(())
    }

    /// What came in on the inbox of a worker with several consumers.
    fn classify_level(&mut self, message: async_nats::Message) -> Pulled {
        let Some(levels) = self.levels.as_mut() else {
            return Pulled::Status;
        };
        match message.status {
            None | Some(StatusCode::OK) => {
                let index = message.reply.as_ref().and_then(|reply| {
                    levels
                        .lanes
                        .iter()
                        .position(|lane| reply.as_str().starts_with(lane.ack_prefix.as_str()))
                });
                let message = jetstream::Message {
                    message,
                    context: self.connection.jetstream.clone(),
                };
                let Some(index) = index else {
                    return Pulled::Unrequested(message);
                };
                let lane = &mut levels.lanes[index];
                let Some(slot) = lane.reserved.as_mut().and_then(|slots| slots.split(1)) else {
                    return Pulled::Unrequested(message);
                };
                if lane.reserved.as_ref().is_some_and(|r| r.num_permits() == 0) {
                    // The request got all it asked for: the server ends it without a word.
                    self.ended(index, false);
                }
                Pulled::Message(message, slot, index as u8)
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Pulled::Status,
            Some(status) => {
                let description = message.description.clone().unwrap_or_default();
                if description.contains("Consumer Deleted") {
                    self.forget_requests();
                    return Pulled::Failed(format!("the consumer was deleted ({description})"));
                }
                if status == StatusCode::NO_RESPONDERS {
                    self.forget_requests();
                    return Pulled::Failed(
                        "no responders: the stream or its consumer is not available".into(),
                    );
                }
                let index = message
                    .subject
                    .as_str()
                    .rsplit('.')
                    .next()
                    .and_then(|index| index.parse::<usize>().ok())
                    .filter(|&index| index < levels.lanes.len());
                match index {
                    // 404 (nothing more), 408 (expired), 409 (ended by the server): the
                    // request is over, whatever it did not deliver is free again.
                    Some(index) if levels.lanes[index].open != Open::None => {
                        let dry = status == StatusCode::NOT_FOUND;
                        self.ended(index, dry);
                    }
                    _ => tracing::debug!(%status, %description, "pull status"),
                }
                Pulled::Status
            }
        }
    }

    /// The open request of level `index` is over (`dry`: the server had nothing more on that
    /// level): its undelivered room becomes spare, and the sweep goes on (below it, if it was the
    /// sweep's; from the top, if a waiting request was answered or expired). A level a sweep
    /// found dry keeps a waiting request, when the sweep has room to spare for it.
    fn ended(&mut self, index: usize, dry: bool) {
        // A dry level's waiting request takes room only while the sweep keeps more than
        // `batchSize`: it comes out of the prefetch, never out of the tasks the worker can run.
        let keep = self.connection.config().batch_size as usize;
        let Some(levels) = self.levels.as_mut() else {
            return;
        };
        let lane = &mut levels.lanes[index];
        let was = lane.open;
        tracing::trace!(
            level = index,
            sweep = (was == Open::Sweep),
            dry,
            "request ended"
        );
        lane.open = Open::None;
        let undelivered = lane.reserved.take().filter(|room| room.num_permits() > 0);
        match was {
            Open::Sweep => {
                levels.sweeping = None;
                levels.continue_from = Some(index + 1);
                if let Some(room) = undelivered {
                    merge(&mut levels.carried, room);
                }
                // One of the room watches the dry level; the sweep goes on with the rest.
                if dry {
                    if let Some(one) = levels
                        .carried
                        .as_mut()
                        .filter(|room| room.num_permits() > keep)
                        .and_then(|room| room.split(1))
                    {
                        Self::wait_request(levels, index, one);
                    }
                }
            }
            Open::Wait => {
                levels.again = true;
                if let Some(room) = undelivered {
                    merge(&mut levels.spare, room);
                }
            }
            Open::None => return,
        }
        if levels.sweeping.is_none() {
            self.sweep();
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
                Pulled::Message(message, _, _) | Pulled::Unrequested(message) => {
                    arrived.push(message)
                }
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
                    Some(slot) => Pulled::Message(message, slot, 0),
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

/// Adds `room` to `into`.
fn merge(into: &mut Option<OwnedSemaphorePermit>, room: OwnedSemaphorePermit) {
    match into.as_mut() {
        Some(held) => held.merge(room),
        None => *into = Some(room),
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
