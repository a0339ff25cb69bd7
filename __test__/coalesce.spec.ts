// The coalescer behind `enqueue()`: calls of one event-loop turn go to the native side together,
// and each caller gets its own result. No NATS here: the native side is a fake, answering later
// through `answer` as the addon does.
import assert from 'node:assert/strict'
import { test } from 'node:test'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { coalesce } = require('../lib/coalesce.js') as typeof import('../lib/coalesce.js')

type Result = { value?: string; error?: string | null }

function fakeNative(result: (input: number) => Result = (n) => ({ value: `id-${n}` })) {
  const calls: number[][] = []
  const queue = coalesce<number, string>(
    (inputs, number) => {
      calls.push(inputs)
      // Answered on a later turn, like the addon's thread-safe function.
      setImmediate(() => queue.answer(number, inputs.map(result)))
    },
    (text) => new Error(text),
  )
  return { calls, call: queue.call }
}

test('calls of one turn cross together, in order, and each gets its own result', async () => {
  const { calls, call } = fakeNative()
  const results = await Promise.all([1, 2, 3].map(call))
  assert.deepStrictEqual(results, ['id-1', 'id-2', 'id-3'])
  assert.deepStrictEqual(calls, [[1, 2, 3]])
  assert.equal(await call(4), 'id-4')
  assert.deepStrictEqual(calls, [[1, 2, 3], [4]])
})

test('one failing item rejects only its own caller', async () => {
  const { call } = fakeNative((n) => (n === 2 ? { error: 'ERR_PQ_PAYLOAD_TOO_LARGE: too big' } : { value: `id-${n}` }))
  const results = await Promise.allSettled([1, 2, 3].map(call))
  assert.deepStrictEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled'])
  assert.match(String((results[1] as PromiseRejectedResult).reason), /ERR_PQ_PAYLOAD_TOO_LARGE/)
})

test('a failing native call (thrown, or answered with an error) rejects every caller of that call, and the next call works', async () => {
  let mode: 'throw' | 'error' | 'ok' = 'throw'
  const queue = coalesce<number, string>(
    (inputs, number) => {
      if (mode === 'throw') throw new Error('ERR_PQ_NOT_CONNECTED: not connected')
      if (mode === 'error') return void setImmediate(() => queue.answer(number, undefined, 'ERR_PQ_NOT_CONNECTED: not connected'))
      setImmediate(() => queue.answer(number, inputs.map((n) => ({ value: String(n) }))))
    },
    (text) => new Error(text),
  )
  for (const m of ['throw', 'error'] as const) {
    mode = m
    const results = await Promise.allSettled([1, 2].map(queue.call))
    assert.deepStrictEqual(results.map((r) => r.status), ['rejected', 'rejected'], m)
    assert.match(String((results[0] as PromiseRejectedResult).reason), /ERR_PQ_NOT_CONNECTED/)
  }
  mode = 'ok'
  assert.equal(await queue.call(7), '7')
})

test('a missing result rejects its caller instead of leaving it pending', async () => {
  const queue = coalesce<number, string>(
    (_inputs, number) => setImmediate(() => queue.answer(number, [{ value: 'only one' }])),
    (text) => new Error(text),
  )
  const results = await Promise.allSettled([1, 2].map(queue.call))
  assert.deepStrictEqual(results.map((r) => r.status), ['fulfilled', 'rejected'])
})

test('answers arriving out of order settle their own calls; an unknown or repeated answer settles nothing', async () => {
  const started: Array<[number[], number]> = []
  const queue = coalesce<number, string>(
    (inputs, number) => void started.push([inputs, number]),
    (text) => new Error(text),
  )
  const first = queue.call(1)
  await Promise.resolve()
  const second = queue.call(2)
  await Promise.resolve()
  assert.equal(started.length, 2)
  const [[, a], [, b]] = started
  queue.answer(b, [{ value: 'second' }])
  queue.answer(a, [{ value: 'first' }])
  queue.answer(a, [{ value: 'again' }])
  queue.answer(12345, [{ value: 'nobody' }])
  assert.deepStrictEqual(await Promise.all([first, second]), ['first', 'second'])
})

test('many concurrent callers awaiting in a loop share native calls', async () => {
  const { calls, call } = fakeNative()
  let next = 0
  const producer = async () => {
    while (next < 10_000) await call(next++)
  }
  await Promise.all(Array.from({ length: 100 }, producer))
  assert.equal(calls.flat().length, 10_000)
  assert.ok(calls.length <= 10_000 / 50, `${calls.length} native calls for 10,000 enqueues`)
})
