// Crashes, outages, long handlers, shutdown and process lifetime, against real nats-server and
// worker processes.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type TaskData } from 'protoqueue'

import { Child, fixture } from './helpers/child'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { deferred, eventually, rejectsWithCode, within } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

function childEnv(names: { streamName: string; subject: string }, url: string, extra: Record<string, string> = {}) {
  return { NATS_URL: url, STREAM: names.streamName, SUBJECT: names.subject, ...extra }
}

describe('server crashes', () => {
  test('kill -9 of the server mid-run and a restart on the same store: every task is processed', async () => {
    const crashy = await NatsServer.start()
    try {
      const names = uniqueQueue('crash')
      const queue = new Protoqueue({ ...names, options: { batchSize: 5, ackWait: 2000, retryDelay: 100 } })
      await queue.connect(crashy.url)
      const ids = await queue.enqueueBatch(Array.from({ length: 300 }, (_, i) => ({ data: i })))
      const handled = new Set<string>()
      const halfway = deferred()
      await queue.process(async (task: TaskData) => {
        await new Promise((r) => setTimeout(r, 5))
        handled.add(task.id)
        if (handled.size === 60) halfway.resolve()
        return { success: true }
      })
      await within('60 tasks before the crash', halfway.promise)
      await crashy.kill()
      // An enqueue issued during the outage waits for the server (enqueueTimeout, 30 s default).
      const lateEnqueue = queue.enqueue({ data: 'during outage' })
      await crashy.restart()
      ids.push(await within('the outage enqueue', lateEnqueue, 30_000))
      await eventually('every task processed', () => ids.every((id) => handled.has(id)), 60_000)
      await eventually('the stream emptied', async () => (await queue.getStats()).messages === 0, 30_000)
      await queue.disconnect()
    } finally {
      await crashy.stop()
    }
  })

  test('an enqueue during a long outage rejects with ERR_PQ_TIMEOUT after enqueueTimeout', async () => {
    const down = await NatsServer.start()
    try {
      const queue = new Protoqueue({ ...uniqueQueue(), options: { enqueueTimeout: 1500 } })
      await queue.connect(down.url)
      await down.kill()
      const started = Date.now()
      await rejectsWithCode(queue.enqueue({ data: 1 }), 'ERR_PQ_TIMEOUT')
      const waited = Date.now() - started
      assert.ok(waited >= 1400 && waited < 10_000, `rejected after ${waited} ms`)
      await queue.disconnect()
    } finally {
      await down.stop()
    }
  })
})

describe('worker crashes and long tasks', () => {
  test('a worker killed mid-task: another worker gets its tasks after ackWait, not before', async () => {
    const names = uniqueQueue('killed')
    const ackWait = 1500
    const doomed = Child.run('node', [fixture('worker.mjs')], childEnv(names, server.url, {
      ACK_WAIT: String(ackWait),
      HANDLER_MS: '-1',
      BATCH_SIZE: '3',
    }))
    const producer = new Protoqueue({ ...names, options: { ackWait } })
    await producer.connect(server.url)
    try {
      await doomed.waitForLines(/^ready$/)
      const ids = await producer.enqueueBatch([{ data: 1 }, { data: 2 }, { data: 3 }])
      await doomed.waitForLines(/^started /, 3)
      const startedAt = Date.now()
      await doomed.kill('SIGKILL')

      const rescued = new Map<string, { at: number; attempt?: number }>()
      const all = deferred()
      const rescuer = new Protoqueue({ ...names, options: { ackWait } })
      await rescuer.connect(server.url)
      await rescuer.process((task) => {
        rescued.set(task.id, { at: Date.now(), attempt: task.attempt })
        if (rescued.size === 3) all.resolve()
        return { success: true }
      })
      await within('the rescued tasks', all.promise, 20_000)
      assert.deepStrictEqual(new Set(rescued.keys()), new Set(ids))
      for (const { at, attempt } of rescued.values()) {
        assert.ok(at - startedAt >= ackWait - 300, `redelivered ${at - startedAt} ms after the crash, before ackWait`)
        // The killed worker's runs had no outcome: stalled deliveries, not attempts.
        assert.equal(attempt, 1)
      }
      await rescuer.disconnect()
    } finally {
      await doomed.kill()
      await producer.disconnect()
    }
  })

  test('a handler running longer than ackWait keeps its task (heartbeats) and is not redelivered', async () => {
    const names = uniqueQueue('long')
    const ackWait = 1000
    const queue = new Protoqueue({ ...names, options: { ackWait } })
    const rival = new Protoqueue({ ...names, options: { ackWait } })
    await queue.connect(server.url)
    await rival.connect(server.url)
    let calls = 0
    const finished = deferred()
    const slow = async () => {
      calls++
      await new Promise((r) => setTimeout(r, 3.5 * ackWait))
      finished.resolve()
      return { success: true }
    }
    await queue.process(slow)
    await rival.process(slow)
    await queue.enqueue({ data: 'long job' })
    await within('the long handler', finished.promise, 20_000)
    await eventually('acked', async () => (await queue.getStats()).messages === 0)
    assert.equal(calls, 1, 'handled exactly once although it ran 3.5 × ackWait')
    await Promise.all([queue.disconnect(), rival.disconnect()])
  })

  test('taskTimeout bounds a handler that never settles', async () => {
    const queue = new Protoqueue({ ...uniqueQueue(), options: { taskTimeout: 300, maxRetries: 0 } })
    await queue.connect(server.url)
    await queue.process(() => new Promise(() => {}))
    await queue.enqueue({ data: 'stuck' })
    const [letter] = await eventually('the dead letter', async () => {
      const letters = await queue.getDeadLetters()
      return letters.length ? letters : undefined
    })
    assert.match(letter.error, /taskTimeout/)
    await queue.disconnect()
  })
})

