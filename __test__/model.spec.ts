// The whole lifecycle, checked against a model: random sequences of operations (enqueue and
// enqueueBatch with and without own ids, delays and priorities; handlers that succeed, fail, or
// refuse a retry; requeueing and removing dead letters; purge; pause and resume; cancel; the
// server restarted or killed -9) run through the public API against a real nats-server, while a
// worker handles tasks. After each quiescent point every acknowledged enqueue must be in exactly
// one place the model allows — handled, dead-lettered, cancelled, purged, or never stored because
// its id was taken — and `getStats()` must agree.
//
// fast-check (`fc.commands`, `fc.asyncModelRun`) generates and shrinks the sequences: a failure
// prints its seed and the shortest sequence that shows it. `PQ_MODEL_RUNS` sets how many
// sequences (default 4 per queue shape), `PQ_MODEL_SEED` replays one, `PQ_MODEL_SECONDS` runs
// for that long instead (the soak: `npm run soak`).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import fc from 'fast-check'
import { Protoqueue } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually } from './helpers/wait'

type Behaviour = 'ok' | 'fail' | 'reject'

/** What a task of the model does when handled; its key is unique to one enqueue call. */
interface Data {
  key: string
  behaviour: Behaviour
}

interface Spec {
  behaviour: Behaviour
  /** An own id from a small pool, so ids are reused and collide. */
  id?: string
  maxRetries: 0 | 1
  delay?: number
  priority?: number
}

/** What the model knows of one enqueue call's task. */
interface Known {
  key: string
  spec: Spec
  /** `stored`: must end in its place; `dropped`: its id was taken, must never appear; `either`. */
  fate: 'stored' | 'dropped' | 'either'
  /** Due at (ms since the epoch). */
  dueAt: number
  cancelled: boolean
  /** Requeued since it last reached its place. */
  requeued: number
  /** May have been removed by a purge (it could have been waiting then). */
  purgeable: boolean
  /** Known to be in its final place at the last quiescent point. */
  settled: boolean
  /** Was stored when the server was killed: its ack may be lost, so it may run again. */
  mayRepeat: boolean
  /** Enqueued while the queue was paused: no worker could have taken it since. */
  enqueuedPaused: boolean
}

/** The model's key of a dead letter's task (its data is always the model's `Data`). */
function keyOf(data: Data | Buffer | undefined): string | undefined {
  return data === undefined || Buffer.isBuffer(data) ? undefined : data.key
}

interface Handled {
  key: string
  attempt: number
  outcome: Behaviour
  at: number
}

const IDS = ['order-1', 'order-2', 'order-3']

class Model {
  readonly tasks: Known[] = []
  paused = false
  purged = 0
  private counter = 0

  nextKey(): string {
    this.counter += 1
    return `k${this.counter}`
  }

  /** The last task enqueued with `id` that may still hold it. */
  holderOf(id: string): Known | undefined {
    return [...this.tasks].reverse().find((task) => task.spec.id === id && task.fate !== 'dropped')
  }

  /** What enqueueing `id` now must do: store, drop (taken), or either (not known). */
  fateOf(id: string | undefined): Known['fate'] {
    if (id === undefined) return 'stored'
    const holder = this.holderOf(id)
    if (!holder) return 'stored'
    if (holder.cancelled) return 'stored'
    if (holder.settled && holder.requeued === 0) return 'stored'
    // A delayed task not yet due holds its id for sure (unless purged, which needs it due).
    if (holder.fate === 'stored' && holder.dueAt > Date.now() + 2_000) return 'dropped'
    // Enqueued behind a pause that still holds, nothing purged since: waiting, so held.
    if (holder.fate === 'stored' && this.paused && holder.enqueuedPaused && !holder.purgeable && holder.dueAt <= Date.now()) return 'dropped'
    return 'either'
  }
}

class Real {
  readonly handled: Handled[] = []
  queue!: Protoqueue<Data>

  constructor(
    readonly server: NatsServer,
    readonly names: { streamName: string; subject: string },
    readonly priorities: boolean,
  ) {}

