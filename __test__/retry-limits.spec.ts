// Your own task ids, retry backoff (options, per task, a function) and global limits
// (globalConcurrency across worker processes, rateLimit), through the public API against a real
// nats-server. Times: lower bounds strict, upper bounds generous (a shared, noisy machine).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type TaskData } from 'protoqueue'

import { Child, fixture, fixtureEnv } from './helpers/child'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually, rejectsWithCode } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

const SLACK = 1_500

async function connected<T = unknown>(options: Record<string, unknown> = {}, names = uniqueQueue()) {
  const queue = new Protoqueue<T>({ ...names, options })
  await queue.connect(server.url)
  return queue
}

/** Records the time of every call, failing until `succeedOn`. */
function failingUntil(succeedOn: number, times: number[]) {
  return async (task: TaskData) => {
    times.push(Date.now())
    return task.attempt === succeedOn ? { success: true } : { success: false, error: `attempt ${task.attempt}` }
  }
}

function assertGap(gap: number, least: number, what: string) {
  // Date.now() has whole milliseconds: allow 1 ms of rounding below.
  assert.ok(gap >= least - 1, `${what}: waited ${gap} ms, less than ${least}`)
  assert.ok(gap <= least + SLACK, `${what}: waited ${gap} ms, far more than ${least}`)
}

const gaps = (times: number[]) => times.slice(1).map((t, i) => t - times[i])

describe('your own task ids', () => {
  test('an id enqueued again stores nothing and resolves with the id; the handler sees it', async () => {
    const queue = await connected()
    assert.equal(await queue.enqueue({ data: { n: 1 }, id: 'invoice-7' }), 'invoice-7')
    assert.equal(await queue.enqueue({ data: { n: 2 }, id: 'invoice-7' }), 'invoice-7')
    const ids = await queue.enqueueBatch([{ data: 1, id: 'a' }, { data: 2, id: 'a' }, { data: 3 }])
    assert.deepEqual(ids.slice(0, 2), ['a', 'a'])
    assert.equal((await queue.getStats()).messages, 3)
    const seen: Array<{ id: string; data: unknown }> = []
    await queue.process(async (task) => {
      seen.push({ id: task.id, data: task.data })
      return { success: true }
    })
    await eventually('three tasks handled', () => seen.length === 3)
    assert.deepEqual(seen.find((s) => s.id === 'invoice-7')?.data, { n: 1 }, 'the first one is kept')
    await queue.disconnect()
  })

  test('two producers enqueueing one id at once store one task', async () => {
    const names = uniqueQueue()
    const [a, b] = [await connected({}, names), await connected({}, names)]
    const rounds = 20
    for (let i = 0; i < rounds; i++) {
      const [x, y] = await Promise.all([a.enqueue({ data: 'a', id: `race-${i}` }), b.enqueue({ data: 'b', id: `race-${i}` })])
      assert.deepEqual([x, y], [`race-${i}`, `race-${i}`])
    }
    assert.equal((await a.getStats()).messages, rounds)
    await Promise.all([a.disconnect(), b.disconnect()])
  })

  test('bad ids, maxRetries and backoffs are ERR_PQ_INVALID_TASK and nothing is sent', async () => {
    const queue = await connected()
    const bad: unknown[] = [
      { data: 1, id: '' },
      { data: 1, id: 'a b' },
      { data: 1, id: 'line\nbreak' },
      { data: 1, id: 'x'.repeat(257) },
      { data: 1, id: 42 },
      { data: 1, maxRetries: -1 },
      { data: 1, maxRetries: 1.5 },
      { data: 1, maxRetries: '3' },
      { data: 1, backoff: 'exponential' },
      { data: 1, backoff: (n: number) => n },
      { data: 1, backoff: { type: 'linear', delay: 10 } },
      { data: 1, backoff: { type: 'fixed' } },
      { data: 1, backoff: { type: 'exponential', delay: 100, maxDelay: 10 } },
      { data: 1, backoff: { type: 'fixed', delay: 10, jitter: 2 } },
      { data: 1, priority: 1 },
    ]
    for (const task of bad) {
      await rejectsWithCode(queue.enqueue(task as any), 'ERR_PQ_INVALID_TASK')
      await rejectsWithCode(queue.enqueueBatch([{ data: 0 }, task as any]), 'ERR_PQ_INVALID_TASK')
    }
    assert.equal((await queue.getStats()).messages, 0)
    await queue.disconnect()
  })
})

