//! One NATS connection for many queues: every queue of the process that connects to the same
//! servers with the same credentials and TLS settings shares one client.
//!
//! A process-wide registry holds one entry per distinct [`Key`] (the servers, sorted and without
//! duplicates; the credentials, from `config.auth` or the URLs; the TLS settings), with the number
//! of queues using it. Each queue holds a [`Lease`]: its own lifecycle on the shared client.
//! Releasing a lease (a queue's `disconnect()`) closes the client only when it was the last one;
//! the entry leaves the registry at that moment, so a queue that connects while the old client is
//! still closing gets a new one. A lease dropped without being released (a queue object collected
//! with nothing running) counts as released: the last one drops the client, which closes it.
//!
//! Different credentials (or TLS settings, or servers) never share a client: the key compares
//! them in full. The key holds secrets only as the configuration already does, and is never
//! printed.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError, Weak,
    },
};

use async_nats::ServerAddr;
use tokio::{
    sync::{watch, OnceCell},
    time::Instant,
};

use crate::{
    config::{auth::Auth, tls::Tls},
    error::{Error, Result},
    observe::Observer,
};

/// What decides whether two queues may share a client. Deliberately not `Debug`: it holds
/// credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Key {
    servers: Vec<ServerAddr>,
    auth: Auth,
    tls: Option<Tls>,
    /// Set for a client no other queue may share ([`Key::unshared`]).
    unshared: Option<u64>,
}

impl Key {
    /// The key of these settings: servers sorted and without duplicates.
    pub(crate) fn new(servers: &[ServerAddr], auth: &Auth, tls: Option<&Tls>) -> Self {
        let mut servers = servers.to_vec();
        servers.sort_by(|a, b| a.as_url_str().cmp(b.as_url_str()));
        servers.dedup();
        Key {
            servers,
            auth: auth.clone(),
            tls: tls.cloned(),
            unshared: None,
        }
    }

    /// A key equal to no other: a client of its own.
    pub(crate) fn unshared(self) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Key {
            unshared: Some(NEXT.fetch_add(1, Ordering::Relaxed)),
            ..self
        }
    }
}

/// A client shared by the queues whose settings have one [`Key`].
#[derive(Debug)]
pub(crate) struct SharedClient {
    pub(crate) client: async_nats::Client,
    /// Set when the last queue leaves: the client stops trying to reconnect.
    pub(crate) parked: Arc<AtomicBool>,
    /// Counts the client's (re)connections; every queue on it watches the same count.
    pub(crate) connections: watch::Receiver<u64>,
    /// The queues using the client, told about its connection trouble.
    pub(crate) observers: Observers,
}

/// The observers of the queues sharing one client, held weakly: a queue object that is gone is
/// told nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observers(Arc<Mutex<Vec<Weak<Observer>>>>);

impl Observers {
    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Observer>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, observer: &Arc<Observer>) {
        let mut list = self.list();
        list.retain(|weak| weak.strong_count() > 0);
        list.push(Arc::downgrade(observer));
    }

    fn remove(&self, observer: &Weak<Observer>) {
        self.list().retain(|weak| !weak.ptr_eq(observer));
    }

    /// The observers of the queues still using the client.
    pub(crate) fn live(&self) -> Vec<Arc<Observer>> {
        self.list().iter().filter_map(Weak::upgrade).collect()
    }
}

type Cell = Arc<OnceCell<Arc<SharedClient>>>;

