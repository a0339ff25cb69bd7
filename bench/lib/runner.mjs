// The child side of a benchmark run, shared by the JavaScript runners (protoqueue.mjs, natsjs.mjs).
// A runner supplies an adapter for its client; this module runs the workloads on it, counts every
// task and talks to the driver (bench/run.mjs) over one line protocol, which wire_limit.rs speaks
// too:
//   child  → {"event":"ready"}            set-up done (connected, stream made, W3 backlog enqueued)
//   driver → go                           after it sampled the CPU counters
//   child  → {"event":"done", ...result}  the timed part is over
//   driver → finish                       after it sampled again; the child cleans up and exits
// W6 with `spec.split` runs its worker in a second process (the same runner, `spec.role` 'worker'),
// which this one starts and speaks the same kind of lines with; its pid goes to the driver with
// "ready", so the run's client CPU counts both processes.
// Runs in Node and in Bun.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { BroadcastChannel } from 'node:worker_threads'

import { CPU_CHANNEL, cpuTask } from './cpu-work.mjs'

/**
 * What a runner implements for its client. Every method works on the run's own stream.
 * @typedef {object} Adapter
 * @property {() => Promise<void>} connect             connects and creates the stream
 * @property {(data: object) => Promise<void>} enqueue  one task, resolved once the server stored it
 * @property {(tasks: object[]) => Promise<void>} enqueueMany  W2: the client's fastest batch path
 * @property {(handle: (data: object) => Promise<object | undefined>) => Promise<void>} process
 *   starts a worker that runs up to `spec.batchSize` tasks at once through `handle`, acking each after
 *   it; what `handle` resolves to is the task's result (W6, W7: sent back to the caller)
 * @property {(data: object) => Promise<object>} [request]  W6, W7: enqueues one task and resolves to
 *   its result, once a worker ran it
 * @property {(threads: number) => Promise<void>} [processOnThreads]  W8: starts a worker that runs
 *   W8's handler module for the client (bench/lib/cpu-handler-protoqueue.mjs, cpu-processor-bullmq.mjs:
 *   cpu-work.mjs's work) on `threads` worker threads, as the client's docs show for CPU-bound handlers
 * @property {() => Promise<void>} close               settles what is outstanding and disconnects
 */

/** The workloads that wait for each task's result (a worker answers; `adapter.request`). */
export const ROUND_TRIP_WORKLOADS = ['w6', 'w7']

/** How long one round trip (W6, W7) may take before it counts as lost: the API's default. */
export const ROUND_TRIP_TIMEOUT_MS = 30_000

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

/** The worker process a W6 split run started (stopped after the driver's "finish"). */
let workerProcess

/** The result a round trip's worker answers task `data` with (W6, W7, and W3 with `spec.withResult`). */
export const resultOf = (data) => ({ ok: data.i })

/** Runs the spec's workload on `adapter` and reports to the driver; exits non-zero on error. */
export async function runBenchmark(adapter, spec) {
  if (spec.role === 'worker') return runWorker(adapter, spec)
  const driver = new DriverLink()
  try {
    await adapter.connect()
    const result = await WORKLOADS[spec.workload](adapter, spec, driver)
    driver.send({ event: 'done', ...result })
    await driver.expect('finish')
    // A worker process of the run's own stops only now: the driver samples its CPU at "done".
    await workerProcess?.stop()
    await adapter.close()
  } catch (err) {
    console.error(err)
    exitSoon()
  } finally {
    driver.close()
  }
}

/**
 * After an error: exit non-zero, within a moment even if a client still holds the event loop (a
 * connected queue, a worker process of the run's own), so the driver hears of it at once instead
 * of at its run timeout. The moment lets stderr reach the driver.
 */
function exitSoon() {
  process.exitCode = 1
  setTimeout(() => process.exit(1), 1_000).unref()
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
      // bench/results-bench.mjs: the same handler with a result, kept or not (options.results).
      return spec.withResult ? resultOf(data) : undefined
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

  /**
   * W6: N round trips one after the other — enqueue a task, wait for its result (what a caller of
   * an RPC-like API does) — with the worker in this process or (`spec.split`) in another one.
   */
  async w6(adapter, spec, driver) {
    return roundTrips(adapter, spec, driver, 1)
  },

  /** W7: N round trips by `producers` concurrent callers, each waiting for one result at a time. */
  async w7(adapter, spec, driver) {
    return roundTrips(adapter, spec, driver, spec.producers)
  },

  /**
   * W8: N tasks enqueued before timing; a worker whose handler does ~1 ms of CPU work per task, on
   * the main thread (`process`, `batchSize` at once) or on `spec.threads` worker threads
   * (`processOnThreads`); from the first handler start to the last task's report.
   */
  async w8(adapter, spec, driver) {
    await adapter.enqueueMany(tasks(spec.n))
    const reports = cpuReports(spec.n)
    await driver.readyAndGo()
    if (spec.threads === undefined) await adapter.process(async (data) => cpuTask(data))
    else await adapter.processOnThreads(spec.threads)
    const { first, end, tally } = await reports
    return throughput(spec.n, tally.distinct, tally.duplicates, end - first)
  },
}

