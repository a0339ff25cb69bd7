// Handlers, retries and dead letters against a real nats-server.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type TaskData, type TaskHandler } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { deferred, eventually, within } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

async function connectedQueue(options: Record<string, number> = {}, names = uniqueQueue()) {
  const queue = new Protoqueue({ ...names, options })
  await queue.connect(server.url)
  return queue
}

/** Runs one failing task through `handler` and returns the times and attempts it was handled. */
async function failOnce(handler: TaskHandler, options: Record<string, number>) {
  const queue = await connectedQueue(options)
  const attempts: Array<{ at: number; attempt?: number }> = []
  const maxAttempts = 1 + (options.maxRetries ?? 3)
  await queue.process(async (task) => {
    attempts.push({ at: Date.now(), attempt: task.attempt })
    return handler(task)
  })
  await queue.enqueue({ data: { job: 'fail' } })
  const letters = await eventually('the dead letter', async () => {
    const found = await queue.getDeadLetters()
    return found.length > 0 ? found : undefined
  })
  assert.equal(attempts.length, maxAttempts, 'exactly 1 + maxRetries attempts')
  return { queue, attempts, letter: letters[0] }
}

describe('retries and dead letters', () => {
  test('a failing task is tried 1 + maxRetries times, spaced by retryDelay, then dead-lettered', async () => {
    const retryDelay = 400
    const { queue, attempts, letter } = await failOnce(
      async () => ({ success: false, error: 'smtp down', details: { server: 'mx1', code: 421 } }),
      { maxRetries: 2, retryDelay },
    )
    assert.deepStrictEqual(attempts.map((a) => a.attempt), [1, 2, 3])
    for (let i = 1; i < attempts.length; i++) {
      const gap = attempts[i].at - attempts[i - 1].at
      assert.ok(gap >= retryDelay - 20, `retry ${i} came after ${gap} ms, before retryDelay`)
    }
    assert.equal(letter.reason, 'retriesExhausted')
    assert.equal(letter.error, 'smtp down')
    assert.deepStrictEqual(letter.details, { server: 'mx1', code: 421 })
    assert.equal(letter.attempts, 3)
    assert.deepStrictEqual(letter.task?.data, { job: 'fail' })
    assert.ok(letter.failedAt >= attempts[2].at - 1000)
    const stats = await eventually('original removed', async () => {
      const s = await queue.getStats()
      return s.messages === 0 ? s : undefined
    })
    assert.equal(stats.deadLettered, 1)
    await queue.disconnect()
  })

  test('maxRetries 0 dead-letters after the first failure', async () => {
    const { queue, letter } = await failOnce(async () => ({ success: false }), { maxRetries: 0, retryDelay: 0 })
    assert.equal(letter.attempts, 1)
    assert.equal(letter.reason, 'retriesExhausted')
    await queue.disconnect()
  })

  test('retry: false dead-letters at once', async () => {
    const queue = await connectedQueue({ maxRetries: 5, retryDelay: 0 })
    let attempts = 0
    await queue.process(async () => {
      attempts++
      return { success: false, error: 'bad address', retry: false }
    })
    await queue.enqueue({ data: 'x' })
    const [letter] = await eventually('the dead letter', async () => {
      const found = await queue.getDeadLetters()
      return found.length > 0 ? found : undefined
    })
    assert.equal(attempts, 1)
    assert.equal(letter.reason, 'rejected')
    assert.equal(letter.error, 'bad address')
    await queue.disconnect()
  })

  test('a rejecting async handler is a failure; its message and stack reach the dead letter', async () => {
    const { queue, letter } = await failOnce(
      async () => {
        throw new TypeError('cannot read the template')
      },
      { maxRetries: 1, retryDelay: 0 },
    )
    assert.equal(letter.error, 'cannot read the template')
    assert.equal(letter.details?.name, 'TypeError')
    assert.match(String(letter.details?.stack), /cannot read the template/)
    await queue.disconnect()
  })

  test('a synchronously throwing handler is a failure and does not crash the worker', async () => {
    const { queue, letter } = await failOnce(
      () => {
        throw new Error('sync boom')
      },
      { maxRetries: 1, retryDelay: 0 },
    )
    assert.equal(letter.error, 'sync boom')
    await queue.disconnect()
  })

  test('throwing a non-Error value is a failure', async () => {
    const { queue, letter } = await failOnce(
      () => {
        throw 'just a string'
      },
      { maxRetries: 0, retryDelay: 0 },
    )
    assert.equal(letter.error, 'just a string')
    await queue.disconnect()
  })

  for (const [name, junk] of [
    ['undefined', undefined],
    ['a string', 'ok'],
    ['null', null],
    ['an object without success', { ok: true }],
    ['success as a string', { success: 'true' }],
  ] as const) {
    test(`a handler returning ${name} is a failure`, async () => {
      const { queue, letter } = await failOnce(
        (() => junk) as unknown as TaskHandler,
        { maxRetries: 0, retryDelay: 0 },
      )
      assert.match(letter.error, /expected \{ success: boolean/)
      await queue.disconnect()
    })
  }

  test('the worker keeps going after failures: later tasks still succeed', async () => {
    const queue = await connectedQueue({ maxRetries: 0, retryDelay: 0, batchSize: 4 })
    const succeeded = new Set<number>()
    const done = deferred()
    await queue.process((task: TaskData) => {
      const n = (task.data as { n: number }).n
      if (n % 3 === 0) throw new Error(`fail ${n}`)
      if (n % 3 === 1) return Promise.reject(new Error(`reject ${n}`))
      succeeded.add(n)
      if (succeeded.size === 10) done.resolve()
      return { success: true }
    })
    await queue.enqueueBatch(Array.from({ length: 30 }, (_, n) => ({ data: { n } })))
    await within('the 10 good tasks', done.promise)
    const stats = await eventually('20 dead letters', async () => {
      const s = await queue.getStats()
      return s.deadLettered === 20 && s.messages === 0 ? s : undefined
    })
    assert.equal(stats.deadLettered, 20)
    await queue.disconnect()
  })
})

describe('workers', () => {
  test('no more than batchSize handlers run at once', async () => {
    const queue = await connectedQueue({ batchSize: 3 })
    let running = 0
    let peak = 0
    let handled = 0
    const done = deferred()
    await queue.process(async () => {
      running++
      peak = Math.max(peak, running)
      await new Promise((r) => setTimeout(r, 20))
      running--
      if (++handled === 30) done.resolve()
      return { success: true }
    })
    await queue.enqueueBatch(Array.from({ length: 30 }, (_, i) => ({ data: i })))
    await within('30 tasks', done.promise)
    assert.equal(peak, 3, `peak concurrency ${peak}`)
    await queue.disconnect()
  })

  test('two workers share a queue without handling a task twice', async () => {
    const names = uniqueQueue()
    const producer = await connectedQueue({}, names)
    const a = await connectedQueue({ batchSize: 5 }, names)
    const b = await connectedQueue({ batchSize: 5 }, names)
    const handledBy = new Map<string, string[]>()
    const total = 400
    const done = deferred()
    const handler = (worker: string) => async (task: TaskData) => {
      handledBy.set(task.id, [...(handledBy.get(task.id) ?? []), worker])
      await new Promise((r) => setTimeout(r, 2))
      if (handledBy.size === total) done.resolve()
      return { success: true }
    }
    await a.process(handler('a'))
    await b.process(handler('b'))
    const ids = await producer.enqueueBatch(Array.from({ length: total }, (_, i) => ({ data: i })))
    await within('all tasks', done.promise, 30_000)
    await eventually('all acked', async () => (await producer.getStats()).messages === 0)
    assert.deepStrictEqual(new Set(handledBy.keys()), new Set(ids))
    assert.ok([...handledBy.values()].every((w) => w.length === 1), 'every task handled once')
    const counts = [...handledBy.values()].flat().reduce<Record<string, number>>((acc, w) => ({ ...acc, [w]: (acc[w] ?? 0) + 1 }), {})
    assert.ok(counts.a > 0 && counts.b > 0, `both workers took tasks: ${JSON.stringify(counts)}`)
    assert.equal((await producer.getStats()).consumer_count, 1, 'one shared durable consumer')
    await Promise.all([a.disconnect(), b.disconnect(), producer.disconnect()])
  })
})
