// The ways of writing each baseline that bench/baselines.mjs times against each other, and which
// one bench/natsjs.mjs and bench/bullmq.mjs run by default (the `default` entry: what run.mjs
// measures). Every variant is the runner as it was before the baselines were tuned (`before`, the
// settings objects below) with a few settings changed; `default` is the combination chosen from
// the measurements (bench/README.md "How strong the baselines are"). The runners read the settings
// of `spec.variant` (a name from these tables) and nothing else. Each variant lists the workloads
// its settings can change, so the harness does not time it where it cannot differ, and where its
// settings come from. A variant marked `exceedsWindow` has more than `--window` tasks unconfirmed
// at once in W2, which the workload does not allow any system: it is timed for information and is
// never the "best".
import { ROUND_TRIP_WORKLOADS } from './runner.mjs'

/** nats.js settings, as the runner had them before (`before`). */
const NATSJS_BASE = {
  /** `connect({ noAsyncTraces })`: false adds an Error (a stack) to every request, i.e. every publish. */
  noAsyncTraces: true,
  /**
   * W2 (and the W3 backlog): how publishes are pipelined with at most `--window` acks outstanding.
   * 'half': settled by callback; when the window is full, wait until half of it is free and issue that
   *   half at once (publishes share socket writes).
   * 'slide': before each publish beyond the window, await the oldest outstanding ack.
   * 'chunks': the README's pattern: `window` publishes, `await Promise.all`, the next `window`.
   * 'atomic': an atomic batch per `window` tasks (`js.startBatch`, `batch.add`, `batch.commit`;
   *   the stream gets `allow_atomic: true`): one ack per batch instead of one per task.
   */
  publish: 'half',
  /** 'atomic': how many batches are in flight at once (the server allows 50 per stream). */
  batchesInFlight: 1,
  /** 'atomic': tasks per batch for a window of `window` (the server takes at most 1,000). */
  atomicBatch: (window) => window,
  /**
   * W3/W4: how messages are pulled.
   * 'iterator': `consume()` and `for await`, a limiter of `batchSize` (the README's "Iterators,
   *   Callbacks, and Concurrency").
   * 'callback': `consume({ callback })`; messages beyond `batchSize` running wait in a FIFO.
   * 'fetch': `fetch({ max_messages: batchSize })` in a loop: run the batch, await it, fetch again.
   * 'next': `batchSize` loops of `await c.next()` (the README's "go-to API" for work queues).
   */
  consume: 'iterator',
  /** consume()'s `max_messages` (the client's buffer) for a worker of `batchSize`. */
  maxMessages: (batchSize) => batchSize,
  /** consume()'s `threshold_messages` (re-pull when this few are still requested); undefined: 75%. */
  thresholdMessages: () => undefined,
  /**
   * 'client': the runner limits handlers to `batchSize` at once. 'server': the consumer's
   * `max_ack_pending` is `batchSize`, so the server never has more than that delivered and
   * unacked, and every delivered message runs at once.
   */
  limiter: 'client',
  /** 'ack': fire and forget (`m.ack()`); 'ackAck': `await m.ackAck()`, confirmed by the server. */
  ack: 'ack',
}

const NATS_DOCS = {
  readme: 'https://github.com/nats-io/nats.js/blob/main/jetstream/README.md',
  consume: 'https://github.com/nats-io/nats.js/blob/main/jetstream/README.md#consuming-messages',
  concurrency: 'https://github.com/nats-io/nats.js/blob/main/jetstream/README.md#iterators-callbacks-and-concurrency',
  callbacks: 'https://github.com/nats-io/nats.js/blob/main/jetstream/README.md#callbacks',
  fetch: 'https://github.com/nats-io/nats.js/blob/main/jetstream/README.md#fetching-batch-of-messages',
  next: 'https://github.com/nats-io/nats.js/blob/main/jetstream/README.md#requesting-a-single-message',
  publish: 'https://github.com/nats-io/nats.js/blob/main/jetstream/README.md#jetstream-client',
  noAsyncTraces: 'https://github.com/nats-io/nats.js/blob/main/core/README.md#connection-options',
  threshold: 'https://nats-io.github.io/nats.js/jetstream/types/ThresholdMessages.html',
  batch: 'https://nats-io.github.io/nats.js/jetstream/types/Batch.html',
  maxAckPending: 'https://docs.nats.io/nats-concepts/jetstream/consumers#maxackpending',
}

const THROUGHPUT_AND_LATENCY = ['w1', 'w2', 'w3', 'w4', 'w5']
const PROCESSING = ['w3', 'w4']

