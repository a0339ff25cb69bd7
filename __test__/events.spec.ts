// lib/events.js against a fake native side: which events the native side is told to record as
// listeners come and go, batches taken on each wake-up, and listeners that throw.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import { addEventMethods, attachEvents } from '../lib/events.js'

class FakeNative {
  masks: number[] = []
  wake: (() => void) | undefined
  listens = 0
  waiting: unknown[][] = []
  listen(wake: () => void) {
    this.listens++
    this.wake = wake
  }
  setEvents(mask: number) {
    this.masks.push(mask)
  }
  takeEvents() {
    const text = JSON.stringify(this.waiting)
    this.waiting = []
    return text
  }
  /** Events arrive: one wake-up for the whole batch. */
  arrive(...events: unknown[][]) {
    this.waiting.push(...events)
    this.wake?.()
  }
}

class Queue {}
addEventMethods(Queue)
type Listener = (event: any) => void
type WithEvents = Queue & {
  on(name: string, listener: Listener): WithEvents
  once(name: string, listener: Listener): WithEvents
  off(name: string, listener: Listener): WithEvents
  prependListener(name: string, listener: Listener): WithEvents
  removeAllListeners(name?: string): WithEvents
  listenerCount(name: string): number
  eventNames(): Array<string | symbol>
}

function setUp() {
  const native = new FakeNative()
  const warnings: string[] = []
  const queue = new Queue() as WithEvents
  attachEvents(queue, native, {
    makeError: (code: string, message: string) => Object.assign(new Error(message), { code }) as Error,
    warn: (message) => warnings.push(message),
  })
  return { queue, native, warnings }
}

test('the native side records only the events that have listeners', () => {
  const { queue, native } = setUp()
  assert.equal(native.listens, 0, 'nothing set up before a listener')
  const a = () => {}
  assert.equal(queue.on('completed', a), queue, 'chainable')
  queue.on('unknown-event', () => {})
  queue.on('failed', () => {})
  queue.off('completed', a)
  queue.once('deadLettered', () => {})
  queue.prependListener('error', () => {})
  queue.removeAllListeners('failed')
  queue.removeAllListeners()
  assert.deepEqual(native.masks, [1, 3, 2, 6, 14, 12, 0])
  assert.equal(native.listens, 1, 'the wake-up function is handed over once')
  assert.deepEqual(queue.eventNames(), [])
})

test('each wake-up delivers the whole batch; error events are Errors with their code', () => {
  const { queue, native } = setUp()
  const got: Array<[string, any]> = []
  queue.on('completed', (e) => got.push(['completed', e]))
  queue.on('error', (e) => got.push(['error', e]))
  native.arrive([1, 'a', 1, 3, 7, 1.5, 2, 3.5], [8, 'ERR_PQ_DISCONNECTED', 'lost'], [99, 'nonsense'], [2, 'b', 1, 3, 8, 1, 2, 3, 'e', true, 10])
  assert.deepEqual(got[0], [
    'completed',
    { type: 'completed', id: 'a', attempt: 1, maxAttempts: 3, sequence: 7, durationMs: 1.5, waitMs: 2, sinceEnqueueMs: 3.5 },
  ])
  assert.ok(got[1][1] instanceof Error)
  assert.equal((got[1][1] as { code?: string }).code, 'ERR_PQ_DISCONNECTED')
  assert.equal(got.length, 2, 'an unknown row is skipped; failed has no listener')
})

test('failed and deadLettered rows: retryDelayMs only when retried, no id for a foreign message', () => {
  const { queue, native } = setUp()
  const got: any[] = []
  queue.on('failed', (e) => got.push(e))
  queue.on('deadLettered', (e) => got.push(e))
  native.arrive([2, 'b', 2, 2, 8, 1, 2, 3, 'e', false, null], [4, null, 1, 0, 9, 'invalidEnvelope', 'bad bytes'])
  assert.deepEqual(got, [
    { type: 'failed', id: 'b', attempt: 2, maxAttempts: 2, sequence: 8, durationMs: 1, waitMs: 2, sinceEnqueueMs: 3, error: 'e', willRetry: false },
    { type: 'deadLettered', attempt: 1, maxAttempts: 0, sequence: 9, reason: 'invalidEnvelope', error: 'bad bytes' },
  ])
})

test('a throwing or rejecting listener is reported; the other listeners and events still run', async () => {
  const { queue, native, warnings } = setUp()
  const seen: string[] = []
  queue.on('completed', () => {
    throw new Error('bug')
  })
  queue.on('completed', async () => {
    throw new Error('async bug')
  })
  queue.on('completed', (e) => seen.push(e.id))
  native.arrive([1, 'a', 1, 1, 1, 0, 0, 0], [1, 'b', 1, 1, 2, 0, 0, 0])
  assert.deepEqual(seen, ['a', 'b'])
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(warnings.filter((w) => w.includes('bug')).length, 4)
})

test('once listeners fire once and stop the recording when they were the last', () => {
  const { queue, native } = setUp()
  const seen: string[] = []
  queue.once('completed', (e) => seen.push(e.id))
  native.arrive([1, 'a', 1, 1, 1, 0, 0, 0], [1, 'b', 1, 1, 2, 0, 0, 0])
  assert.deepEqual(seen, ['a'])
  assert.equal(queue.listenerCount('completed'), 0)
  assert.deepEqual(native.masks, [1, 0])
})

test('a queue object with listeners can still be collected: the wake-up function holds it weakly', async () => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const native = new FakeNative()
  let collected = false
  const registry = new FinalizationRegistry(() => (collected = true))
  ;(() => {
    const queue = new Queue() as WithEvents
    attachEvents(queue, native, { makeError: (_code, message) => new Error(message) })
    queue.on('completed', () => {})
    registry.register(queue, 'queue')
  })()
  for (let i = 0; i < 20 && !collected; i++) {
    gc()
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  assert.ok(collected)
  native.arrive([1, 'late', 1, 1, 1, 0, 0, 0]) // nobody there: nothing happens
})
