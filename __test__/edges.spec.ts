// Promises kept at the edges, end to end against a real nats-server: handlers that throw values
// with no string form, another producer's envelopes (data that is not JSON, metadata that is no
// object), dead letters whose content is not JSON or was dropped, taskTimeout counted from the
// handler's start, unstarted tasks handed back at shutdown, Protoqueue.create and a user's
// metadata.timestamp.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { connect, type NatsConnection } from '@nats-io/transport-node'
import { Protoqueue, type DeadLetter, type DeadLetterReason, type DeadLetterTask, type TaskData } from 'protoqueue'

import { Child, fixture, fixtureEnv } from './helpers/child'
import { NatsServer, freePort, uniqueQueue } from './helpers/nats'
import { deferred, eventually, within } from './helpers/wait'

let server: NatsServer
let nc: NatsConnection
before(async () => {
  server = await NatsServer.start()
  nc = await connect({ servers: server.url })
})
after(async () => {
  await nc.close()
  await server.stop()
})

// A minimal protobuf writer for `protoqueue.v1.Task` and `DeadLetter` (proto/protoqueue/v1/envelope.proto),
// so tests can publish what another client would.
function varint(value: number | bigint): number[] {
  let v = BigInt(value)
  const out: number[] = []
  do {
    let byte = Number(v & 0x7fn)
    v >>= 7n
    if (v > 0n) byte |= 0x80
    out.push(byte)
  } while (v > 0n)
  return out
}
type Field = [number, number | bigint | string | Uint8Array]
function message(fields: Field[]): Uint8Array {
  const out: number[] = []
  for (const [number, value] of fields) {
    if (typeof value === 'number' || typeof value === 'bigint') {
      out.push(...varint(number << 3), ...varint(value))
    } else {
      const bytes = typeof value === 'string' ? new TextEncoder().encode(value) : value
      out.push(...varint((number << 3) | 2), ...varint(bytes.length), ...bytes)
    }
  }
  return Uint8Array.from(out)
}
function taskEnvelope(id: string, data: string, contentType: string, metadata = ''): Uint8Array {
  const fields: Field[] = [
    [1, 1],
    [2, id],
    [3, new TextEncoder().encode(data)],
    [4, contentType],
    [6, 1_700_000_000_000],
  ]
  if (metadata) fields.push([5, new TextEncoder().encode(metadata)])
  return message(fields)
}

async function publish(subject: string, payload: Uint8Array) {
  nc.publish(subject, payload)
  await nc.flush()
}

async function letters<T = unknown>(queue: Protoqueue<T>, count: number): Promise<Array<DeadLetter<T>>> {
  return eventually(`${count} dead letters`, async () => {
    const found = await queue.getDeadLetters()
    return found.length >= count ? found : undefined
  })
}

/** Type-level checks: a dead letter's task narrows on `dataFormat`. Never called. */
export function deadLetterTypes(letter: DeadLetter<{ to: string }>) {
  const task: DeadLetterTask<{ to: string }> | undefined = letter.task
  if (task?.dataFormat === 'json') {
    const to: string = task.data.to
    void to
  } else if (task?.dataFormat === 'raw') {
    const bytes: Buffer = task.data
    void bytes
  } else if (task?.dataFormat === 'dropped') {
    const dropped: true = task.dataDropped
    // @ts-expect-error: dropped data is gone
    const gone: { to: string } = task.data
    void [dropped, gone]
  }
  const reason: DeadLetterReason = 'invalidData'
  const created: Promise<Protoqueue<{ n: number }>> = Protoqueue.create<{ n: number }>({ streamName: 's', subject: 'x.s' })
  void [reason, created]
}