describe('shutdown and process lifetime', () => {
  test('disconnect() during processing lets in-flight tasks finish, acks them, and they are gone', async () => {
    const names = uniqueQueue('shutdown')
    // No prefetch: the worker holds only the five it runs.
    const queue = new Protoqueue({ ...names, options: { batchSize: 5, prefetch: 0 } })
    await queue.connect(server.url)
    const started: string[] = []
    const finished: string[] = []
    const allStarted = deferred()
    await queue.process(async (task) => {
      started.push(task.id)
      if (started.length === 5) allStarted.resolve()
      await new Promise((r) => setTimeout(r, 500))
      finished.push(task.id)
      return { success: true }
    })
    const ids = await queue.enqueueBatch(Array.from({ length: 8 }, (_, i) => ({ data: i })))
    await within('5 tasks in flight', allStarted.promise)
    await queue.disconnect()
    assert.deepStrictEqual(new Set(finished), new Set(started), 'every started task finished before disconnect resolved')
    assert.equal(started.length, 5)

    const checker = new Protoqueue(names)
    await checker.connect(server.url)
    const stats = await checker.getStats()
    assert.equal(stats.messages, 3, 'the 5 finished tasks are acked and removed; 3 were never started')
    const rest = new Set<string>()
    const done = deferred()
    await checker.process((task) => {
      rest.add(task.id)
      if (rest.size === 3) done.resolve()
      return { success: true }
    })
    await within('the 3 remaining tasks', done.promise)
    assert.deepStrictEqual(new Set([...started, ...rest]), new Set(ids), 'nothing lost, nothing handled twice')
    await checker.disconnect()
  })

  test('disconnect() also runs the prefetched tasks, on their first attempt', async () => {
    const names = uniqueQueue('shutdown-prefetched')
    const queue = new Protoqueue({ ...names, options: { batchSize: 5 } })
    await queue.connect(server.url)
    const attempts = new Map<string, number>()
    await queue.process(async (task) => {
      attempts.set(task.id, task.attempt ?? 0)
      await new Promise((r) => setTimeout(r, 300))
      return { success: true }
    })
    const ids = await queue.enqueueBatch(Array.from({ length: 8 }, (_, i) => ({ data: i })))
    // Five run, three are prefetched and wait for a slot.
    await eventually('all 8 tasks at the worker', async () => (await queue.getStats()).inFlight === 8)
    await queue.disconnect()
    assert.deepStrictEqual(new Set(attempts.keys()), new Set(ids), 'every task the worker held ran')
    assert.ok([...attempts.values()].every((attempt) => attempt === 1), 'none lost an attempt')

    const checker = new Protoqueue(names)
    await checker.connect(server.url)
    const stats = await checker.getStats()
    assert.deepStrictEqual([stats.messages, stats.inFlight], [0, 0], 'all acked')
    await checker.disconnect()
  })

  test('tasks still waiting when shutdownTimeout runs out never start in this process', async () => {
    const names = uniqueQueue('shutdown-timeout')
    const queue = new Protoqueue({ ...names, options: { batchSize: 1, shutdownTimeout: 200 } })
    await queue.connect(server.url)
    const started: string[] = []
    const firstDone = deferred()
    await queue.process(async (task) => {
      started.push(task.id)
      await new Promise((r) => setTimeout(r, 1_000))
      firstDone.resolve()
      return { success: true }
    })
    await queue.enqueueBatch(Array.from({ length: 2 }, (_, i) => ({ data: i })))
    // One runs; the other is prefetched and waits for the only slot.
    await eventually('both tasks at the worker', async () => (await queue.getStats()).inFlight === 2)
    await queue.disconnect()
    assert.equal(started.length, 1)
    // The abandoned handler finishing frees its slot: the waiting tasks must still not start.
    await within('the running handler to finish', firstDone.promise)
    await new Promise((r) => setImmediate(r))
    assert.equal(started.length, 1, 'no task started after the worker stopped')
  })

  test('the process exits by itself after disconnect()', async () => {
    const child = Child.run('node', [fixture('exits.mjs')], childEnv(uniqueQueue('exit'), server.url))
    const { code } = await within('the process to exit', child.exited, 20_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['handled true', 'disconnected'])
  })

  test('a worker keeps running when its Protoqueue object is garbage-collected', async () => {
    const names = uniqueQueue('gc')
    const child = Child.run('node', ['--expose-gc', fixture('gc-worker.mjs')], childEnv(names, server.url))
    const producer = new Protoqueue(names)
    await producer.connect(server.url)
    try {
      await child.waitForLines(/^ready$/)
      const ids = await producer.enqueueBatch(Array.from({ length: 5 }, (_, i) => ({ data: i })))
      const lines = await child.waitForLines(/^handled /, 5)
      assert.deepStrictEqual(new Set(lines.map((l) => l.split(' ')[1])), new Set(ids))
      assert.equal(child.process.exitCode, null, 'the worker keeps the process alive')
    } finally {
      await child.kill()
      await producer.disconnect()
    }
  })
})
