#!/usr/bin/env node
// Every feature path of Protoqueue beside its own plain path and BullMQ's equivalent (bench/README.md,
// "Feature paths"). Runs alone (`node bench/features.mjs [--n 20000] [--delayed 2000] [--reps 3]`) and
// at the end of `npm run bench` (BENCH_FEATURES=0 skips it). Starts its own nats-server and, when
// there is one, redis-server (bench/lib/redis-server.mjs; without it the BullMQ column is empty), and
// per repetition and case a fresh queue: the Protoqueue queue is destroyed and Redis flushed after it.
// Each case takes N tasks of ~64 bytes (bench/lib/runner.mjs `taskData`):
//
// - enqueue: Protoqueue `enqueueBatch` in chunks of 1,000, one after the other, and BullMQ
//   `addBulk` as bench/bullmq.mjs sends it (chunks of 500, two in flight: at most 1,000 unconfirmed
//   either way) — plain, with own ids (`id` / `jobId` 'task-<i>') and due in an hour (`delay`);
// - processing: N tasks enqueued (timed as well), then one worker running 100 at once (`batchSize`
//   / `concurrency`) a trivial handler that returns a result, from its first handler start to its
//   last handler end — plain; over ten priority levels (task i at priority 1 + i % 10: Protoqueue
//   `options.priorities`, BullMQ `priority`); with the outcome kept (Protoqueue `options.results`
//   or `keepCompleted: true`; BullMQ's default retention, every completed job kept, where its
//   plain worker has the production `removeOnComplete: { count: 0 }`);
// - requeue: N tasks failed for good after one attempt each, then put back with one call
//   (`requeueDeadLetters()`, `retryJobs({ state: 'failed' })`) timed until it resolves, when they wait
//   again (checked after); its plain path is the plain enqueue of N;
// - lateness (Protoqueue only): D tasks due 1–3 s after their enqueue; how late their handlers start.
//
// The cases alternate Protoqueue, BullMQ, case by case; every other repetition runs them in reverse,
// after a warm-up repetition on 2,000 tasks that the table leaves out (the process is warm for all).
// A case whose check fails (a task lost or run twice, or anything left where it should not be) is
// marked invalid and left out of the table, and the process exits non-zero; times are never
// asserted. Prints medians (min–max) over the repetitions, ratios taken within each repetition and
// the issue's targets; raw records go to bench/results/features-<timestamp>.jsonl. In-process, like
// a user's program: the CPU of this process and of the server (nats-server or Redis) is sampled
// around each timed part.
import { appendFileSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Queue, Worker } from 'bullmq'
import IORedis from 'ioredis'

import { Protoqueue } from '../index.mjs'
import { RESULTS } from './lib/driver.mjs'
import { startNatsServer } from './lib/nats-server.mjs'
import { cpuBetween, sample } from './lib/proc.mjs'
import { REDIS_MISSING, findRedisServer, startRedisServer } from './lib/redis-server.mjs'
import { median } from './lib/report.mjs'
import { Tally, resultOf, taskData } from './lib/runner.mjs'
import { bullmqCompletedKept, settingsOf } from './lib/variants.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const CHUNK = 1_000
/** Tasks one worker runs at once: the issue's W3 with batchSize 100. */
const BATCH_SIZE = 100
const PRIORITY_LEVELS = 10
/** Delayed enqueue: due in an hour, so none comes due during the run. */
const DELAY_MS = 3_600_000
/** Lateness: tasks due this long after enqueue, plus up to DELAY_SPREAD_MS. */
const DELAY_MIN_MS = 1_000
const DELAY_SPREAD_MS = 2_000
const RUN_TIMEOUT_MS = 120_000
/** Tasks per case of the warm-up repetition. */
const WARMUP_N = 2_000
/** How long what a case left may take to show (acks, records, counters) before its check fails. */
const SETTLE_TIMEOUT_MS = 10_000
/** Outside CPU (% of one core) above which a timed part counts as disturbed, as run.mjs's default. */
const MAX_OUTSIDE_PCT = 25
/** BullMQ as bench/bullmq.mjs runs it by default (bench/lib/variants.mjs). */
const BULLMQ = settingsOf('bullmq')
const JOB = 'task'
const BULLMQ_VERSION = JSON.parse(readFileSync(join(root, 'node_modules', 'bullmq', 'package.json'), 'utf8')).version
const log = (message) => process.stderr.write(`[bench:features] ${message}\n`)

