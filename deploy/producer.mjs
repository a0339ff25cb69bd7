// An example producer for containers: enqueues RATE tasks a second (in batches, five a second),
// serves /metrics, /healthz and /readyz (probes.mjs), and stops cleanly on SIGTERM or SIGINT.
//
// Environment: NATS_URL, PROTOQUEUE_STREAM, PROTOQUEUE_SUBJECT, PROTOQUEUE_REPLICAS and
// METRICS_PORT as for worker.mjs; RATE tasks per second (default 50).
import { Protoqueue } from 'protoqueue'

import { intEnv, logger, serveProbes } from './probes.mjs'

const log = logger('producer')
const rate = intEnv('RATE', 50)

const queue = new Protoqueue({
  streamName: process.env.PROTOQUEUE_STREAM || 'ORDERS',
  subject: process.env.PROTOQUEUE_SUBJECT || 'orders.created',
  options: { replicas: intEnv('PROTOQUEUE_REPLICAS', 1) },
})

let ready = false
let stopping = false
const probes = await serveProbes({ queue, port: intEnv('METRICS_PORT', 9464), ready: () => ready && !stopping, log })
let wake = () => {}
const stopped = new Promise((resolve) => {
  const stop = (signal) => {
    if (stopping) return
    stopping = true
    log(`${signal}: stopping`)
    wake()
    resolve()
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
})

await queue.connect()
ready = true
log(`enqueueing ${rate} tasks/s`)
let n = 0
while (!stopping) {
  const size = Math.max(1, Math.round(rate / 5))
  try {
    await queue.enqueueBatch(Array.from({ length: size }, () => ({ data: { order: n++, at: Date.now() } })))
  } catch (err) {
    log(`enqueue failed: ${err.code}: ${err.message}`)
  }
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 200)
    wake = () => {
      clearTimeout(timer)
      resolve()
    }
  })
}
await stopped
await queue.disconnect()
await new Promise((resolve) => probes.close(resolve))
log('stopped')
