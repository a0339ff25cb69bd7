// Task data in other encodings than JSON, end to end against a real nats-server: Protobuf from a
// protobuf-es schema (two versions of one message for schema evolution, another message type),
// 'raw' bytes, 'msgpack', a serializer of one's own, mixed producers on one queue, dead letters
// and requeue of such tasks, named tasks, and the bad input that must be refused with nothing sent.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { inspect } from 'node:util'

import { create, isMessage } from '@bufbuild/protobuf'
import { Protoqueue, type DeadLetter, type ProtoqueueConfig, type TaskData } from 'protoqueue'

import { OrderSchema, OtherSchema, type Order } from './fixtures/protobuf/gen/v1/pqtest/order_pb.js'
import { OrderSchema as OrderV2Schema } from './fixtures/protobuf/gen/v2/pqtest/order_pb.js'
import { Color, KindsSchema, type Kinds } from './fixtures/protobuf/gen/v1/pqtest/kinds_pb.js'
import { AddressSchema } from './fixtures/protobuf/gen/v1/pqtest/order_pb.js'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { repoRoot } from './helpers/package'
import { deferred, eventually, rejectsWithCode, within } from './helpers/wait'

const ORDER_TYPE = 'application/x-protobuf; messageType=pqtest.Order'

let server: NatsServer
const open: Array<Protoqueue<any>> = []
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await Promise.all(open.map((queue) => queue.disconnect()))
  await server.stop()
})

/** A connected queue, disconnected after the tests. */
async function queueOf<T = unknown>(config: ProtoqueueConfig<T>): Promise<Protoqueue<T>> {
  const queue = new Protoqueue<T>(config)
  open.push(queue)
  await queue.connect(server.url)
  return queue
}

/** Collects the tasks a handler gets; `until(n)` waits for n of them. */
function collector<T = any>(result: (task: TaskData<T>) => { success: boolean; retry?: boolean; error?: string } = () => ({ success: true })) {
  const tasks: Array<TaskData<T>> = []
  let waiting: { n: number; done: () => void } | undefined
  const handler = async (task: TaskData<T>) => {
    tasks.push(task)
    if (waiting && tasks.length >= waiting.n) waiting.done()
    return result(task)
  }
  const until = async (n: number) => {
    if (tasks.length >= n) return tasks
    const done = deferred()
    waiting = { n, done: done.resolve }
    await within(`${n} tasks`, done.promise)
    return tasks
  }
  return { tasks, handler, until }
}

async function letters(queue: Protoqueue<any>, n: number): Promise<Array<DeadLetter<any>>> {
  return eventually(`${n} dead letters`, async () => {
    const found = await queue.getDeadLetters()
    return found.length >= n && found
  })
}

/** Expects `queue.enqueue({ data })` to reject with ERR_PQ_SERIALIZE; a failure names the data. */
async function refused(queue: Protoqueue<any>, data: unknown) {
  await rejectsWithCode(queue.enqueue({ data }), 'ERR_PQ_SERIALIZE').catch((err: Error) => {
    throw new Error(`${inspect(data, { depth: 3 })}: ${err.message}`)
  })
}