  async open(): Promise<void> {
    this.queue = new Protoqueue<Data>({
      ...this.names,
      // ackWait bounds how long a task whose ack a kill -9 lost stays in flight (the quiescent
      // points wait for it); it changes when, never whether, a task is redelivered.
      options: { schedules: true, priorities: this.priorities, maxRetries: 1, retryDelay: 50, batchSize: 4, ackWait: 5_000 },
    })
    await this.queue.connect(this.server.url)
    await this.queue.process(async (task) => {
      const { key, behaviour } = task.data
      this.handled.push({ key, attempt: task.attempt ?? 0, outcome: behaviour, at: Date.now() })
      await new Promise((resolve) => setImmediate(resolve))
      if (behaviour === 'ok') return { success: true }
      return { success: false, retry: behaviour !== 'reject', error: `${key} failed` }
    })
  }

  async close(): Promise<void> {
    await this.queue.disconnect()
  }
}

type Cmd = fc.AsyncCommand<Model, Real>

function taskOf(model: Model, spec: Spec, priorities: boolean) {
  const key = model.nextKey()
  const task = {
    data: { key, behaviour: spec.behaviour },
    maxRetries: spec.maxRetries,
    ...(spec.id !== undefined ? { id: spec.id } : {}),
    ...(spec.delay !== undefined ? { delay: spec.delay } : {}),
    ...(priorities && spec.priority !== undefined ? { priority: spec.priority } : {}),
  }
  return { key, task }
}

function remember(model: Model, key: string, spec: Spec, fate: Known['fate']): void {
  model.tasks.push({
    key,
    spec,
    fate,
    dueAt: Date.now() + (spec.delay ?? 0),
    cancelled: false,
    requeued: 0,
    purgeable: false,
    settled: false,
    mayRepeat: false,
    enqueuedPaused: model.paused,
  })
}

class Enqueue implements Cmd {
  constructor(
    readonly specs: Spec[],
    readonly batch: boolean,
  ) {}
  check(): boolean {
    return true
  }
  async run(model: Model, real: Real): Promise<void> {
    const made = this.specs.map((spec) => ({ spec, ...taskOf(model, spec, real.priorities) }))
    // Ids repeated within one call: the first decides, the others resolve like it and store nothing.
    const seen = new Set<string>()
    const fates = made.map(({ spec }) => {
      if (spec.id !== undefined && seen.has(spec.id)) return 'dropped' as const
      if (spec.id !== undefined) seen.add(spec.id)
      return model.fateOf(spec.id)
    })
    const ids = this.batch
      ? await real.queue.enqueueBatch(made.map(({ task }) => task))
      : await Promise.all(made.map(({ task }) => real.queue.enqueue(task)))
    made.forEach(({ key, spec }, i) => {
      if (spec.id !== undefined) assert.equal(ids[i], spec.id, 'an own id resolves to itself')
      remember(model, key, spec, fates[i])
    })
  }
  toString(): string {
    return `${this.batch ? 'enqueueBatch' : 'enqueue'}(${JSON.stringify(this.specs)})`
  }
}

class Settle implements Cmd {
  check(): boolean {
    return true
  }
  async run(model: Model, real: Real): Promise<void> {
    if (model.paused) {
      await real.queue.resume()
      model.paused = false
    }
    await quiescent(model, real)
    await verify(model, real)
  }
  toString(): string {
    return 'settle'
  }
}

class Requeue implements Cmd {
  constructor(readonly id?: string) {}
  check(): boolean {
    return true
  }
  async run(model: Model, real: Real): Promise<void> {
    // Letters keep coming while workers run: every task that may be a letter now may be requeued.
    await real.queue.requeueDeadLetters(this.id === undefined ? {} : { ids: [this.id] })
    for (const known of model.tasks) {
      if (known.spec.behaviour === 'ok' || known.fate === 'dropped') continue
      if (this.id !== undefined && known.spec.id !== this.id) continue
      known.requeued += 1
      known.settled = false
    }
  }
  toString(): string {
    return `requeueDeadLetters(${this.id ?? ''})`
  }
}

class Purge implements Cmd {
  check(): boolean {
    return true
  }
  async run(model: Model, real: Real): Promise<void> {
    const now = Date.now()
    model.purged += await real.queue.purge()
    for (const task of model.tasks) {
      if (task.fate !== 'dropped' && !task.settled && task.dueAt <= now + 50) task.purgeable = true
    }
  }
  toString(): string {
    return 'purge'
  }
}