/** name → { settings, what, workloads, sources }. */
export const NATSJS_VARIANTS = {
  default: {
    what: 'chosen: W2 as atomic batches of the window; callback `consume({ max_messages: 1000 })`, a FIFO beyond batchSize running, `ack()`',
    workloads: THROUGHPUT_AND_LATENCY,
    sources: [NATS_DOCS.noAsyncTraces, NATS_DOCS.batch, NATS_DOCS.callbacks, NATS_DOCS.consume],
    settings: { publish: 'atomic', consume: 'callback', maxMessages: (batchSize) => Math.max(1000, batchSize) },
  },
  before: {
    what: 'the runner before: iterator `consume({ max_messages: batchSize })`, a limiter of batchSize, `ack()`; publishes pipelined, half-window refills',
    workloads: THROUGHPUT_AND_LATENCY,
    sources: [NATS_DOCS.noAsyncTraces, NATS_DOCS.concurrency, NATS_DOCS.publish],
    settings: {},
  },
  'async-traces': {
    what: '`before` without `noAsyncTraces` (the library\'s own default)',
    workloads: ['w1', 'w2', 'w5'],
    sources: [NATS_DOCS.noAsyncTraces],
    settings: { noAsyncTraces: false },
  },
  'publish-slide': {
    what: 'W2: await the oldest ack before each publish beyond the window',
    workloads: ['w2'],
    sources: [NATS_DOCS.publish],
    settings: { publish: 'slide' },
  },
  'publish-chunks': {
    what: 'W2: the README\'s `Promise.all` of one window of publishes, then the next',
    workloads: ['w2'],
    sources: [NATS_DOCS.publish],
    settings: { publish: 'chunks' },
  },
  'publish-atomic-2': {
    what: 'W2: atomic batches of the window, two in flight at once (twice the window outstanding)',
    workloads: ['w2'],
    exceedsWindow: true,
    sources: [NATS_DOCS.batch],
    settings: { publish: 'atomic', batchesInFlight: 2 },
  },
  'publish-atomic-halves': {
    what: 'W2: atomic batches of half the window, two in flight at once',
    workloads: ['w2'],
    sources: [NATS_DOCS.batch],
    settings: { publish: 'atomic', batchesInFlight: 2, atomicBatch: (window) => Math.max(1, window >> 1) },
  },
  callback: {
    what: '`consume({ callback, max_messages: batchSize })`, a FIFO beyond batchSize running',
    workloads: PROCESSING,
    sources: [NATS_DOCS.callbacks],
    settings: { consume: 'callback' },
  },
  'server-limit': {
    what: 'callback consume, the consumer\'s `max_ack_pending` = batchSize as the limiter',
    workloads: PROCESSING,
    sources: [NATS_DOCS.callbacks, NATS_DOCS.maxAckPending],
    settings: { consume: 'callback', limiter: 'server' },
  },
  'buffer-100': {
    what: 'iterator, `max_messages` 100 (consume()\'s own default), limiter batchSize',
    workloads: PROCESSING,
    sources: [NATS_DOCS.consume, NATS_DOCS.concurrency],
    settings: { maxMessages: (batchSize) => Math.max(100, batchSize) },
  },
  'buffer-1000': {
    what: 'iterator, `max_messages` 1,000 (a buffer like Protoqueue\'s prefetch), limiter batchSize',
    workloads: PROCESSING,
    sources: [NATS_DOCS.consume, NATS_DOCS.concurrency],
    settings: { maxMessages: (batchSize) => Math.max(1000, batchSize) },
  },
  'threshold-25': {
    what: 'iterator, `threshold_messages` 25% of max_messages (pulls of 75% instead of 25%)',
    workloads: PROCESSING,
    sources: [NATS_DOCS.threshold],
    settings: { thresholdMessages: (maxMessages) => Math.max(1, Math.floor(maxMessages / 4)) },
  },
  fetch: {
    what: '`fetch({ max_messages: batchSize })` in a loop, each batch run at once and awaited',
    workloads: PROCESSING,
    sources: [NATS_DOCS.fetch, NATS_DOCS.concurrency],
    settings: { consume: 'fetch' },
  },
  next: {
    what: 'batchSize loops of `await consumer.next()`',
    workloads: PROCESSING,
    sources: [NATS_DOCS.next],
    settings: { consume: 'next' },
  },
  'ack-ack': {
    what: '`before` with `await m.ackAck()` (the server confirms each ack)',
    workloads: PROCESSING,
    sources: [NATS_DOCS.readme],
    settings: { ack: 'ackAck' },
  },
}

/** BullMQ settings, as the runner had them before (`before`). */
const BULLMQ_BASE = {
  /** ioredis `enableAutoPipelining`: commands issued in one event-loop turn go out as one pipeline. */
  autoPipelining: false,
  /** W2: how many `addBulk` chunks are in flight at once. */
  bulkInFlight: 1,
  /** W2: jobs per `addBulk` chunk for a window of `window`. */
  bulkSize: (window) => window,
  /** The Worker's `removeOnComplete` (undefined: BullMQ's default, keep every completed job). */
  removeOnComplete: undefined,
}

