// Events heard anywhere (`options.events: 'queue'`) against a real nats-server: a monitor that
// runs no worker hears completed, failed, deadLettered, progress and cancelled from a worker in
// another process; an object with a worker of its own hears each of its events once; a worker
// started before the monitor, and one started after, are both heard; a queue nobody listens to
// sends nothing; a progress flood is throttled.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { connect as natsConnect } from '@nats-io/transport-node'
import { Protoqueue, type ProtoqueueConfig } from 'protoqueue'

import { Child, fixture, fixtureEnv } from './helpers/child'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { connectedQueue, type Names } from './helpers/queues'
import { deferred, eventually } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

const connected = <T = unknown>(names: Names, options: ProtoqueueConfig['options'] = {}) => connectedQueue<T>(server.url, names, options)

/** Every event of `kinds` the object hears, in order. */
function record(queue: Protoqueue<any>, kinds: string[]): Array<{ type: string; id?: string; [key: string]: unknown }> {
  const heard: Array<{ type: string; id?: string }> = []
  for (const kind of kinds) queue.on(kind as 'completed', (event) => heard.push(event as never))
  return heard as never
}

describe("options.events: 'queue'", () => {
  test('a monitor without a worker hears what a worker in another process decided', async () => {
    const names = uniqueQueue('heard')
    const monitor = await connected(names, { events: 'queue' })
    const heard = record(monitor, ['completed', 'failed', 'deadLettered'])
    const worker = Child.run(process.execPath, [fixture('worker.mjs')], fixtureEnv(names, server.url, { MAX_RETRIES: '1', RETRY_DELAY: '0' }))
    try {
      await worker.waitForLines(/^ready$/)
      const ok = await monitor.enqueue({ data: { n: 1 } })
      const failing = await monitor.enqueue({ data: { alwaysFail: true } })
      await eventually('the events heard', () => heard.some((e) => e.type === 'deadLettered'), 15_000)
      assert.ok(heard.some((e) => e.type === 'completed' && e.id === ok), JSON.stringify(heard))
      assert.deepEqual(
        heard.filter((e) => e.id === failing).map((e) => [e.type, e.attempt, e.willRetry ?? null]),
        [
          ['failed', 1, true],
          ['failed', 2, false],
          ['deadLettered', 2, null],
        ],
      )
      const completed = heard.find((e) => e.type === 'completed')!
      assert.equal(typeof completed.durationMs, 'number')
    } finally {
      worker.process.kill('SIGTERM')
      await worker.exited
      await monitor.disconnect()
    }
  })

  test('progress and cancelled are heard too; an object with a worker of its own hears each event once', async () => {
    const names = uniqueQueue('heard')
    const worker = await connected<{ n: number }>(names, { events: 'queue' })
    const heard = record(worker, ['completed', 'progress', 'cancelled'])
    const release = deferred()
    await worker.process(async (task) => {
      task.progress({ step: 1, of: 2 })
      if (task.data.n === 2) await release.promise
      return { success: true }
    })
    const monitor = await connected(names, { events: 'queue' })
    const monitored = record(monitor, ['completed', 'progress', 'cancelled'])
    try {
      const first = await monitor.enqueue({ data: { n: 1 } })
      await eventually('the first completed, heard by both', () => [heard, monitored].every((events) => events.some((e) => e.type === 'completed' && e.id === first)))
      const second = await monitor.enqueue({ data: { n: 2 } })
      await eventually('its progress heard', () => monitored.some((e) => e.type === 'progress' && e.id === second))
      assert.equal(await monitor.cancel(second), true)
      // Three listeners added at once (three mask changes racing to the native side): every kind is heard.
      await eventually('its cancel heard', () => [heard, monitored].every((events) => events.some((e) => e.type === 'cancelled' && e.id === second)))
      await new Promise((resolve) => setTimeout(resolve, 200))
      for (const events of [heard, monitored]) {
        assert.deepEqual(
          events.filter((e) => e.id === first).map((e) => e.type),
          ['progress', 'completed'],
          'each once',
        )
      }
      assert.deepEqual(monitored.find((e) => e.type === 'progress')?.progress, { step: 1, of: 2 })
      const cancelled = monitored.find((e) => e.type === 'cancelled')!
      assert.deepEqual([cancelled.attempt, cancelled.maxAttempts], [1, 4])
    } finally {
      release.resolve()
      await Promise.all([worker.disconnect(), monitor.disconnect()])
    }
  })

  test('a worker that started before the monitor is heard once the monitor listens', async () => {
    const names = uniqueQueue('heard')
    const worker = await connected(names)
    // Running (process() resolves once its worker asked for listeners: there were none).
    await worker.process(async () => ({ success: true }))
    const monitor = await connected(names, { events: 'queue' })
    const heard = record(monitor, ['completed'])
    try {
      // Once the monitor's hello reached the worker, the tasks enqueued from then on are heard.
      const ids: string[] = []
      await eventually('a task heard', async () => {
        ids.push(await monitor.enqueue({ data: {} }))
        return heard.some((e) => ids.includes(e.id!))
      })
    } finally {
      await Promise.all([worker.disconnect(), monitor.disconnect()])
    }
  })

  test('a queue nobody listens to sends no events', async () => {
    const names = uniqueQueue('heard')
    const nc = await natsConnect({ servers: server.url })
    let sent = 0
    const watching = nc.subscribe(`protoqueue.events.${names.streamName}`, { callback: () => { sent++ } })
    const worker = await connected(names)
    // Its own listeners stay in this process.
    worker.on('completed', () => {})
    await worker.process(async () => ({ success: true }))
    try {
      await worker.enqueueBatch(Array.from({ length: 50 }, (_, i) => ({ data: { i } })))
      await eventually('all handled', async () => (await worker.getStats()).pending === 0 && (await worker.getStats()).inFlight === 0)
      await new Promise((resolve) => setTimeout(resolve, 300))
      assert.equal(sent, 0, 'nothing sent while nobody listens')
    } finally {
      watching.unsubscribe()
      await nc.close()
      await worker.disconnect()
    }
  })

  test('100,000 progress calls a second reach listeners throttled', async () => {
    const names = uniqueQueue('heard')
    const monitor = await connected(names, { events: 'queue' })
    const progress = record(monitor, ['progress'])
    const worker = await connected(names)
    await worker.process(async (task) => {
      const end = Date.now() + 1_000
      let n = 0
      while (Date.now() < end) {
        for (let i = 0; i < 1_000; i++) task.progress(++n)
        await new Promise((resolve) => setImmediate(resolve))
      }
      return { success: true, result: n }
    })
    const done = record(monitor, ['completed'])
    try {
      await monitor.enqueue({ data: {} })
      await eventually('completed', () => done.length === 1, 15_000)
      await new Promise((resolve) => setTimeout(resolve, 200))
      assert.ok(progress.length >= 2 && progress.length <= 15, `${progress.length} progress events`)
      const values = progress.map((e) => e.progress as number)
      assert.deepEqual(values, [...values].sort((a, b) => a - b), 'in order')
      assert.ok(values.at(-1)! > 10_000, 'the last value reported before the outcome')
    } finally {
      await Promise.all([worker.disconnect(), monitor.disconnect()])
    }
  })

  test('options.events must be object or queue', () => {
    for (const events of ['all', 1, true]) {
      assert.throws(() => new Protoqueue({ ...uniqueQueue('heard'), options: { events: events as never } }), { code: 'ERR_PQ_INVALID_CONFIG' })
    }
  })
})