function parseArgs(argv) {
  const options = { n: 20_000, delayed: 2_000, reps: 3 }
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '')
    if (!(key in options)) throw new Error(`unknown option ${argv[i]} (known: --n, --delayed, --reps)`)
    const value = Number(argv[++i])
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${key} takes a positive integer`)
    options[key] = value
  }
  return options
}

function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

const taskId = (i) => `task-${i}`
const levelOf = (i) => 1 + (i % PRIORITY_LEVELS)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Rejects with `message()` if `promise` has not settled within RUN_TIMEOUT_MS. */
function withinRunTimeout(promise, message) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message()} within ${RUN_TIMEOUT_MS} ms`)), RUN_TIMEOUT_MS)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * Runs `body` with the CPU counters of this process and `serverPid` sampled around it. Resolves to
 * tasks/s over `n` — over the span in ms that `body` resolves to (a worker's first handler start to
 * its last handler end), else over its whole time — and the CPU per task.
 */
async function measure(serverPid, n, body) {
  const before = sample(process.pid, serverPid)
  const span = await body()
  const cpu = cpuBetween(before, sample(process.pid, serverPid))
  return {
    perSec: n / ((span ?? cpu.wallMs) / 1000),
    clientUsPerTask: (1000 * cpu.clientMs) / n,
    serverUsPerTask: (1000 * cpu.serverMs) / n,
    outsidePct: cpu.outsidePct,
  }
}

/**
 * Starts a worker with `start(handle)`, where the worker calls `handle(data)` in each handler, and
 * resolves to the ms from the first handler start to the moment every task 0..n−1 ran; `tally`
 * goes on counting (a task run twice shows in `tally.duplicates`).
 */
async function drain(tally, n, start, onTask = () => {}) {
  const finished = tally.complete()
  let first
  await start((data) => {
    first ??= performance.now()
    onTask(data)
    tally.record(data.i)
  })
  return (await withinRunTimeout(finished, () => `only ${tally.distinct} of ${n} tasks ran`)) - first
}

/** Polls `read()` until it has every count of `expected`; throws what differs after `timeoutMs`. */
async function settle(what, read, expected, timeoutMs = SETTLE_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const counts = await read()
    const wrong = Object.entries(expected).filter(([key, n]) => counts[key] !== n)
    if (wrong.length === 0) return
    if (Date.now() > deadline) {
      throw new Error(`${what} holds ${wrong.map(([key]) => `${counts[key]} ${key}`).join(', ')}; expected ${wrong.map(([key, n]) => `${n} ${key}`).join(', ')}`)
    }
    await sleep(50)
  }
}

/** Checks the ids an enqueue resolved to: one per task, and task i's own id where it gave one. */
function checkIds(ids, n, own) {
  if (ids.length !== n) throw new Error(`the enqueue resolved to ${ids.length} ids for ${n} tasks`)
  const wrong = own ? ids.findIndex((id, i) => id !== taskId(i)) : -1
  if (wrong >= 0) throw new Error(`task ${wrong} was given id ${ids[wrong]}, not ${taskId(wrong)}`)
}

function checkNoDuplicates(tally) {
  if (tally.duplicates > 0) throw new Error(`${tally.duplicates} tasks ran more than once`)
}

// --- Protoqueue -------------------------------------------------------------------------------

async function connectQueue(ctx, name, options) {
  const queue = new Protoqueue({ streamName: name, subject: `bench.${name}`, options: { batchSize: BATCH_SIZE, ...options } })
  await queue.connect(ctx.nats.url)
  return queue
}

/** A fresh queue for `body`, destroyed after it (its streams deleted, whatever a worker holds). */
async function withQueue(ctx, kind, options, body) {
  const name = `FEAT_${kind.toUpperCase()}_${process.pid}_${ctx.rep}`
  const queue = await connectQueue(ctx, name, options)
  try {
    return await body(queue, name)
  } finally {
    await queue.destroy({ force: true })
  }
}