describe('Protobuf task data from a protobuf-es schema', () => {
  test('enqueue takes the message or its init object; the handler gets the decoded message', async () => {
    const names = uniqueQueue('pb')
    const queue = await queueOf({ ...names, schema: OrderSchema })
    const seen = collector<Order>()
    await queue.process(seen.handler)
    await queue.enqueue({ data: { id: 'init', quantity: 3, shipTo: { city: 'Paris' } } })
    await queue.enqueue({ data: create(OrderSchema, { id: 'message', quantity: 4 }) })
    await queue.enqueueBatch([{ data: { id: 'batch-1' } }, { data: create(OrderSchema, { id: 'batch-2' }) }])
    const tasks = await seen.until(4)
    const byId = new Map(tasks.map((t) => [t.data.id, t]))
    const first = byId.get('init')!
    assert.ok(isMessage(first.data, OrderSchema), 'a pqtest.Order message')
    assert.equal(first.data.quantity, 3)
    assert.equal(first.data.shipTo?.city, 'Paris')
    assert.equal(first.contentType, ORDER_TYPE)
    assert.equal(byId.get('message')!.data.quantity, 4)
    assert.deepStrictEqual([...byId.keys()].sort(), ['batch-1', 'batch-2', 'init', 'message'])
  })

  test('schema evolution: a newer producer (fields added) and an older worker understand each other, both ways', async () => {
    // New producer → old worker: the added fields are kept as unknown fields, the rest reads.
    const forward = uniqueQueue('pb_fwd')
    const newProducer = await queueOf({ ...forward, schema: OrderV2Schema })
    const oldWorker = await queueOf({ ...forward, schema: OrderSchema })
    const old = collector<Order>()
    await oldWorker.process(old.handler)
    await newProducer.enqueue({ data: { id: 'v2', quantity: 2, coupon: 'SAVE10', tags: ['gift'] } })
    const [fromNew] = await old.until(1)
    assert.equal(fromNew!.data.id, 'v2')
    assert.equal(fromNew!.data.quantity, 2)
    assert.ok((fromNew!.data.$unknown ?? []).length > 0, 'the fields it does not know are kept')
    // Re-encoded by the old worker (passed on to another queue), the new fields survive.
    const relay = uniqueQueue('pb_relay')
    const oldRelay = await queueOf({ ...relay, schema: OrderSchema })
    const newReader = await queueOf({ ...relay, schema: OrderV2Schema })
    const relayed = collector<any>()
    await newReader.process(relayed.handler)
    await oldRelay.enqueue({ data: fromNew!.data })
    const [passedOn] = await relayed.until(1)
    assert.equal(passedOn!.data.coupon, 'SAVE10')
    assert.deepStrictEqual(passedOn!.data.tags, ['gift'])

    // Old producer → new worker: the added fields have their defaults.
    const backward = uniqueQueue('pb_bwd')
    const oldProducer = await queueOf({ ...backward, schema: OrderSchema })
    const newWorker = await queueOf({ ...backward, schema: OrderV2Schema })
    const seenNew = collector<any>()
    await newWorker.process(seenNew.handler)
    await oldProducer.enqueue({ data: { id: 'v1', quantity: 1 } })
    const [fromOld] = await seenNew.until(1)
    assert.equal(fromOld!.data.id, 'v1')
    assert.equal(fromOld!.data.coupon, '')
    assert.deepStrictEqual(fromOld!.data.tags, [])
  })

  test('a task of another message type, or not Protobuf, is dead-lettered at once as invalidData, saying why', async () => {
    const names = uniqueQueue('pb_wrong')
    const worker = await queueOf({ ...names, schema: OrderSchema, options: { maxRetries: 5, retryDelay: 100 } })
    const seen = collector()
    await worker.process(seen.handler)
    const other = await queueOf({ ...names, schema: OtherSchema })
    await other.enqueue({ id: 'other-type', data: { note: 'hi', count: 5n } })
    const msgpack = await queueOf({ ...names, serializer: 'msgpack' })
    await msgpack.enqueue({ id: 'msgpack', data: { id: 'looks like an order' } })
    // The right label over bytes that are not a pqtest.Order.
    const liar = await queueOf({ ...names, serializer: { contentType: ORDER_TYPE, encode: () => Uint8Array.of(0xff, 0xff, 0xff), decode: () => null } })
    await liar.enqueue({ id: 'garbage', data: null })
    const found = await letters(worker, 3)
    assert.deepStrictEqual(seen.tasks, [], 'the handler never saw them')
    const byId = new Map(found.map((l) => [l.task?.id, l]))
    for (const letter of found) {
      assert.equal(letter.reason, 'invalidData')
      assert.equal(letter.attempts, 1)
      assert.equal(letter.task?.dataFormat, 'raw', 'kept as bytes, readable by getDeadLetters')
      assert.ok(Buffer.isBuffer(letter.task?.data))
    }
    assert.match(byId.get('other-type')!.error, /pqtest\.Other.*pqtest\.Order/)
    assert.equal(byId.get('other-type')!.task?.contentType, 'application/x-protobuf; messageType=pqtest.Other')
    assert.match(byId.get('msgpack')!.error, /application\/x-msgpack/)
    assert.match(byId.get('garbage')!.error, /does not decode as pqtest\.Order/)
  })

  test('a JSON task on a Protobuf queue reaches the handler as the message (Protobuf JSON mapping), or is invalidData', async () => {
    const names = uniqueQueue('pb_json')
    const worker = await queueOf({ ...names, schema: OrderSchema })
    const seen = collector<Order>()
    await worker.process(seen.handler)
    const json = await queueOf({ ...names })
    await json.enqueue({ data: { id: 'from-json', quantity: 7, ship_to: { city: 'Oslo' } } })
    await json.enqueue({ id: 'not-an-order', data: { quantity: 'many' } })
    const [task] = await seen.until(1)
    assert.ok(isMessage(task!.data, OrderSchema))
    assert.equal(task!.data.quantity, 7)
    assert.equal(task!.data.shipTo?.city, 'Oslo')
    assert.equal(task!.contentType, undefined)
    const [letter] = await letters(worker, 1)
    assert.equal(letter!.reason, 'invalidData')
    assert.equal(letter!.task?.id, 'not-an-order')
    assert.equal(letter!.task?.dataFormat, 'json')
  })

  test('dead letters keep the bytes and content type; getDeadLetters decodes them; requeue runs them again', async () => {
    const names = uniqueQueue('pb_dlq')
    const queue = await queueOf({ ...names, schema: OrderSchema, options: { maxRetries: 0, retryDelay: 0 } })
    let reject = true
    const seen = collector<Order>(() => (reject ? { success: false, retry: false, error: 'not yet' } : { success: true }))
    await queue.process(seen.handler)
    await queue.enqueue({ id: 'o-1', name: 'order', data: { id: 'o-1', quantity: 9 } })
    const [letter] = await letters(queue, 1)
    assert.equal(letter!.reason, 'rejected')
    const task = letter!.task!
    assert.equal(task.contentType, ORDER_TYPE)
    assert.equal(task.dataFormat, 'decoded')
    assert.ok(task.dataFormat === 'decoded' && isMessage(task.data, OrderSchema) && task.data.quantity === 9)
    assert.equal(task.name, 'order')
    // A queue without the schema still reads the letter, as bytes.
    const plain = await queueOf({ ...names })
    const [raw] = await plain.getDeadLetters()
    assert.equal(raw!.task?.dataFormat, 'raw')
    assert.equal(raw!.task?.contentType, ORDER_TYPE)
    reject = false
    assert.equal(await queue.requeueDeadLetters({ ids: ['o-1'] }), 1)
    const tasks = await seen.until(2)
    assert.equal(tasks[1]!.data.quantity, 9)
    assert.equal(tasks[1]!.name, 'order')
    assert.equal(tasks[1]!.contentType, ORDER_TYPE)
    await eventually('the letter gone', async () => (await queue.getDeadLetters()).length === 0)
  })

  test('delayed and recurring tasks keep their Protobuf data and content type', async () => {
    const names = uniqueQueue('pb_sched')
    const queue = await queueOf({ ...names, schema: OrderSchema, options: { schedules: true } })
    const seen = collector<Order>()
    await queue.process(seen.handler)
    await queue.enqueue({ data: { id: 'delayed', quantity: 1 }, delay: 50 })
    await queue.schedule('every-second', { every: 1000 }, { name: 'tick', data: { id: 'recurring', quantity: 2 } })
    const [listed] = await queue.getSchedules()
    assert.ok(isMessage(listed!.data, OrderSchema) && listed!.data.quantity === 2, 'getSchedules decodes the data')
    assert.equal(listed!.taskName, 'tick')
    const tasks = await seen.until(2)
    await queue.unschedule('every-second')
    const byId = new Map(tasks.map((t) => [t.data.id, t]))
    assert.equal(byId.get('delayed')?.data.quantity, 1)
    assert.equal(byId.get('recurring')?.data.quantity, 2)
    assert.equal(byId.get('recurring')?.name, 'tick')
    for (const task of tasks) assert.equal(task.contentType, ORDER_TYPE)
  })

  test('a value the schema cannot encode rejects with ERR_PQ_SERIALIZE and nothing is sent', async () => {
    const names = uniqueQueue('pb_bad')
    const queue = await queueOf({ ...names, schema: OrderSchema })
    const bad: unknown[] = [
      { id: 'x', bogus: 1 },
      { shipTo: { city: 'x', street: 'y' } },
      { quantity: 'many' },
      { quantity: -1 },
      'text',
      null,
      [1],
      Buffer.from('x'),
      create(OtherSchema, { note: 'wrong type' }),
    ]
    for (const data of bad) {
      await rejectsWithCode(queue.enqueue({ data: data as any }), 'ERR_PQ_SERIALIZE')
    }
    await rejectsWithCode(queue.enqueueBatch([{ data: { id: 'fine' } }, { data: { quantity: 'many' } as any }]), 'ERR_PQ_SERIALIZE')
    assert.equal((await queue.getStats()).messages, 0, 'nothing was sent')
  })

  test('a field of the wrong type is refused with ERR_PQ_SERIALIZE, not coerced; nothing is sent', async () => {
    const names = uniqueQueue('pb_types')
    const orders = await queueOf({ ...names, schema: OrderV2Schema })
    // What protobuf-es's create() and toBinary() turned into something else: "7", [], "[object Object]"…
    const badOrders: unknown[] = [
      { id: 7 },
      { id: { a: 1 } },
      { id: true },
      { id: 'lone \uD800' },
      { tags: { a: 1 } },
      { tags: 'abc' },
      { tags: [1] },
      { tags: ['fine', null] },
      { quantity: '3' },
      { quantity: 1.5 },
      { quantity: 2 ** 32 },
      { shipTo: 'Paris' },
      { shipTo: [] },
      { shipTo: { city: 5 } },
      create(OrderV2Schema, { id: 7 as any }),
      Object.defineProperty({}, 'id', { enumerable: true, get: () => { throw new Error('getter') } }),
    ]
    for (const data of badOrders) await refused(orders, data)
    await rejectsWithCode(orders.enqueueBatch([{ data: { id: 'fine' } }, { data: { id: 7 } as any }]), 'ERR_PQ_SERIALIZE')

    const kinds = await queueOf({ ...uniqueQueue('pb_kinds'), schema: KindsSchema })
    const deep: Record<string, unknown> = {}
    let at = deep
    for (let i = 0; i < 101; i++) at = (at.child = {}) as Record<string, unknown>
    const cyclic: Record<string, unknown> = {}
    cyclic.child = cyclic
    const badKinds: unknown[] = [
      { small: 1.5 },
      { small: 2 ** 31 },
      { big: 'many' },
      { big: 1.5 },
      { ubig: -1 },
      { flag: 1 },
      { flag: 'true' },
      { blob: 'bytes' },
      { blob: [300] },
      { blob: [1, 'x'] },
      { ratio: '1' },
      { single: 1e300 },
      { color: 'COLOR_RED' },
      { color: 1.5 },
      { maybeText: 5 },
      { numbers: [1, 2.5] },
      { addresses: ['Paris'] },
      { addresses: [{ city: 1 }] },
      { counts: { a: 'x' } },
      { counts: [] },
      { labels: { x: 'a' } },
      { labels: { 1.5: 'a' } },
      { labels: { 1: 2 } },
      { switches: { maybe: 'a' } },
      { places: { home: 'Paris' } },
      { places: { home: { city: 1 } } },
      { choice: 'word' },
      { choice: { case: 'nope', value: 1 } },
      { choice: { case: 'word', value: 5 } },
      { choice: { case: 'where', value: { city: 1 } } },
      { wrapped: 5 },
      { extra: 5 },
      { extra: ['a'] },
      { at: '2020-01-01T00:00:00Z' },
      { at: { seconds: 'x' } },
      { child: { child: { text: 3 } } },
      deep,
      cyclic,
    ]
    for (const data of badKinds) await refused(kinds, data)
    assert.equal((await orders.getStats()).messages, 0, 'nothing was sent')
    assert.equal((await kinds.getStats()).messages, 0, 'nothing was sent')
  })

  test('every kind of field the schema allows is taken as protobuf-es takes it', async () => {
    const queue = await queueOf({ ...uniqueQueue('pb_kinds_ok'), schema: KindsSchema })
    const seen = collector<Kinds>()
    await queue.process(seen.handler)
    await queue.enqueue({
      data: {
        text: 'text \u{1F600}',
        small: -5,
        big: '-9007199254740993' as unknown as bigint, // protobuf-es takes int64 as a string or number too
        ubig: 18446744073709551615n,
        flag: true,
        blob: Uint8Array.of(1, 2),
        ratio: Infinity,
        single: 0.5,
        color: Color.RED,
        maybeText: '',
        tags: ['a', 'b'],
        numbers: [1, -2],
        addresses: [{ city: 'Paris' }, create(AddressSchema, { city: 'Rome' })],
        counts: { a: 1 },
        labels: { 7: 'seven', '-1': 'minus one' },
        switches: { true: 'on', false: 'off' },
        places: { home: { city: 'Oslo' } },
        choice: { case: 'where', value: { city: 'Lima' } },
        wrapped: 'wrapped',
        extra: { nested: [1, 'two', { three: null }] },
        at: { seconds: 1n, nanos: 2 },
        child: { text: 'child', child: { big: 3 as unknown as bigint }, choice: { case: 'word', value: 'w' } },
      },
    })
    await queue.enqueue({ data: { text: 'nulls', blob: [0, 255], maybeText: null, child: null, choice: { case: undefined }, tags: null } as any })
    const tasks = await seen.until(2)
    const byText = new Map(tasks.map((t) => [t.data.text, t.data]))
    const full = byText.get('text \u{1F600}')!
    assert.equal(full.big, -9007199254740993n)
    assert.equal(full.ubig, 18446744073709551615n)
    assert.deepStrictEqual([...full.blob], [1, 2])
    assert.deepStrictEqual(full.addresses.map((a) => a.city), ['Paris', 'Rome'])
    assert.deepStrictEqual(full.labels, { 7: 'seven', '-1': 'minus one' })
    assert.deepStrictEqual(full.switches, { true: 'on', false: 'off' })
    assert.equal(full.choice.case === 'where' && full.choice.value.city, 'Lima')
    assert.equal(full.wrapped, 'wrapped')
    assert.deepStrictEqual(full.extra, { nested: [1, 'two', { three: null }] })
    assert.equal(full.child?.child?.big, 3n)
    const nulls = byText.get('nulls')!
    assert.deepStrictEqual([...nulls.blob], [0, 255])
    assert.equal(nulls.maybeText, undefined)
  })

  test('the example (examples/protobuf) runs as its README section says', () => {
    const out = execFileSync(process.execPath, ['examples/protobuf/orders.mjs'], {
      cwd: repoRoot,
      encoding: 'utf8',
      env: { ...process.env, NATS_URL: server.url },
      timeout: 60_000,
    })
    assert.match(out, /order o-1 for ada@example\.com: 2 units, 800 cents \(application\/x-protobuf; messageType=shop\.v1\.Order\)/)
    assert.match(out, /order o-2 for alan@example\.com: 1 units, 0 cents/)
    assert.match(out, /refused: ERR_PQ_SERIALIZE/)
  })

  test("the example's generated code, copied into an ES-module app, loads there (it shipped as CommonJS, which such an app cannot load)", () => {
    const app = mkdtempSync(join(tmpdir(), 'protoqueue-esm-app-'))
    try {
      writeFileSync(join(app, 'package.json'), '{ "type": "module" }\n')
      cpSync(join(repoRoot, 'examples', 'protobuf', 'gen'), join(app, 'gen'), { recursive: true })
      symlinkSync(join(repoRoot, 'node_modules'), join(app, 'node_modules'), 'dir')
      writeFileSync(join(app, 'main.js'), "import { OrderSchema } from './gen/shop/v1/order_pb.js'\nconsole.log(OrderSchema.typeName)\n")
      const out = execFileSync(process.execPath, ['main.js'], { cwd: app, encoding: 'utf8', timeout: 30_000 })
      assert.equal(out.trim(), 'shop.v1.Order')
    } finally {
      rmSync(app, { recursive: true, force: true })
    }
  })

  test('a schema that is not a protobuf-es message schema is ERR_PQ_INVALID_CONFIG', () => {
    for (const schema of [{}, 'pqtest.Order', { kind: 'enum', typeName: 'x' }, OrderSchema.fields[0], () => {}]) {
      assert.throws(() => new Protoqueue({ ...uniqueQueue(), schema: schema as any }), { code: 'ERR_PQ_INVALID_CONFIG' })
    }
    assert.throws(() => new Protoqueue({ ...uniqueQueue(), schema: OrderSchema, serializer: 'msgpack' }), { code: 'ERR_PQ_INVALID_CONFIG' })
  })
})

