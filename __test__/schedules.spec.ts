// Delayed and recurring tasks through the public API, against a real nats-server: delay and
// runAt never early, cancel, enqueueBatch with delays, recurring tasks from three queues with one
// task per tick, getSchedules/unschedule, and hostile input rejected with codes, nothing sent.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, listQueues, type TaskData } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually, rejectsWithCode } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

async function scheduledQueue<T = unknown>(names = uniqueQueue()) {
  const queue = new Protoqueue<T>({ ...names, options: { schedules: true } })
  await queue.connect(server.url)
  return queue
}

describe('delayed tasks', () => {
  test('delay and runAt: stored at once, handed to a worker at their time, never before', async () => {
    const queue = await scheduledQueue<{ n: number }>()
    const now = Date.now()
    const due = new Map<string, number>()
    due.set(await queue.enqueue({ data: { n: 0 }, delay: 400 }), now + 400)
    due.set(await queue.enqueue({ data: { n: 1 }, runAt: new Date(now + 600) }), now + 600)
    due.set(await queue.enqueue({ data: { n: 2 }, runAt: now + 200, metadata: { tenant: 't' } }), now + 200)
    const batch = await queue.enqueueBatch([{ data: { n: 3 }, delay: 300 }, { data: { n: 4 } }, { data: { n: 5 }, runAt: now - 1000 }])
    due.set(batch[0], now + 300)
    due.set(batch[1], now)
    due.set(batch[2], now)
    const stats = await queue.getStats()
    // The one in the past may have fired already.
    assert.ok(stats.delayed >= 4 && stats.delayed <= 5, `the delayed tasks are stored as schedules: ${stats.delayed}`)
    const started = new Map<string, { at: number; task: TaskData<{ n: number }> }>()
    await queue.process(async (task) => {
      started.set(task.id, { at: Date.now(), task })
      return { success: true }
    })
    await eventually('every task ran', async () => started.size === 6)
    for (const [id, at] of due) {
      const start = started.get(id)
      assert.ok(start, `${id} ran`)
      assert.ok(start.at >= at, `${id} started ${at - start.at} ms early`)
    }
    assert.equal(started.get([...due.keys()][2])?.task.metadata?.tenant, 't')
    const after = await queue.getStats()
    assert.deepEqual([after.messages, after.delayed], [0, 0])
    await queue.disconnect()
  })

  test('cancel removes a delayed task not yet due, and only that', async () => {
    const queue = await scheduledQueue()
    const later = await queue.enqueue({ data: 'later', delay: 60_000 })
    const soon = await queue.enqueue({ data: 'soon', delay: 100 })
    assert.equal(await queue.cancel(later), true)
    assert.equal(await queue.cancel(later), false, 'cancelled already')
    assert.equal(await queue.cancel('never-enqueued'), false)
    const ran: string[] = []
    await queue.process(async (task) => {
      ran.push(task.id)
      return { success: true }
    })
    await eventually('the other task ran', async () => ran.length === 1)
    assert.deepEqual(ran, [soon])
    assert.equal(await queue.cancel(soon), false, 'a task that ran cannot be cancelled')
    assert.equal((await queue.getStats()).delayed, 0)
    await queue.disconnect()
  })
})

describe('delayed tasks across restarts', () => {
  test('they survive a worker restart and a kill -9 of the server, and run once, at their time', async () => {
    const names = uniqueQueue()
    const producer = await scheduledQueue(names)
    const due = Date.now() + 2_000
    const ids = await producer.enqueueBatch(Array.from({ length: 20 }, (_, i) => ({ data: i, runAt: due })))
    const first = await scheduledQueue(names)
    const early: string[] = []
    await first.process(async (task) => {
      early.push(task.id)
      return { success: true }
    })
    await first.disconnect()
    await server.kill()
    await server.restart()
    const second = await scheduledQueue(names)
    const ran: Array<{ id: string; at: number }> = []
    await second.process(async (task) => {
      ran.push({ id: task.id, at: Date.now() })
      return { success: true }
    })
    await eventually('every delayed task ran', async () => ran.length === 20, 15_000)
    await new Promise((resolve) => setTimeout(resolve, 500))
    assert.deepEqual(early, [], 'the first worker got nothing before the time')
    assert.deepEqual(ran.map((r) => r.id).sort(), [...ids].sort(), 'each ran once')
    assert.ok(ran.every((r) => r.at >= due), 'none early')
    await Promise.all([producer.disconnect(), second.disconnect()])
  })
})

