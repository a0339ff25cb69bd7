// Task priorities through the public API, against a real nats-server: urgent tasks overtake a
// backlog on every one of two workers within batchSize + prefetch, keep their level through a
// retry, a dead letter's requeue and a delay, and bad input is refused with nothing sent.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually, rejectsWithCode } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

type Start = { worker: number; data: string; at: number; priority?: number }

async function queueOf(names: { streamName: string; subject: string }, options: Record<string, unknown> = {}) {
  const queue = new Protoqueue<string>({ ...names, options: { priorities: true, ...options } })
  await queue.connect(server.url)
  return queue
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('priorities', () => {
  test('urgent tasks overtake a backlog of 2,000 on each of two workers, within batchSize + prefetch', async () => {
    const names = uniqueQueue()
    const options = { batchSize: 5, prefetch: 20 }
    const bound = options.batchSize + options.prefetch
    const producer = await queueOf(names, options)
    const lows = Array.from({ length: 2_000 }, (_, i) => ({ data: `low${i}`, priority: 10 }))
    await producer.enqueueBatch(lows)
    const starts: Start[] = []
    const workers = [await queueOf(names, options), await queueOf(names, options)]
    for (const [worker, queue] of workers.entries()) {
      await queue.process(async (task) => {
        starts.push({ worker, data: task.data, at: Date.now(), priority: task.priority })
        await sleep(3)
        return { success: true }
      })
    }
    await eventually('the backlog under way', () => starts.length >= 100)
    const stored = new Map<string, number>()
    for (let round = 0; round < 4; round++) {
      // More than two workers hold at once (2 × bound), so that every worker takes some of them.
      const urgent = Array.from({ length: 2 * bound + 10 }, (_, i) => ({ data: `high${round}_${i}`, priority: 1 }))
      await producer.enqueueBatch(urgent)
      const at = Date.now()
      for (const task of urgent) stored.set(task.data, at)
      await eventually('the round of urgent tasks started', () => starts.filter((s) => s.data.startsWith('high')).length >= stored.size)
    }
    for (const s of starts) assert.equal(s.priority, s.data.startsWith('low') ? 10 : 1, `the handler sees ${s.data}'s priority`)
    const lowsStarted = starts.filter((s) => s.data.startsWith('low')).length
    assert.ok(lowsStarted < 1_900, `the backlog was still there (${lowsStarted} low tasks started)`)
    const workersWithUrgent = new Set<number>()
    let worst = 0
    for (const [data, storedAt] of stored) {
      const start = starts.find((s) => s.data === data)
      assert.ok(start, `${data} started`)
      workersWithUrgent.add(start.worker)
      const overtaken = starts.filter((s) => s.worker === start.worker && s.data.startsWith('low') && s.at > storedAt && s.at < start.at).length
      worst = Math.max(worst, overtaken)
      assert.ok(overtaken <= bound, `${data}: ${overtaken} low tasks started on its worker after it was stored (bound ${bound})`)
    }
    assert.equal(workersWithUrgent.size, 2, 'both workers ran urgent tasks')
    console.log(`# priority bound observed: ${worst} low tasks before an urgent one (bound ${bound})`)
    const stats = await producer.getStats()
    assert.equal(stats.pendingByPriority?.length, 10)
    assert.equal(
      stats.pendingByPriority?.reduce((a, b) => a + b, 0),
      stats.pending,
    )
    await Promise.all([...workers, producer].map((q) => q.disconnect()))
  })

  test('a retried task keeps its priority: its retry overtakes the backlog too', async () => {
    const names = uniqueQueue()
    const options = { batchSize: 2, prefetch: 8, retryDelay: 200 }
    const bound = options.batchSize + options.prefetch
    const queue = await queueOf(names, options)
    await queue.enqueueBatch(Array.from({ length: 1_000 }, (_, i) => ({ data: `low${i}`, priority: 9 })))
    const starts: Start[] = []
    let failedAt = 0
    await queue.process(async (task) => {
      starts.push({ worker: 0, data: task.data, at: Date.now() })
      if (task.data === 'urgent' && failedAt === 0) {
        failedAt = Date.now()
        return { success: false, error: 'once' }
      }
      await sleep(3)
      return { success: true }
    })
    await eventually('the backlog under way', () => starts.length >= 50)
    await queue.enqueue({ data: 'urgent', priority: 2 })
    await eventually('the retry', () => starts.filter((s) => s.data === 'urgent').length === 2)
    const retry = starts.filter((s) => s.data === 'urgent')[1]
    const due = failedAt + options.retryDelay
    const overtaken = starts.filter((s) => s.data.startsWith('low') && s.at > due && s.at < retry.at).length
    assert.ok(overtaken <= bound, `${overtaken} low tasks started after the retry was due (bound ${bound})`)
    assert.ok(starts.filter((s) => s.data.startsWith('low')).length < 1_000, 'the backlog was still there')
    await queue.disconnect()
  })

  test('a requeued dead letter goes back to its priority; a delayed task fires into its priority', async () => {
    const names = uniqueQueue()
    const worker = await queueOf(names, { maxRetries: 0, schedules: true })
    await worker.process(async () => ({ success: false, error: 'no' }))
    await worker.enqueue({ data: 'x', priority: 3 })
    await eventually('the dead letter', async () => (await worker.getStats()).deadLettered === 1)
    await worker.disconnect()
    const admin = await queueOf(names, { schedules: true })
    assert.equal(await admin.requeueDeadLetters(), 1)
    let stats = await admin.getStats()
    assert.equal(stats.pendingByPriority?.[2], 1, JSON.stringify(stats))
    await admin.enqueue({ data: 'later', priority: 1, delay: 200 })
    stats = await admin.getStats()
    assert.deepEqual([stats.delayed, stats.pendingByPriority?.[0]], [1, 0])
    stats = await eventually('the delayed task due', async () => {
      const s = await admin.getStats()
      return s.delayed === 0 && s
    })
    assert.equal(stats.pendingByPriority?.[0], 1, JSON.stringify(stats))
    assert.equal(stats.pending, 2)
    await admin.disconnect()
  })

  test('bad priorities reject with ERR_PQ_INVALID_TASK and nothing is sent', async () => {
    const plain = new Protoqueue<string>(uniqueQueue())
    await plain.connect(server.url)
    const err = await rejectsWithCode(plain.enqueue({ data: 'x', priority: 1 }), 'ERR_PQ_INVALID_TASK')
    assert.match(err.message, /options\.priorities/)
    assert.equal((await plain.getStats()).messages, 0)
    await plain.disconnect()

    const queue = await queueOf(uniqueQueue())
    for (const bad of [0, 11, 1.5, -1, Number.NaN, Infinity, '1', true, {}]) {
      await rejectsWithCode(queue.enqueue({ data: 'x', priority: bad as number }), 'ERR_PQ_INVALID_TASK')
      await rejectsWithCode(queue.enqueueBatch([{ data: 'ok', priority: 1 }, { data: 'x', priority: bad as number }]), 'ERR_PQ_INVALID_TASK')
    }
    await rejectsWithCode(queue.schedule('tick', { every: 1000 }, { data: 'x', priority: 2 }), 'ERR_PQ_INVALID_TASK')
    const stats = await queue.getStats()
    assert.equal(stats.messages, 0, 'nothing was sent')
    await queue.disconnect()

    assert.throws(() => new Protoqueue({ ...uniqueQueue(), options: { priorities: 'yes' as unknown as boolean } }), { code: 'ERR_PQ_INVALID_CONFIG' })
    assert.throws(() => new Protoqueue({ ...uniqueQueue(), options: { priorities: true, globalConcurrency: 3 } }), { code: 'ERR_PQ_INVALID_CONFIG' })
  })
})