describe("serializers: 'raw', 'msgpack', your own, and JSON beside them", () => {
  test("'raw' takes a Buffer or Uint8Array and hands the handler a Buffer; anything else is ERR_PQ_SERIALIZE", async () => {
    const names = uniqueQueue('raw')
    const queue = await queueOf<Buffer>({ ...names, serializer: 'raw' })
    const seen = collector<Buffer>()
    await queue.process(seen.handler)
    const bytes = Uint8Array.of(0, 1, 2, 255)
    await queue.enqueue({ data: Buffer.from('hello') })
    await queue.enqueue({ data: bytes })
    await queue.enqueue({ data: new Uint8Array(0) })
    const tasks = await seen.until(3)
    for (const task of tasks) assert.ok(Buffer.isBuffer(task.data))
    assert.deepStrictEqual(
      tasks.map((t) => t.data.toString('hex')).sort(),
      ['', '000102ff', Buffer.from('hello').toString('hex')].sort(),
    )
    assert.equal(tasks[0]!.contentType, 'application/octet-stream')
    for (const data of ['hello', { type: 'Buffer', data: [1] }, [1, 2], 42, new ArrayBuffer(2)]) {
      await rejectsWithCode(queue.enqueue({ data: data as any }), 'ERR_PQ_SERIALIZE')
    }
  })

  test("'msgpack' round-trips values JSON cannot (binary, Infinity) and JSON-only workers refuse its tasks by name", async () => {
    const names = uniqueQueue('mp')
    const queue = await queueOf({ ...names, serializer: 'msgpack' })
    const seen = collector()
    await queue.process(seen.handler)
    const data = { n: 1.5, big: Infinity, when: new Date(1_700_000_000_000), bytes: Buffer.from([1, 2, 3]), list: [null, 'x', { deep: true }] }
    await queue.enqueue({ data })
    const [task] = await seen.until(1)
    const got = task!.data as typeof data
    assert.equal(got.n, 1.5)
    assert.equal(got.big, Infinity)
    assert.ok(got.when instanceof Date && got.when.getTime() === 1_700_000_000_000)
    assert.deepStrictEqual(Buffer.from(got.bytes), Buffer.from([1, 2, 3]))
    assert.deepStrictEqual(got.list, [null, 'x', { deep: true }])
    assert.equal(task!.contentType, 'application/x-msgpack')
    await rejectsWithCode(queue.enqueue({ data: () => 1 }), 'ERR_PQ_SERIALIZE')

    // A JSON worker on another queue gets a msgpack task: dead-lettered naming the content type.
    const other = uniqueQueue('mp_json')
    const jsonWorker = await queueOf({ ...other, options: { maxRetries: 3 } })
    await jsonWorker.process(async () => ({ success: true }))
    await (await queueOf({ ...other, serializer: 'msgpack' })).enqueue({ data: { a: 1 } })
    const [letter] = await letters(jsonWorker, 1)
    assert.equal(letter!.reason, 'invalidData')
    assert.match(letter!.error, /application\/x-msgpack/)
    // Plain MessagePack, no msgpackr record extension: a map16 of one entry, "a" → 1.
    assert.deepStrictEqual(letter!.task?.data, Buffer.from([0xde, 0x00, 0x01, 0xa1, 0x61, 0x01]))
  })

  test("'msgpack' refuses functions and symbols at any depth with ERR_PQ_SERIALIZE, as JSON does; nothing is sent", async () => {
    const queue = await queueOf({ ...uniqueQueue('mp_fn'), serializer: 'msgpack' })
    class WithArrow {
      n = 1
      f = () => 1
    }
    const bad: unknown[] = [
      { a: 1, f() {} },
      [1, () => 2],
      { a: { b: [{ c: () => 3 }] } },
      { toJSON: () => 1 }, // msgpackr writes a plain object's keys; it does not call toJSON
      new WithArrow(),
      new Map([['k', () => 1]]),
      new Map([[() => 1, 'v']]),
      { set: new Set([1, () => 1]) },
      { s: Symbol('s') },
      [1, Symbol('s')],
    ]
    for (const data of bad) await refused(queue, data)
    await rejectsWithCode(queue.enqueueBatch([{ data: { fine: true } }, { data: { f: () => 1 } }]), 'ERR_PQ_SERIALIZE')
    assert.equal((await queue.getStats()).messages, 0, 'nothing was sent')
  })

  test("'msgpack' keeps undefined and 64-bit BigInts, where JSON writes null, drops the key or refuses", async () => {
    const queue = await queueOf({ ...uniqueQueue('mp_undefined'), serializer: 'msgpack' })
    const seen = collector()
    await queue.process(seen.handler)
    await queue.enqueue({ data: { list: [undefined, 1], gone: undefined, methods: new (class { m() {} })(), big: 2n ** 60n } })
    const [task] = await seen.until(1)
    assert.deepStrictEqual(task!.data, { list: [undefined, 1], gone: undefined, methods: {}, big: 2n ** 60n })
    assert.ok(Object.hasOwn(task!.data as object, 'gone'))
  })

  test("'msgpack' without the msgpackr package is ERR_PQ_INVALID_CONFIG saying what to install", () => {
    const script = `
      const Module = require('node:module')
      const load = Module._load
      Module._load = function (request, ...rest) {
        if (request === 'msgpackr') throw Object.assign(new Error("Cannot find module 'msgpackr'"), { code: 'MODULE_NOT_FOUND' })
        return load.call(this, request, ...rest)
      }
      const { Protoqueue } = require('./index.js')
      try { new Protoqueue({ streamName: 's', subject: 't', serializer: 'msgpack' }); console.log('created') }
      catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })) }`
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: repoRoot, encoding: 'utf8' }))
    assert.equal(out.code, 'ERR_PQ_INVALID_CONFIG')
    assert.match(out.message, /npm install msgpackr/)
  })

  test('your own serializer; producers of several kinds share a queue during a migration', async () => {
    const names = uniqueQueue('own')
    const upper = {
      contentType: 'text/x-upper; charset=utf-8',
      encode: (data: string) => Buffer.from(data.toUpperCase()),
      decode: (bytes: Buffer, contentType: string) => `${bytes.toString()} (${contentType})`,
    }
    const worker = await queueOf<string>({ ...names, serializer: upper })
    const seen = collector<string>()
    await worker.process(seen.handler)
    await worker.enqueue({ data: 'new kind' })
    await (await queueOf({ ...names })).enqueue({ data: 'old kind' })
    const tasks = await seen.until(2)
    assert.deepStrictEqual(tasks.map((t) => t.data).sort(), ['NEW KIND (text/x-upper; charset=utf-8)', 'old kind'])
    assert.deepStrictEqual(tasks.map((t) => t.contentType ?? 'json').sort(), ['json', 'text/x-upper; charset=utf-8'])
  })

  test('a serializer that throws, or returns no bytes, rejects enqueue with ERR_PQ_SERIALIZE; bad serializers are ERR_PQ_INVALID_CONFIG', async () => {
    const names = uniqueQueue('own_bad')
    const throwing = await queueOf({ ...names, serializer: { contentType: 'x/y', encode: () => { throw new Error('no') }, decode: () => 1 } })
    await rejectsWithCode(throwing.enqueue({ data: 1 }), 'ERR_PQ_SERIALIZE')
    for (const result of ['text', [1, 2], null, undefined, new ArrayBuffer(1)]) {
      const queue = await queueOf({ ...names, serializer: { contentType: 'x/y', encode: () => result as any, decode: () => 1 } })
      await rejectsWithCode(queue.enqueue({ data: 1 }), 'ERR_PQ_SERIALIZE')
    }
    assert.equal((await throwing.getStats()).messages, 0, 'nothing was sent')
    const bad: unknown[] = [
      'yaml',
      42,
      {},
      { contentType: 'x/y', encode: () => new Uint8Array() },
      { contentType: 'x/y', decode: () => 1 },
      { contentType: 'nope', encode: () => new Uint8Array(), decode: () => 1 },
      { contentType: 'application/json', encode: () => new Uint8Array(), decode: () => 1 },
      { contentType: 'x/y\n', encode: () => new Uint8Array(), decode: () => 1 },
      { encode: () => new Uint8Array(), decode: () => 1 },
    ]
    for (const serializer of bad) {
      assert.throws(() => new Protoqueue({ ...uniqueQueue(), serializer: serializer as any }), { code: 'ERR_PQ_INVALID_CONFIG' }, JSON.stringify(serializer))
    }
  })

  test('a decoder that throws dead-letters the task at once as invalidData', async () => {
    const names = uniqueQueue('own_decode')
    const queue = await queueOf<string>({ ...names, serializer: { contentType: 'x/y', encode: () => Uint8Array.of(1), decode: () => { throw new Error('corrupt') } }, options: { maxRetries: 5 } })
    const seen = collector()
    await queue.process(seen.handler)
    await queue.enqueue({ data: 'anything' })
    const [letter] = await letters(queue, 1)
    assert.equal(letter!.reason, 'invalidData')
    assert.equal(letter!.attempts, 1)
    assert.match(letter!.error, /corrupt/)
    assert.equal(letter!.task?.dataFormat, 'raw')
    assert.deepStrictEqual(seen.tasks, [])
  })

  test('a decoder that returns a Promise or another thenable dead-letters the task at once as invalidData; nothing is left unhandled', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const decoders: Array<[string, (bytes: Buffer) => unknown]> = [
        ['a Promise', (bytes) => Promise.resolve(bytes.toString())],
        ['a rejected Promise', () => Promise.reject(new Error('later'))],
        ['a thenable', (bytes) => ({ then: (done: (value: string) => void) => done(bytes.toString()) })],
      ]
      for (const [what, decode] of decoders) {
        const queue = await queueOf<string>({ ...uniqueQueue('own_async'), serializer: { contentType: 'x/y', encode: (data: string) => Buffer.from(data), decode: decode as (bytes: Buffer) => string }, options: { maxRetries: 5 } })
        const seen = collector()
        await queue.process(seen.handler)
        await queue.enqueue({ data: 'anything' })
        await eventually(`${what}: the task handled or dead-lettered`, async () => seen.tasks.length > 0 || (await queue.getDeadLetters()).length > 0)
        assert.deepStrictEqual(seen.tasks, [], `${what}: the handler never ran`)
        const [letter] = await letters(queue, 1)
        assert.equal(letter!.reason, 'invalidData', what)
        assert.equal(letter!.attempts, 1, what)
        // getDeadLetters decodes with the same serializer: no Promise there either, the bytes.
        assert.equal(letter!.task?.dataFormat, 'raw', what)
        assert.deepStrictEqual(letter!.task?.data, Buffer.from('anything'), what)
      }
      // A turn of the event loop for an unhandled rejection to be reported.
      await new Promise((resolve) => setImmediate(resolve))
      assert.deepStrictEqual(unhandled, [])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  test('a serializer whose encode or decode is an async function is ERR_PQ_INVALID_CONFIG', () => {
    const asyncEncode = { contentType: 'x/y', encode: async () => Uint8Array.of(1), decode: () => 1 }
    const asyncDecode = { contentType: 'x/y', encode: () => Uint8Array.of(1), decode: async () => 1 }
    for (const serializer of [asyncEncode, asyncDecode]) {
      assert.throws(() => new Protoqueue({ ...uniqueQueue(), serializer: serializer as any }), { code: 'ERR_PQ_INVALID_CONFIG' })
    }
  })

  test('an encode that returns a Promise rejects enqueue with ERR_PQ_SERIALIZE; nothing is sent or left unhandled', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const names = uniqueQueue('own_async_encode')
      for (const encode of [() => Promise.resolve(Uint8Array.of(1)), () => Promise.reject(new Error('later'))]) {
        const queue = await queueOf({ ...names, serializer: { contentType: 'x/y', encode: encode as unknown as () => Uint8Array, decode: () => 1 } })
        await rejectsWithCode(queue.enqueue({ data: 1 }), 'ERR_PQ_SERIALIZE')
        assert.equal((await queue.getStats()).messages, 0, 'nothing was sent')
      }
      await new Promise((resolve) => setImmediate(resolve))
      assert.deepStrictEqual(unhandled, [])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  test("'json' is the default, and explicit", async () => {
    const names = uniqueQueue('json')
    const queue = await queueOf({ ...names, serializer: 'json' })
    const seen = collector()
    await queue.process(seen.handler)
    await queue.enqueue({ data: { a: [1] } })
    const [task] = await seen.until(1)
    assert.deepStrictEqual(task!.data, { a: [1] })
    assert.equal(task!.contentType, undefined)
  })
})

