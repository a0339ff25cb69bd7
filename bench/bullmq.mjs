// Benchmark runner for BullMQ (the current major, on ioredis) against the driver's own Redis
// (bench/lib/redis-server.mjs: AOF fsynced every second, noeviction). Written the way BullMQ's
// guide shows each operation: `queue.add` for one job, `queue.addBulk` for many, a `Worker` whose
// `concurrency` is the batch size and whose processor is an async function (a job completes when it
// resolves). Jobs keep BullMQ's defaults (attempts 1, completed jobs kept), so the driver can count
// them in Redis afterwards. `spec.url` is the Redis URL here.
import { Queue, Worker } from 'bullmq'
import IORedis from 'ioredis'
import { readSpec, runBenchmark } from './lib/runner.mjs'

const spec = readSpec()
/** The job name; BullMQ routes on the queue, the name is only a label. */
const JOB = 'task'

function bullmqAdapter() {
  // BullMQ's guide: a Worker's connection needs `maxRetriesPerRequest: null` (its blocking
  // commands must not fail on retries). Under ESM BullMQ takes a client instance, not options.
  const connection = new IORedis(spec.url, { maxRetriesPerRequest: null })
  let queue, worker
  return {
    async connect() {
      queue = new Queue(spec.stream, { connection })
      await queue.waitUntilReady()
    },
    async enqueue(data) {
      await queue.add(JOB, data)
    },
    async enqueueMany(tasks) {
      // addBulk in chunks of `window`, one after the other, as Protoqueue's enqueueBatch runs.
      for (let i = 0; i < tasks.length; i += spec.window) {
        await queue.addBulk(tasks.slice(i, i + spec.window).map((data) => ({ name: JOB, data })))
      }
    },
    async process(handle) {
      worker = new Worker(spec.stream, async (job) => handle(job.data), { connection, concurrency: spec.batchSize })
      worker.on('failed', (job, err) => console.error(`job ${job?.id} failed: ${err.message}`))
      await worker.waitUntilReady()
    },
    async close() {
      await worker?.close()
      await queue.close()
      await connection.quit()
    },
  }
}

await runBenchmark(bullmqAdapter(), spec)
