// Soak with accounting: tens of thousands of tasks through worker processes whose handlers fail at
// random, with a fraction of tasks that always fail, workers killed with SIGKILL (and replaced) at
// random moments, and one kill -9 and restart of the server. Afterwards every enqueued id must be
// accounted for: handled successfully at least once, or on the dead-letter stream having used up its
// deliveries. Duplicates (at-least-once delivery) are counted and reported, not hidden.
//
// Size: PQ_SOAK_TASKS (default 20000, the CI size). Long mode, for manual runs:
//   PQ_SOAK_TASKS=500000 npm run test:soak
// PQ_SOAK_SEED replays a run's kill schedule and choice of always-failing tasks (the seed is printed);
// PQ_SOAK_LOG_DIR=/tmp/soak PROTOQUEUE_LOG=protoqueue=debug keeps every worker's log.
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { Protoqueue, type DeadLetter, type QueueStats } from 'protoqueue'

import { Child, fixture, fixtureEnv } from './helpers/child'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually, within } from './helpers/wait'

const TASKS = Number(process.env.PQ_SOAK_TASKS || 20_000)
const SEED = Number(process.env.PQ_SOAK_SEED || Math.floor(Math.random() * 2 ** 31))
const WORKERS = 3
const BATCH_SIZE = 20
const MAX_RETRIES = 2
const MAX_ATTEMPTS = 1 + MAX_RETRIES
/** Short, so a killed worker's tasks come back within the run. */
const ACK_WAIT = 1500
const RETRY_DELAY = 50
/** One attempt in ten fails (decided per id and attempt, see fixtures/worker.mjs). */
const FAIL_ONE_IN = 10
/** One task in a hundred fails on every attempt and must end on the dead-letter stream. */
const ALWAYS_FAIL_ONE_IN = 100
const ENQUEUE_CHUNK = 1_000
/** Worker kills: five in CI, more in long runs (one per 4000 tasks). */
const KILLS = Math.max(5, Math.round(TASKS / 4_000))
/** Where to keep each worker's stderr (set PROTOQUEUE_LOG too for debug logs), when investigating. */
const LOG_DIR = process.env.PQ_SOAK_LOG_DIR
/** Generous bounds that scale with the size: the machine is shared and the CI build is debug. */
const STEP_TIMEOUT = Math.max(120_000, TASKS * 6)

/** mulberry32: a tiny seeded PRNG, so a failing run can be replayed with PQ_SOAK_SEED. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

/** What the workers said they did, per task id, from their `handled`/`failed <id> <attempt>` lines. */
class Ledger {
  readonly succeeded = new Map<string, number[]>()
  readonly failed = new Map<string, number[]>()
  successes = 0
  /** From the workers' `report <rss> <most running>` lines. */
  peakWorkerRss = 0
  mostRunning = 0

  record = (line: string) => {
    const [kind, id, attempt] = line.split(' ')
    if (kind === 'report') {
      this.peakWorkerRss = Math.max(this.peakWorkerRss, Number(id))
      this.mostRunning = Math.max(this.mostRunning, Number(attempt))
      return
    }
    const into = kind === 'handled' ? this.succeeded : kind === 'failed' ? this.failed : undefined
    if (!into) return
    if (into === this.succeeded) this.successes++
    const attempts = into.get(id)
    if (attempts) attempts.push(Number(attempt))
    else into.set(id, [Number(attempt)])
  }
}

/** Worker processes: started, killed at random and replaced, stopped cleanly at the end. */
class WorkerPool {
  private readonly alive = new Set<Child>()
  private readonly killed = new Set<Child>()
  readonly crashed: string[] = []
  started = 0

  constructor(
    private readonly env: Record<string, string>,
    private readonly onLine: (line: string) => void,
  ) {}

  async start(): Promise<void> {
    const child = Child.run('node', [fixture('worker.mjs')], this.env)
    child.onLine(this.onLine)
    const number = ++this.started
    child.exited.then(({ code, signal }) => {
      if (!this.killed.has(child) && code !== 0) this.crashed.push(`exit ${code ?? signal}: ${child.stderr}`)
      if (LOG_DIR) writeFileSync(join(LOG_DIR, `worker-${number}.log`), child.stderr)
    })
    this.alive.add(child)
    await child.waitForLines(/^ready$/, 1, 60_000)
  }

  async killOne(random: () => number): Promise<void> {
    const victims = [...this.alive]
    const victim = victims[Math.floor(random() * victims.length)]
    this.alive.delete(victim)
    this.killed.add(victim)
    await victim.kill('SIGKILL')
  }