describe('recurring tasks', () => {
  test('three queues schedule one name: one task per tick, each with its own id; getSchedules; unschedule', async () => {
    const names = uniqueQueue()
    const producers = await Promise.all([1, 2, 3].map(() => scheduledQueue<{ report: string }>(names)))
    await Promise.all(producers.map((queue) => queue.schedule('daily-report', { every: 1000 }, { data: { report: 'daily' }, metadata: { team: 'ops' } })))
    const listed = await producers[0].getSchedules()
    assert.equal(listed.length, 1)
    assert.equal(listed[0].name, 'daily-report')
    assert.deepEqual(listed[0].spec, { every: 1000 })
    assert.deepEqual(listed[0].data, { report: 'daily' })
    assert.deepEqual(listed[0].metadata, { team: 'ops' })
    assert.equal((await producers[0].getStats()).recurring, 1)

    const ticks: Array<{ id: string; at: number; data: unknown }> = []
    await producers[1].process(async (task) => {
      ticks.push({ id: task.id, at: Date.now(), data: task.data })
      return { success: true }
    })
    await new Promise((resolve) => setTimeout(resolve, 3_500))
    assert.ok(ticks.length >= 2 && ticks.length <= 5, `about one a second: ${JSON.stringify(ticks)}`)
    for (let i = 1; i < ticks.length; i++) {
      assert.ok(ticks[i].at - ticks[i - 1].at >= 700, `two tasks for one tick: ${JSON.stringify(ticks)}`)
    }
    assert.equal(new Set(ticks.map((t) => t.id)).size, ticks.length, 'each tick has its own id')
    assert.ok(ticks.every((t) => /^daily-report:\d+$/.test(t.id)), JSON.stringify(ticks))
    assert.deepEqual(ticks[0].data, { report: 'daily' })

    assert.equal(await producers[2].unschedule('daily-report'), true)
    assert.equal(await producers[2].unschedule('daily-report'), false)
    assert.deepEqual(await producers[0].getSchedules(), [])
    await new Promise((resolve) => setTimeout(resolve, 300))
    const count = ticks.length
    await new Promise((resolve) => setTimeout(resolve, 1_800))
    assert.equal(ticks.length, count, 'no tick after unschedule')
    await Promise.all(producers.map((queue) => queue.disconnect()))
  })

  test('a cron schedule with a time zone reads back as given', async () => {
    const queue = await scheduledQueue()
    await queue.schedule('nightly', { cron: '0 30 2 * * *', timeZone: 'Europe/Paris' }, { data: 1 })
    const [listed] = await queue.getSchedules()
    assert.deepEqual(listed.spec, { cron: '0 30 2 * * *', timeZone: 'Europe/Paris' })
    await queue.disconnect()
  })
})

/** Whether the queue's task stream allows message schedules, as `listQueues()` reads it. */
async function schedulesOf(streamName: string): Promise<boolean | undefined> {
  const { queues } = await listQueues({ url: server.url })
  return queues.find((queue) => queue.streamName === streamName)?.schedules
}

describe('without options.schedules', () => {
  test('a queue that makes its stream takes delay, runAt and schedules with no option (nats-server ≥ 2.12)', async () => {
    const names = uniqueQueue()
    const queue = new Protoqueue<string>({ ...names })
    await queue.connect(server.url)
    const now = Date.now()
    const later = await queue.enqueue({ data: 'later', delay: 60_000 })
    await queue.enqueueBatch([{ data: 'soon', runAt: new Date(now + 300) }, { data: 'now' }])
    await queue.schedule('tick', { every: 1000 }, { data: 'tick' })
    assert.deepEqual((await queue.getSchedules()).map((s) => s.name), ['tick'])
    assert.ok((await queue.getStats()).delayed >= 2)
    assert.equal(await queue.cancel(later), true)
    const seen: string[] = []
    await queue.process(async (task) => {
      if (task.data !== 'tick') seen.push(task.data)
      return { success: true }
    })
    await eventually('the plain and the delayed task ran', () => seen.length === 2)
    assert.deepEqual(seen, ['now', 'soon'])
    await queue.unschedule('tick')
    await queue.disconnect()
    assert.equal(await schedulesOf(names.streamName), true)
  })

  test('a stream made without schedules (an earlier version, schedules: false) is left so: delays are refused, saying how to turn them on', async () => {
    const names = uniqueQueue()
    const earlier = new Protoqueue({ ...names, options: { schedules: false } })
    await earlier.connect(server.url)
    await earlier.enqueue({ data: 'waiting' })
    await earlier.disconnect()

    const queue = new Protoqueue({ ...names })
    await queue.connect(server.url)
    await assert.rejects(queue.enqueue({ data: 1, delay: 1000 }), (err: { code?: string; message: string }) => {
      assert.equal(err.code, 'ERR_PQ_SCHEDULES_OFF')
      assert.match(err.message, /options\.schedules: true/)
      return true
    })
    assert.equal(await schedulesOf(names.streamName), false, 'the stream was not changed')
    const stats = await queue.getStats()
    assert.deepEqual([stats.messages, stats.lastSequence], [1, 1], 'nothing sent, nothing lost')
    await queue.disconnect()

    // Asked for, the stream is changed (for good) and the same delay works.
    const asking = new Protoqueue({ ...names, options: { schedules: true } })
    await asking.connect(server.url)
    await asking.enqueue({ data: 1, delay: 60_000 })
    assert.equal((await asking.getStats()).delayed, 1)
    await asking.disconnect()
    assert.equal(await schedulesOf(names.streamName), true)
  })
})