class Pause implements Cmd {
  check(model: Model): boolean {
    return !model.paused
  }
  async run(model: Model, real: Real): Promise<void> {
    await real.queue.pause()
    model.paused = true
  }
  toString(): string {
    return 'pause'
  }
}

class Resume implements Cmd {
  check(model: Model): boolean {
    return model.paused
  }
  async run(model: Model, real: Real): Promise<void> {
    await real.queue.resume()
    model.paused = false
  }
  toString(): string {
    return 'resume'
  }
}

class Cancel implements Cmd {
  constructor(readonly id: string) {}
  check(): boolean {
    return true
  }
  async run(model: Model, real: Real): Promise<void> {
    const cancelled = await real.queue.cancel(this.id)
    if (!cancelled) return
    // Only a task stored with a delay has a schedule to remove: the one holding the id if the
    // model knows it stored, else one whose enqueue may have been stored.
    const candidates = model.tasks.filter(
      (task) => task.spec.id === this.id && (task.spec.delay ?? 0) > 0 && !task.cancelled && task.fate !== 'dropped',
    )
    const delayed = candidates.find((task) => task.fate === 'stored') ?? candidates.at(-1)
    assert.ok(delayed, `cancel(${this.id}) found a delayed task the model does not know`)
    delayed.cancelled = true
  }
  toString(): string {
    return `cancel(${this.id})`
  }
}

class Restart implements Cmd {
  check(): boolean {
    return true
  }
  async run(model: Model, real: Real): Promise<void> {
    for (const task of model.tasks) if (!task.settled) task.mayRepeat = true
    await real.server.restart()
  }
  toString(): string {
    return 'server kill -9 + restart'
  }
}

/** Waits until every task that can run has run: nothing waiting or in flight, delays past. */
async function quiescent(model: Model, real: Real): Promise<void> {
  const lastDue = Math.max(0, ...model.tasks.filter((task) => !task.cancelled).map((task) => task.dueAt))
  const wait = lastDue - Date.now()
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait + 100))
  let last = -1
  let stableSince = Date.now()
  await eventually(
    'the queue to be quiescent',
    async () => {
      const stats = await real.queue.getStats()
      if (stats.pending !== 0 || stats.inFlight !== 0 || stats.messages !== 0 || stats.delayed !== 0) {
        last = -1
        return false
      }
      if (real.handled.length !== last) {
        last = real.handled.length
        stableSince = Date.now()
        return false
      }
      return Date.now() - stableSince > 150
    },
    20_000,
  )
}

/** Every acknowledged enqueue is in exactly one place the model allows; stats agree. */
async function verify(model: Model, real: Real): Promise<void> {
  const letters = await real.queue.getDeadLetters(10_000)
  const lettered = new Map<string, number>()
  for (const letter of letters) {
    const key = keyOf(letter.task?.data)
    assert.ok(key, `a letter without a model task: ${JSON.stringify(letter)}`)
    lettered.set(key, (lettered.get(key) ?? 0) + 1)
  }
  const runs = new Map<string, Handled[]>()
  for (const record of real.handled) runs.set(record.key, [...(runs.get(record.key) ?? []), record])

  let missing = 0
  for (const task of model.tasks) {
    const ran = runs.get(task.key) ?? []
    const letterCount = lettered.get(task.key) ?? 0
    const where = `${task.key} ${JSON.stringify(task.spec)} fate=${task.fate} ran=${ran.length} letters=${letterCount}`
    if (task.fate === 'dropped') {
      assert.equal(ran.length + letterCount, 0, `its id was taken, yet it was stored: ${where}`)
      continue
    }
    if (task.cancelled) {
      assert.equal(ran.length + letterCount, 0, `cancelled, yet it ran: ${where}`)
      continue
    }
    if (task.fate === 'either' && ran.length + letterCount === 0) {
      // Its id was taken when it was enqueued (never stored), or — if a purge could have
      // reached it — it was stored and purged: either is allowed, and neither is a loss the
      // purge count must explain.
      task.fate = 'dropped'
      continue
    }
    if (task.spec.behaviour === 'ok') {
      const successes = ran.length
      assert.equal(letterCount, 0, `a task that succeeds was dead-lettered: ${where}`)
      if (successes === 0) {
        assert.ok(task.purgeable, `never handled and not purged: ${where}`)
        missing += 1
      } else {
        // At least once: a kill -9 can lose the ack of a task handled just before.
        if (!task.mayRepeat) assert.equal(successes, 1, `handled successfully more than once: ${where}`)
      }
    } else {
      // Each run of it (first, then one per requeue) ends in a letter; only the last one stays.
      if (letterCount === 0) {
        assert.ok(task.purgeable, `failed for good but on neither stream: ${where}`)
        missing += 1
      } else {
        assert.equal(letterCount, 1, `dead-lettered more than once: ${where}`)
      }
      const attempts = task.spec.behaviour === 'reject' ? 1 : task.spec.maxRetries + 1
      // A kill -9 can lose an attempt's outcome: that run was a stalled delivery, not an attempt.
      const stalls = task.mayRepeat ? 5 : 0
      assert.ok(ran.length <= attempts * (task.requeued + 1) + stalls, `ran more often than allowed: ${where}`)
    }
    task.settled = true
  }
  assert.ok(missing <= model.purged, `${missing} tasks missing, ${model.purged} purged`)
  const stats = await real.queue.getStats()
  assert.equal(stats.deadLettered, letters.length, 'getStats().deadLettered agrees with the letters')
  assert.equal(stats.paused, false)
}

