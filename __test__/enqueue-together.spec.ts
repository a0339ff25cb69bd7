// Single enqueues made at the same time (many request handlers at once) cross into the native
// side together; each caller still gets its own result, against a real nats-server.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { after, before, test } from 'node:test'

import { Protoqueue } from 'protoqueue'

import { fixture, fixtureEnv } from './helpers/child'
import { NatsServer, uniqueQueue } from './helpers/nats'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

test('concurrent enqueues each resolve to their own id, and one too large fails alone', async () => {
  const queue = new Protoqueue(uniqueQueue())
  await queue.connect(server.url)
  const calls = Array.from({ length: 300 }, (_, i) => queue.enqueue({ data: i === 150 ? 'x'.repeat(2 * 1024 * 1024) : { i } }))
  const results = await Promise.allSettled(calls)
  const rejected = results.flatMap((r, i) => (r.status === 'rejected' ? [[i, (r.reason as { code?: string }).code]] : []))
  assert.deepStrictEqual(rejected, [[150, 'ERR_PQ_PAYLOAD_TOO_LARGE']])
  const ids = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
  assert.equal(new Set(ids).size, 299)
  assert.equal((await queue.getStats()).messages, 299)
  // Handled in the order they were called: one worker, one at a time.
  const seen: number[] = []
  const worker = new Protoqueue({ ...uniqueQueue(), options: { batchSize: 1 } })
  await worker.connect(server.url)
  await Promise.all(Array.from({ length: 50 }, (_, i) => worker.enqueue({ data: i })))
  await worker.process(async (task) => {
    seen.push(task.data as number)
    return { success: true }
  })
  while (seen.length < 50) await new Promise((r) => setTimeout(r, 20))
  assert.deepStrictEqual(seen, Array.from({ length: 50 }, (_, i) => i))
  await worker.disconnect()
  await queue.disconnect()
})

test('a process whose only work is awaiting enqueues waits for each answer, then exits by itself', async () => {
  // Enqueues are answered through one function that never holds the process by itself; while an
  // answer is due it does. Without that, Node would end the process at the first awaited
  // enqueue (exit 13: a top-level await that can never settle).
  const names = uniqueQueue()
  const child = spawnSync(process.execPath, [fixture('enqueue-only.mjs')], { env: { ...process.env, ...fixtureEnv(names, server.url) }, encoding: 'utf8', timeout: 30_000 })
  assert.equal(child.status, 0, `exit ${child.status} ${child.signal ?? ''}: ${child.stderr}`)
  assert.match(child.stdout, /^ids 22$/m)
  const watcher = new Protoqueue(names)
  await watcher.connect(server.url)
  assert.equal((await watcher.getStats()).messages, 22)
  await watcher.disconnect()
})

test('a queue object that enqueued can still be collected: the answer function holds only its callers', async () => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  let collected = false
  const registry = new FinalizationRegistry(() => (collected = true))
  await (async () => {
    const queue = new Protoqueue(uniqueQueue())
    await queue.connect(server.url)
    await Promise.all([queue.enqueue({ data: 1 }), queue.enqueue({ data: 2 })])
    await queue.disconnect()
    registry.register(queue, 'queue')
  })()
  for (let i = 0; i < 50 && !collected; i++) {
    gc()
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  assert.ok(collected, 'the queue object was never collected')
})

test('enqueue after disconnect() rejects with its code, and the queue enqueues again once reconnected', async () => {
  const queue = new Protoqueue(uniqueQueue())
  await queue.connect(server.url)
  await queue.enqueue({ data: 1 })
  await queue.disconnect()
  const results = await Promise.allSettled([queue.enqueue({ data: 2 }), queue.enqueue({ data: 3 })])
  assert.deepStrictEqual(results.map((r) => r.status === 'rejected' && (r.reason as { code?: string }).code), ['ERR_PQ_NOT_CONNECTED', 'ERR_PQ_NOT_CONNECTED'])
  await queue.connect(server.url)
  assert.equal(typeof (await queue.enqueue({ data: 4 })), 'string')
  assert.equal((await queue.getStats()).messages, 2)
  await queue.disconnect()
})
