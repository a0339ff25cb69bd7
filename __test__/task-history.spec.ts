// The task history kept by `keepCompleted` / `keepFailed`, `getTasks` of every state, and the
// counts in `getStats`, against a real nats-server: counts trimmed to the newest, records that
// expire by age, pages newest first that join up, running tasks listed from the workers, delayed
// and retrying tasks listed from the stream, bad queries, and a queue that keeps nothing.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type ProtoqueueConfig, type TaskInfo, type TaskState } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { connectedQueue, type Names } from './helpers/queues'
import { eventually, rejectsWithCode } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

const open = (names: Names, options: ProtoqueueConfig['options'] = {}) => connectedQueue<{ n: number }>(server.url, names, options)

/** Every task of `state`, following the cursors, `limit` a page. */
async function allOf(queue: Protoqueue<any>, state: TaskState, limit: number) {
  const tasks: TaskInfo[] = []
  let cursor: string | undefined
  let pages = 0
  do {
    const page = await queue.getTasks({ state, limit, cursor })
    assert.ok(page.tasks.length <= limit)
    tasks.push(...page.tasks)
    cursor = page.cursor
    pages += 1
    assert.ok(pages < 1_000, 'pages end')
  } while (cursor)
  return { tasks, pages }
}

describe('task history', () => {
  test('keepCompleted { count }: the newest completed tasks are kept, listed newest first and counted; nothing else is', async () => {
    const names = uniqueQueue('history')
    const worker = await open(names, { keepCompleted: { count: 5 }, batchSize: 1 })
    const monitor = await open(names)
    try {
      let handled = 0
      await worker.process(async (task) => {
        handled += 1
        return { success: true, result: { n: task.data.n } }
      })
      // One at a time, so that the order they complete in (which "newest" means) is the order of n.
      const ids: string[] = []
      for (let n = 0; n < 20; n++) {
        const id = await monitor.enqueue({ data: { n } })
        ids.push(id)
        await eventually(`task ${n} completed`, async () => (await monitor.getTask(id))?.state === 'completed')
      }
      assert.equal(handled, 20)
      await eventually('the records trimmed to 5', async () => (await monitor.getStats()).completed === 5)
      const { tasks } = await allOf(monitor, 'completed', 2)
      assert.deepEqual(tasks.map((t) => t.id), ids.slice(-5).reverse(), 'the newest five, newest first')
      assert.deepEqual(tasks.map((t) => t.result), [19, 18, 17, 16, 15].map((n) => ({ n })))
      assert.deepEqual(tasks.map((t) => t.task?.data), [19, 18, 17, 16, 15].map((n) => ({ n })), 'keepCompleted keeps the task with its record')
      assert.equal((await monitor.getTask(ids[0])), undefined, 'a trimmed record is gone')
      assert.equal((await monitor.getTask(ids[19]))?.state, 'completed')
      const stats = await monitor.getStats()
      assert.equal(stats.failed, 0)
      assert.equal(stats.cancelled, 0)
      assert.deepEqual((await monitor.getTasks({ state: 'failed' })).tasks, [], 'keepCompleted keeps no failure')
    } finally {
      await worker.disconnect()
      await monitor.destroy({ force: true })
      await monitor.disconnect()
    }
  })

  test('keepFailed { count }: dead-lettered and cancelled tasks, with their errors; no completed one', async () => {
    const names = uniqueQueue('history')
    const worker = await open(names, { keepFailed: { count: 3 }, maxRetries: 0, batchSize: 1 })
    const monitor = await open(names)
    try {
      await worker.process(async (task) => {
        if (task.data.n >= 0) throw new Error(`bad ${task.data.n}`)
        return { success: true }
      })
      // One at a time, so that the order they fail in is the order of n.
      const failing: string[] = []
      for (let n = 0; n < 6; n++) {
        const id = await monitor.enqueue({ data: { n } })
        failing.push(id)
        await eventually(`task ${n} recorded`, async () => (await monitor.getTasks({ state: 'failed', limit: 1 })).tasks[0]?.id === id)
      }
      assert.equal((await monitor.getStats()).deadLettered, 6)
      const fine = await monitor.enqueue({ data: { n: -1 } })
      await eventually('the records trimmed to 3', async () => (await monitor.getStats()).failed === 3)
      const { tasks } = await allOf(monitor, 'failed', 10)
      assert.deepEqual(tasks.map((t) => t.id), failing.slice(-3).reverse())
      for (const task of tasks) {
        assert.equal(task.state, 'deadLettered')
        assert.equal(task.reason, 'retriesExhausted')
        assert.equal(task.failures, undefined, 'one attempt, no retry: no earlier failure')
        assert.match(task.error!, /^bad \d/)
        assert.equal(task.error, `bad ${(task.task?.data as { n: number }).n}`, 'the record keeps the task too')
      }
      assert.deepEqual((await monitor.getTasks({ state: 'deadLettered' })).tasks.map((t) => t.id), tasks.map((t) => t.id), "'deadLettered' lists the same")
      await eventually('the fine one done', async () => (await monitor.getStats()).messages === 0)
      assert.equal(await monitor.getTask(fine), undefined, 'no completed record without keepCompleted')
      assert.equal((await monitor.getStats()).completed, 0)
    } finally {
      await worker.disconnect()
      await monitor.destroy({ force: true })
      await monitor.disconnect()
    }
  })

  test('a task that failed twice, then completed: its kept record tells each failed attempt, oldest first', async () => {
    const names = uniqueQueue('history')
    const worker = await open(names, { keepCompleted: true, maxRetries: 3, retryDelay: 0 })
    try {
      const runs = new Map<string, number>()
      await worker.process(async (task) => {
        const run = (runs.get(task.id) ?? 0) + 1
        runs.set(task.id, run)
        if (run < 3) throw new Error(`attempt ${run} failed`)
        return { success: true, result: 'third time lucky' }
      })
      const id = await worker.enqueue({ data: { n: 1 } })
      const done = (await eventually('the record', async () => {
        const info = await worker.getTask(id)
        return info?.state === 'completed' && info
      }))!
      assert.equal(done.attempts, 3)
      assert.deepEqual(done.failures?.map((f) => [f.attempt, f.error]), [[1, 'attempt 1 failed'], [2, 'attempt 2 failed']])
      assert.ok(done.failures!.every((f) => f.startedAt <= f.failedAt && f.failedAt <= done.startedAt!), JSON.stringify(done))
    } finally {
      await worker.destroy({ force: true })
      await worker.disconnect()
    }
  })

  test('keepCompleted { age }: a record goes once it is that old; its waiters then time out', async () => {
    const names = uniqueQueue('history')
    const worker = await open(names, { keepCompleted: { age: 1_000 } })
    try {
      await worker.process(async () => ({ success: true, result: 'kept a while' }))
      const id = await worker.enqueue({ data: { n: 1 } })
      const kept = await eventually('the record', async () => worker.getTask(id))
      assert.equal(kept.state, 'completed')
      assert.equal(kept.result, 'kept a while')
      await eventually('the record expired', async () => (await worker.getTask(id)) === undefined, 10_000)
      assert.equal((await worker.getStats()).completed, 0)
      // A waiter of a task whose record expired waits for an outcome that never comes.
      const waiter = new Protoqueue({ ...names, options: { results: { ttl: 1_000 } } })
      await waiter.connect(server.url)
      await rejectsWithCode(waiter.waitFor(id, { timeout: 300 }), 'ERR_PQ_TIMEOUT')
      await waiter.disconnect()
    } finally {
      await worker.destroy({ force: true })
      await worker.disconnect()
    }
  })

  test('getTasks of the task stream: waiting pages newest first that join up, delayed with runAt, retrying with its error, running from the workers', async () => {
    const names = uniqueQueue('history')
    const queue = await open(names, { maxRetries: 2, retryDelay: 60_000, batchSize: 2 })
    try {
      const waiting = (await queue.enqueueBatch(Array.from({ length: 250 }, (_, n) => ({ data: { n } })))) as string[]
      const { tasks, pages } = await allOf(queue, 'waiting', 100)
      assert.equal(pages, 3)
      assert.deepEqual(tasks.map((t) => t.id), [...waiting].reverse(), 'every one once, newest first')
      assert.ok(tasks.every((t) => t.state === 'waiting' && t.attempts === 0))

      const due = Date.now() + 3_600_000
      const delayed = await queue.enqueue({ data: { n: -1 }, runAt: new Date(due) })
      const listed = (await queue.getTasks({ state: 'delayed' })).tasks
      assert.deepEqual(listed.map((t) => [t.id, t.state]), [[delayed, 'delayed']])
      assert.ok(Math.abs(listed[0].runAt! - due) < 1_000)
      assert.deepEqual((await queue.getTasks({ state: 'waiting', limit: 1 })).tasks.map((t) => t.id), [waiting.at(-1)], 'a delayed task is not waiting')

      // The worker fails the two newest's first attempts and holds the next two.
      await queue.purge()
      const [failing, held] = [await queue.enqueue({ data: { n: 1 } }), await queue.enqueue({ data: { n: 2 } })]
      let release!: () => void
      const released = new Promise<void>((resolve) => (release = resolve))
      await queue.process(async (task) => {
        if (task.data.n === 1) throw new Error('try again later')
        task.progress(42)
        await released
        return { success: true }
      })
      const retrying = await eventually('a retrying task', async () => (await queue.getTasks({ state: 'retrying' })).tasks[0])
      assert.equal(retrying.id, failing)
      assert.equal(retrying.attempts, 1)
      assert.match(retrying.error!, /try again later/)
      const running = await eventually('a running task', async () => (await queue.getTasks({ state: 'running' })).tasks.find((t) => t.progress === 42))
      assert.equal(running.id, held)
      assert.equal(running.state, 'running')
      assert.equal(running.attempts, 1)
      assert.deepEqual((await queue.getTasks({ state: 'waiting' })).tasks, [], 'a running task is not waiting')
      release()
    } finally {
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })

  test('bad queries reject with ERR_PQ_INVALID_CONFIG; a queue that keeps nothing lists and counts none', async () => {
    const names = uniqueQueue('history')
    const queue = await open(names)
    try {
      for (const query of [undefined, {}, { state: 'finished' }, { state: 'waiting', limit: 0 }, { state: 'waiting', limit: 1_001 }, { state: 'waiting', limit: 1.5 }, { state: 'waiting', cursor: '' }, { state: 'waiting', cursor: 'not-a-cursor' }, { state: 'waiting', other: 1 }]) {
        await rejectsWithCode(queue.getTasks(query as never), 'ERR_PQ_INVALID_CONFIG')
      }
      for (const options of [{ keepCompleted: 5 }, { keepCompleted: { count: 0 } }, { keepFailed: { age: 10 } }, { keepFailed: { size: 1 } }, { keepCompleted: false }]) {
        assert.throws(() => new Protoqueue({ ...names, options } as never), { code: 'ERR_PQ_INVALID_CONFIG' })
      }
      for (const state of ['completed', 'failed', 'cancelled'] as const) assert.deepEqual(await queue.getTasks({ state }), { tasks: [] })
      const stats = await queue.getStats()
      assert.deepEqual([stats.completed, stats.failed, stats.cancelled], [0, 0, 0])
    } finally {
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })
})
