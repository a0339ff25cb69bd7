//! Dead-letter workers (`processDLQ()`): the pull loop of [`crate::worker`] over the dead-letter
//! stream's shared consumer, running each letter through a [`LetterHandler`].
//!
//! A letter is offered to one dead-letter worker at a time, kept alive with progress heartbeats
//! while its handler runs, and bounded by `taskTimeout`. It is removed from the dead-letter stream
//! only after its handler succeeded (the removal confirmed, then the delivery acked); a failure
//! offers it again after `retryDelay`, as often as it takes; a failure with `retry: false` stops
//! offering it to dead-letter workers (it stays stored: readable, requeueable, removable). A
//! letter is never lost: if the worker dies, the server offers it again after `ackWait`.

use std::sync::Arc;

use async_nats::jetstream::{AckKind, Message};
use prost::Message as _;

use crate::{
    dead_letters::stored::{self as dead_letters, StoredDeadLetter},
    envelope::DeadLetter,
    logging::shorten,
    nats::{ack_wait::HeartbeatPace, connection::Connection},
    worker::{
        deliveries::{Deliveries, Held},
        executor::{keep_alive, settle_confirmed, BoxFuture, Outcome},
    },
};

/// One offer of a dead letter to a dead-letter handler.
#[derive(Debug, Clone)]
pub struct LetterAttempt {
    /// The letter, with its sequence in the dead-letter stream.
    pub letter: StoredDeadLetter,
    /// Which offer this is, from 1.
    pub number: u64,
}

/// Handles dead letters: implemented by the JavaScript binding (calling the user's
/// `processDLQ` handler) and by tests.
pub trait LetterHandler: Send + Sync + 'static {
    /// Handles one offer. The future must finish; one that outlives `taskTimeout` is dropped and
    /// counted as a failure.
    fn handle(&self, attempt: LetterAttempt) -> BoxFuture<Outcome>;
}

/// Runs deliveries of the dead-letter stream through a [`LetterHandler`].
pub struct LetterExecutor {
    connection: Connection,
    handler: Arc<dyn LetterHandler>,
    pace: HeartbeatPace,
}

impl LetterExecutor {
    /// An executor for the dead letters of a connected queue.
    pub fn new(
        connection: Connection,
        handler: Arc<dyn LetterHandler>,
        pace: HeartbeatPace,
    ) -> Self {
        LetterExecutor {
            connection,
            handler,
            pace,
        }
    }

    async fn finish(&self, message: Message, sequence: u64, handled: BoxFuture<Outcome>) {
        let config = self.connection.config();
        let outcome = keep_alive(
            &message,
            handled,
            self.pace.clone(),
            Some(config.task_timeout),
        )
        .await;
        let retry_later = AckKind::Nak(Some(config.retry_delay));
        let settle = match outcome {
            // Gone already (removed by an operator meanwhile) is just as good.
            Outcome::Success | Outcome::Returned(_) => {
                match dead_letters::remove(&self.connection, sequence).await {
                    Ok(_) => AckKind::Ack,
                    Err(err) => {
                        // Offered again every `retryDelay` while it cannot be removed (a stream that
                        // denies deletes): said at the 1st, 10th, 100th… delivery, not every time.
                        let delivered = message.info().map_or(1, |info| info.delivered);
                        if is_power_of_ten(delivered) {
                            tracing::warn!(
                                seq = sequence,
                                delivered,
                                "dead letter handled but not removed ({err}); offering it again"
                            );
                        } else {
                            tracing::debug!(
                                seq = sequence,
                                delivered,
                                "dead letter not removed ({err})"
                            );
                        }
                        retry_later
                    }
                }
            }
            Outcome::Failure(failure) | Outcome::InvalidData(failure) => {
                tracing::debug!(
                    seq = sequence,
                    "dead-letter handler failed: {}",
                    shorten(&failure.error)
                );
                if failure.retry {
                    retry_later
                } else {
                    AckKind::Term
                }
            }
            Outcome::NotStarted => AckKind::Nak(None),
        };
        settle_confirmed(&self.connection, &message, settle).await;
    }
}

impl Deliveries for LetterExecutor {
    fn execute(self: Arc<Self>, message: Message, held: Held) -> BoxFuture<()> {
        let info = message
            .info()
            .map(|info| (info.stream_sequence, info.delivered));
        let decoded = DeadLetter::decode(message.payload.clone());
        match (info, decoded) {
            (Ok((sequence, delivered)), Ok(letter)) => {
                let handled = self.handler.handle(LetterAttempt {
                    letter: StoredDeadLetter { sequence, letter },
                    number: u64::try_from(delivered).unwrap_or(1).max(1),
                });
                Box::pin(async move {
                    let _held = held;
                    self.finish(message, sequence, handled).await;
                })
            }
            (info, decoded) => Box::pin(async move {
                drop(held);
                let why = match (info, decoded) {
                    (Err(err), _) => err.to_string(),
                    (_, Err(err)) => err.to_string(),
                    _ => String::new(),
                };
                // Not a letter (another client published on the subject): no handler can take
                // it; it stays stored, and is no longer offered.
                tracing::warn!("a message on the dead-letter stream is not a dead letter ({why}); not offering it");
                settle_confirmed(&self.connection, &message, AckKind::Term).await;
            }),
        }
    }

    fn confirm_acks(&self) {}

    fn release_unstarted(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

/// 1, 10, 100, …: when a repeated warning is said again.
fn is_power_of_ten(n: i64) -> bool {
    let mut n = n;
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_said_at_powers_of_ten() {
        let said: Vec<i64> = (0..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(said, vec![1, 10, 100, 1000]);
    }
}
