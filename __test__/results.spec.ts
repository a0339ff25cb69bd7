// Task results and lookup (`options.results`, `waitFor`, `enqueueAndWait`, `getTask`) against a
// real nats-server: results from another queue object, failures with their reason, timeouts,
// the original API's `details`, results that are not JSON or too large (the task still
// completes), delayed and dead-lettered tasks looked up, a requeued task waited for again, a
// waiter across a server restart, and 10,000 waiters on one subscription.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type ProtoqueueConfig, type TaskInfo } from 'protoqueue'

import { NatsServer, freePort, uniqueQueue } from './helpers/nats'
import { connectedQueue, type Names } from './helpers/queues'
import { eventually, rejectsWithCode } from './helpers/wait'

const HOUR = 3_600_000

let server: NatsServer
let monitorPort: number
before(async () => {
  monitorPort = await freePort()
  server = await NatsServer.start(['-m', String(monitorPort)])
})
after(async () => {
  await server.stop()
})

const connected = <T = unknown>(names: Names, options: ProtoqueueConfig['options'] = {}) => connectedQueue<T>(server.url, names, { results: { ttl: HOUR }, ...options })

/** A worker whose handler returns `handle(data)`, and a producer beside it: two queue objects. */
async function workerAndProducer<T>(handle: (data: T, attempt: number) => unknown, options: ProtoqueueConfig['options'] = {}) {
  const names = uniqueQueue('results')
  const worker = await connected<T>(names, options)
  await worker.process(async (task) => handle(task.data as T, task.attempt ?? 1) as never)
  const producer = await connected<T>(names)
  return { names, worker, producer, close: () => Promise.all([worker.disconnect(), producer.disconnect()]) }
}