  /** SIGTERM: each worker disconnects (its in-flight handlers settle) and then exits by itself. */
  async stop(): Promise<void> {
    await Promise.all(
      [...this.alive].map(async (child) => {
        child.process.kill('SIGTERM')
        const { code } = await within('a worker to exit after SIGTERM', child.exited, 60_000)
        assert.equal(code, 0, child.stderr)
      }),
    )
  }

  async kill(): Promise<void> {
    await Promise.all([...this.alive].map((child) => child.kill('SIGKILL')))
  }
}

test(`soak: ${TASKS} tasks, random failures, worker kills and a server restart; every id accounted for`, { timeout: STEP_TIMEOUT * 3 }, async (t) => {
  const startedAt = Date.now()
  // Two streams of random numbers, so the producer and the chaos schedule do not interleave theirs.
  const pickAlwaysFailing = seededRandom(SEED)
  const random = seededRandom(SEED ^ 0x5bd1e995)
  const server = await NatsServer.start()
  const names = uniqueQueue('soak')
  const ledger = new Ledger()
  const pool = new WorkerPool(
    fixtureEnv(names, server.url, {
      ACK_WAIT: String(ACK_WAIT),
      BATCH_SIZE: String(BATCH_SIZE),
      MAX_RETRIES: String(MAX_RETRIES),
      RETRY_DELAY: String(RETRY_DELAY),
      FAIL_ONE_IN: String(FAIL_ONE_IN),
      QUIET: '1',
      REPORT_MS: '1000',
    }),
    ledger.record,
  )
  // The outage must not fail an enqueue: let enqueues wait out the restart with room to spare.
  const queue = new Protoqueue({ ...names, options: { maxRetries: MAX_RETRIES, enqueueTimeout: 60_000 } })
  try {
    await queue.connect(server.url)
    for (let i = 0; i < WORKERS; i++) await pool.start()

    // Enqueue in chunks while the workers run, so kills and the restart can hit the producer too.
    const alwaysFail = new Set<string>()
    const enqueued: string[] = []
    const producing = (async () => {
      for (let first = 0; first < TASKS; first += ENQUEUE_CHUNK) {
        const tasks = Array.from({ length: Math.min(ENQUEUE_CHUNK, TASKS - first) }, (_, i) => ({
          data: { n: first + i, alwaysFail: pickAlwaysFailing() < 1 / ALWAYS_FAIL_ONE_IN },
        }))
        const ids = await queue.enqueueBatch(tasks)
        ids.forEach((id, i) => tasks[i].data.alwaysFail && alwaysFail.add(id))
        enqueued.push(...ids)
      }
    })()

    // Chaos at random points of progress (counted in successful handler calls), one at a time, so
    // each replacement worker is connected before the next blow.
    const expectedSuccesses = TASKS * (1 - 1 / ALWAYS_FAIL_ONE_IN)
    const at = (from: number, to: number) => Math.floor(expectedSuccesses * (from + random() * (to - from)))
    const chaos = [
      ...Array.from({ length: KILLS }, () => ({ at: at(0.05, 0.85), action: 'kill' as const })),
      { at: at(0.3, 0.6), action: 'restart server' as const },
    ].sort((a, b) => a.at - b.at)
    let kills = 0
    let serverRestarts = 0
    const seconds = () => Math.round((Date.now() - startedAt) / 100) / 10
    const timeline: string[] = []
    producing.then(() => timeline.push(`enqueued ${TASKS} @${seconds()}s`))
    // The longest time without a single success while tasks remained: a stalled worker loop shows here.
    let longestStallMs = 0
    let firstSuccessAfterRestartMs = -1
    let lastProgress = { at: Date.now(), successes: 0 }
    const sampler = setInterval(() => {
      if (ledger.successes !== lastProgress.successes) lastProgress = { at: Date.now(), successes: ledger.successes }
      else longestStallMs = Math.max(longestStallMs, Date.now() - lastProgress.at)
    }, 100)
    for (const { at: progress, action } of chaos) {
      await eventually(`${progress} successes before the next ${action}`, () => ledger.successes >= progress, STEP_TIMEOUT)
      if (action === 'kill') {
        await pool.killOne(random)
        kills++
        await pool.start()
      } else {
        await server.restart()
        serverRestarts++
        const restartedAt = Date.now()
        const successes = ledger.successes
        eventually('a success after the server restart', () => ledger.successes > successes, STEP_TIMEOUT)
          .then(() => (firstSuccessAfterRestartMs = Date.now() - restartedAt), () => {})
      }
      // Long runs kill a hundred times and more: list the kills only when they are few.
      if (action !== 'kill' || KILLS <= 10) timeline.push(`${action} @${seconds()}s after ${ledger.successes} successes`)
    }

    await within('the producer', producing, STEP_TIMEOUT)
    // Drained: nothing left to deliver or in flight, and every message still stored is one the
    // consumer has acknowledged already. A kill -9 of nats-server can leave such an orphan behind:
    // the consumer's ack floor reached the disk, the message's removal did not. The consumer never
    // delivers it again; its id must still have been handled or dead-lettered (reconciled below).
    let lastStats: unknown
    let orphans: StoredTask[] = []
    await eventually('the queue to drain', async () => {
      const stats = await queue.getStats()
      lastStats = stats
      if (stats.pending !== 0 || stats.inFlight !== 0) return false
      if (stats.messages === 0) return true
      const stored = await storedTasks(server.url, names.streamName, stats)
      orphans = stored.tasks.filter((task) => task.sequence <= stored.ackFloor)
      return orphans.length === stored.tasks.length
    }, STEP_TIMEOUT).catch((err: Error) => {
      throw new Error(`${err.message}; last stats: ${JSON.stringify(lastStats)}; ${timeline.join(', ')}`)
    })
    if (orphans.length > 0) timeline.push(`left by the server restart, acknowledged: ${orphans.map((o) => `${o.id} @${o.sequence}`).join(', ')}`)
    clearInterval(sampler)
    // Stop the workers before reading their ledgers: a handler still running for a duplicate
    // delivery prints its line before its worker exits.
    await pool.stop()
    const drainedAt = Date.now()
    const letters = await queue.getDeadLetters(TASKS + 1)
    const stats = await queue.getStats()
    const lettersReadMs = Date.now() - drainedAt

    const report = reconcile(enqueued, alwaysFail, ledger, letters)
    const summary = {
      tasks: TASKS,
      seed: SEED,
      workersStarted: pool.started,
      kills,
      serverRestarts,
      handlerSuccesses: ledger.successes,
      peakWorkerRssMb: Math.round(ledger.peakWorkerRss / 2 ** 20),
      handlerFailures: [...ledger.failed.values()].reduce((sum, attempts) => sum + attempts.length, 0),
      duplicates: report.duplicates,
      deadLetters: letters.length,
      deadLettersStoredTwice: report.lettersStoredTwice,
      ...report.reasons,
      succeededAndDeadLettered: report.succeededAndDeadLettered.length,
      lettersReadMs,
      longestStallMs,
      firstSuccessAfterRestartMs,
      durationS: seconds(),
      timeline,
    }
    t.diagnostic(`soak summary ${JSON.stringify(summary)}`)
    for (const example of report.examples) t.diagnostic(example)

    assert.deepEqual(pool.crashed, [], 'no worker died except those the test killed')
    assert.equal(enqueued.length, TASKS)
    assert.equal(new Set(enqueued).size, TASKS, 'enqueueBatch returned unique ids')
    assert.deepEqual(report.unknown, [], 'workers and dead letters name only enqueued ids')
    assert.deepEqual(report.missing, [], 'every id succeeded or was dead-lettered')
    assert.deepEqual(report.alwaysFailSucceeded, [], 'an always-failing task never succeeds')
    assert.deepEqual(report.alwaysFailNotDeadLettered, [], 'every always-failing task is dead-lettered')
    assert.deepEqual(report.badLetters, [], 'every dead letter used up its deliveries')
    assert.deepEqual(report.unexplainedOverlap, [], 'a success followed by a dead letter only when its ack was lost')
    assert.equal(stats.deadLettered, letters.length, 'getDeadLetters read every dead letter')
    assert.ok(ledger.mostRunning <= BATCH_SIZE, `at most batchSize handlers at once per worker (saw ${ledger.mostRunning})`)
    assert.equal(kills, KILLS)
    assert.equal(serverRestarts, 1)
  } finally {
    await pool.kill()
    await queue.disconnect().catch(() => {})
    await server.stop()
  }
})

