// The native layer's own guards, without the JavaScript wrapper that normally normalises handler
// results: a synchronous throw, a plain (non-Promise) result and a malformed result must each be
// an outcome in Rust (call_async_catch + Either<Promise, R>), never a crash of the process.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually } from './helpers/wait'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { NativeQueue } = require('../native.js')

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

test('sync throws, plain results and junk reach Rust as outcomes, not crashes', { timeout: 60_000 }, async () => {
  const queue = new NativeQueue({ ...uniqueQueue('native'), options: { maxRetries: 0, retryDelay: 0 } })
  await queue.connect(server.url)
  await queue.process((task: { data: string }) => {
    const data = JSON.parse(task.data)
    if (data === 'throw') throw new Error('synchronous throw')
    if (data === 'plain') return { success: true }
    if (data === 'junk') return { nope: 1 }
    if (data === 'reject') return Promise.reject(new Error('rejected'))
    return Promise.resolve({ success: false, error: 'declined', details: '{"why":"test"}' })
  })
  await queue.enqueueBatch(['throw', 'plain', 'junk', 'reject', 'declined'].map((d) => ({ data: JSON.stringify(d) })))
  const letters: Array<{ task: { data: string }; error: string; details?: string }> = await eventually('4 dead letters', async () => {
    const found = await queue.deadLetters(10)
    return found.length === 4 ? found : undefined
  })
  const byData = new Map(letters.map((l) => [JSON.parse(l.task.data), l]))
  assert.match(byData.get('throw')!.error, /synchronous throw/)
  assert.match(byData.get('junk')!.error, /NativeTaskResult/)
  assert.match(byData.get('reject')!.error, /rejected/)
  assert.equal(byData.get('declined')!.error, 'declined')
  assert.equal(byData.get('declined')!.details, '{"why":"test"}')
  assert.ok(!byData.has('plain'), 'a plain { success: true } is a success')
  await eventually('stream empty', async () => (await queue.stats()).messages === 0)
  await queue.disconnect()
})
