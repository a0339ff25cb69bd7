// The native layer's own guards, without the JavaScript wrapper: tasks reach JavaScript in batches
// through one dispatch function (called with call_async_catch) and outcomes come back through
// `complete()`. A dispatch that throws synchronously, a malformed outcome and an outcome for an
// unknown token must each be handled, never a crash of the process or a stuck task.
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

type NativeTask = { token: number; data: string }

test('a throwing dispatch, junk outcomes and unknown tokens never crash the process', { timeout: 60_000 }, async () => {
  const queue = new NativeQueue({ ...uniqueQueue('native'), options: { maxRetries: 0, retryDelay: 0, taskTimeout: 500 } })
  await queue.connect(server.url)
  const junkErrors: unknown[] = []
  await queue.process((tasks: NativeTask[]) => {
    for (const task of tasks) {
      const data = JSON.parse(task.data)
      if (data === 'throw') throw new Error('synchronous throw')
      if (data === 'ok') queue.complete([{ token: task.token, success: true }])
      if (data === 'declined') {
        queue.complete([{ token: task.token, success: false, error: 'declined', details: '{"why":"test"}' }])
      }
      if (data === 'junk') {
        try {
          queue.complete([{ token: task.token, nope: 1 }])
        } catch (err) {
          junkErrors.push(err)
        }
      }
      if (data === 'stranger') {
        queue.complete([{ token: 4_000_000_000, success: true }]) // nobody waits for it: ignored
        queue.complete([{ token: task.token, success: true }])
      }
    }
  })
  // The throwing task goes alone, so its batch holds nothing else.
  await queue.enqueue({ data: JSON.stringify('throw') })
  await eventually('the thrown task dead-lettered', async () => (await queue.deadLetters(10)).length === 1)
  await queue.enqueueBatch(['ok', 'junk', 'declined', 'stranger'].map((d) => ({ data: JSON.stringify(d) })))
  const letters: Array<{ task: { data: string }; error: string; details?: string }> = await eventually('3 dead letters', async () => {
    const found = await queue.deadLetters(10)
    return found.length === 3 ? found : undefined
  })
  const byData = new Map(letters.map((l) => [JSON.parse(l.task.data), l]))
  assert.match(byData.get('throw')!.error, /synchronous throw/)
  assert.match(byData.get('junk')!.error, /taskTimeout/, 'a task whose outcome never arrived times out')
  assert.equal(junkErrors.length, 1, 'a malformed outcome throws to its caller')
  assert.match(String(junkErrors[0]), /success/)
  assert.equal(byData.get('declined')!.error, 'declined')
  assert.equal(byData.get('declined')!.details, '{"why":"test"}')
  assert.ok(!byData.has('ok') && !byData.has('stranger'), 'completed tasks are successes')
  await eventually('stream empty', async () => (await queue.stats()).messages === 0)
  await queue.disconnect()
})