describe('named tasks', () => {
  test("a task's name travels with it to the handler and to its dead letter; a bad name is ERR_PQ_INVALID_TASK", async () => {
    const names = uniqueQueue('named')
    const queue = await queueOf({ ...names, options: { maxRetries: 0, retryDelay: 0 } })
    const seen = collector((task) => (task.name === 'resize' ? { success: false, retry: false } : { success: true }))
    await queue.process(seen.handler)
    await queue.enqueue({ name: 'email', data: { to: 'a@example.com' } })
    await queue.enqueueBatch([{ name: 'resize', data: { width: 10 } }, { data: 'unnamed' }])
    const tasks = await seen.until(3)
    assert.deepStrictEqual(tasks.map((t) => t.name ?? '-').sort(), ['-', 'email', 'resize'])
    const [letter] = await letters(queue, 1)
    assert.equal(letter!.task?.name, 'resize')
    for (const name of [42, '', 'a\u0000b', 'x'.repeat(257)]) {
      await rejectsWithCode(queue.enqueue({ name: name as any, data: 1 }), 'ERR_PQ_INVALID_TASK')
    }
  })

  test('single enqueues of one turn keep their own names, between tasks that are only data', async () => {
    const names = uniqueQueue('named_turn')
    const queue = await queueOf({ ...names })
    const seen = collector()
    await queue.process(seen.handler)
    // Made together: they cross into the native side in one call, data-only ones as bare text.
    await Promise.all([
      queue.enqueue({ data: 0 }),
      queue.enqueue({ name: 'one', data: 1 }),
      queue.enqueue({ data: 2 }),
      queue.enqueue({ data: 3 }),
      queue.enqueue({ name: 'four', data: 4 }),
    ])
    const tasks = await seen.until(5)
    const nameOf = new Map(tasks.map((t) => [t.data as number, t.name ?? '-']))
    assert.deepStrictEqual([0, 1, 2, 3, 4].map((n) => nameOf.get(n)), ['-', 'one', '-', '-', 'four'])
  })
})
