// The child side of a benchmark run, shared by the JavaScript runners (protoqueue.mjs, natsjs.mjs).
// A runner supplies an adapter for its client; this module runs the workloads on it, counts every
// task and talks to the driver (bench/run.mjs) over one line protocol, which wire_limit.rs speaks
// too:
//   child  → {"event":"ready"}            set-up done (connected, stream made, W3 backlog enqueued)
//   driver → go                           after it sampled the CPU counters
//   child  → {"event":"done", ...result}  the timed part is over
//   driver → finish                       after it sampled again; the child cleans up and exits
// Runs in Node and in Bun.
import { createInterface } from 'node:readline'

/**
 * What a runner implements for its client. Every method works on the run's own stream.
 * @typedef {object} Adapter
 * @property {() => Promise<void>} connect             connects and creates the stream
 * @property {(data: object) => Promise<void>} enqueue  one task, resolved once the server stored it
 * @property {(tasks: object[]) => Promise<void>} enqueueMany  W2: the client's fastest batch path
 * @property {(handle: (data: object) => Promise<void>) => Promise<void>} process
 *   starts a worker that runs up to `spec.batchSize` tasks at once through `handle`, acking each after it
 * @property {() => Promise<void>} close               settles what is outstanding and disconnects
 */

/** The run's spec, from the driver: { workload, n, batchSize, window, rate, url, stream, subject }. */
export function readSpec() {
  const spec = JSON.parse(process.argv[2] ?? 'null')
  if (!spec) throw new Error(`usage: ${process.argv[1]} '<run spec as JSON>' (bench/run.mjs starts runners)`)
  return spec
}

/** The ~64-byte JSON task every system sends (wire_limit.rs `task_json` builds the same). */
export function taskData(i, sentAt) {
  const data = { i, to: `user${i}@example.com`, template: 'welcome-email' }
  if (sentAt !== undefined) data.sentAt = sentAt
  return data
}

function tasks(n) {
  return Array.from({ length: n }, (_, i) => taskData(i))
}

/** Runs the spec's workload on `adapter` and reports to the driver; exits non-zero on error. */
export async function runBenchmark(adapter, spec) {
  const driver = new DriverLink()
  try {
    await adapter.connect()
    const result = await WORKLOADS[spec.workload](adapter, spec, driver)
    driver.send({ event: 'done', ...result })
    await driver.expect('finish')
    await adapter.close()
  } catch (err) {
    console.error(err)
    process.exitCode = 1
  } finally {
    driver.close()
  }
}

const WORKLOADS = {
  /** W1: enqueue, await, next. */
  async w1(adapter, spec, driver) {
    const all = tasks(spec.n)
    await driver.readyAndGo()
    const start = performance.now()
    for (const data of all) await adapter.enqueue(data)
    return throughput(spec.n, spec.n, 0, performance.now() - start)
  },

  /** W2: the client's batch path (Protoqueue: enqueueBatch chunks; nats.js: a publish window). */
  async w2(adapter, spec, driver) {
    const all = tasks(spec.n)
    await driver.readyAndGo()
    const start = performance.now()
    await adapter.enqueueMany(all)
    return throughput(spec.n, spec.n, 0, performance.now() - start)
  },

  /** W5: `producers` concurrent callers, each awaiting one enqueue at a time (request handlers). */
  async w5(adapter, spec, driver) {
    const all = tasks(spec.n)
    let next = 0
    const producer = async () => {
      while (next < all.length) await adapter.enqueue(all[next++])
    }
    await driver.readyAndGo()
    const start = performance.now()
    await Promise.all(Array.from({ length: spec.producers }, producer))
    return throughput(spec.n, spec.n, 0, performance.now() - start)
  },

  /** W3: N tasks enqueued before timing; from the first handler start to the last handler end. */
  async w3(adapter, spec, driver) {
    await adapter.enqueueMany(tasks(spec.n))
    const tally = new Tally(spec.n)
    let first
    await driver.readyAndGo()
    const finished = tally.complete()
    await adapter.process(async (data) => {
      first ??= performance.now()
      tally.record(data.i)
    })
    const end = await finished
    return throughput(spec.n, tally.distinct, tally.duplicates, end - first)
  },

  /** W4: a producer enqueues at `rate` tasks/s with its send time; the handler records start − send. */
  async w4(adapter, spec, driver) {
    const tally = new Tally(spec.n)
    const latencies = []
    await driver.readyAndGo()
    const finished = tally.complete()
    await adapter.process(async (data) => {
      latencies.push(performance.now() - data.sentAt)
      tally.record(data.i)
    })
    const start = performance.now()
    const stored = []
    for (let i = 0; i < spec.n; i++) {
      // Open loop: a slow acknowledgement must not hold back the next send.
      const due = start + (i * 1000) / spec.rate
      const wait = due - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      stored.push(adapter.enqueue(taskData(i, performance.now())))
    }
    await Promise.all(stored)
    const end = await finished
    latencies.sort((a, b) => a - b)
    return {
      ...throughput(spec.n, tally.distinct, tally.duplicates, end - start),
      latency: { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), max: latencies.at(-1) ?? 0 },
    }
  },
}

function throughput(count, distinct, duplicates, elapsedMs) {
  return { count, distinct, duplicates, elapsedMs }
}

/** Nearest-rank percentile of sorted values (the same rule as wire_limit.rs). */
function percentile(sorted, p) {
  if (sorted.length === 0) return 0
  const rank = Math.ceil(p * sorted.length)
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1]
}

/** Counts handled task indexes, so a runner that loses or repeats a task is caught. */
class Tally {
  distinct = 0
  duplicates = 0
  #seen
  #resolve

  constructor(n) {
    this.#seen = new Uint8Array(n)
  }

  /** Resolves to the time the last distinct task was recorded. */
  complete() {
    return new Promise((resolve) => {
      this.#resolve = resolve
    })
  }

  record(index) {
    if (this.#seen[index] === 0) {
      this.#seen[index] = 1
      this.distinct++
      if (this.distinct === this.#seen.length) this.#resolve(performance.now())
    } else {
      this.duplicates++
    }
  }
}

/** stdin/stdout lines to and from the driver. */
class DriverLink {
  #lines = createInterface({ input: process.stdin })
  #next = this.#lines[Symbol.asyncIterator]()

  send(message) {
    process.stdout.write(`${JSON.stringify(message)}\n`)
  }

  async expect(word) {
    const { value, done } = await this.#next.next()
    if (done || value.trim() !== word) throw new Error(`expected "${word}" from the driver, got ${done ? 'end of input' : JSON.stringify(value)}`)
  }

  async readyAndGo() {
    this.send({ event: 'ready' })
    await this.expect('go')
  }

  close() {
    this.#lines.close()
    process.stdin.destroy()
  }
}
