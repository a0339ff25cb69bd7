// The lifecycle of one queue object against a real nats-server: connect → process → disconnect,
// again; disconnect() from inside a handler; the order one worker starts tasks in.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { deferred, eventually, within } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

describe('lifecycle', () => {
  test('a handler that awaits disconnect() gets it promptly, and its task is still acknowledged', async () => {
    const names = uniqueQueue()
    // The original implementation's tests: process one task, then disconnect from the handler.
    const queue = new Protoqueue(names)
    await queue.connect(server.url)
    const watcher = new Protoqueue(names)
    await watcher.connect(server.url)
    let calls = 0
    const disconnected = deferred<number>()
    await queue.process(async () => {
      calls++
      const began = Date.now()
      await queue.disconnect()
      disconnected.resolve(Date.now() - began)
      return { success: true }
    })
    await queue.enqueue({ data: { n: 1 } })
    const took = await within('disconnect() inside the handler', disconnected.promise, 10_000)
    assert.ok(took < 2_000, `disconnect() took ${took} ms inside the handler (shutdownTimeout is 30 s)`)
    await eventually('the task acknowledged', async () => (await watcher.getStats()).messages === 0)
    const stats = await watcher.getStats()
    assert.equal(stats.deadLettered, 0)
    assert.equal(calls, 1)
    await assert.rejects(queue.enqueue({ data: 1 }), { code: 'ERR_PQ_NOT_CONNECTED' })
    await watcher.disconnect()
  })

  test('a queue connects and processes again after disconnect()', async () => {
    const queue = new Protoqueue(uniqueQueue())
    await queue.connect(server.url)
    const first: string[] = []
    await queue.process(async (task) => {
      first.push(task.id)
      return { success: true }
    })
    const a = await queue.enqueue({ data: 'a' })
    await eventually('the first task', () => first.length === 1)
    await queue.disconnect()
    await assert.rejects(queue.enqueue({ data: 'x' }), { code: 'ERR_PQ_NOT_CONNECTED' })

    await queue.connect(server.url)
    const second: string[] = []
    await queue.process(async (task) => {
      second.push(task.id)
      return { success: true }
    })
    const b = await queue.enqueue({ data: 'b' })
    await eventually('the second task', () => second.length === 1)
    assert.deepStrictEqual([first, second], [[a], [b]])
    await queue.disconnect()
  })

  test('one worker with batchSize 1 handles tasks in enqueue order', async () => {
    const queue = new Protoqueue({ ...uniqueQueue(), options: { batchSize: 1 } })
    await queue.connect(server.url)
    const ids = await queue.enqueueBatch(Array.from({ length: 50 }, (_, n) => ({ data: { n } })))
    const handled: string[] = []
    await queue.process(async (task) => {
      handled.push(task.id)
      return { success: true }
    })
    await eventually('every task', () => handled.length === ids.length)
    assert.deepStrictEqual(handled, ids)
    await queue.disconnect()
  })
})