/**
 * Listens for W8's task reports (bench/lib/cpu-work.mjs `cpuTask`) from any thread of this
 * process; resolves once every task reported, to the tally, the earliest handler start and the
 * time of the last report (both in ms since the epoch: the handlers' threads share no other clock).
 */
function cpuReports(n) {
  const tally = new Tally(n)
  const channel = new BroadcastChannel(CPU_CHANNEL)
  let first = Infinity
  channel.onmessage = ({ data }) => {
    // Reports from several threads may arrive out of order: the earliest start wins.
    if (data.start < first) first = data.start
    tally.record(data.i)
  }
  return tally.complete().then((end) => {
    channel.close()
    return { first, end: performance.timeOrigin + end, tally }
  })
}

/**
 * Times `spec.n` round trips by `callers` concurrent callers: each call's latency (from the enqueue to
 * its result in hand) and the calls per second. Every answer must be its own task's result and every
 * task must run once; the driver checks the counts (bench/lib/driver.mjs `verify`).
 */
async function roundTrips(adapter, spec, driver, callers) {
  const handled = new Tally(spec.n)
  const worker = spec.split ? (workerProcess = await WorkerProcess.start(spec)) : undefined
  if (!worker) {
    await adapter.process(async (data) => {
      handled.record(data.i)
      return resultOf(data)
    })
  }
  const answered = new Tally(spec.n)
  const latencies = []
  let wrong = 0
  let next = 0
  const caller = async () => {
    while (next < spec.n) {
      const data = taskData(next++)
      const sent = performance.now()
      const result = await adapter.request(data)
      latencies.push(performance.now() - sent)
      if (result?.ok !== data.i) wrong++
      answered.record(data.i)
    }
  }
  await driver.readyAndGo(worker ? { pids: [worker.pid] } : {})
  const start = performance.now()
  await Promise.all(Array.from({ length: callers }, caller))
  const elapsed = performance.now() - start
  const counts = worker ? await worker.counts() : { handled: handled.distinct, handledDuplicates: handled.duplicates }
  latencies.sort((a, b) => a - b)
  return {
    ...throughput(spec.n, answered.distinct, answered.duplicates, elapsed),
    wrong,
    ...counts,
    latency: { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), max: latencies.at(-1) ?? 0 },
  }
}

/**
 * The worker side of W6 split, in its own process: connects, runs the worker until the runner
 * that started it says "finish", answers "counts" with how many tasks it ran (and how many more
 * than once), then disconnects.
 */
async function runWorker(adapter, spec) {
  const link = new DriverLink()
  try {
    await adapter.connect()
    const handled = new Tally(spec.n)
    await adapter.process(async (data) => {
      handled.record(data.i)
      return resultOf(data)
    })
    link.send({ event: 'ready' })
    await link.expect('counts')
    link.send({ event: 'counts', handled: handled.distinct, handledDuplicates: handled.duplicates })
    await link.expect('finish')
    await adapter.close()
  } catch (err) {
    console.error(err)
    exitSoon()
  } finally {
    link.close()
  }
}

/** A worker process started by this runner (W6 split): the same runner file with `role: 'worker'`. */
class WorkerProcess {
  #child
  #lines
  #exited

  static async start(spec) {
    const worker = new WorkerProcess(spec)
    await worker.#expect('ready')
    return worker
  }

  constructor(spec) {
    // process.argv[1] is this runner's file, under Node and under Bun alike.
    this.#child = spawn(process.execPath, [process.argv[1], JSON.stringify({ ...spec, role: 'worker' })], { stdio: ['pipe', 'pipe', 'inherit'] })
    this.#lines = createInterface({ input: this.#child.stdout })[Symbol.asyncIterator]()
    this.#exited = new Promise((resolve) => this.#child.once('exit', (code, signal) => resolve(signal ?? code)))
    this.pid = this.#child.pid
    // The runner's own exit (also on an error) ends the worker: its stdin closes, and it is killed.
    process.once('exit', () => this.#child.kill())
  }

  async #expect(event) {
    const { value, done } = await this.#lines.next()
    const message = done ? undefined : JSON.parse(value)
    if (message?.event !== event) throw new Error(`the worker process sent ${done ? 'nothing (it exited)' : value}, expected "${event}"`)
    return message
  }

  /** How many tasks it ran, and how many of them more than once. */
  async counts() {
    this.#child.stdin.write('counts\n')
    const { event, ...counts } = await this.#expect('counts')
    return counts
  }

  /** Disconnects it (its worker settles what it holds) and waits for it to exit. */
  async stop() {
    this.#child.stdin.write('finish\n')
    const code = await this.#exited
    if (code !== 0) throw new Error(`the worker process exited with ${code}`)
  }
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

/**
 * Counts handled task indexes, so a runner that loses or repeats a task is caught (bench/features.mjs
 * counts its workers' tasks with it too).
 */
export class Tally {
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
      if (this.distinct === this.#seen.length) this.#resolve?.(performance.now())
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

  /** `extra`: what else "ready" tells the driver (`pids`: processes whose CPU counts as the client's). */
  async readyAndGo(extra = {}) {
    this.send({ event: 'ready', ...extra })
    await this.expect('go')
  }

  close() {
    this.#lines.close()
    process.stdin.destroy()
  }
}
