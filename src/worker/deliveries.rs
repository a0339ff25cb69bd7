//! What a worker runs each delivery through: tasks through the [`Executor`], dead letters through
//! the [`LetterExecutor`](crate::worker::letters::LetterExecutor).

use std::sync::Arc;

use async_nats::jetstream::Message;
use tokio::sync::OwnedSemaphorePermit;

use crate::worker::{
    executor::{BoxFuture, Executor},
    prefetch::Timed,
};

/// What a worker holds for each running delivery: its room and its slot, timed for prefetch.
pub type Held = Timed<(OwnedSemaphorePermit, OwnedSemaphorePermit)>;

/// How a worker runs each delivery: a task ([`Executor`]) or a dead letter
/// ([`LetterExecutor`](crate::worker::letters::LetterExecutor)).
pub trait Deliveries: Send + Sync + 'static {
    /// Runs one delivery to the end. The handler is given it before this returns (deliveries
    /// reach the handler in the order they are passed here).
    fn execute(self: Arc<Self>, message: Message, held: Held) -> BoxFuture<()>;

    /// Makes every later success ack wait for the server's confirmation (the worker is stopping).
    fn confirm_acks(&self);

    /// Asks the handler to give back what it holds unstarted ([`Handler::release_unstarted`](crate::worker::executor::Handler::release_unstarted)).
    fn release_unstarted(&self) -> BoxFuture<()>;
}

impl Deliveries for Executor {
    fn execute(self: Arc<Self>, message: Message, held: Held) -> BoxFuture<()> {
        Executor::execute(self, message, held)
    }

    fn confirm_acks(&self) {
        Executor::confirm_acks(self);
    }

    fn release_unstarted(&self) -> BoxFuture<()> {
        Executor::release_unstarted(self)
    }
}