const BULLMQ_DOCS = {
  production: 'https://docs.bullmq.io/guide/going-to-production',
  autoRemoval: 'https://docs.bullmq.io/guide/workers/auto-removal-of-jobs',
  bulk: 'https://docs.bullmq.io/guide/queues/adding-bulks',
  concurrency: 'https://docs.bullmq.io/guide/workers/concurrency',
  connections: 'https://docs.bullmq.io/guide/connections',
  autoPipelining: 'https://github.com/redis/ioredis#autopipelining',
}

/** name → { settings, what, workloads, sources, keepCompleted }. */
export const BULLMQ_VARIANTS = {
  default: {
    what: 'chosen: `queue.add`; `addBulk` chunks of half the window, two in flight; `Worker` with `concurrency` = batchSize and `removeOnComplete: { count: 0 }`',
    workloads: ['w1', 'w2', 'w3', 'w5'],
    sources: [BULLMQ_DOCS.bulk, BULLMQ_DOCS.concurrency, BULLMQ_DOCS.autoRemoval, BULLMQ_DOCS.production],
    settings: { bulkInFlight: 2, bulkSize: (window) => Math.max(1, window >> 1), removeOnComplete: { count: 0 } },
  },
  before: {
    what: 'the runner before: `addBulk` chunks of the window one after the other; BullMQ\'s default retention (every completed job kept)',
    workloads: ['w1', 'w2', 'w3', 'w5'],
    sources: [BULLMQ_DOCS.bulk, BULLMQ_DOCS.concurrency],
    settings: {},
  },
  'keep-1000': {
    what: 'the production guide\'s auto-removal: `removeOnComplete: { count: 1000 }`',
    workloads: ['w3'],
    sources: [BULLMQ_DOCS.production, BULLMQ_DOCS.autoRemoval],
    settings: { removeOnComplete: { count: 1000 } },
  },
  'auto-pipelining': {
    what: '`before` with ioredis `enableAutoPipelining: true` on the shared connection',
    workloads: ['w1', 'w2', 'w3', 'w5'],
    sources: [BULLMQ_DOCS.autoPipelining],
    settings: { autoPipelining: true },
  },
  'bulk-2': {
    what: '`before` with two `addBulk` chunks of the window in flight at once (twice the window outstanding)',
    workloads: ['w2'],
    exceedsWindow: true,
    sources: [BULLMQ_DOCS.bulk],
    settings: { bulkInFlight: 2 },
  },
}

const TABLES = { natsjs: [NATSJS_VARIANTS, NATSJS_BASE], bullmq: [BULLMQ_VARIANTS, BULLMQ_BASE] }

/** The systems that have variants. */
export const VARIANT_SYSTEMS = Object.keys(TABLES)

/** The variants of `system`, by name. */
export function variantsOf(system) {
  return TABLES[system][0]
}

/**
 * The variant a run of `workload` uses when its spec names none (`name` undefined): `default`,
 * except BullMQ's round trips (W6, W7), which keep the last 1,000 completed jobs (`keep-1000`, the
 * production guide's advice): `job.waitUntilFinished` looks the job up in Redis after it starts
 * listening, and a job its worker already removed fails the wait ("Missing key for job …
 * isFinished") even though its completed event is on the way.
 */
export function variantFor(system, workload, name) {
  if (name) return name
  return system === 'bullmq' && ROUND_TRIP_WORKLOADS.includes(workload) ? 'keep-1000' : 'default'
}

/** The settings `system`'s runner uses for variant `name` (undefined: the default). */
export function settingsOf(system, name = 'default') {
  const [variants, base] = TABLES[system]
  const variant = variants[name]
  if (!variant) throw new Error(`unknown ${system} variant ${JSON.stringify(name)}; choose from ${Object.keys(variants).join(', ')}`)
  return { ...base, ...variant.settings }
}

/**
 * How many completed jobs a BullMQ run of `n` tasks leaves in Redis with variant `name`: all of
 * them with BullMQ's default retention, `count` with `removeOnComplete: { count }`, none with `true`.
 */
export function bullmqCompletedKept(name, n) {
  const { removeOnComplete } = settingsOf('bullmq', name)
  if (removeOnComplete === undefined || removeOnComplete === false) return n
  if (removeOnComplete === true) return 0
  if (typeof removeOnComplete === 'number') return Math.min(n, removeOnComplete)
  return removeOnComplete.count === undefined ? n : Math.min(n, removeOnComplete.count)
}
