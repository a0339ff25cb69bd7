// The native layer's own guards, without the JavaScript wrapper: tasks reach JavaScript in batches,
// as one JSON text, through one dispatch function (called with call_async_catch); outcomes come back
// through `complete(run, succeededTokens, failures, startedTokens)` (`taskTimeout` counts from the start). A dispatch that throws synchronously, a malformed
// report, an unknown token and a task whose data is not JSON must each be handled: never a crash of
// the process, never a stuck task.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually } from './helpers/wait'

import type { NativeEnqueued, NativeTaskInput } from '../native'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { NativeQueue } = require('../native.js')

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

type Batch = { tokens: number[]; tasks: Array<{ id: string; data: unknown }> }

test('a throwing dispatch, junk reports, unknown tokens and non-JSON data never crash the process', { timeout: 60_000 }, async () => {
  const queue = new NativeQueue({ ...uniqueQueue('native'), options: { maxRetries: 0, retryDelay: 0, taskTimeout: 500 } })
  await queue.connect(server.url)
  const junkErrors: unknown[] = []
  const run: number = queue.reserveRun()
  await queue.process(run, (json: string) => {
    const batch: Batch = JSON.parse(json)
    // Not a batch: a close, or an abort of a task past its taskTimeout.
    if (!Array.isArray(batch.tasks)) return
    // This dispatch starts every task it gets at once.
    queue.complete(run, new Uint32Array(), [], new Uint32Array(batch.tokens))
    batch.tasks.forEach(({ data }, i) => {
      const token = batch.tokens[i]
      if (data === 'throw') throw new Error('synchronous throw')
      if (data === 'ok') queue.complete(run, new Uint32Array([token]), [])
      if (data === 'declined') queue.complete(run, new Uint32Array(), [{ token, error: 'declined', details: '{"why":"test"}' }])
      if (data === 'junk') {
        try {
          queue.complete(run, new Uint32Array(), [{ nope: token }])
        } catch (err) {
          junkErrors.push(err)
        }
      }
      if (data === 'stranger') {
        queue.complete(run, new Uint32Array([4_000_000_000]), []) // nobody waits for it: ignored
        queue.complete(run, new Uint32Array([token]), [])
      }
    })
  })
  // The throwing task goes alone, so its batch holds nothing else.
  await queue.enqueue({ data: JSON.stringify('throw') })
  await eventually('the thrown task dead-lettered', async () => (await queue.deadLetters(10)).length === 1)
  const batch = ['ok', 'junk', 'declined', 'stranger'].map((d) => ({ data: JSON.stringify(d) }))
  await queue.enqueueBatch([...batch, { data: '{not json' }])
  const letters: Array<{ task: { data?: string; rawData?: Buffer }; reason: string; error: string; details?: string }> = await eventually('4 dead letters', async () => {
    const found = await queue.deadLetters(10)
    return found.length === 4 ? found : undefined
  })
  const byData = new Map(letters.map((l) => [l.task.data ?? l.task.rawData?.toString(), l]))
  assert.match(byData.get('"throw"')!.error, /synchronous throw/)
  assert.match(byData.get('"junk"')!.error, /taskTimeout/, 'a task whose outcome never arrived times out')
  assert.equal(junkErrors.length, 1, 'a malformed report throws to its caller')
  assert.match(String(junkErrors[0]), /token/)
  assert.equal(byData.get('"declined"')!.error, 'declined')
  assert.equal(byData.get('"declined"')!.details, '{"why":"test"}')
  assert.match(byData.get('{not json')!.error, /not JSON/, 'data that is not JSON fails without reaching JavaScript')
  assert.equal(byData.get('{not json')!.reason, 'invalidData')
  assert.ok(!byData.has('"ok"') && !byData.has('"stranger"'), 'completed tasks are successes')
  await eventually('stream empty', async () => (await queue.stats()).messages === 0)
  await queue.disconnect()
})

test('enqueueEach takes data-only tasks as JSON text next to full inputs, and answers ids in order with failures at their index', { timeout: 60_000 }, async () => {
  const queue = new NativeQueue(uniqueQueue('native-each'))
  assert.throws(() => queue.enqueueEach(0, ['1']), /enqueueEach before answerEnqueuesWith/)
  const answers = new Map<number, (answer: NativeEnqueued) => void>()
  queue.answerEnqueuesWith((answer: NativeEnqueued) => answers.get(answer.call)?.(answer))
  assert.throws(() => queue.answerEnqueuesWith(() => {}), /ERR_PQ_INVALID_CONFIG/)
  const enqueueEach = (call: number, tasks: Array<string | NativeTaskInput>) =>
    new Promise<NativeEnqueued>((resolve) => {
      answers.set(call, resolve)
      queue.enqueueEach(call, tasks)
    })
  const notConnected = await enqueueEach(7, ['1', '2'])
  assert.equal(notConnected.call, 7)
  assert.match(notConnected.error ?? '', /^ERR_PQ_NOT_CONNECTED: /)
  await queue.connect(server.url)
  try {
    const answer = await enqueueEach(1, ['{"a":1}', { data: '{"b":2}', id: 'bad id' }, { data: '{"c":3}', id: 'own-id' }, '"d"'])
    assert.equal(answer.call, 1)
    assert.equal(answer.error ?? undefined, undefined)
    const ids = answer.ids.split('\n')
    assert.equal(ids.length, 4)
    assert.match(ids[0], /^[0-9a-f-]{36}$/)
    assert.equal(ids[1], '')
    assert.equal(ids[2], 'own-id')
    assert.match(ids[3], /^[0-9a-f-]{36}$/)
    assert.equal(answer.failures?.length, 1)
    assert.equal(answer.failures?.[0].index, 1)
    assert.match(answer.failures?.[0].error ?? '', /^ERR_PQ_INVALID_TASK: /)
    const clean = await enqueueEach(2, ['1'])
    assert.equal(clean.failures ?? undefined, undefined)
    // Hop marks are recorded only with PROTOQUEUE_HOPS=1 (bench/hops.mjs).
    assert.deepEqual(NativeQueue.hopsTake(), [])
  } finally {
    await queue.disconnect(false)
  }
})