/** Enqueues N tasks, each with `extra(i)`, in chunks; resolves to their ids and the measurement. */
async function pqEnqueue(ctx, queue, extra) {
  const tasks = Array.from({ length: ctx.n }, (_, i) => ({ data: taskData(i), ...extra(i) }))
  const ids = []
  const enqueue = await measure(ctx.nats.pid, ctx.n, async () => {
    for (let i = 0; i < tasks.length; i += CHUNK) ids.push(...(await queue.enqueueBatch(tasks.slice(i, i + CHUNK))))
  })
  return { ids, enqueue }
}

/** An enqueue-only case: N tasks with `extra(i)`, then a check that the stream holds `expected`. */
function pqEnqueueCase(ctx, kind, extra, expected) {
  return withQueue(ctx, kind, {}, async (queue) => {
    const { ids, enqueue } = await pqEnqueue(ctx, queue, extra)
    checkIds(ids, ctx.n, kind === 'ids')
    await settle('the queue', () => queue.getStats(), expected)
    return { enqueue }
  })
}

/**
 * A processing case: N tasks with `extra(i)` enqueued, then one worker runs them, every handler
 * returning a result (kept only with `options.results` or `keepCompleted`, so the option is the
 * only difference between the cases).
 */
function pqProcessCase(ctx, kind, options, extra) {
  return withQueue(ctx, kind, options, async (queue) => {
    const { ids, enqueue } = await pqEnqueue(ctx, queue, extra)
    checkIds(ids, ctx.n, false)
    const tally = new Tally(ctx.n)
    const handler = (handle) => queue.process(async (task) => {
      handle(task.data)
      return { success: true, result: resultOf(task.data) }
    })
    const processing = await measure(ctx.nats.pid, ctx.n, () => drain(tally, ctx.n, handler))
    const kept = options.results || options.keepCompleted ? ctx.n : 0
    await settle('the queue', () => queue.getStats(), { messages: 0, inFlight: 0, deadLettered: 0, completed: kept })
    checkNoDuplicates(tally)
    return { enqueue, process: processing }
  })
}

/**
 * N dead letters — a worker of its own, with `maxRetries: 0`, fails each task once and stops —
 * then one `requeueDeadLetters()`, timed until it resolves, when every task waits again.
 */
function pqRequeueCase(ctx) {
  return withQueue(ctx, 'requeue', {}, async (queue, name) => {
    const { ids } = await pqEnqueue(ctx, queue, () => ({}))
    checkIds(ids, ctx.n, false)
    const failing = await connectQueue(ctx, name, { maxRetries: 0 })
    try {
      await failing.process(() => ({ success: false, error: 'bench: fails on purpose' }))
      await settle('the queue', () => queue.getStats(), { messages: 0, deadLettered: ctx.n }, RUN_TIMEOUT_MS)
    } finally {
      await failing.disconnect()
    }
    let requeued
    const requeue = await measure(ctx.nats.pid, ctx.n, async () => {
      requeued = await queue.requeueDeadLetters()
    })
    if (requeued !== ctx.n) throw new Error(`requeueDeadLetters() put back ${requeued} of ${ctx.n} letters`)
    await settle('the queue', () => queue.getStats(), { messages: ctx.n, deadLettered: 0 })
    return { requeue }
  })
}

