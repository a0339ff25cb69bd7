// The public API against a real nats-server: round trips, batches, stats, errors and their codes.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, ProtoqueueError, type TaskData } from 'protoqueue'

import { NatsServer, freePort, uniqueQueue } from './helpers/nats'
import { deferred, eventually, rejectsWithCode, within } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

async function connectedQueue<T = unknown>(options: Record<string, number> = {}) {
  const queue = new Protoqueue<T>({ ...uniqueQueue(), options })
  await queue.connect(server.url)
  return queue
}

/** Processes with a handler that succeeds and records every task; resolves once `count` were handled. */
async function handleAll(queue: Protoqueue, count: number): Promise<Map<string, TaskData>> {
  const received = new Map<string, TaskData>()
  const all = deferred()
  await queue.process(async (task) => {
    received.set(task.id, task)
    if (received.size === count) all.resolve()
    return { success: true }
  })
  await within('all tasks handled', all.promise)
  return received
}

describe('enqueue and process', () => {
  test('JSON values round-trip exactly, metadata gains timestamp', async () => {
    const values: unknown[] = [
      { to: 'user@example.com', subject: 'Welcome!' },
      'a plain string as the whole payload',
      '',
      42,
      -3.25,
      1e21,
      Number.MAX_SAFE_INTEGER,
      0,
      true,
      false,
      null,
      [],
      {},
      [1, 'two', { three: [3] }, null],
      { nested: { deeper: { deepest: [{ a: 1 }, { b: [true, false] }] } } },
      { unicode: 'héllo wörld — 你好 — 🎉🚀', 'kéy ✓': 'välue' },
      { text: 'line\nbreak\ttab "quotes" \\ backslash \u0000 nul' },
      JSON.parse('{"__proto__": {"polluted": true}, "constructor": {"prototype": 1}}'),
    ]
    const queue = await connectedQueue()
    const before = Date.now()
    const ids: string[] = []
    for (const [i, data] of values.entries()) {
      ids.push(await queue.enqueue({ data, metadata: { index: i, tags: ['x'], nested: { ok: true } } }))
    }
    const received = await handleAll(queue, values.length)
    for (const [i, data] of values.entries()) {
      const task = received.get(ids[i])
      assert.ok(task, `task ${i} handled`)
      assert.deepStrictEqual(task.data, data)
      assert.equal(task.metadata?.index, i)
      assert.deepStrictEqual(task.metadata?.tags, ['x'])
      assert.deepStrictEqual(task.metadata?.nested, { ok: true })
      assert.ok(typeof task.metadata?.timestamp === 'number' && task.metadata.timestamp >= before - 1000)
      assert.equal(task.attempt, 1)
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution')
    await queue.disconnect()
  })

  test('odd but valid data: deep nesting, large arrays, unicode keys, __proto__ in data and metadata', async () => {
    let deep: unknown = 'bottom'
    for (let i = 0; i < 1_000; i++) deep = { level: i, next: [deep] }
    const hostileKeys = JSON.parse('{"__proto__": {"isAdmin": true}, "constructor": {"prototype": {"isAdmin": true}}}')
    const tasks = [
      { data: {} },
      { data: deep },
      { data: Array.from({ length: 50_000 }, (_, i) => i % 7 === 0 ? null : i) },
      { data: { 'ключ': 1, '键': 2, '🔑': 3, '': 4, 'a.b': 5, 'constructor': 6 } },
      { data: hostileKeys, metadata: hostileKeys },
      { data: 1, metadata: { count: 3, ratio: 0.5, on: true, off: null, list: [1, 'a'], deep: { x: [] } } },
    ]
    const queue = await connectedQueue()
    const ids = await queue.enqueueBatch(tasks)
    const received = await handleAll(queue, tasks.length)
    for (const [i, { data, metadata }] of tasks.entries()) {
      const task = received.get(ids[i])!
      // Compared as JSON text: deepStrictEqual recurses too deep for 1,000 levels.
      assert.equal(JSON.stringify(task.data), JSON.stringify(data), `task ${i} data`)
      for (const [key, value] of Object.entries(metadata ?? {})) {
        assert.deepStrictEqual(task.metadata?.[key], value, `task ${i} metadata.${key}`)
      }
    }
    const hostile = received.get(ids[4])!
    assert.equal(Object.getPrototypeOf(hostile.data), Object.prototype, '__proto__ stays a plain key of data')
    assert.equal(Object.getPrototypeOf(hostile.metadata), Object.prototype, 'and of metadata')
    assert.equal((hostile.metadata as Record<string, unknown>).isAdmin, undefined)
    assert.equal(({} as Record<string, unknown>).isAdmin, undefined, 'no prototype pollution')
    await queue.disconnect()
  })

  test('enqueueBatch returns unique, ordered ids and every task is handled once', async () => {
    const queue = await connectedQueue({ batchSize: 50 })
    const tasks = Array.from({ length: 2000 }, (_, i) => ({ data: { i } }))
    const ids = await queue.enqueueBatch(tasks)
    assert.equal(ids.length, tasks.length)
    assert.equal(new Set(ids).size, ids.length, 'ids are unique')
    assert.deepStrictEqual([...ids].sort(), ids, 'ids are time-ordered in input order')
    assert.equal((await queue.getStats()).messages, tasks.length)

    const seen = new Map<string, number>()
    const done = deferred()
    await queue.process((task) => {
      const data = task.data as { i: number }
      assert.equal(ids[data.i], task.id, 'the id belongs to the task enqueued at that index')
      seen.set(task.id, (seen.get(task.id) ?? 0) + 1)
      if (seen.size === tasks.length) done.resolve()
      return { success: true }
    })
    await within('2000 tasks handled', done.promise, 60_000)
    await eventually('stream emptied', async () => (await queue.getStats()).messages === 0)
    assert.ok([...seen.values()].every((n) => n === 1), 'no task handled twice')
    assert.deepStrictEqual(await queue.enqueueBatch([]), [])
    await queue.disconnect()
  })

  test('getStats reports the README fields and more', async () => {
    const queue = await connectedQueue()
    await queue.enqueueBatch([{ data: 1 }, { data: 2 }, { data: 3 }])
    const stats = await queue.getStats()
    assert.equal(stats.messages, 3)
    assert.ok(stats.bytes > 0)
    assert.equal(stats.firstSequence, 1)
    assert.equal(stats.lastSequence, 3)
    assert.equal(stats.consumers, 0, 'no worker yet')
    assert.equal(stats.consumer_count, 0, 'the original name still works')
    assert.equal(stats.pending, 3)
    assert.equal(stats.deadLettered, 0)
    const all = deferred()
    let n = 0
    await queue.process(() => {
      if (++n === 3) all.resolve()
      return { success: true }
    })
    await within('handled', all.promise)
    const later = await eventually('acked', async () => {
      const s = await queue.getStats()
      return s.messages === 0 ? s : undefined
    })
    assert.equal(later.consumers, 1)
    assert.equal(later.consumer_count, 1)
    assert.equal(later.lastSequence, 3)
    assert.equal(later.inFlight, 0)
    await queue.disconnect()
  })

  test('connect() twice is a no-op and returns the queue', async () => {
    const queue = new Protoqueue(uniqueQueue())
    assert.equal(await queue.connect(server.url), queue)
    assert.equal(await queue.connect(server.url), queue)
    await queue.enqueue({ data: 'x' })
    assert.equal((await queue.getStats()).messages, 1)
    await queue.disconnect()
    await queue.disconnect() // twice is fine too
  })

  test('connect() uses config.url, then NATS_URL', async () => {
    const fromConfig = new Protoqueue({ ...uniqueQueue(), url: server.url })
    await fromConfig.connect()
    await fromConfig.disconnect()

    const saved = process.env.NATS_URL
    process.env.NATS_URL = server.url
    try {
      const fromEnv = new Protoqueue(uniqueQueue())
      await fromEnv.connect()
      await fromEnv.disconnect()
    } finally {
      if (saved === undefined) delete process.env.NATS_URL
      else process.env.NATS_URL = saved
    }
  })
})

describe('errors carry stable codes', () => {
  test('every config mistake is ERR_PQ_INVALID_CONFIG, thrown by the constructor', () => {
    const bad: unknown[] = [
      undefined,
      null,
      'stream',
      {},
      { streamName: 'ok' },
      { subject: 'ok' },
      { streamName: '', subject: 'a' },
      { streamName: 'has.dot', subject: 'a' },
      { streamName: 'has space', subject: 'a' },
      { streamName: 'star*', subject: 'a' },
      { streamName: 'gt>', subject: 'a' },
      { streamName: 42, subject: 'a' },
      { streamName: 's', subject: '' },
      { streamName: 's', subject: 'a..b' },
      { streamName: 's', subject: 'a.*' },
      { streamName: 's', subject: 'a.>.b' },
      { streamName: 's', subject: '>' },
      { streamName: 's', subject: 'a.*.>' },
      { streamName: 's', subject: 'with space' },
      { streamName: 's', subject: 'a', url: 42 },
      { streamName: 's', subject: 'a', verbose: 'yes' },
      { streamName: 's', subject: 'a', options: 'fast' },
      { streamName: 's', subject: 'a', options: { batchSize: 0 } },
      { streamName: 's', subject: 'a', options: { batchSize: '10' } },
      { streamName: 's', subject: 'a', options: { batchSize: 2.5 } },
      { streamName: 's', subject: 'a', options: { maxRetries: -1 } },
      { streamName: 's', subject: 'a', options: { retryDelay: -5 } },
      { streamName: 's', subject: 'a', options: { ackWait: 'long' } },
      { streamName: 's', subject: 'a', options: { ackWait: Number.NaN } },
      { streamName: 's', subject: 'a', options: { batchsize: 10 } },
      { streamName: 's', subject: 'a', typo: true },
    ]
    for (const config of bad) {
      assert.throws(
        () => new Protoqueue(config as never),
        (err: ProtoqueueError) => err instanceof Error && err.code === 'ERR_PQ_INVALID_CONFIG' && err.message.length > 10,
        `accepted ${JSON.stringify(config)}`,
      )
    }
  })

  test('using a queue before connect() is ERR_PQ_NOT_CONNECTED', async () => {
    const queue = new Protoqueue(uniqueQueue())
    await rejectsWithCode(queue.enqueue({ data: 1 }), 'ERR_PQ_NOT_CONNECTED')
    await rejectsWithCode(queue.enqueueBatch([{ data: 1 }]), 'ERR_PQ_NOT_CONNECTED')
    await rejectsWithCode(queue.process(async () => ({ success: true })), 'ERR_PQ_NOT_CONNECTED')
    await rejectsWithCode(queue.getStats(), 'ERR_PQ_NOT_CONNECTED')
    await queue.connect(server.url)
    await queue.disconnect()
    await rejectsWithCode(queue.enqueue({ data: 1 }), 'ERR_PQ_NOT_CONNECTED')
  })

  test('bad tasks are rejected before anything is sent', async () => {
    const queue = await connectedQueue()
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    await rejectsWithCode(queue.enqueue({ data: 10n }), 'ERR_PQ_SERIALIZE')
    await rejectsWithCode(queue.enqueue({ data: cyclic }), 'ERR_PQ_SERIALIZE')
    await rejectsWithCode(queue.enqueue({ data: () => 1 }), 'ERR_PQ_SERIALIZE')
    await rejectsWithCode(queue.enqueue({ data: Symbol('s') }), 'ERR_PQ_SERIALIZE')
    await rejectsWithCode(queue.enqueue({ data: 1, metadata: { big: 1n } }), 'ERR_PQ_SERIALIZE')
    await rejectsWithCode(queue.enqueue({ data: undefined }), 'ERR_PQ_INVALID_TASK')
    await rejectsWithCode(queue.enqueue(null as never), 'ERR_PQ_INVALID_TASK')
    await rejectsWithCode(queue.enqueue('data' as never), 'ERR_PQ_INVALID_TASK')
    await rejectsWithCode(queue.enqueue({ data: 1, metadata: 'm' as never }), 'ERR_PQ_INVALID_TASK')
    await rejectsWithCode(queue.enqueue({ data: 1, metadata: [1] as never }), 'ERR_PQ_INVALID_TASK')
    await rejectsWithCode(queue.enqueueBatch('nope' as never), 'ERR_PQ_INVALID_TASK')
    // One bad task in a batch: none of the batch is sent.
    await rejectsWithCode(queue.enqueueBatch([{ data: 1 }, { data: 2n }, { data: 3 }]), 'ERR_PQ_SERIALIZE')
    const huge = 'x'.repeat(2 * 1024 * 1024)
    await rejectsWithCode(queue.enqueue({ data: huge }), 'ERR_PQ_PAYLOAD_TOO_LARGE')
    await rejectsWithCode(queue.enqueueBatch([{ data: 'small' }, { data: huge }]), 'ERR_PQ_PAYLOAD_TOO_LARGE')
    assert.equal((await queue.getStats()).messages, 0, 'nothing was written')
    await queue.disconnect()
  })

  test('process() checks its handler and runs one worker per queue', async () => {
    const queue = await connectedQueue()
    await rejectsWithCode(queue.process('handler' as never), 'ERR_PQ_INVALID_HANDLER')
    await queue.process(async () => ({ success: true }))
    await rejectsWithCode(queue.process(async () => ({ success: true })), 'ERR_PQ_ALREADY_PROCESSING')
    await queue.disconnect()
  })

  test('an unreachable server rejects promptly with ERR_PQ_CONNECT', async () => {
    const queue = new Protoqueue({ ...uniqueQueue(), options: { connectTimeout: 2000 } })
    const started = Date.now()
    await rejectsWithCode(queue.connect(`nats://127.0.0.1:${await freePort()}`), 'ERR_PQ_CONNECT')
    assert.ok(Date.now() - started < 10_000, 'rejected within a bounded time')
    await rejectsWithCode(queue.connect(42 as never), 'ERR_PQ_INVALID_CONFIG')
    await rejectsWithCode(queue.connect('http://[::1'), 'ERR_PQ_INVALID_CONFIG')
  })

  test('a stream that exists with another subject is ERR_PQ_STREAM_CONFLICT', async () => {
    const { streamName } = uniqueQueue()
    const first = new Protoqueue({ streamName, subject: 'conflict.one' })
    await first.connect(server.url)
    const second = new Protoqueue({ streamName, subject: 'conflict.two' })
    const err = await rejectsWithCode(second.connect(server.url), 'ERR_PQ_STREAM_CONFLICT')
    assert.match(err.message, /conflict\.two/)
    await first.disconnect()
  })

  test("a subject another stream stores is ERR_PQ_STREAM_CONFLICT naming that stream (another streamName cannot help)", async () => {
    const { streamName } = uniqueQueue()
    const root = streamName.toLowerCase()
    const owner = { streamName, subject: `${root}.jobs` }
    const first = new Protoqueue(owner)
    await first.connect(server.url)
    for (const subject of [owner.subject, `${root}.>`]) {
      const other = new Protoqueue({ streamName: uniqueQueue().streamName, subject })
      const err = await rejectsWithCode(other.connect(server.url), 'ERR_PQ_STREAM_CONFLICT')
      assert.ok(err.message.includes(`is stored by stream "${owner.streamName}"`), err.message)
      assert.match(err.message, /give streamName/)
      assert.doesNotMatch(err.message, /Use another streamName/)
    }
    await first.disconnect()
  })
})