describe('refused with codes, nothing sent', () => {
  test('bad delays, times, ids, names and specs', async () => {
    const queue = await scheduledQueue()
    const badTasks: unknown[] = [
      { data: 1, delay: -1 },
      { data: 1, delay: 1.5 },
      { data: 1, delay: Number.NaN },
      { data: 1, delay: Number.POSITIVE_INFINITY },
      { data: 1, delay: '1000' },
      { data: 1, delay: 11 * 366 * 24 * 3600 * 1000 },
      { data: 1, runAt: '2030-01-01' },
      { data: 1, runAt: new Date('not a date') },
      { data: 1, runAt: {} },
      { data: 1, runAt: -5 },
      { data: 1, delay: 10, runAt: Date.now() + 10 },
    ]
    for (const task of badTasks) {
      await rejectsWithCode(queue.enqueue(task as never), 'ERR_PQ_INVALID_TASK')
      await rejectsWithCode(queue.enqueueBatch([{ data: 'ok' }, task as never]), 'ERR_PQ_INVALID_TASK')
    }
    for (const id of [5, undefined, '', 'a b', 'a\nb', 'x'.repeat(300)]) {
      await rejectsWithCode(queue.cancel(id as never), 'ERR_PQ_INVALID_TASK')
    }
    for (const name of [5, null, '', 'a b', 'a.b', 'a:b', 'x>', 'é'.repeat(200)]) {
      await rejectsWithCode(queue.schedule(name as never, { every: 1000 }, { data: 1 }), 'ERR_PQ_INVALID_CONFIG')
      await rejectsWithCode(queue.unschedule(name as never), 'ERR_PQ_INVALID_CONFIG')
    }
    const badSpecs: unknown[] = [
      undefined,
      'every second',
      {},
      { every: 999 },
      { every: -1000 },
      { every: '1s' },
      { cron: '* * * * *' },
      { cron: '* * * * * *', every: 1000 },
      { cron: '* * * * * *', tz: 'UTC' },
      { cron: '61 * * * * *' },
      { cron: '* * * * * *', timeZone: 'Mars/Olympus_Mons' },
      { cron: '* * * * * *', timeZone: 5 },
    ]
    for (const spec of badSpecs) {
      await rejectsWithCode(queue.schedule('n', spec as never, { data: 1 }), 'ERR_PQ_INVALID_CONFIG')
    }
    await rejectsWithCode(queue.schedule('n', { every: 1000 }, { data: 1, delay: 5 } as never), 'ERR_PQ_INVALID_TASK')
    const stats = await queue.getStats()
    assert.deepEqual([stats.lastSequence, stats.delayed, stats.recurring], [0, 0, 0], 'nothing was sent')
    await queue.disconnect()
  })

  test('a queue with options.schedules: false refuses delays and schedules with ERR_PQ_SCHEDULES_OFF (cancel has no delayed task to find)', async () => {
    const names = uniqueQueue()
    const queue = new Protoqueue({ ...names, options: { schedules: false } })
    await queue.connect(server.url)
    await rejectsWithCode(queue.enqueue({ data: 1, delay: 1000 }), 'ERR_PQ_SCHEDULES_OFF')
    await rejectsWithCode(queue.enqueueBatch([{ data: 1 }, { data: 2, runAt: new Date() }]), 'ERR_PQ_SCHEDULES_OFF')
    assert.equal(await queue.cancel('x'), false, 'cancel works on any stream: no such task')
    await rejectsWithCode(queue.schedule('x', { every: 1000 }, { data: 1 }), 'ERR_PQ_SCHEDULES_OFF')
    await rejectsWithCode(queue.unschedule('x'), 'ERR_PQ_SCHEDULES_OFF')
    await rejectsWithCode(queue.getSchedules(), 'ERR_PQ_SCHEDULES_OFF')
    assert.equal((await queue.getStats()).lastSequence, 0)
    await queue.disconnect()
    assert.equal(await schedulesOf(names.streamName), false, 'made without message schedules')
  })
  test('options.schedules must be a boolean', () => {
    assert.throws(() => new Protoqueue({ ...uniqueQueue(), options: { schedules: 'yes' as never } }), { code: 'ERR_PQ_INVALID_CONFIG' })
  })
})