/** D tasks due 1–3 s after their chunk is sent; how late after that their handlers start. */
function pqLatenessCase(ctx) {
  const count = ctx.delayed
  return withQueue(ctx, 'lateness', { schedules: true }, async (queue) => {
    const delays = Array.from({ length: count }, () => DELAY_MIN_MS + Math.floor(Math.random() * DELAY_SPREAD_MS))
    const due = new Float64Array(count)
    const started = performance.now()
    for (let i = 0; i < count; i += CHUNK) {
      const chunk = delays.slice(i, i + CHUNK).map((delay, k) => ({ data: taskData(i + k), delay }))
      const sentAt = Date.now()
      checkIds(await queue.enqueueBatch(chunk), chunk.length, false)
      // Due no earlier than the delay from the moment the chunk was sent.
      chunk.forEach((task, k) => (due[i + k] = sentAt + task.delay))
    }
    const enqueuePerSec = count / ((performance.now() - started) / 1000)
    const lateness = []
    const tally = new Tally(count)
    const handler = (handle) => queue.process((task) => {
      handle(task.data)
      return { success: true }
    })
    await drain(tally, count, handler, (data) => lateness.push(Date.now() - due[data.i]))
    await settle('the queue', () => queue.getStats(), { messages: 0, inFlight: 0, delayed: 0, deadLettered: 0 })
    checkNoDuplicates(tally)
    lateness.sort((a, b) => a - b)
    return { enqueuePerSec, latenessP50Ms: percentile(lateness, 50), latenessP99Ms: percentile(lateness, 99), early: lateness.filter((ms) => ms < 0).length }
  })
}

const PROTOQUEUE_CASES = {
  plain: (ctx) => pqProcessCase(ctx, 'plain', {}, () => ({})),
  ids: (ctx) => pqEnqueueCase(ctx, 'ids', (i) => ({ id: taskId(i) }), { messages: ctx.n }),
  delay: (ctx) => pqEnqueueCase(ctx, 'delay', () => ({ delay: DELAY_MS }), { messages: 0, delayed: ctx.n }),
  priorities: (ctx) => pqProcessCase(ctx, 'priorities', { priorities: true }, (i) => ({ priority: levelOf(i) })),
  results: (ctx) => pqProcessCase(ctx, 'results', { results: RESULTS }, () => ({})),
  history: (ctx) => pqProcessCase(ctx, 'history', { keepCompleted: true }, () => ({})),
  requeue: pqRequeueCase,
  lateness: pqLatenessCase,
}

// --- BullMQ -----------------------------------------------------------------------------------

/** The job counts a BullMQ check compares: every state a job of these cases can be in. */
const NO_JOBS = { wait: 0, prioritized: 0, delayed: 0, active: 0, completed: 0, failed: 0 }

/** A fresh queue for `body` (connected as bench/bullmq.mjs connects); Redis is flushed after it. */
async function withBullQueue(ctx, kind, body) {
  const name = `feat_${kind}_${process.pid}_${ctx.rep}`
  // BullMQ's guide: a Worker's connection needs `maxRetriesPerRequest: null`.
  const connection = new IORedis(ctx.redis.url, { maxRetriesPerRequest: null, enableAutoPipelining: BULLMQ.autoPipelining })
  const queue = new Queue(name, { connection })
  const workers = []
  const startWorker = async (processor, options) => {
    const worker = new Worker(name, processor, { connection, concurrency: BATCH_SIZE, ...options })
    workers.push(worker)
    await worker.waitUntilReady()
    return worker
  }
  try {
    await queue.waitUntilReady()
    return await body({ queue, startWorker, counts: () => queue.getJobCounts(...Object.keys(NO_JOBS)) })
  } finally {
    for (const worker of workers) await worker.close(true)
    await queue.close()
    await connection.quit()
    await ctx.redis.flush()
  }
}

/** `addBulk` of N jobs, each with options `opts(i)`, as bench/bullmq.mjs sends W2; resolves to the ids and the measurement. */
async function bullEnqueue(ctx, queue, opts) {
  const size = BULLMQ.bulkSize(CHUNK)
  const chunks = []
  for (let i = 0; i < ctx.n; i += size) {
    chunks.push(Array.from({ length: Math.min(size, ctx.n - i) }, (_, k) => ({ name: JOB, data: taskData(i + k), opts: opts(i + k) })))
  }
  const ids = new Array(ctx.n)
  let next = 0
  const lane = async () => {
    while (next < chunks.length) {
      const chunk = next++
      const jobs = await queue.addBulk(chunks[chunk])
      jobs.forEach((job, k) => (ids[chunk * size + k] = job.id))
    }
  }
  const enqueue = await measure(ctx.redis.pid, ctx.n, async () => {
    await Promise.all(Array.from({ length: BULLMQ.bulkInFlight }, lane))
  })
  return { ids, enqueue }
}

