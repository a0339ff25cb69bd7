// Benchmark runner for BullMQ (the current major, on ioredis) against the driver's own Redis
// (bench/lib/redis-server.mjs: AOF fsynced every second, noeviction). Written the way BullMQ's
// guide shows each operation: `queue.add` for one job, `queue.addBulk` for many (W2: chunks of half
// the window, two in flight, so Redis runs one while the client sends the other), a `Worker` whose
// `concurrency` is the batch size and whose processor is an async function (a job completes when it
// resolves), and which removes completed jobs (`removeOnComplete: { count: 0 }`). That default is the
// fastest correct way of writing it that bench/baselines.mjs found (bench/lib/variants.mjs lists the
// ways tried, bench/README.md "How strong the baselines are" has their numbers); `spec.variant` picks
// another one. The driver checks in Redis what a run left (bench/lib/driver.mjs; variants.mjs
// `bullmqCompletedKept` says how many completed jobs it keeps). `spec.url` is the Redis URL here.
// W6/W7 wait for each job's result as BullMQ's docs show: `job.waitUntilFinished(queueEvents)`,
// on one `QueueEvents` made when the runner connects (it reads the queue's event stream with a
// blocking XREAD, so it has a connection of its own); the processor's return value is the result.
// Their worker keeps the last 1,000 completed jobs, which waitUntilFinished needs (variants.mjs `variantFor`).
// W8 on threads: a sandboxed processor file on worker threads (`useWorkerThreads: true`), as BullMQ's
// docs advise for CPU-heavy jobs, `concurrency` = the threads (its pool runs one job per thread).
import { Queue, QueueEvents, Worker } from 'bullmq'
import IORedis from 'ioredis'
import { ROUND_TRIP_TIMEOUT_MS, ROUND_TRIP_WORKLOADS, readSpec, runBenchmark } from './lib/runner.mjs'
import { settingsOf, variantFor } from './lib/variants.mjs'

const spec = readSpec()
/** W8's sandboxed processor file (the work is bench/lib/cpu-work.mjs's). */
const CPU_PROCESSOR = new URL('./lib/cpu-processor-bullmq.mjs', import.meta.url)
const settings = settingsOf('bullmq', variantFor('bullmq', spec.workload, spec.variant))
/** The job name; BullMQ routes on the queue, the name is only a label. */
const JOB = 'task'

function bullmqAdapter() {
  // BullMQ's guide: a Worker's connection needs `maxRetriesPerRequest: null` (its blocking
  // commands must not fail on retries). Under ESM BullMQ takes a client instance, not options.
  const connection = new IORedis(spec.url, { maxRetriesPerRequest: null, enableAutoPipelining: settings.autoPipelining })
  let queue, worker, queueEvents, eventsConnection
  /** Starts the Worker with `processor` (a function, or a sandboxed processor file) and `options`. */
  async function startWorker(processor, options) {
    const retention = settings.removeOnComplete === undefined ? {} : { removeOnComplete: settings.removeOnComplete }
    worker = new Worker(spec.stream, processor, { connection, ...options, ...retention })
    worker.on('failed', (job, err) => console.error(`job ${job?.id} failed: ${err.message}`))
    await worker.waitUntilReady()
  }
  return {
    async connect() {
      queue = new Queue(spec.stream, { connection })
      await queue.waitUntilReady()
      if (spec.role !== 'worker' && ROUND_TRIP_WORKLOADS.includes(spec.workload)) {
        eventsConnection = new IORedis(spec.url, { maxRetriesPerRequest: null })
        queueEvents = new QueueEvents(spec.stream, { connection: eventsConnection })
        await queueEvents.waitUntilReady()
      }
    },
    async request(data) {
      const job = await queue.add(JOB, data)
      return job.waitUntilFinished(queueEvents, ROUND_TRIP_TIMEOUT_MS)
    },
    async enqueue(data) {
      await queue.add(JOB, data)
    },
    async enqueueMany(tasks) {
      // addBulk in chunks of `bulkSize(window)`, `bulkInFlight` of them at once: at most `window`
      // jobs unconfirmed, as for every system in W2.
      const size = settings.bulkSize(spec.window)
      const chunks = []
      for (let i = 0; i < tasks.length; i += size) chunks.push(tasks.slice(i, i + size).map((data) => ({ name: JOB, data })))
      let next = 0
      const lane = async () => {
        while (next < chunks.length) await queue.addBulk(chunks[next++])
      }
      await Promise.all(Array.from({ length: settings.bulkInFlight }, lane))
    },
    async process(handle) {
      await startWorker(async (job) => handle(job.data), { concurrency: spec.batchSize })
    },
    async processOnThreads(threads) {
      // BullMQ's sandboxed processors (https://docs.bullmq.io/guide/workers/sandboxed-processors):
      // a processor file, run in a pool of worker threads, one job per thread, `concurrency` at once.
      await startWorker(CPU_PROCESSOR, { concurrency: threads, useWorkerThreads: true })
    },
    async close() {
      await worker?.close()
      await queueEvents?.close()
      await eventsConnection?.quit()
      await queue.close()
      await connection.quit()
    },
  }
}

await runBenchmark(bullmqAdapter(), spec)
