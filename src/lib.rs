//! Protoqueue: a task queue on NATS JetStream with Protocol Buffers envelopes, for Node.js and
//! Bun through a native addon.
//!
//! # Design
//!
//! The queue is plain Rust that never imports napi; the `napi/` module is the
//! only module that does, and it only converts values and delegates to a [`Queue`].
//!
//! - [`queue`]: the lifecycle of one queue object (connect → process → disconnect, again), one
//!   worker per run; what a run hands out (outcome tokens) dies with it. `disconnect()` is bounded
//!   as a whole and waits for enqueues in flight.
//! - [`config`]: the user's settings, validated, with named defaults; [`nats`]: the connection
//!   (reconnecting without end) and the JetStream objects. A queue is one stream (WorkQueue
//!   retention: an acked task is gone) on one subject, a dead-letter stream beside it, and one
//!   durable pull consumer shared by every worker ([`nats::topology`]).
//! - Every task is one Protobuf `protoqueue.v1.Task` ([`envelope`]) published with its id as
//!   `Nats-Msg-Id`, so a re-sent publish is stored once; `enqueue` resolves only after JetStream
//!   confirmed the write ([`producer`]). A producer's own id also gets a create-only marker in an
//!   id index beside the stream, so it stays taken while its task is stored ([`ids`]).
//! - Task data is JSON, which the core reads itself, or bytes of a content type the queue's
//!   serializer declared (Protobuf from the user's schema, MessagePack, raw, the user's own):
//!   those cross to JavaScript as they are, to be decoded there; any other content type is
//!   dead-lettered on its first delivery ([`content_type`], [`worker::handoff`]).
//! - Retries wait as the task's own backoff (in its envelope), the queue's `backoff`/`retryDelay`,
//!   or a JavaScript backoff function says ([`config::backoff`]). `globalConcurrency` is the
//!   consumer's `max_ack_pending` (set like `ack_wait`, [`nats::ack_wait`]); `rateLimit` a sliding
//!   window in each worker's pull loop ([`worker::rate`]).
//! - A [`worker`] runs up to `batchSize` tasks at once and keeps a few more ready, as many as its
//!   handlers' pace calls for ([`worker::prefetch`]); it pulls only for room it has (requests on
//!   one inbox, each message backed by reserved room: [`worker::pull`]), hands tasks to the
//!   handler in delivery order, and runs each through the [`worker::executor`]: handler with
//!   progress heartbeats, then ack, NAK with `retryDelay`, or dead letter
//!   ([`dead_letters::write`], confirmed) followed by TERM.
//! - Handlers that live across a costly boundary (JavaScript) take attempts in batches and report
//!   outcomes one by one ([`worker::batching`], [`worker::handoff`]).
//! - Deliveries are counted by the server; the consumer has no `max_deliver`, so a task whose last
//!   delivery died with its worker is dead-lettered by the next worker instead of being stranded.
//! - Everything after the first connect survives connection loss: the client reconnects without
//!   end, publishes are re-sent with the same id until `enqueueTimeout`, pulls are retried.
//!   Refused credentials and failed TLS end the first connect at once ([`nats::credentials`]);
//!   later they are logged as warnings while the client keeps retrying.
//! - Delayed and recurring tasks (`options.schedules`) are NATS message schedules stored in the
//!   task stream on subjects the workers' consumer never takes: one `@at` schedule per delayed
//!   task, one cron/`@every` schedule per recurring name; the server publishes them onto the
//!   queue's subject when due ([`schedules`], [`admin::schedules`]). Plain tasks are unchanged.
//! - Queues of one process with the same servers, credentials and TLS settings share one NATS
//!   client (`nats/shared.rs`), each with its own lease: a queue's disconnect ends only its own
//!   use, the last one closes the client.
//! - A task carries the W3C trace context of the code that enqueued it ([`trace_context`]); the
//!   JavaScript layer makes the OpenTelemetry spans (`lib/tracing.js`).
//! - [`observe`]: the queue object's Prometheus metrics (counters and histograms in atomics,
//!   the server's gauges read through [`admin::stats`] at scrape time) and the events its
//!   JavaScript listeners get, recorded only for kinds someone listens to and taken in batches.
//! - Priorities (`options.priorities`) are a subject and a durable consumer per level; a worker
//!   pulls them most urgent first, each level only for the room the ones above left
//!   ([`layout`], [`worker::pull`]). Plain queues keep one consumer and the same pull path.
//! - A queue over a subject tree (`subject: '<root>.>'`) routes each task to a subject in it; a
//!   worker of part of the tree has a durable consumer named after its filters, shared by every
//!   worker of that part ([`layout`]). Priorities keep the routed subject whole inside each
//!   level's subject, so both combine in one layout.
//! - [`admin`]: operations on the queue as a whole (statistics, dead letters, pause, purge), shared by the
//!   library and the tools built on it; [`admin::queues`] finds every queue on a server (the
//!   dashboard's list) by the metadata marker [`nats::topology`] puts on new streams.

pub mod admin;
pub mod cancelling;
pub mod config;
pub mod content_type;
pub mod dead_letters;
pub mod envelope;
pub mod error;
pub mod history;
pub mod hops;
pub mod ids;
pub mod layout;
pub mod lifecycle;
pub mod logging;
pub mod nats;
pub mod observe;
pub mod presence;
pub mod producer;
pub mod queue;
pub mod schedules;
pub mod shape;
pub mod trace_context;
pub mod worker;

mod napi;

/// mimalloc instead of the system allocator: enqueueing and processing allocate a few small
/// buffers per task (envelope, headers, futures), and glibc's malloc/free took ~15% of the
/// runtime thread's time (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use admin::stats::Stats;
pub use config::{
    auth::{Auth, Secret},
    tls::Tls,
    Config,
};
pub use error::{Error, Result};
pub use nats::connection::Connection;
pub use producer::NewTask;
pub use queue::Queue;
pub use worker::{
    executor::{Attempt, Failure, Handler, Outcome},
    StopReport, Worker,
};