function bullEnqueueCase(ctx, kind, opts, expected) {
  return withBullQueue(ctx, kind, async ({ queue, counts }) => {
    const { ids, enqueue } = await bullEnqueue(ctx, queue, opts)
    checkIds(ids, ctx.n, kind === 'ids')
    await settle('the queue', counts, { ...NO_JOBS, ...expected })
    return { enqueue }
  })
}

/**
 * How a Worker keeps completed jobs: as bench/bullmq.mjs runs it (the production setting), or at
 * BullMQ's default (every one kept); `kept(n)`: how many of n it leaves in Redis.
 */
const RETENTION = {
  production: { options: { removeOnComplete: BULLMQ.removeOnComplete }, kept: (n) => bullmqCompletedKept('default', n) },
  keepAll: { options: {}, kept: (n) => n },
}

/**
 * N jobs with options `opts(i)` added, then one Worker with `concurrency` 100 and `retention` (a
 * RETENTION entry) runs them, its processor returning the result.
 */
function bullProcessCase(ctx, kind, opts, retention) {
  return withBullQueue(ctx, kind, async ({ queue, startWorker, counts }) => {
    const { ids, enqueue } = await bullEnqueue(ctx, queue, opts)
    checkIds(ids, ctx.n, false)
    const tally = new Tally(ctx.n)
    const handler = (handle) => startWorker(async (job) => {
      handle(job.data)
      return resultOf(job.data)
    }, retention.options)
    const processing = await measure(ctx.redis.pid, ctx.n, () => drain(tally, ctx.n, handler))
    await settle('the queue', counts, { ...NO_JOBS, completed: retention.kept(ctx.n) })
    checkNoDuplicates(tally)
    return { enqueue, process: processing }
  })
}

/** The error the failing worker throws: one object, so no stack is taken per job. */
const FAILURE = new Error('bench: fails on purpose')

/**
 * N failed jobs — a Worker whose processor throws, each job at BullMQ's default of one attempt —
 * then one `retryJobs({ state: 'failed' })`, timed until it resolves, when every job waits again.
 */
function bullRequeueCase(ctx) {
  return withBullQueue(ctx, 'requeue', async ({ queue, startWorker, counts }) => {
    const { ids } = await bullEnqueue(ctx, queue, () => ({}))
    checkIds(ids, ctx.n, false)
    const failing = await startWorker(async () => {
      throw FAILURE
    })
    await settle('the queue', counts, { ...NO_JOBS, failed: ctx.n }, RUN_TIMEOUT_MS)
    await failing.close()
    const requeue = await measure(ctx.redis.pid, ctx.n, () => queue.retryJobs({ state: 'failed' }))
    await settle('the queue', counts, { ...NO_JOBS, wait: ctx.n })
    return { requeue }
  })
}

const BULLMQ_CASES = {
  plain: (ctx) => bullProcessCase(ctx, 'plain', () => ({}), RETENTION.production),
  ids: (ctx) => bullEnqueueCase(ctx, 'ids', (i) => ({ jobId: taskId(i) }), { wait: ctx.n }),
  delay: (ctx) => bullEnqueueCase(ctx, 'delay', () => ({ delay: DELAY_MS }), { delayed: ctx.n }),
  priorities: (ctx) => bullProcessCase(ctx, 'priorities', (i) => ({ priority: levelOf(i) }), RETENTION.production),
  // Every completed job kept: what BullMQ has for Protoqueue's `results` and `keepCompleted`.
  history: (ctx) => bullProcessCase(ctx, 'history', () => ({}), RETENTION.keepAll),
  requeue: bullRequeueCase,
}

// --- The run and its table ----------------------------------------------------------------------

/** The order of a repetition: each case on Protoqueue then BullMQ; reversed every other repetition. */
function scheduleOf(rep, withBullmq) {
  const runs = []
  for (const kind of Object.keys(PROTOQUEUE_CASES)) {
    runs.push(['protoqueue', kind, PROTOQUEUE_CASES[kind]])
    if (withBullmq && BULLMQ_CASES[kind]) runs.push(['bullmq', kind, BULLMQ_CASES[kind]])
  }
  return rep % 2 === 1 ? runs : runs.reverse()
}