/** A task message still stored in the stream. */
interface StoredTask {
  sequence: number
  id: string
}

/**
 * The task messages `stats` counts in `stream`, and the stream sequence up to which the queue's
 * consumer has acknowledged everything, read with nats.js.
 */
async function storedTasks(url: string, stream: string, stats: QueueStats): Promise<{ tasks: StoredTask[]; ackFloor: number }> {
  const { firstSequence: first, lastSequence: last, messages: count } = stats
  const nc = await connect({ servers: url })
  try {
    const jsm = await jetstreamManager(nc)
    const consumer = await jsm.consumers.info(stream, 'protoqueue-workers')
    const tasks: StoredTask[] = []
    // The first sequence is always a stored message; removed ones may lie between the others.
    for (let seq = first; tasks.length < count && seq <= last; seq++) {
      const message = await jsm.streams.getMessage(stream, { seq })
      if (message) tasks.push({ sequence: seq, id: message.header?.get('Nats-Msg-Id') ?? '(no id)' })
    }
    return { tasks, ackFloor: consumer.ack_floor.stream_seq }
  } finally {
    await nc.close()
  }
}

/** Compares what was enqueued with what the workers did and what the dead-letter stream holds. */
function reconcile(enqueued: string[], alwaysFail: Set<string>, ledger: Ledger, letters: DeadLetter[]) {
  const ids = new Set(enqueued)
  const lettersById = new Map<string, DeadLetter[]>()
  for (const letter of letters) {
    const id = letter.task?.id ?? `(no task: ${letter.reason})`
    lettersById.set(id, [...(lettersById.get(id) ?? []), letter])
  }
  const history = (id: string) => `handled on attempts [${ledger.succeeded.get(id) ?? []}], failed on [${ledger.failed.get(id) ?? []}]`
  const reasons: Record<string, number> = {}
  for (const letter of letters) reasons[letter.reason] = (reasons[letter.reason] ?? 0) + 1

  const badLetters: string[] = []
  for (const [id, [letter]] of lettersById) {
    const failedAttempts = ledger.failed.get(id) ?? []
    // retriesExhausted: the handler failed on the last allowed attempt. deliveriesExhausted: more
    // deliveries than the stalled-delivery budget ended without an outcome (killed workers, acks
    // lost in the server restart); it names the attempt it would have been.
    const ok =
      (letter.reason === 'retriesExhausted' &&
        letter.attempts === MAX_ATTEMPTS &&
        failedAttempts.includes(MAX_ATTEMPTS) &&
        letter.error === `planned failure on attempt ${MAX_ATTEMPTS}`) ||
      (letter.reason === 'deliveriesExhausted' && letter.attempts <= MAX_ATTEMPTS)
    if (!ok) badLetters.push(`${id}: ${letter.reason} after ${letter.attempts} attempts; ${history(id)}`)
  }

  // A success whose ack never reached the server (its worker was killed, or the server restarted)
  // is delivered again; if the later deliveries fail, the task ends as a dead letter although a
  // handler once succeeded. That is at-least-once delivery, not loss, and is reported. Evidence
  // that the ack was lost: a failed run of the same attempt as the (last) successful one, or of a
  // later one (a run whose outcome was lost is not an attempt, so the attempt is run again).
  const succeededAndDeadLettered = [...ledger.succeeded.keys()].filter((id) => lettersById.has(id))
  const unexplainedOverlap = succeededAndDeadLettered.filter((id) => {
    const lastRun = Math.max(lettersById.get(id)![0].attempts, ...(ledger.failed.get(id) ?? []))
    return Math.max(...ledger.succeeded.get(id)!) > lastRun
  })

  // The rare outcomes, shown with what the workers did, so a reader can check the explanation.
  const describe = (id: string) => lettersById.get(id)!.map((l) => `${l.reason} after ${l.attempts} deliveries`).join(', ')
  const examples = [
    ...letters.filter((l) => l.reason === 'deliveriesExhausted').map((l) => l.task?.id ?? ''),
    ...succeededAndDeadLettered,
  ]
    .slice(0, 10)
    .map((id) => `example: ${id}: ${describe(id)}; ${history(id)}`)

  return {
    reasons,
    examples,
    duplicates: [...ledger.succeeded.values()].filter((attempts) => attempts.length > 1).length,
    lettersStoredTwice: [...lettersById.values()].filter((copies) => copies.length > 1).length,
    missing: enqueued.filter((id) => !ledger.succeeded.has(id) && !lettersById.has(id)),
    unknown: [...new Set([...ledger.succeeded.keys(), ...ledger.failed.keys(), ...lettersById.keys()])].filter((id) => !ids.has(id)),
    alwaysFailSucceeded: [...alwaysFail].filter((id) => ledger.succeeded.has(id)),
    alwaysFailNotDeadLettered: [...alwaysFail].filter((id) => !lettersById.has(id)),
    badLetters,
    succeededAndDeadLettered,
    unexplainedOverlap,
  }
}
