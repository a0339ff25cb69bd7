//! A worker's side of cancelling: it follows the queue's cancel marks (an ordered consumer of
//! the cancels stream, the newest mark of each task first, then each new one) and keeps the
//! tasks its handlers run, so a mark reaches the attempt it names.
//!
//! A task about to run registers itself ([`Cancels::enter`]), unless a mark covers it: then it
//! is refused before its handler starts. A mark arriving for a registered attempt is handed to
//! it, and the attempt decides between its handler's outcome and the cancel (whichever it sees
//! first) and answers the canceller. A mark for a task this worker does not run is answered
//! `notHere` once it is kept. The marks and the attempts share one lock, so a worker that
//! answered `notHere` refuses the task whenever it takes it. A task that nobody cancels costs a
//! reused slot while it runs (its id copied into the slot's buffer).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{oneshot, watch};

use super::{Answer, Mark};
use crate::nats::connection::Connection;

/// How long a starting worker reads the marks made before it (a waiting task cancelled before
/// any worker ran must not start); a slow server delays no worker longer.
const CATCH_UP: Duration = Duration::from_secs(2);
/// How long after its making a mark is answered (older ones are read at a worker's start: their
/// canceller is gone).
const ANSWERED_WITHIN: i64 = 30_000;
/// How long a watcher waits before following the marks again after it could not.
const RETRY: Duration = Duration::from_secs(5);

/// The marks a worker follows, and the attempts its handlers run.
pub struct Cancels {
    connection: Connection,
    state: Mutex<State>,
    /// Dropped with the last handle: the watcher stops.
    _stop: watch::Sender<()>,
}

/// The marks kept, and the attempts running. The attempts sit in slots that are reused, each
/// with its own [`Told`] made once: registering an attempt allocates nothing. A mark (rare)
/// looks at every slot.
#[derive(Default)]
struct State {
    marks: HashMap<String, Mark>,
    slots: Vec<Slot>,
    free: Vec<usize>,
}

/// One slot of the registry.
struct Slot {
    /// The attempt in it, if any.
    running: Option<Running>,
    told: Arc<Told>,
    /// The id text of the slot's last attempt, its buffer reused by the next.
    spare: String,
}

/// An attempt that runs, as the registry holds it.
struct Running {
    /// When its task's life began ([`crate::envelope::Task::life_began`]).
    since: i64,
    /// Its task id (a mark's, `getTask`'s and `getTasks`' key).
    name: String,
    /// When the attempt started, ms since the epoch.
    started_at: i64,
    /// Which attempt it is, the first being 1.
    attempt: u64,
    /// When its task was enqueued, and its priority level (with priorities).
    enqueued_at: i64,
    priority: Option<u8>,
    /// The handler's latest `task.progress(value)`, as JSON.
    progress: Option<Box<RawValue>>,
}

/// What an attempt registers of itself besides its task id.
#[derive(Debug, Clone, Copy)]
pub struct Attempted {
    /// Which attempt it is, the first being 1.
    pub number: u64,
    /// When its task was enqueued, ms since the epoch.
    pub enqueued_at: i64,
    /// Its priority level, on a queue with priorities.
    pub priority: Option<u8>,
}

/// A task one of this worker's handlers runs, as `getTask` and `getTasks` see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningTask {
    pub id: String,
    pub started_at: i64,
    pub attempt: u64,
    #[serde(default)]
    pub enqueued_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Box<RawValue>>,
}

impl Running {
    fn described(&self) -> RunningTask {
        RunningTask {
            id: self.name.clone(),
            started_at: self.started_at,
            attempt: self.attempt,
            enqueued_at: self.enqueued_at,
            priority: self.priority,
            progress: self.progress.clone(),
        }
    }
}

/// Where a slot's attempt hears a mark.
#[derive(Default)]
struct Told {
    mark: Mutex<Option<Mark>>,
    notify: tokio::sync::Notify,
    /// Its handler returned or was stopped: the attempt is being settled, not listed as running.
    settling: AtomicBool,
}