const fixed = (value, digits = 0) => value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
const range = (values, digits = 0, unit = '') =>
  `${fixed(median(values), digits)}${unit} (${fixed(Math.min(...values), digits)}–${fixed(Math.max(...values), digits)})`

function describe(result) {
  return Object.entries(result)
    .map(([key, m]) => typeof m === 'object'
      ? `${key} ${fixed(m.perSec)}/s (${fixed(m.clientUsPerTask, 1)} + ${fixed(m.serverUsPerTask, 1)} µs/task, outside ${fixed(m.outsidePct)}%${m.outsidePct > MAX_OUTSIDE_PCT ? ' LOADED' : ''})`
      : `${key} ${fixed(m, key.endsWith('PerSec') ? 0 : 1)}`)
    .join(', ')
}

/**
 * The table's rows: Protoqueue's path, its plain path, BullMQ's equivalent and its plain, each a
 * case and the measurement taken in it; `target`: the least Protoqueue's ratio to its plain path
 * the issue asks for.
 */
const ROWS = [
  {
    path: '`enqueueBatch` with own ids', of: ['ids', 'enqueue'], plain: ['plain', 'enqueue', 'plain `enqueueBatch`'], target: 0.67,
    bullmq: ['ids', 'enqueue', '`addBulk` with `jobId`'], bullmqPlain: ['plain', 'enqueue', 'plain'],
  },
  {
    path: '`enqueueBatch` with priorities (10 levels)', of: ['priorities', 'enqueue'], plain: ['plain', 'enqueue', 'plain `enqueueBatch`'],
    bullmq: ['priorities', 'enqueue', '`addBulk` with `priority`'], bullmqPlain: ['plain', 'enqueue', 'plain'],
  },
  {
    path: 'process, `batchSize` 100, 10 priority levels', of: ['priorities', 'process'], plain: ['plain', 'process', 'plain processing'], target: 0.95,
    bullmq: ['priorities', 'process', '`priority` jobs, concurrency 100'], bullmqPlain: ['plain', 'process', 'plain jobs'],
  },
  {
    path: '`enqueueBatch` with `delay` 1 h', of: ['delay', 'enqueue'], plain: ['plain', 'enqueue', 'plain `enqueueBatch`'], target: 0.8,
    bullmq: ['delay', 'enqueue', '`addBulk` with `delay`'], bullmqPlain: ['plain', 'enqueue', 'plain'],
  },
  {
    path: '`requeueDeadLetters()` of N letters', of: ['requeue', 'requeue'], plain: ['plain', 'enqueue', 'plain `enqueueBatch` of N'],
    bullmq: ['requeue', 'requeue', "`retryJobs({ state: 'failed' })`"], bullmqPlain: ['plain', 'enqueue', 'plain `addBulk`'],
  },
  {
    path: 'W3 b=100, `results: { ttl: 60_000 }`', of: ['results', 'process'], plain: ['plain', 'process', 'plain processing'], target: 0.8,
    bullmq: ['history', 'process', 'completed jobs kept (default)'], bullmqPlain: ['plain', 'process', 'production `removeOnComplete`'],
  },
  {
    path: 'W3 b=100, `keepCompleted: true`', of: ['history', 'process'], plain: ['plain', 'process', 'plain processing'], target: 0.8,
    bullmq: ['history', 'process', 'completed jobs kept (default)'], bullmqPlain: ['plain', 'process', 'production `removeOnComplete`'],
  },
]

/** The timed parts a case's record may hold, each a `measure()` result. */
const TIMED_PARTS = ['enqueue', 'process', 'requeue']

/** tasks/s of `system`'s valid runs of [kind, measurement], by repetition. */
function byRep(records, system, [kind, key]) {
  const values = new Map()
  for (const r of records) if (r.valid && r.system === system && r.kind === kind && r[key]) values.set(r.rep, r[key].perSec)
  return values
}