struct Entry {
    key: Key,
    users: usize,
    cell: Cell,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    // Nothing panics while holding the lock; a poisoned registry is still consistent.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One queue's use of a shared client.
#[derive(Debug)]
pub(crate) struct Lease {
    cell: Cell,
    pub(crate) shared: Arc<SharedClient>,
    released: AtomicBool,
    /// Becomes `true` when the queue released its lease (its `disconnect()` closed it).
    closed: watch::Sender<bool>,
    /// The queue's observer, among the client's while the lease is held.
    observer: Weak<Observer>,
}

/// Joins the entry of `key`, creating it when there is none, and returns its cell.
fn join(key: Key) -> Cell {
    let mut entries = registry();
    if let Some(entry) = entries.iter_mut().find(|entry| entry.key == key) {
        entry.users += 1;
        return entry.cell.clone();
    }
    let cell = Cell::default();
    entries.push(Entry {
        key,
        users: 1,
        cell: cell.clone(),
    });
    cell
}

/// Leaves the entry whose cell is `cell`; returns its client when this was the last user (the
/// entry is gone from the registry then).
fn leave(cell: &Cell) -> Option<Arc<SharedClient>> {
    let mut entries = registry();
    let at = entries
        .iter()
        .position(|entry| Arc::ptr_eq(&entry.cell, cell))?;
    let entry = &mut entries[at];
    entry.users = entry.users.saturating_sub(1);
    if entry.users > 0 {
        return None;
    }
    let entry = entries.swap_remove(at);
    entry.cell.get().cloned()
}

/// The client for `key`: the one queues with the same settings already use, or a new one from
/// `connect` (called at most once per entry at a time; when it fails, the next queue waiting for
/// the same entry tries again with its own). Waiting for another queue's connect ends at
/// `deadline` with `timed_out()`.
pub(crate) async fn acquire<C, F>(
    key: Key,
    observer: &Arc<Observer>,
    deadline: Instant,
    connect: C,
    timed_out: impl FnOnce() -> Error,
) -> Result<Lease>
where
    C: FnOnce() -> F,
    F: Future<Output = Result<SharedClient>>,
{
    let cell = join(key);
    let init = cell.get_or_try_init(|| async { connect().await.map(Arc::new) });
    let shared = match tokio::time::timeout_at(deadline, init).await {
        Ok(Ok(shared)) => shared.clone(),
        Ok(Err(err)) => {
            release_unused(&cell).await;
            return Err(err);
        }
        Err(_) => {
            release_unused(&cell).await;
            return Err(timed_out());
        }
    };
    let (closed, _) = watch::channel(false);
    shared.observers.add(observer);
    Ok(Lease {
        cell,
        shared,
        released: AtomicBool::new(false),
        closed,
        observer: Arc::downgrade(observer),
    })
}

/// Leaves an entry joined by a connect that failed (another queue may have connected it since).
async fn release_unused(cell: &Cell) {
    if let Some(shared) = leave(cell) {
        shared.close().await;
    }
}

impl Lease {
    /// Whether this queue released its lease.
    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    /// Resolves once this queue released its lease.
    pub(crate) async fn released(&self) {
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Ends this queue's use of the client; closes the client when no other queue uses it.
    /// Later calls do nothing.
    pub(crate) async fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        self.closed.send_replace(true);
        self.shared.observers.remove(&self.observer);
        if let Some(shared) = leave(&self.cell) {
            shared.close().await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        // A queue dropped without `disconnect()`: the last one parks the client's reconnects;
        // dropping its last handle closes it.
        self.shared.observers.remove(&self.observer);
        if let Some(shared) = leave(&self.cell) {
            shared.parked.store(true, Ordering::Relaxed);
        }
    }
}

impl SharedClient {
    /// Flushes what is buffered and closes the client; it stops reconnecting.
    async fn close(&self) {
        self.parked.store(true, Ordering::Relaxed);
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let flush = tokio::time::timeout(crate::error::API_TIMEOUT, self.client.flush());
        if let Err(err) = flush.await {
            tracing::warn!("flush before close did not finish: {err}");
        }
        if let Err(err) = self.client.drain().await {
            tracing::debug!("drain on close: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(urls: &[&str]) -> Vec<ServerAddr> {
        urls.iter()
            .map(|url| url.parse().expect("a server address"))
            .collect()
    }

    #[test]
    fn keys_ignore_server_order_and_duplicates_but_not_credentials() {
        let a = Key::new(
            &servers(&["nats://b:4222", "nats://a:4222", "nats://a:4222"]),
            &Auth::None,
            None,
        );
        let b = Key::new(
            &servers(&["nats://a:4222", "nats://b:4222"]),
            &Auth::None,
            None,
        );
        assert!(a == b);
        let token = Key::new(
            &servers(&["nats://a:4222", "nats://b:4222"]),
            &Auth::Token(crate::config::auth::Secret::new("t1")),
            None,
        );
        let other_token = Key::new(
            &servers(&["nats://a:4222", "nats://b:4222"]),
            &Auth::Token(crate::config::auth::Secret::new("t2")),
            None,
        );
        assert!(a != token);
        assert!(token != other_token);
    }

    #[tokio::test]
    async fn a_failed_connect_leaves_no_entry() {
        let key = Key::new(&servers(&["nats://failed.invalid:1"]), &Auth::None, None);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let result = acquire(
            key.clone(),
            &Arc::default(),
            deadline,
            || async { Err(Error::NotConnected) },
            || Error::NotConnected,
        )
        .await;
        assert!(result.is_err());
        assert!(!registry().iter().any(|entry| entry.key == key));
    }
}