describe('odd handler values end to end', () => {
  test('handlers throwing or returning values with no string form fail their tasks; the worker carries on (batchSize 2)', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const queue = new Protoqueue<string>({ ...uniqueQueue('odd'), options: { batchSize: 2, maxRetries: 0, retryDelay: 0 } })
      await queue.connect(server.url)
      const noString = {
        toString() {
          throw new Error('no')
        },
      }
      const throwing = new Proxy(
        {},
        {
          get() {
            throw new Error('trap')
          },
          getPrototypeOf() {
            throw new Error('trap')
          },
        },
      )
      const odd: Record<string, () => unknown> = {
        nullProto: () => {
          throw Object.create(null)
        },
        noString: () => Promise.reject(noString),
        proxy: () => {
          throw throwing
        },
        thenable: () => ({
          then() {
            throw Object.create(null)
          },
        }),
        successGetter: () => ({
          get success() {
            throw new Error('no')
          },
        }),
        detailsCycle: () => {
          const details: Record<string, unknown> = {}
          details.self = details
          return { success: false, error: noString, details }
        },
      }
      const healthy = deferred()
      await queue.process((task: TaskData<string>) => {
        if (task.data === 'healthy') {
          healthy.resolve()
          return { success: true }
        }
        return odd[task.data]() as never
      })
      await queue.enqueueBatch(Object.keys(odd).map((data) => ({ data })))
      const found = await letters(queue, Object.keys(odd).length)
      assert.deepStrictEqual(new Set(found.map((l) => (l.task?.dataFormat === 'json' ? l.task.data : undefined))), new Set(Object.keys(odd)))
      for (const letter of found) {
        assert.equal(letter.reason, 'retriesExhausted')
        assert.equal(typeof letter.error, 'string')
      }
      await queue.enqueue({ data: 'healthy' })
      await within('the healthy task after the odd ones', healthy.promise)
      await queue.disconnect()
      assert.deepStrictEqual(unhandled, [], 'no unhandled rejection')
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})

describe("another producer's envelopes and dead letters", () => {
  test('data that is not JSON or metadata that is no object is dead-lettered on attempt 1 as invalidData, without calling the handler', async () => {
    const names = uniqueQueue('foreign')
    const queue = new Protoqueue({ ...names, options: { maxRetries: 3, retryDelay: 200 } })
    await queue.connect(server.url)
    const handled: unknown[] = []
    const healthy = deferred()
    await queue.process(async (task) => {
      handled.push(task.data)
      if (task.data === 'healthy') healthy.resolve()
      return { success: true }
    })
    await publish(names.subject, taskEnvelope('foreign-text', 'hello, not JSON', 'text/plain'))
    await publish(names.subject, taskEnvelope('foreign-meta', '"fine"', 'application/json', '[1, 2]'))
    // Bytes that happen to parse as JSON, under another content type: still not for this worker.
    await publish(names.subject, taskEnvelope('foreign-plain', '123', 'text/plain'))
    const found = await letters(queue, 3)
    await queue.enqueue({ data: 'healthy' })
    await within('a healthy task after them', healthy.promise)
    assert.deepStrictEqual(handled, ['healthy'], 'the handler never saw the foreign tasks')
    const byId = new Map(found.map((l) => [l.task?.id, l]))
    for (const id of ['foreign-text', 'foreign-meta', 'foreign-plain']) {
      const letter = byId.get(id)!
      assert.equal(letter.reason, 'invalidData')
      assert.equal(letter.attempts, 1, 'dead-lettered on its first delivery')
    }
    const text = byId.get('foreign-text')!.task!
    assert.equal(text.dataFormat, 'raw')
    assert.equal(text.contentType, 'text/plain')
    assert.ok(Buffer.isBuffer(text.data))
    assert.equal(text.data.toString(), 'hello, not JSON')
    const meta = byId.get('foreign-meta')!.task!
    assert.equal(meta.dataFormat, 'json')
    assert.equal(meta.data, 'fine')
    assert.equal(meta.rawMetadata?.toString(), '[1, 2]')
    assert.deepStrictEqual(meta.metadata, { timestamp: 1_700_000_000_000 })
    await eventually('the stream emptied', async () => (await queue.getStats()).messages === 0)
    await queue.disconnect()
  })

  test('one odd letter never fails getDeadLetters(): raw data, raw details and ordinary letters decode side by side', async () => {
    const names = uniqueQueue('letters')
    const queue = new Protoqueue({ ...names, options: { maxRetries: 0, retryDelay: 0 } })
    await queue.connect(server.url)
    // Another client's dead letter: task data and details that are not JSON, metadata no object.
    const foreignTask = taskEnvelope('foreign-letter', '\u0000binary', 'application/octet-stream', 'not an object')
    const letter = message([
      [1, foreignTask],
      [3, 1],
      [4, 'failed elsewhere'],
      [5, 'details: not JSON'],
      [6, 4],
      [7, 1_700_000_000_500],
    ])
    await publish(`protoqueue.dlq.${names.streamName}`, letter)
    await queue.process(async () => ({ success: false, error: 'declined', details: { why: 'test' }, retry: false }))
    await queue.enqueue({ data: { ok: 1 }, metadata: { k: 'v' } })
    const found = await letters(queue, 2)
    const foreign = found.find((l) => l.task?.id === 'foreign-letter')!
    assert.equal(foreign.reason, 'retriesExhausted')
    assert.equal(foreign.task?.dataFormat, 'raw')
    assert.equal(foreign.task?.contentType, 'application/octet-stream')
    assert.deepStrictEqual(foreign.task?.data, Buffer.from('\u0000binary'))
    assert.equal(foreign.task?.rawMetadata?.toString(), 'not an object')
    assert.equal(foreign.details, undefined)
    assert.equal(foreign.rawDetails?.toString(), 'details: not JSON')
    const ours = found.find((l) => l.task?.id !== 'foreign-letter')!
    assert.equal(ours.reason, 'rejected')
    assert.equal(ours.task?.dataFormat, 'json')
    assert.deepStrictEqual(ours.task?.data, { ok: 1 })
    assert.equal(ours.task?.contentType, 'application/json')
    assert.equal(ours.task?.metadata.k, 'v')
    assert.deepStrictEqual(ours.details, { why: 'test' })
    await queue.disconnect()
  })

  test("a letter whose task data was dropped to fit max_payload says so", async () => {
    const small = await NatsServer.startWithConfig('max_payload: 4096\n')
    try {
      const queue = new Protoqueue({ ...uniqueQueue('dropped'), options: { maxRetries: 0, retryDelay: 0 } })
      await queue.connect(small.url)
      await queue.process(async () => ({ success: false, error: 'e'.repeat(3000), details: { big: 'd'.repeat(2000) }, retry: false }))
      await queue.enqueue({ data: 'x'.repeat(3600) })
      const [letter] = await letters(queue, 1)
      assert.equal(letter.task?.dataFormat, 'dropped')
      assert.equal(letter.task?.dataDropped, true)
      assert.equal(letter.task?.data, undefined)
      assert.equal(letter.reason, 'rejected')
      await queue.disconnect()
    } finally {
      await small.stop()
    }
  })
})

describe('taskTimeout and shutdown', () => {
  test('taskTimeout counts from the handler start: tasks waiting behind slow ones never time out unstarted', async () => {
    const queue = new Protoqueue({ ...uniqueQueue('timeout'), options: { batchSize: 1, taskTimeout: 1500, retryDelay: 100 } })
    await queue.connect(server.url)
    for (const data of [1, 2, 3]) await queue.enqueue({ data })
    const attempts: Array<{ data: unknown; attempt?: number }> = []
    let succeeded = 0
    await queue.process(async (task) => {
      attempts.push({ data: task.data, attempt: task.attempt })
      await new Promise((resolve) => setTimeout(resolve, 1000))
      succeeded++
      return { success: true }
    })
    await eventually('three successes', () => succeeded >= 3, 20_000)
    await eventually('the stream emptied', async () => (await queue.getStats()).messages === 0)
    // (The worker may hand over tasks that arrive together in any order.)
    attempts.sort((a, b) => Number(a.data) - Number(b.data))
    assert.deepStrictEqual(attempts, [1, 2, 3].map((data) => ({ data, attempt: 1 })), 'every task succeeded on its first attempt')
    assert.deepStrictEqual(await queue.getDeadLetters(), [])
    await queue.disconnect()
  })

  test('at shutdownTimeout the tasks that never started go back at once, not after ackWait, and never start here', async () => {
    const names = uniqueQueue('handback')
    const options = { batchSize: 1, ackWait: 30_000, shutdownTimeout: 500, retryDelay: 0 }
    const first = new Protoqueue<string>({ ...names, options })
    await first.connect(server.url)
    await first.enqueue({ data: 'slow' })
    const startedHere: string[] = []
    const slowStarted = deferred()
    const slowDone = deferred()
    await first.process(async (task) => {
      startedHere.push(task.data)
      if (task.data === 'slow') {
        slowStarted.resolve()
        await new Promise((resolve) => setTimeout(resolve, 3000))
        slowDone.resolve()
      }
      return { success: true }
    })
    await within('the slow task to start', slowStarted.promise)
    // Prefetched behind the slow one (before any task finished, a worker keeps one per slot).
    await first.enqueue({ data: 'waiting' })
    await eventually('both tasks at the first worker', async () => (await first.getStats()).inFlight === 2)
    await first.disconnect()
    const disconnectedAt = Date.now()
    const second = new Protoqueue<string>({ ...names, options })
    await second.connect(server.url)
    const got = deferred<number>()
    await second.process(async (task) => {
      if (task.data === 'waiting') got.resolve(Date.now())
      return { success: true }
    })
    const at = await within('the waiting task at the second worker', got.promise, 10_000)
    assert.ok(at - disconnectedAt < 5_000, `delivered ${at - disconnectedAt} ms after disconnect (ackWait is 30 s)`)
    await within('the first worker slow handler to finish', slowDone.promise)
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.deepStrictEqual(startedHere, ['slow'], 'the first worker never started the waiting task')
    await second.disconnect()
  })
})

describe('compatibility with the original', () => {
  test('Protoqueue.create() resolves to a connected queue', async () => {
    const queue = await Protoqueue.create<{ n: number }>({ ...uniqueQueue('create'), url: server.url })
    assert.ok(queue instanceof Protoqueue)
    const id = await queue.enqueue({ data: { n: 1 } })
    assert.equal(typeof id, 'string')
    assert.equal((await queue.getStats()).messages, 1)
    await queue.disconnect()
  })

  test('Protoqueue.create() rejects with ERR_PQ_CONNECT when no server answers, and leaves nothing open', async () => {
    const url = `nats://127.0.0.1:${await freePort()}`
    const child = Child.run('node', [fixture('create-fails.mjs')], fixtureEnv(uniqueQueue('createfail'), url))
    const { code } = await within('the process to exit by itself', child.exited, 20_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['ERR_PQ_CONNECT'])
  })

  test("a numeric metadata.timestamp of the user's is kept; anything else gets the enqueue time", async () => {
    const queue = new Protoqueue({ ...uniqueQueue('stamp'), options: { maxRetries: 0, retryDelay: 0 } })
    await queue.connect(server.url)
    const before = Date.now()
    await queue.enqueue({ data: 'number', metadata: { timestamp: 5 } })
    await queue.enqueue({ data: 'string', metadata: { timestamp: 'yesterday' } })
    await queue.enqueue({ data: 'none', metadata: { other: 1 } })
    const seen = new Map<unknown, unknown>()
    await queue.process(async (task) => {
      seen.set(task.data, task.metadata?.timestamp)
      return { success: false, retry: false }
    })
    const found = await letters(queue, 3)
    assert.equal(seen.get('number'), 5)
    for (const data of ['string', 'none']) {
      const stamp = seen.get(data) as number
      assert.ok(typeof stamp === 'number' && stamp >= before - 1000 && stamp <= Date.now(), `${data}: ${stamp}`)
    }
    const letter = found.find((l) => l.task?.dataFormat === 'json' && l.task.data === 'number')!
    assert.equal(letter.task?.metadata.timestamp, 5, 'the dead letter shows it too')
    await queue.disconnect()
  })
})
