//! Every change of a task's state that takes more than one server call, one module each: its
//! steps, its idempotency key (the `Nats-Msg-Id` or expected sequence that makes a step safe to
//! repeat) and its failure windows (what is true when a process dies, or the server stops
//! answering, between two steps), written next to the code.
//!
//! JetStream has no transactions: a change that touches two messages (a marker and a task, a
//! task and its dead letter) is made safe by ordering the steps so that a crash between them
//! leaves a state the next step, or the next process, can finish, and by message ids that the
//! duplicate window matches only for a true re-send of the same step — never for a new event of
//! the same task.
//!
//! | change | steps | key |
//! | --- | --- | --- |
//! | [`enqueue`] with the producer's own id | claim the id's marker → publish → record the sequence | `<id>:<nonce of the claim>` |
//! | dead-letter ([`crate::dead_letters::write`]) | publish the letter → TERM the delivery | `dlq:<stream>:<sequence>` |
//! | retry (`crate::worker::executor`) | publish the next attempt → ack the failed one | `retry:<stream>:<sequence>` |
//! | requeue ([`crate::dead_letters::redrive`]) | publish the task → delete the letter | `<id>:requeue:<letter sequence>` |
//! | purge ([`crate::admin::control`]) | take each waiting task through the workers' consumer → ack; paused: mark the pause → delete → give the pause back | the consumer hands each task to one taker |

pub mod enqueue;

pub use enqueue::{enqueue, enqueue_batch, enqueue_each};
