// Hostile arguments to every public method: Symbols, functions, Proxies and getters that throw,
// BigInt, cycles, sparse and huge arrays, values whose JSON form is not what it seems. Each must
// throw (constructor) or reject (async methods, never synchronously) with a ProtoqueueError
// carrying an ERR_PQ_* code, and nothing may be stored.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, ProtoqueueError, type ProtoqueueConfig } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { repoRoot } from './helpers/package'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

/** A fresh connected queue, disconnected after `body`. */
async function withQueue(body: (queue: Protoqueue) => Promise<void>) {
  const queue = new Protoqueue(uniqueQueue('hostile'))
  await queue.connect(server.url)
  try {
    await body(queue)
  } finally {
    await queue.disconnect()
  }
}

/** A Proxy whose every trap throws. */
function throwingProxy(target: object = {}): any {
  const traps = ['get', 'set', 'has', 'ownKeys', 'getOwnPropertyDescriptor', 'getPrototypeOf', 'defineProperty', 'deleteProperty', 'apply', 'construct', 'isExtensible', 'preventExtensions']
  return new Proxy(
    target,
    Object.fromEntries(
      traps.map((trap) => [
        trap,
        () => {
          throw new Error(`trap ${trap}`)
        },
      ]),
    ),
  )
}

function throwingGetter(key: string, rest: Record<string, unknown> = {}) {
  return Object.defineProperty({ ...rest }, key, {
    enumerable: true,
    get() {
      throw new Error(`getter ${key}`)
    },
  })
}

function cyclic() {
  const value: Record<string, unknown> = { a: 1 }
  value.self = value
  return value
}

/** Calls `call` (which must not throw synchronously) and expects a rejection with `code`. */
async function rejects(what: string, call: () => Promise<unknown>, code: string) {
  let promise: Promise<unknown>
  try {
    promise = call()
  } catch (err) {
    assert.fail(`${what}: threw synchronously instead of rejecting: ${String(err)}`)
  }
  assert.ok(promise instanceof Promise, `${what}: returns a promise`)
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof ProtoqueueError, `${what}: a ProtoqueueError, got ${String(err)}`)
    assert.equal((err as ProtoqueueError).code, code, `${what}: code`)
    return true
  })
}

function throws(what: string, call: () => unknown, code: string) {
  assert.throws(call, (err: unknown) => {
    assert.ok(err instanceof ProtoqueueError, `${what}: a ProtoqueueError, got ${String(err)}`)
    assert.equal((err as ProtoqueueError).code, code, `${what}: code`)
    return true
  })
}

async function assertNothingStored(queue: Protoqueue) {
  const stats = await queue.getStats()
  assert.equal(stats.messages, 0, 'nothing stored')
  assert.equal(stats.lastSequence, 0, 'nothing ever stored')
}

class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
  toJSON() {
    return [this.x, this.y]
  }
}