/// A running attempt's registration: it hears a mark for its task ([`Entered::told`]), and
/// leaves the registry when dropped.
pub struct Entered {
    cancels: Arc<Cancels>,
    slot: usize,
    told: Arc<Told>,
}

impl Entered {
    /// Resolves with the mark that cancels this attempt, once one comes.
    pub async fn told(&self) -> Mark {
        loop {
            let notified = self.told.notify.notified();
            if let Some(mark) = self.try_told() {
                return mark;
            }
            notified.await;
        }
    }

    /// Its handler returned or was stopped: from now on the attempt is settled, no longer listed
    /// as running (a mark still reaches it).
    pub fn settling(&self) {
        self.told.settling.store(true, Ordering::Relaxed);
    }

    /// The mark handed to this attempt, if one was.
    pub fn try_told(&self) -> Option<Mark> {
        self.told
            .mark
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut state = self.cancels.lock();
        if let Some(slot) = state.slots.get_mut(self.slot) {
            if let Some(running) = slot.running.take() {
                slot.spare = running.name;
            }
            // A mark handed too late is dropped with the attempt.
            *slot
                .told
                .mark
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
        state.free.push(self.slot);
    }
}

impl Cancels {
    /// Starts following the marks of the queue, having read those made so far (for at most
    /// [`CATCH_UP`]). Never fails: a worker that cannot follow them (no stream and
    /// `createStreams: false`, a server away) tries again every [`RETRY`] and runs meanwhile.
    pub async fn start(connection: Connection) -> Arc<Self> {
        let (stop, stopped) = watch::channel(());
        let cancels = Arc::new(Cancels {
            connection,
            state: Mutex::default(),
            _stop: stop,
        });
        let (caught_up, catching_up) = oneshot::channel();
        tokio::spawn(follow(Arc::downgrade(&cancels), stopped, caught_up));
        let _ = tokio::time::timeout(CATCH_UP, catching_up).await;
        cancels
    }

    /// Registers `attempt` at task `id` (whose life began at `since`) that starts now; the mark
    /// that cancels it instead, if one does.
    pub fn enter(
        self: &Arc<Self>,
        id: &str,
        since: i64,
        attempt: Attempted,
    ) -> Result<Entered, Mark> {
        let mut state = self.lock();
        if !state.marks.is_empty() {
            if let Some(mark) = state.marks.get(id).filter(|mark| mark.covers(since)) {
                return Err(mark.clone());
            }
        }
        let slot = match state.free.pop() {
            Some(slot) => slot,
            None => {
                state.slots.push(Slot {
                    running: None,
                    told: Arc::default(),
                    spare: String::new(),
                });
                state.slots.len() - 1
            }
        };
        let entry = &mut state.slots[slot];
        let mut name = std::mem::take(&mut entry.spare);
        name.clear();
        name.push_str(id);
        entry.running = Some(Running {
            since,
            name,
            started_at: crate::envelope::now_ms(),
            attempt: attempt.number,
            enqueued_at: attempt.enqueued_at,
            priority: attempt.priority,
            progress: None,
        });
        entry.told.settling.store(false, Ordering::Relaxed);
        let told = entry.told.clone();
        drop(state);
        Ok(Entered {
            cancels: self.clone(),
            slot,
            told,
        })
    }

    /// Changes (with an error) once this registry is dropped: its worker stopped.
    pub fn stopped(&self) -> watch::Receiver<()> {
        self._stop.subscribe()
    }

    /// Keeps `progress` as the latest of the running task `id` (`task.progress(value)`).
    pub fn progressed(&self, id: &str, progress: &RawValue) {
        let mut state = self.lock();
        for slot in &mut state.slots {
            if let Some(running) = slot.running.as_mut().filter(|r| r.name == id) {
                running.progress = Some(progress.to_owned());
            }
        }
    }

