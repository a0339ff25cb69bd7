// The demo: starts a local JetStream nats-server from the pinned install, enqueues 1,000 tasks,
// processes them with a worker (progress line, a summary of the queue), then stops the server and
// exits. `npm run demo` runs it on the release build of the addon, as users install it.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Protoqueue } from '../index.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const bin = process.env.NATS_SERVER_BIN ?? join(root, '.tools', 'nats-server', 'bin', 'nats-server')
const TASKS = 1000
const RETRY_DELAY_MS = 100

const port = await new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port
    s.close(() => resolve(p))
  })
})
const store = mkdtempSync(join(tmpdir(), 'protoqueue-demo-'))
const server = spawn(bin, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store], { stdio: ['ignore', 'ignore', 'pipe'] })
await new Promise((resolve, reject) => {
  let log = ''
  server.stderr.on('data', (c) => {
    log += c
    if (log.includes('Server is ready')) resolve()
  })
  server.once('exit', (code) => reject(new Error(`nats-server exited (${code}): ${log}`)))
})
const url = `nats://127.0.0.1:${port}`
console.log(`nats-server (JetStream) running at ${url}`)

try {
  const producer = new Protoqueue({ streamName: 'demo', subject: 'demo.emails' })
  await producer.connect(url)
  let started = Date.now()
  const ids = await producer.enqueueBatch(
    Array.from({ length: TASKS }, (_, i) => ({ data: { to: `user${i}@example.com`, template: 'welcome' } })),
  )
  const enqueueMs = Date.now() - started
  console.log(`producer: enqueued ${ids.length} tasks in ${enqueueMs} ms (${Math.round((ids.length * 1000) / Math.max(enqueueMs, 1))} tasks/s)`)

  const worker = new Protoqueue({ streamName: 'demo', subject: 'demo.emails', options: { batchSize: 50, maxRetries: 2, retryDelay: RETRY_DELAY_MS } })
  await worker.connect(url)
  let done = 0
  let failedOnce = 0
  const finished = new Promise((resolve) => {
    started = Date.now()
    worker.process(async (task) => {
      await new Promise((r) => setTimeout(r, 1))
      // Every 100th task fails on its first attempt, to show retries.
      if (Number(task.data.to.match(/\d+/)[0]) % 100 === 0 && task.attempt === 1) {
        failedOnce++
        return { success: false, error: 'transient SMTP error' }
      }
      done++
      if (done % 100 === 0 || done === TASKS) process.stdout.write(`\rworker: ${done}/${TASKS} processed`)
      if (done === TASKS) resolve()
      return { success: true }
    })
  })
  await finished
  const seconds = (Date.now() - started) / 1000
  // The handlers' 1 ms and the retry delay bound this, not the queue (npm run bench).
  console.log(`\nworker: ${TASKS} tasks in ${seconds.toFixed(2)} s (handlers wait 1 ms; ${failedOnce} failed once and ran again ${RETRY_DELAY_MS} ms later)`)
  await worker.disconnect()
  const stats = await producer.getStats()
  console.log(`queue: ${stats.messages} stored, ${stats.pending} waiting, ${stats.inFlight} in flight, ${stats.deadLettered} dead letters`)
  await producer.disconnect()
} finally {
  server.kill('SIGTERM')
  rmSync(store, { recursive: true, force: true })
}