describe('enqueue', () => {
  const cases: Array<[string, unknown, string]> = [
    ['metadata: new Date()', { data: 1, metadata: new Date() }, 'ERR_PQ_INVALID_TASK'],
    ["metadata: new String('x')", { data: 1, metadata: new String('x') }, 'ERR_PQ_INVALID_TASK'],
    ['metadata: { toJSON: () => 5 }', { data: 1, metadata: { toJSON: () => 5 } }, 'ERR_PQ_INVALID_TASK'],
    ['metadata: a class instance whose toJSON returns an array', { data: 1, metadata: new Point(1, 2) }, 'ERR_PQ_INVALID_TASK'],
    ['metadata: an array', { data: 1, metadata: [1] }, 'ERR_PQ_INVALID_TASK'],
    ['metadata: a Symbol', { data: 1, metadata: Symbol('m') }, 'ERR_PQ_INVALID_TASK'],
    ['metadata holding a function', { data: 1, metadata: { f() {} } }, 'ERR_PQ_SERIALIZE'],
    ['an unknown key (a typo: dealy)', { data: 1, dealy: 5000 }, 'ERR_PQ_INVALID_TASK'],
    ['a typo (metdata)', { data: 1, metdata: {} }, 'ERR_PQ_INVALID_TASK'],
    ['data: a nested function', { data: { a: { fn: () => 1 } } }, 'ERR_PQ_SERIALIZE'],
    ['data: a nested Symbol', { data: { a: [1, { s: Symbol('s') }] } }, 'ERR_PQ_SERIALIZE'],
    ['data: a function in an array', { data: [1, () => 2] }, 'ERR_PQ_SERIALIZE'],
    ['data: a Symbol in an array', { data: [Symbol('s')] }, 'ERR_PQ_SERIALIZE'],
    ['data: a function', { data: () => 1 }, 'ERR_PQ_SERIALIZE'],
    ['data: a Symbol', { data: Symbol('s') }, 'ERR_PQ_SERIALIZE'],
    ['data: a BigInt', { data: 10n }, 'ERR_PQ_SERIALIZE'],
    ['data: a nested BigInt', { data: { amount: 10n } }, 'ERR_PQ_SERIALIZE'],
    ['data: a cycle', { data: cyclic() }, 'ERR_PQ_SERIALIZE'],
    ['data: toJSON throws', { data: { toJSON: () => { throw Object.create(null) } } }, 'ERR_PQ_SERIALIZE'],
    ['data: a Proxy that throws', { data: throwingProxy() }, 'ERR_PQ_SERIALIZE'],
    ['data: a throwing getter inside', { data: throwingGetter('x') }, 'ERR_PQ_SERIALIZE'],
    ['data: missing', { metadata: {} }, 'ERR_PQ_INVALID_TASK'],
    ['a task whose data getter throws', throwingGetter('data'), 'ERR_PQ_INVALID_TASK'],
    ['a task whose metadata getter throws', throwingGetter('metadata', { data: 1 }), 'ERR_PQ_INVALID_TASK'],
    ['a task that is a Proxy that throws', throwingProxy(), 'ERR_PQ_INVALID_TASK'],
    ['a task that is a Symbol', Symbol('t'), 'ERR_PQ_INVALID_TASK'],
    ['a task that is a function', () => ({ data: 1 }), 'ERR_PQ_INVALID_TASK'],
    ['a task that is a BigInt', 1n, 'ERR_PQ_INVALID_TASK'],
    ['a task that is null', null, 'ERR_PQ_INVALID_TASK'],
    ['a task that is an array', [{ data: 1 }], 'ERR_PQ_INVALID_TASK'],
  ]
  for (const [name, task, code] of cases) {
    test(`${name} rejects with ${code}; nothing is stored`, () =>
      withQueue(async (queue) => {
        await rejects(name, () => queue.enqueue(task as any), code)
        await rejects(`${name} in a batch`, () => queue.enqueueBatch([{ data: 'fine' }, task as any]), code)
        await assertNothingStored(queue)
      }))
  }
})

describe('enqueueBatch', () => {
  const cases: Array<[string, unknown]> = [
    ['a sparse array', [{ data: 1 }, , { data: 3 }]], // eslint-disable-line no-sparse-arrays
    ['a huge sparse array', Object.assign(new Array(2 ** 32 - 1), { 0: { data: 1 } })],
    ['an array Proxy that throws', throwingProxy([])],
    ['an array with a throwing element getter', Object.defineProperty([{ data: 1 }, { data: 2 }], 1, { get: () => { throw new Error('element') } })],
    ['a Symbol', Symbol('tasks')],
    ['a function', () => [{ data: 1 }]],
    ['a BigInt', 5n],
    ['an object', { 0: { data: 1 }, length: 1 }],
  ]
  for (const [name, tasks] of cases) {
    test(`${name} rejects with ERR_PQ_INVALID_TASK; nothing is stored`, () =>
      withQueue(async (queue) => {
        await rejects(name, () => queue.enqueueBatch(tasks as any), 'ERR_PQ_INVALID_TASK')
        await assertNothingStored(queue)
      }))
  }
})

