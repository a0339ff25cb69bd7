// Single enqueues made at the same time (many request handlers at once) cross into the native
// side together; each caller still gets its own result, against a real nats-server.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { Protoqueue } from 'protoqueue'

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