function commands(priorities: boolean) {
  const spec: fc.Arbitrary<Spec> = fc.record(
    {
      behaviour: fc.constantFrom<Behaviour>('ok', 'ok', 'fail', 'reject'),
      id: fc.constantFrom(...IDS),
      maxRetries: fc.constantFrom<0 | 1>(0, 1),
      delay: fc.integer({ min: 0, max: 1_500 }),
      priority: fc.integer({ min: 1, max: 10 }),
    },
    { requiredKeys: ['behaviour', 'maxRetries'] },
  )
  return [
    fc.array(spec, { minLength: 1, maxLength: 3 }).map((specs) => new Enqueue(specs, false)),
    fc.array(spec, { minLength: 1, maxLength: 6 }).map((specs) => new Enqueue(specs, true)),
    fc.constant(new Settle()),
    fc.option(fc.constantFrom(...IDS), { nil: undefined }).map((id) => new Requeue(id)),
    fc.constant(new Purge()),
    fc.constant(new Pause()),
    fc.constant(new Resume()),
    fc.constantFrom(...IDS).map((id) => new Cancel(id)),
    fc.constant(new Restart()),
  ]
}

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

const runs = Number(process.env.PQ_MODEL_RUNS ?? 3)
const seconds = Number(process.env.PQ_MODEL_SECONDS ?? 0)
// `npm test` replays the same sequences every time (a fixed seed: a failure there is a change's,
// not luck's); the long run (`PQ_MODEL_SECONDS`) explores new ones, each failure printing its seed.
const seed = process.env.PQ_MODEL_SEED !== undefined ? Number(process.env.PQ_MODEL_SEED) : seconds > 0 ? undefined : 20261206
const path = process.env.PQ_MODEL_PATH

const shapes = process.env.PQ_MODEL_SHAPE === undefined ? [false, true] : [process.env.PQ_MODEL_SHAPE === 'priorities']
// Shrinking re-runs sequences (each waits for quiescent points): bound it, keeping the shortest
// failing sequence found so far.
const budget = seconds > 0 ? seconds * 1_000 : 300_000

for (const priorities of shapes) {
  describe(`the lifecycle model (${priorities ? 'priorities, ' : ''}schedules)`, () => {
    test('random sequences of operations and faults keep every task in one place the model allows', { timeout: Math.max(600_000, seconds * 1_500) }, async () => {
      const property = fc.asyncProperty(fc.commands(commands(priorities), { maxCommands: 20 }), async (cmds) => {
        const real = new Real(server, uniqueQueue('model'), priorities)
        await real.open()
        const model = new Model()
        try {
          await fc.asyncModelRun(() => ({ model, real }), [...cmds, new Settle()])
        } finally {
          await real.close()
        }
      })
      await fc.assert(property, {
        numRuns: seconds > 0 || path !== undefined ? Number.MAX_SAFE_INTEGER : runs,
        interruptAfterTimeLimit: budget,
        markInterruptAsFailure: false,
        ...(seed !== undefined ? { seed } : {}),
        ...(path !== undefined ? { path } : {}),
        verbose: 1,
        includeErrorInReport: true,
      })
    })
  })
}