describe('the constructor and create()', () => {
  const names = uniqueQueue('hostile_config')
  const configs: Array<[string, unknown]> = [
    ['a Symbol as the config', Symbol('config')],
    ['a function as the config', () => names],
    ['a BigInt as the config', 1n],
    ['a Proxy that throws as the config', throwingProxy()],
    ['a Symbol inside', { ...names, options: { batchSize: Symbol('x') } }],
    ['a function inside', { ...names, verbose: () => true }],
    ['a BigInt inside', { ...names, options: { batchSize: 10n } }],
    ['a cycle inside', { ...names, options: cyclic() }],
    ['a getter that throws', throwingGetter('subject', { streamName: names.streamName })],
    ['a Proxy that throws inside', { ...names, auth: throwingProxy() }],
    ['NaN inside', { ...names, options: { ackWait: NaN } }],
    ['Infinity deep inside', { ...names, tls: { caFile: Infinity } }],
    ['a Symbol-valued stream name', { ...names, streamName: Symbol('s') }],
    ['a huge array inside', { ...names, options: { batchSize: new Array(100_000).fill(1) } }],
  ]
  for (const [name, config] of configs) {
    test(`${name}: the constructor throws ERR_PQ_INVALID_CONFIG, create() rejects with it`, async () => {
      throws(name, () => new Protoqueue(config as ProtoqueueConfig), 'ERR_PQ_INVALID_CONFIG')
      await rejects(`create() with ${name}`, () => Protoqueue.create(config as ProtoqueueConfig), 'ERR_PQ_INVALID_CONFIG')
    })
  }

  test('a frozen configuration is fine', async () => {
    const frozen = Object.freeze({ ...uniqueQueue('frozen'), url: server.url, options: Object.freeze({ batchSize: 2 }) })
    const created = await Protoqueue.create(frozen)
    await created.disconnect()
  })
})

describe('the other methods', () => {
  for (const [name, url] of [
    ['a Symbol', Symbol('url')],
    ['a Proxy that throws', throwingProxy()],
    ['a BigInt', 1n],
    ['a function', () => 'nats://x'],
  ] as Array<[string, unknown]>) {
    test(`connect(${name}) rejects with ERR_PQ_INVALID_CONFIG`, async () => {
      const fresh = new Protoqueue(uniqueQueue())
      await rejects(`connect(${name})`, () => fresh.connect(url as string), 'ERR_PQ_INVALID_CONFIG')
    })
  }

  for (const [name, handler] of [
    ['a Symbol', Symbol('handler')],
    ['a Proxy that throws', throwingProxy()],
    ['a BigInt', 1n],
    ['an object', { handle() {} }],
  ] as Array<[string, unknown]>) {
    test(`process(${name}) rejects with ERR_PQ_INVALID_HANDLER`, () =>
      withQueue(async (queue) => {
        await rejects(`process(${name})`, () => queue.process(handler as any), 'ERR_PQ_INVALID_HANDLER')
      }))
  }

  for (const [name, limit] of [
    ['2 ** 32 (would wrap to 0)', 2 ** 32],
    ['2 ** 53', 2 ** 53],
    ['0', 0],
    ['-1', -1],
    ['1.5', 1.5],
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['a Symbol', Symbol('n')],
    ['a BigInt', 10n],
    ['a Proxy that throws', throwingProxy()],
    ['a numeric string', '10'],
  ] as Array<[string, unknown]>) {
    test(`getDeadLetters(${name}) rejects with ERR_PQ_INVALID_CONFIG`, () =>
      withQueue(async (queue) => {
        await rejects(`getDeadLetters(${name})`, () => queue.getDeadLetters(limit as number), 'ERR_PQ_INVALID_CONFIG')
      }))
  }

  for (const [name, filter] of [
    ['a filter with its own limit (the limit is the first argument)', { limit: 2 }],
    ['a filter with an unknown key', { id: 'x' }],
    ['a filter with ids that are not an array', { ids: 'x' }],
    ['a filter with a key set to undefined', { ids: undefined }],
    ['a filter with an unknown reason', { reason: 'bored' }],
    ['a filter with sequence 0', { sequences: [0] }],
    ['a string filter', 'x'],
    ['a Proxy filter that throws', throwingProxy()],
  ] as Array<[string, unknown]>) {
    test(`getDeadLetters(10, ${name}) rejects with ERR_PQ_INVALID_CONFIG`, () =>
      withQueue(async (queue) => {
        await rejects(`getDeadLetters(10, ${name})`, () => queue.getDeadLetters(10, filter as object), 'ERR_PQ_INVALID_CONFIG')
      }))
  }

  test('requeueDeadLetters and purgeDeadLetters of a Proxy filter that throws reject with ERR_PQ_INVALID_CONFIG', () =>
    withQueue(async (queue) => {
      await rejects('requeueDeadLetters(Proxy)', () => queue.requeueDeadLetters(throwingProxy()), 'ERR_PQ_INVALID_CONFIG')
      await rejects('purgeDeadLetters(Proxy)', () => queue.purgeDeadLetters(throwingProxy()), 'ERR_PQ_INVALID_CONFIG')
    }))

  test('valid frozen tasks, and data with toJSON or undefined values, are accepted', () =>
    withQueue(async (queue) => {
      const ids = await queue.enqueueBatch([
        Object.freeze({ data: Object.freeze({ a: [1, 2] }), metadata: Object.freeze({ k: 'v' }) }),
        { data: { at: new Date(0), point: new Point(1, 2), skipped: undefined } },
      ])
      assert.equal(ids.length, 2)
      assert.equal((await queue.getStats()).messages, 2)
    }))
})