describe('results', () => {
  test('enqueueAndWait resolves with the handler result; waitFor of a finished task answers at once, from another object', async () => {
    const { names, producer, close } = await workerAndProducer<{ n: number }>((data) => ({ success: true, result: { doubled: data.n * 2, at: [1, 'two', null] } }))
    try {
      assert.deepEqual(await producer.enqueueAndWait({ data: { n: 21 } }, { timeout: 10_000 }), { doubled: 42, at: [1, 'two', null] })
      const id = await producer.enqueue({ data: { n: 5 } })
      assert.deepEqual(await producer.waitFor(id), { doubled: 10, at: [1, 'two', null] })
      // Later, from an object that enqueued nothing: the record answers.
      const monitor = await connected(names)
      const started = Date.now()
      assert.deepEqual(await monitor.waitFor(id, { timeout: 5_000 }), { doubled: 10, at: [1, 'two', null] })
      assert.ok(Date.now() - started < 2_000, 'at once')
      const info = (await monitor.getTask(id)) as TaskInfo
      assert.equal(info.state, 'completed')
      assert.equal(info.attempts, 1)
      assert.equal(info.task, undefined, 'results alone keep the outcome, not the task')
      assert.ok(info.enqueuedAt! <= info.startedAt! + 1000 && info.startedAt! <= info.finishedAt!, JSON.stringify(info))
      await monitor.disconnect()
    } finally {
      await close()
    }
  })

  test('results of every JSON kind, none, and the original API\'s details', async () => {
    const values: unknown[] = [0, 'text', false, null, [1, [2]], { nested: { deep: true } }]
    const { producer, close } = await workerAndProducer<{ kind: string; i?: number }>((data) => {
      if (data.kind === 'value') return { success: true, result: values[data.i!] }
      if (data.kind === 'details') return { success: true, details: { from: 'details' } }
      return { success: true }
    })
    try {
      for (let i = 0; i < values.length; i++) assert.deepEqual(await producer.enqueueAndWait({ data: { kind: 'value', i } }), values[i])
      assert.deepEqual(await producer.enqueueAndWait({ data: { kind: 'details' } }), { from: 'details' })
      assert.equal(await producer.enqueueAndWait({ data: { kind: 'none' } }), undefined)
    } finally {
      await close()
    }
  })

  test('a task that fails for good rejects its waiters with ERR_PQ_TASK_FAILED, its reason, error and attempts', async () => {
    const { producer, close } = await workerAndProducer<{ reject?: boolean }>((data) => ({ success: false, error: data.reject ? 'card declined' : 'smtp down', retry: !data.reject }), { maxRetries: 1, retryDelay: 10 })
    try {
      const exhausted = (await rejectsWithCode(producer.enqueueAndWait({ data: {} }), 'ERR_PQ_TASK_FAILED')) as Error & { reason?: string; error?: string; attempts?: number }
      assert.deepEqual([exhausted.reason, exhausted.error, exhausted.attempts], ['retriesExhausted', 'smtp down', 2])
      assert.match(exhausted.message, /failed for good after 2 attempts \(retriesExhausted\): smtp down/)
      const rejected = (await rejectsWithCode(producer.enqueueAndWait({ data: { reject: true } }), 'ERR_PQ_TASK_FAILED')) as Error & { reason?: string }
      assert.equal(rejected.reason, 'rejected')
    } finally {
      await close()
    }
  })

  test('waitFor of a task that does not end rejects with ERR_PQ_TIMEOUT; bad ids and options are refused', async () => {
    const names = uniqueQueue('results')
    const queue = await connected(names)
    const id = await queue.enqueue({ data: 1 })
    const started = Date.now()
    await rejectsWithCode(queue.waitFor(id, { timeout: 300 }), 'ERR_PQ_TIMEOUT')
    assert.ok(Date.now() - started >= 300)
    await rejectsWithCode(queue.waitFor('unknown-id', { timeout: 0 }), 'ERR_PQ_TIMEOUT')
    for (const bad of ['', 'a b', 'x'.repeat(300)]) {
      await rejectsWithCode(queue.waitFor(bad), 'ERR_PQ_INVALID_TASK')
      await rejectsWithCode(queue.getTask(bad), 'ERR_PQ_INVALID_TASK')
    }
    await rejectsWithCode(queue.getTask(42 as never), 'ERR_PQ_INVALID_TASK')
    for (const options of [{ timeout: -1 }, { timeout: 1.5 }, { timeout: '5s' }, { wait: 5 }, 7]) {
      await rejectsWithCode(queue.waitFor(id, options as never), 'ERR_PQ_INVALID_CONFIG')
    }
    await queue.disconnect()
    await rejectsWithCode(queue.waitFor(id), 'ERR_PQ_NOT_CONNECTED')
    const plain = new Protoqueue(names)
    await plain.connect(server.url)
    await rejectsWithCode(plain.waitFor(id), 'ERR_PQ_RESULTS_OFF')
    await plain.disconnect()
  })

  test('a result that is not JSON, or too large for the server, is left out with the reason; the task completes', async () => {
    const cycle: Record<string, unknown> = {}
    cycle.self = cycle
    const { producer, close } = await workerAndProducer<{ kind: string }>((data) => {
      if (data.kind === 'bigint') return { success: true, result: 10n }
      if (data.kind === 'cycle') return { success: true, result: cycle }
      return { success: true, result: 'x'.repeat(2 * 1024 * 1024) }
    })
    try {
      for (const [kind, why] of [
        ['bigint', /cannot be written as JSON/],
        ['cycle', /cannot be written as JSON/],
        ['huge', /max_payload/],
      ] as const) {
        const id = await producer.enqueue({ data: { kind } })
        assert.equal(await producer.waitFor(id, { timeout: 10_000 }), undefined, kind)
        const info = (await producer.getTask(id)) as TaskInfo
        assert.equal(info.state, 'completed', kind)
        assert.match(info.resultError ?? '', why, kind)
      }
      assert.equal((await producer.getStats()).messages, 0, 'every task completed')
    } finally {
      await close()
    }
  })
})

describe('getTask', () => {
  test('unknown ids, odd ids, delayed tasks and dead letters (these two without options.results)', async () => {
    const names = uniqueQueue('lookup')
    const queue = new Protoqueue<{ n: number }>({ ...names, options: { maxRetries: 0 } })
    await queue.connect(server.url)
    assert.equal(await queue.getTask('never-enqueued'), undefined)
    const odd = 'order/42:ü@ä.*>'
    const runAt = Date.now() + HOUR
    await queue.enqueue({ data: { n: 1 }, id: odd, runAt })
    const delayed = (await queue.getTask(odd)) as TaskInfo
    assert.deepEqual([delayed.state, delayed.runAt, delayed.attempts], ['delayed', runAt, 0])
    assert.ok(delayed.enqueuedAt! <= Date.now())
    assert.equal(await queue.cancel(odd), true)
    assert.equal(await queue.getTask(odd), undefined)

    const id = await queue.enqueue({ data: { n: 2 } })
    await queue.process(async () => ({ success: false, error: 'no such user' }))
    const lettered = await eventually('the letter', async () => queue.getTask(id))
    assert.deepEqual([lettered.state, lettered.error, lettered.reason, lettered.attempts], ['deadLettered', 'no such user', 'retriesExhausted', 1])
    await queue.purgeDeadLetters()
    assert.equal(await queue.getTask(id), undefined, 'its letter removed: nothing has it')
    await queue.disconnect()
  })

  test('a dead-lettered task that is requeued is waited for again: the new outcome, not the old one', async () => {
    let failing = true
    const { producer, close } = await workerAndProducer<{ n: number }>(() => (failing ? { success: false, error: 'down', retry: false } : { success: true, result: 'fixed' }))
    try {
      const id = await producer.enqueue({ data: { n: 1 } })
      await rejectsWithCode(producer.waitFor(id), 'ERR_PQ_TASK_FAILED')
      assert.equal((await producer.getTask(id))?.state, 'deadLettered')
      failing = false
      assert.equal(await producer.requeueDeadLetters(), 1)
      assert.equal(await producer.waitFor(id, { timeout: 10_000 }), 'fixed')
      assert.equal((await producer.getTask(id))?.state, 'completed')
    } finally {
      await close()
    }
  })
})