describe('retry backoff', () => {
  test('exponential backoff from the options: delay, 2 × delay, … up to maxDelay', async () => {
    const queue = await connected({ maxRetries: 4, backoff: { type: 'exponential', delay: 200, maxDelay: 700 } })
    await queue.enqueue({ data: 1 })
    const times: number[] = []
    await queue.process(failingUntil(5, times))
    await eventually('five attempts', () => times.length === 5, 20_000)
    gaps(times).forEach((gap, i) => assertGap(gap, [200, 400, 700, 700][i], `retry ${i + 1}`))
    await queue.disconnect()
  })

  test('a task carries its own maxRetries and backoff', async () => {
    const queue = await connected({ maxRetries: 0, retryDelay: 60_000 })
    await queue.enqueue({ data: 1, maxRetries: 2, backoff: { type: 'fixed', delay: 300 } })
    const times: number[] = []
    const maxAttempts: Array<number | undefined> = []
    await queue.process(async (task) => {
      maxAttempts.push(task.maxAttempts)
      return failingUntil(3, times)(task)
    })
    await eventually('three attempts', () => times.length === 3, 15_000)
    assert.deepEqual(maxAttempts, [3, 3, 3])
    gaps(times).forEach((gap) => assertGap(gap, 300, 'own backoff'))
    await queue.disconnect()
  })

  test('a backoff function decides each delay; a throw or junk falls back to the configured delay', async () => {
    const calls: Array<[number, unknown]> = []
    const warnings: string[] = []
    const originalWarn = console.warn
    console.warn = (message: string) => warnings.push(message)
    try {
      const queue = await connected({
        maxRetries: 4,
        backoff: (attempt: number, error: unknown) => {
          calls.push([attempt, error])
          if (attempt === 1) return 150
          if (attempt === 2) throw new Error('boom')
          if (attempt === 3) return 'soon'
          return 50
        },
      })
      await queue.enqueue({ data: 1 })
      const times: number[] = []
      await queue.process(failingUntil(5, times))
      await eventually('five attempts', () => times.length === 5, 20_000)
      const [first, second, third, fourth] = gaps(times)
      assertGap(first, 150, 'from the function')
      assertGap(second, 1_000, 'after a throw: the default retryDelay')
      assertGap(third, 1_000, 'after junk: the default retryDelay')
      assertGap(fourth, 50, 'from the function again')
      assert.deepEqual(calls, [[1, 'attempt 1'], [2, 'attempt 2'], [3, 'attempt 3'], [4, 'attempt 4']])
      assert.equal(warnings.filter((w) => w.includes('options.backoff')).length, 2, warnings.join('\n'))
      await queue.disconnect()
    } finally {
      console.warn = originalWarn
    }
  })

  test('bad backoff options are ERR_PQ_INVALID_CONFIG', () => {
    for (const options of [
      { backoff: 'exponential' },
      { backoff: { type: 'exponential' } },
      { backoff: { type: 'fixed', delay: -1 } },
      { backoff: { type: 'exponential', delay: 10, jitter: 1.01 } },
      { backoff: { type: 'fixed', delay: 10 }, retryDelay: 10 },
      { backoff: () => 10, retryDelay: 10 },
      { globalConcurrency: 0 },
      { globalConcurrency: 1.5 },
      { rateLimit: { max: 10 } },
      { rateLimit: { max: 0, duration: 1000 } },
      { rateLimit: { max: 10, duration: 1000, extra: 1 } },
    ]) {
      assert.throws(() => new Protoqueue({ ...uniqueQueue(), options: options as any }), { code: 'ERR_PQ_INVALID_CONFIG' }, JSON.stringify(options))
    }
  })
})

describe('global limits', () => {
  test('globalConcurrency 3 with three worker processes of batchSize 10: never more than 3 handlers at once', async () => {
    const names = uniqueQueue()
    const producer = await connected({}, names)
    const total = 30
    await producer.enqueueBatch(Array.from({ length: total }, (_, i) => ({ data: { n: i } })))
    const env = fixtureEnv(names, server.url, { GLOBAL: '3', BATCH: '10', WORK_MS: '200' })
    const workers = [0, 1, 2].map(() => Child.run(process.execPath, [fixture('limits-worker.mjs')], env))
    try {
      await Promise.all(workers.map((w) => w.waitForLines(/^ready$/)))
      await eventually('every task handled', () => workers.reduce((n, w) => n + w.lines.filter((l) => l.startsWith('end ')).length, 0) === total, 30_000)
      // Every start and end, in time order; at one millisecond ends come first (a task starts only
      // after another's ack reached the server).
      const events = workers
        .flatMap((w) => w.lines)
        .filter((l) => /^(start|end) \d+$/.test(l))
        .map((l) => {
          const [kind, at] = l.split(' ')
          return { at: Number(at), delta: kind === 'start' ? 1 : -1 }
        })
        .sort((x, y) => x.at - y.at || x.delta - y.delta)
      let running = 0
      let most = 0
      for (const e of events) {
        running += e.delta
        most = Math.max(most, running)
      }
      assert.ok(most <= 3, `${most} handlers ran at once`)
      assert.equal(most, 3, 'the limit is used')
      const busy = workers.filter((w) => w.lines.some((l) => l.startsWith('start '))).length
      assert.ok(busy >= 2, `only ${busy} worker(s) got tasks: prefetching starves the others`)
    } finally {
      await Promise.all(workers.map((w) => w.kill()))
      await producer.disconnect()
    }
  })

  test('rateLimit: a worker takes at most max tasks per duration', async () => {
    const queue = await connected({ rateLimit: { max: 4, duration: 400 } })
    await queue.enqueueBatch(Array.from({ length: 20 }, (_, i) => ({ data: i })))
    const times: number[] = []
    const started = Date.now()
    await queue.process(async () => {
      times.push(Date.now())
      return { success: true }
    })
    await eventually('every task handled', () => times.length === 20, 30_000)
    const elapsed = Date.now() - started
    assert.ok(elapsed >= 4 * 400, `20 tasks at 4 per 400 ms took only ${elapsed} ms`)
    assert.ok(elapsed <= 4 * 400 + 4 * SLACK, `took ${elapsed} ms`)
    for (let i = 0; i < times.length; i++) {
      const within = times.filter((t) => t >= times[i] && t - times[i] < 350).length
      assert.ok(within <= 4, `${within} tasks within one window`)
    }
    await queue.disconnect()
  })
})
