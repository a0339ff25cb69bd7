//! Dead letters, in one place: a task that will not be tried again is stored with why it failed
//! on the queue's dead-letter stream (`<streamName>_DLQ`, subject `protoqueue.dlq.<streamName>`),
//! where it can be read, requeued or removed.
//!
//! - [`write`]: storing a letter (confirmed before the delivery is terminated), by the worker's
//!   executor and by tools;
//! - [`stored`]: reading the stored letters (one, many, or those a [`stored::Filter`] picks, in one
//!   pass over the stream) and removing one;
//! - [`redrive`]: requeueing the tasks of the letters a filter picks, or removing them.
//!
//! The dead-letter worker (`processDLQ()`) is a worker over the dead-letter stream's consumer:
//! it lives with the others in [`crate::worker::letters`].

pub mod redrive;
pub mod stored;
pub mod write;