/** a / b of each repetition that has both. */
function ratiosOf(a, b) {
  return [...a].filter(([rep]) => b.has(rep)).map(([rep, value]) => value / b.get(rep))
}

function targetCell(ratios, target) {
  if (target === undefined) return ''
  const got = median(ratios)
  return got >= target ? `; ≥ ${target}: **met**` : `; ≥ ${target}: **missed** by ${fixed(target - got, 2)}`
}

function row(records, { path, of, plain, target, bullmq, bullmqPlain }) {
  const pq = byRep(records, 'protoqueue', of)
  const pqPlain = byRep(records, 'protoqueue', plain)
  const bull = byRep(records, 'bullmq', bullmq)
  const bullPlain = byRep(records, 'bullmq', bullmqPlain)
  const values = (map) => (map.size > 0 ? range([...map.values()]) : 'no valid run')
  const ratio = (a, b) => {
    const ratios = ratiosOf(a, b)
    return ratios.length > 0 ? range(ratios, 2, '×') : '–'
  }
  const ownRatios = ratiosOf(pq, pqPlain)
  const ownCell = ownRatios.length > 0 ? `${range(ownRatios, 2, '×')}${targetCell(ownRatios, target)}` : '–'
  const bullCell = bull.size > 0 ? `${bullmq[2]}: ${values(bull)}; ${bullmqPlain[2]} ${values(bullPlain)}: ${ratio(bull, bullPlain)}` : '–'
  return `| ${path} | ${values(pq)} | ${plain[2]}: ${values(pqPlain)} | ${ownCell} | ${bullCell} | ${bull.size > 0 ? ratio(pq, bull) : '–'} |`
}

/** CPU per task (client + server, µs) of every measurement, medians per system. */
function cpuTable(records) {
  const lines = ['| case: measured part | Protoqueue µs CPU/task, client + server | BullMQ µs CPU/task, client + server |', '| --- | --- | --- |']
  const parts = [...new Set(records.filter((r) => r.valid).flatMap((r) => TIMED_PARTS.filter((key) => r[key]).map((key) => `${r.kind}: ${key}`)))]
  for (const part of parts) {
    const [kind, key] = part.split(': ')
    const cell = (system) => {
      const runs = records.filter((r) => r.valid && r.system === system && r.kind === kind && r[key]).map((r) => r[key])
      return runs.length > 0 ? `${fixed(median(runs.map((m) => m.clientUsPerTask)), 1)} + ${fixed(median(runs.map((m) => m.serverUsPerTask)), 1)}` : '–'
    }
    lines.push(`| ${part} | ${cell('protoqueue')} | ${cell('bullmq')} |`)
  }
  return lines
}

function latenessTable(records, delayed) {
  const runs = records.filter((r) => r.valid && r.kind === 'lateness')
  if (runs.length === 0) return ['no valid run of the delayed tasks']
  const cell = (key, unit = '') => range(runs.map((r) => r[key]), 0, unit)
  return [
    `| ${fixed(delayed)} delayed tasks due in 1–3 s | enqueue tasks/s | lateness p50 | lateness p99 | started early |`,
    '| --- | --- | --- | --- | --- |',
    `| | ${cell('enqueuePerSec')} | ${cell('latenessP50Ms', ' ms')} | ${cell('latenessP99Ms', ' ms')} | ${runs.reduce((sum, r) => sum + r.early, 0)} |`,
  ]
}

function summaryOf(records, options, machine) {
  const outside = records.filter((r) => r.valid).flatMap((r) => TIMED_PARTS.filter((key) => r[key]).map((key) => r[key].outsidePct))
  return [
    `Feature paths — N=${fixed(options.n)} tasks per case (delayed: ${fixed(options.delayed)}), ${options.reps} reps; ${machine}`,
    '',
    '| path | Protoqueue | its plain path | ratio | BullMQ\'s equivalent (and its plain) | vs BullMQ |',
    '| --- | --- | --- | --- | --- | --- |',
    ...ROWS.map((r) => row(records, r)),
    '',
    ...cpuTable(records),
    '',
    ...latenessTable(records, options.delayed),
    '',
    'tasks/s (requeue: letters/s), median (min–max) over the repetitions; ratios are taken within each repetition, then their median (min–max); ' +
      `a target is met when that median reaches it. Outside CPU during the timed parts: mean ${fixed(outside.reduce((a, b) => a + b, 0) / outside.length)}% of one core, ` +
      `${outside.filter((pct) => pct > MAX_OUTSIDE_PCT).length} of ${outside.length} parts above ${MAX_OUTSIDE_PCT}%.`,
  ].join('\n')
}