// A lone UTF-16 surrogate has no UTF-8 form: crossing into the native side it became U+FFFD, so
// `enqueue({ id })` resolved to another id than given and two distinct ids named one task.
describe('strings with a lone surrogate', () => {
  const lone = ['a\uD800b', 'a\uDBFFb', 'end\uD83D', '\uDE00start', 'x\uDC00\uD800y']

  /** A queue over a subject tree with delayed and recurring tasks on, disconnected after `body`. */
  async function withTreeQueue(body: (queue: Protoqueue, root: string) => Promise<void>) {
    const { streamName, subject } = uniqueQueue('lone')
    const queue = new Protoqueue({ streamName, subject: `${subject}.>`, options: { schedules: true } })
    await queue.connect(server.url)
    try {
      await body(queue, subject)
    } finally {
      await queue.disconnect()
    }
  }

  test('task ids, names and subjects with a lone surrogate reject with ERR_PQ_INVALID_TASK; nothing is stored', () =>
    withTreeQueue(async (queue, root) => {
      for (const text of lone) {
        const what = JSON.stringify(text)
        for (const task of [{ data: 1, id: text }, { data: 1, name: text }, { data: 1, subject: `${root}.${text}` }]) {
          await rejects(`enqueue ${what}`, () => queue.enqueue(task), 'ERR_PQ_INVALID_TASK')
          await rejects(`enqueueBatch ${what}`, () => queue.enqueueBatch([{ data: 'fine' }, task]), 'ERR_PQ_INVALID_TASK')
          await rejects(`schedule ${what}`, () => queue.schedule('tick', { every: 60_000 }, task), 'ERR_PQ_INVALID_TASK')
        }
        await rejects(`cancel(${what})`, () => queue.cancel(text), 'ERR_PQ_INVALID_TASK')
      }
      await assertNothingStored(queue)
      assert.deepStrictEqual(await queue.getSchedules(), [])
    }))

  test('two ids that differ only in their lone surrogates are not one task', () =>
    withQueue(async (queue) => {
      const results = await Promise.allSettled([queue.enqueue({ data: 1, id: 'order\uD800' }), queue.enqueue({ data: 2, id: 'order\uDBFF' })])
      for (const result of results) {
        assert.equal(result.status, 'rejected')
        assert.equal((result as PromiseRejectedResult).reason.code, 'ERR_PQ_INVALID_TASK')
      }
      await assertNothingStored(queue)
    }))

  test('well-formed text outside the BMP (surrogate pairs) is kept exactly', () =>
    withQueue(async (queue) => {
      const id = 'order-\u{1F600}-\u{10FFFF}'
      assert.equal(await queue.enqueue({ data: 1, id, name: 'task-\u{1F680}' }), id)
      assert.deepStrictEqual(await queue.enqueueBatch([{ data: 2, id: `${id}-2` }]), [`${id}-2`])
    }))

  test('schedule names, dead-letter filters, process subjects, the URL and the configuration reject with ERR_PQ_INVALID_CONFIG', () =>
    withTreeQueue(async (queue, root) => {
      for (const text of lone) {
        const what = JSON.stringify(text)
        await rejects(`schedule(${what})`, () => queue.schedule(text, { every: 60_000 }, { data: 1 }), 'ERR_PQ_INVALID_CONFIG')
        await rejects(`unschedule(${what})`, () => queue.unschedule(text), 'ERR_PQ_INVALID_CONFIG')
        await rejects(`schedule timeZone ${what}`, () => queue.schedule('tick', { cron: '0 0 * * * *', timeZone: `Europe/${text}` }, { data: 1 }), 'ERR_PQ_INVALID_CONFIG')
        await rejects(`requeueDeadLetters ids ${what}`, () => queue.requeueDeadLetters({ ids: [text] }), 'ERR_PQ_INVALID_CONFIG')
        await rejects(`purgeDeadLetters ids ${what}`, () => queue.purgeDeadLetters({ ids: [text] }), 'ERR_PQ_INVALID_CONFIG')
        await rejects(`purgeDeadLetters reason ${what}`, () => queue.purgeDeadLetters({ reason: text as 'rejected' }), 'ERR_PQ_INVALID_CONFIG')
        await rejects(`process subjects ${what}`, () => queue.process(async () => ({ success: true }), { subjects: [`${root}.${text}`] }), 'ERR_PQ_INVALID_CONFIG')
        const fresh = new Protoqueue(uniqueQueue('lone_url'))
        await rejects(`connect(${what})`, () => fresh.connect(`nats://127.0.0.1:${server.port}/${text}`), 'ERR_PQ_INVALID_CONFIG')
        const names = uniqueQueue('lone_config')
        throws(`streamName ${what}`, () => new Protoqueue({ ...names, streamName: `${names.streamName}${text}` }), 'ERR_PQ_INVALID_CONFIG')
        throws(`subject ${what}`, () => new Protoqueue({ ...names, subject: `${names.subject}${text}` }), 'ERR_PQ_INVALID_CONFIG')
        throws(`auth ${what}`, () => new Protoqueue({ ...names, auth: { user: 'u', pass: text } }), 'ERR_PQ_INVALID_CONFIG')
      }
      assert.deepStrictEqual(await queue.getSchedules(), [])
    }))

  test('without String.prototype.isWellFormed (Node 18) lone surrogates are refused all the same', () => {
    const script = `
      delete String.prototype.isWellFormed
      const { Protoqueue } = require('./index.js')
      const queue = new Protoqueue({ streamName: 's', subject: 't' })
      const codes = (ids) => Promise.all(ids.map((id) => queue.enqueue({ data: 1, id }).then(() => 'resolved', (err) => err.code)))
      let config
      try { new Protoqueue({ streamName: 's', subject: 't\\uD800' }); config = 'created' } catch (err) { config = err.code }
      Promise.all([codes(${JSON.stringify(lone)}), codes(['pair-\\u{1F600}'])]).then(([lone, pair]) => console.log(JSON.stringify({ lone, pair, config })))`
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: repoRoot, encoding: 'utf8' }))
    assert.deepStrictEqual(out, { lone: lone.map(() => 'ERR_PQ_INVALID_TASK'), pair: ['ERR_PQ_NOT_CONNECTED'], config: 'ERR_PQ_INVALID_CONFIG' })
  })
})
