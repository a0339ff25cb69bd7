// An example Protoqueue worker for containers: processes the queue, serves /metrics, /healthz
// and /readyz (probes.mjs), and on SIGTERM (or SIGINT) drains: `disconnect()` stops fetching,
// lets the tasks in flight finish and be acknowledged (within SHUTDOWN_TIMEOUT_MS), hands back
// what was fetched but not started, and the process exits 0.
//
// Environment:
//   NATS_URL              server URL(s), comma-separated (read by the library)
//   PROTOQUEUE_STREAM     the queue's stream (default ORDERS)
//   PROTOQUEUE_SUBJECT    its subject (default orders.created)
//   PROTOQUEUE_REPLICAS   stream replicas when this worker creates the streams (default 1; 3 on a cluster)
//   SHUTDOWN_TIMEOUT_MS   how long a drain may take (default 30000): the orchestrator's grace
//                         period must be longer (see deploy/README.md)
//   CONCURRENCY           tasks handled at once (default 10)
//   WORK_MS               simulated work per task, ms (default 50)
//   METRICS_PORT          port of the probes (default 9464; 0 picks a free one)
import { Protoqueue } from 'protoqueue'

import { intEnv, logger, serveProbes } from './probes.mjs'

const log = logger('worker')
const shutdownTimeout = intEnv('SHUTDOWN_TIMEOUT_MS', 30_000)
const workMs = intEnv('WORK_MS', 50)

const queue = new Protoqueue({
  streamName: process.env.PROTOQUEUE_STREAM || 'ORDERS',
  subject: process.env.PROTOQUEUE_SUBJECT || 'orders.created',
  options: {
    batchSize: intEnv('CONCURRENCY', 10),
    replicas: intEnv('PROTOQUEUE_REPLICAS', 1),
    shutdownTimeout,
  },
})

let ready = false
let stopping = false
const probes = await serveProbes({ queue, port: intEnv('METRICS_PORT', 9464), ready: () => ready && !stopping, log })

async function stop(signal) {
  if (stopping) return
  stopping = true
  log(`${signal}: draining (up to ${shutdownTimeout} ms)`)
  // Should the drain ever hang, leave before the orchestrator's SIGKILL, saying so.
  setTimeout(() => {
    log('drain did not finish in time: exiting 1')
    process.exit(1)
  }, shutdownTimeout + 10_000).unref()
  await queue.disconnect()
  await new Promise((resolve) => probes.close(resolve))
  log('stopped')
}
process.once('SIGTERM', () => stop('SIGTERM'))
process.once('SIGINT', () => stop('SIGINT'))

await queue.connect()
if (!stopping) {
  await queue.process(async (task) => {
    log(`start ${task.id}`)
    await new Promise((resolve) => setTimeout(resolve, workMs))
    log(`done ${task.id}`)
    return { success: true }
  })
  ready = true
  log('processing')
}