    /// The attempts running here at task `id`, or at any task (`None`), at most `limit`.
    pub fn running(&self, id: Option<&str>, limit: usize) -> Vec<RunningTask> {
        let state = self.lock();
        state
            .slots
            .iter()
            .filter(|slot| !slot.told.settling.load(Ordering::Relaxed))
            .filter_map(|slot| slot.running.as_ref())
            .filter(|running| id.is_none_or(|id| running.name == id))
            .take(limit)
            .map(Running::described)
            .collect()
    }

    /// Keeps `mark` and hands it to the attempts it cancels; answers `notHere` when none runs
    /// here (a fresh mark only: an old one's canceller is gone).
    async fn heard(&self, mark: Mark) {
        let handed = {
            let mut state = self.lock();
            let mut handed = false;
            for slot in &state.slots {
                let Some(running) = &slot.running else {
                    continue;
                };
                if running.name == mark.id && mark.covers(running.since) {
                    *slot
                        .told
                        .mark
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(mark.clone());
                    slot.told.notify.notify_one();
                    handed = true;
                }
            }
            state.marks.insert(mark.id.clone(), mark.clone());
            handed
        };
        let fresh = crate::envelope::now_ms() - mark.at < ANSWERED_WITHIN;
        if !handed && fresh {
            super::answer(&self.connection, &mark, Answer::NotHere).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent: keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Follows the marks until the last handle of `cancels` is dropped or the connection closes.
/// `caught_up` is told once the marks stored at the start are read (or none could be).
async fn follow(
    cancels: std::sync::Weak<Cancels>,
    mut stopped: watch::Receiver<()>,
    caught_up: oneshot::Sender<()>,
) {
    let mut caught_up = Some(caught_up);
    loop {
        let Some(connection) = cancels.upgrade().map(|c| c.connection.clone()) else {
            return;
        };
        match open(&connection).await {
            Ok(Some((mut marks, empty))) => {
                if empty {
                    caught_up.take().map(|told| told.send(()));
                }
                loop {
                    let message = tokio::select! {
                        message = marks.next() => message,
                        _ = stopped.changed() => return,
                        () = connection.closed() => return,
                    };
                    let message = match message {
                        Some(Ok(message)) => message,
                        // The ordered consumer recreates itself where it left off.
                        Some(Err(err)) => {
                            tracing::debug!("following cancel marks: {err}");
                            continue;
                        }
                        None => break,
                    };
                    let pending = message.info().map_or(0, |info| info.pending);
                    let config = connection.config();
                    let id = super::id_of(config, message.subject.as_str());
                    match (id, serde_json::from_slice::<Mark>(&message.payload)) {
                        (Some(id), Ok(mark)) if mark.id == id => match cancels.upgrade() {
                            Some(cancels) => cancels.heard(mark).await,
                            None => return,
                        },
                        _ => {
                            tracing::debug!(subject = %message.subject, "skipping a message that is not a cancel mark")
                        }
                    }
                    if pending == 0 {
                        caught_up.take().map(|told| told.send(()));
                    }
                }
            }
            Ok(None) => {
                caught_up.take().map(|told| told.send(()));
            }
            Err(err) => {
                caught_up.take().map(|told| told.send(()));
                tracing::debug!("cancel marks not followed yet: {err}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stopped.changed() => return,
            () = connection.closed() => return,
        }
    }
}

/// An ordered consumer of the newest mark of each task, then of every new one, and whether the
/// stream held none when it started; `None` when the queue has no cancels stream and this worker
/// does not create one.
async fn open(
    connection: &Connection,
) -> crate::error::Result<Option<(async_nats::jetstream::consumer::pull::Ordered, bool)>> {
    const FOLLOWING: &str = "following cancel marks";
    let Some(stream) = super::ensure_stream(connection).await? else {
        return Ok(None);
    };
    let mut stream = stream;
    let empty = stream
        .info()
        .await
        .map_err(|err| crate::error::Error::request(FOLLOWING, err))?
        .state
        .messages
        == 0;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{}*", connection.config().cancels_prefix()),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|err| crate::error::Error::nats(FOLLOWING, err))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|err| crate::error::Error::nats(FOLLOWING, err))?;
    Ok(Some((messages, empty)))
}