describe('waiting', () => {
  test('a waiter across a server restart gets the result written after it', async () => {
    const names = uniqueQueue('restart')
    const producer = await connected(names)
    const id = await producer.enqueue({ data: 'after the restart' })
    const waiting = producer.waitFor(id, { timeout: 60_000 })
    await new Promise((resolve) => setTimeout(resolve, 200))
    await server.restart()
    const worker = await connected<string>(names)
    await worker.process(async (task) => ({ success: true, result: task.data }))
    assert.equal(await waiting, 'after the restart')
    await worker.disconnect()
    await producer.disconnect()
  })

  test('10,000 waiters in one process share one consumer of the history; waiting again after they were answered works', async () => {
    const names = uniqueQueue('many')
    const producer = await connected<{ i: number }>(names)
    const n = 10_000
    const ids: string[] = []
    for (let i = 0; i < n; i += 1_000) ids.push(...(await producer.enqueueBatch(Array.from({ length: 1_000 }, (_, j) => ({ data: { i: i + j } })))))
    const answers = ids.map((id) => producer.waitFor(id, { timeout: 120_000 }))
    const consumers = async () => {
      const jsz = (await (await fetch(`http://127.0.0.1:${monitorPort}/jsz?streams=true&consumers=true`)).json()) as {
        account_details?: Array<{ stream_detail?: Array<{ name: string; consumer_detail?: unknown[] }> }>
      }
      const stream = jsz.account_details?.flatMap((a) => a.stream_detail ?? []).find((s) => s.name === `${names.streamName}_HISTORY`)
      return stream?.consumer_detail?.length ?? 0
    }
    const subscriptions = async () => ((await (await fetch(`http://127.0.0.1:${monitorPort}/varz`)).json()) as { subscriptions: number }).subscriptions
    const before = await subscriptions()
    assert.equal(await consumers(), 1, 'one consumer for all the waiters')
    const worker = await connected<{ i: number }>(names, { batchSize: 100 })
    await worker.process(async (task) => ({ success: true, result: task.data.i }))
    const results = await Promise.all(answers)
    assert.deepEqual(results, ids.map((_, i) => i))
    assert.ok(before < 200, `${before} subscriptions on the server while 10,000 waited`)
    assert.ok((await consumers()) <= 1)
    assert.equal(await producer.enqueueAndWait({ data: { i: -1 } }), -1, 'a new waiter after the others')
    await worker.disconnect()
    await producer.disconnect()
  })

  test('2,000 enqueueAndWait one after the other share one consumer too (the server keeps a dropped one a while: one each piled up past its limit)', async () => {
    const { names, producer, close } = await workerAndProducer<{ i: number }>((data) => ({ success: true, result: data.i }))
    try {
      for (let i = 0; i < 2_000; i++) assert.equal(await producer.enqueueAndWait({ data: { i } }, { timeout: 10_000 }), i)
      const jsz = (await (await fetch(`http://127.0.0.1:${monitorPort}/jsz?streams=true&consumers=true`)).json()) as {
        account_details?: Array<{ stream_detail?: Array<{ name: string; consumer_detail?: unknown[] }> }>
      }
      const history = jsz.account_details?.flatMap((a) => a.stream_detail ?? []).find((s) => s.name === `${names.streamName}_HISTORY`)
      assert.ok((history?.consumer_detail?.length ?? 0) <= 2, `${history?.consumer_detail?.length} consumers of the history`)
    } finally {
      await close()
    }
  })
})