function isReleaseBuild() {
  const addons = readdirSync(root).filter((name) => /^protoqueue\..+\.node$/.test(name))
  return addons.length > 0 && addons.every((name) => statSync(join(root, name)).size <= 30 * 1024 * 1024)
}

const loadAverage = () => loadavg().map((load) => load.toFixed(2)).join(' ')

/** Runs every case `reps` times; prints the summary; resolves to the records. */
export async function runFeatures(argv = []) {
  const options = parseArgs(argv)
  if (!isReleaseBuild()) log('WARNING: the native addon is a debug build; numbers are not representative (npm run bench builds release)')
  const resultsDir = join(root, 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const startedAt = new Date()
  const resultsFile = join(resultsDir, `features-${startedAt.toISOString().replace(/[:.]/g, '-')}.jsonl`)
  const write = (record) => appendFileSync(resultsFile, `${JSON.stringify(record)}\n`)
  const loadBefore = loadAverage()
  const nats = await startNatsServer(root)
  const redisServer = findRedisServer()
  if (!redisServer) log(REDIS_MISSING)
  const redis = redisServer && (await startRedisServer(redisServer))
  const records = []
  try {
    write({ type: 'meta', startedAt: startedAt.toISOString(), options, loadBefore, machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, natsServer: nats.version, redisServer: redis?.version } })
    log(`${nats.version}${redis ? `, ${redis.version}` : ''}; N=${options.n}, ${options.reps} reps, load average ${loadBefore}; results → ${resultsFile}`)
    // Repetition 0 warms up (JIT, connections, Redis scripts) on WARMUP_N tasks, so the first
    // measured case pays no more for being first than the others; its records are not in the table.
    for (let rep = 0; rep <= options.reps; rep++) {
      const type = rep === 0 ? 'warmup' : 'run'
      const ctx = { nats, redis, rep, n: rep === 0 ? Math.min(WARMUP_N, options.n) : options.n, delayed: options.delayed }
      for (const [system, kind, run] of scheduleOf(rep, Boolean(redis))) {
        if (type === 'warmup' && kind === 'lateness') continue
        const record = { type, system, kind, rep, n: kind === 'lateness' ? ctx.delayed : ctx.n }
        try {
          const result = await run(ctx)
          Object.assign(record, result, { valid: true })
          log(`${system} ${kind} ${type === 'warmup' ? 'warm-up' : `rep ${rep}`}: ${describe(result)}`)
        } catch (err) {
          Object.assign(record, { valid: false, error: err.message })
          log(`${system} ${kind} ${type === 'warmup' ? 'warm-up' : `rep ${rep}`}: FAILED: ${err.message}`)
        }
        records.push(record)
        write(record)
      }
    }
  } finally {
    await redis?.stop()
    await nats.stop()
  }
  const machine = `${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}, ${nats.version}${redis ? `, ${redis.version}` : ''}, BullMQ ${BULLMQ_VERSION}; load average ${loadBefore} before, ${loadAverage()} after`
  const summary = summaryOf(records.filter((r) => r.type === 'run'), options, machine)
  write({ type: 'summary', table: summary })
  console.log(`\n${summary}\nRaw records: ${resultsFile}`)
  const failed = records.filter((r) => !r.valid)
  if (failed.length > 0) {
    console.error(`\n${failed.length} case run(s) FAILED (left out of the table):`)
    for (const r of failed) console.error(`- ${r.system} ${r.kind} ${r.type === 'warmup' ? 'warm-up' : `rep ${r.rep}`}: ${r.error}`)
    process.exitCode = 1
  }
  return records
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await runFeatures(process.argv.slice(2))
}
