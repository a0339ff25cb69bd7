// Benchmark runner for Protoqueue, through its public API only. Runs under Node and under Bun
// (`bun bench/protoqueue.mjs '<spec>'`); bench/run.mjs starts it once per run. W8 on threads:
// `process(url, { threads })` with W8's handler module (the driver runs W8 under Node only).
import { Protoqueue } from '../index.mjs'
import { ROUND_TRIP_TIMEOUT_MS, readSpec, runBenchmark } from './lib/runner.mjs'

const spec = readSpec()
/** W8's handler module, which each worker thread loads (the work is bench/lib/cpu-work.mjs's). */
const CPU_HANDLER = new URL('./lib/cpu-handler-protoqueue.mjs', import.meta.url)

/** Splits `items` into arrays of at most `size`. */
function chunks(items, size) {
  const out = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

function protoqueueAdapter() {
  // One queue object enqueues and processes, as nats.js uses one connection for both. W6/W7 (and
  // bench/results-bench.mjs) give it `options.results`: its workers then record each task's result
  // before they ack it, and `enqueueAndWait` reads it back.
  const results = spec.results ? { results: spec.results } : {}
  const queue = new Protoqueue({ streamName: spec.stream, subject: spec.subject, options: { batchSize: spec.batchSize, ...results } })
  // PROTOQUEUE_BENCH_LISTENERS=1 adds a `completed` listener: what events cost the worker.
  if (process.env.PROTOQUEUE_BENCH_LISTENERS === '1') {
    let completed = 0
    queue.on('completed', () => completed++)
  }
  return {
    async connect() {
      await queue.connect(spec.url)
    },
    async enqueue(data) {
      await queue.enqueue({ data })
    },
    async enqueueMany(tasks) {
      // W2 as the issue defines it: enqueueBatch in chunks of `window`, one chunk after the other.
      for (const chunk of chunks(tasks, spec.window)) await queue.enqueueBatch(chunk.map((data) => ({ data })))
    },
    async process(handle) {
      await queue.process(async (task) => {
        const result = await handle(task.data)
        return result === undefined ? { success: true } : { success: true, result }
      })
    },
    async processOnThreads(threads) {
      // The one worker's consumer feeds the threads; `batchSize` is shared out among them.
      await queue.process(CPU_HANDLER, { threads })
    },
    async request(data) {
      return queue.enqueueAndWait({ data }, { timeout: ROUND_TRIP_TIMEOUT_MS })
    },
    async close() {
      await queue.disconnect()
    },
  }
}

await runBenchmark(protoqueueAdapter(), spec)
