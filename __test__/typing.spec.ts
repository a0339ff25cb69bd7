// Type-level tests of typed task data: `npx tsc -p __test__` (strict) checks this file, and every
// `@ts-expect-error` must mark a line that does not compile (an unused directive is an error).
// Nothing here talks to a server: the functions are never called; the one runtime test only
// checks what the types promise about values (`Named` is a type, the schema is what protobuf-es
// generated).
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { create } from '@bufbuild/protobuf'
import { Protoqueue, type DeadLetter, type Named, type TaskData, type TaskHandler, type TaskResult } from 'protoqueue'

import { OrderSchema, OtherSchema, type Order } from './fixtures/protobuf/gen/v1/pqtest/order_pb.js'

type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false
function expectType<_ extends true>(): void {}

const names = { streamName: 'typed', subject: 'tasks.typed' }

export async function protobufData(): Promise<void> {
  // The data type is inferred from the schema.
  const queue = new Protoqueue({ ...names, schema: OrderSchema })
  expectType<Equal<typeof queue, Protoqueue<Order>>>()
  await queue.enqueue({ data: { id: 'o-1', quantity: 2, shipTo: { city: 'Paris' } } })
  await queue.enqueue({ data: create(OrderSchema, { id: 'o-2' }) })
  await queue.enqueueBatch([{ data: {} }, { data: create(OrderSchema) }])
  // @ts-expect-error: not a field of pqtest.Order
  await queue.enqueue({ data: { id: 'o-3', bogus: 1 } })
  // @ts-expect-error: quantity is a number
  await queue.enqueue({ data: { quantity: 'two' } })
  // @ts-expect-error: a message of another type
  await queue.enqueue({ data: create(OtherSchema) })
  await queue.process(async (task) => {
    expectType<Equal<typeof task.data, Order>>()
    const city: string | undefined = task.data.shipTo?.city
    return { success: city !== undefined }
  })
  const [letter] = await queue.getDeadLetters()
  const stored = letter?.task
  if (stored?.dataFormat === 'decoded' || stored?.dataFormat === 'json') {
    expectType<Equal<typeof stored.data, Order>>()
  }
  // @ts-expect-error: `schema` is a protobuf-es message schema
  new Protoqueue({ ...names, schema: { typeName: 'pqtest.Order' } })
}

interface Email {
  to: string
}
interface Resize {
  width: number
  height: number
}
type Jobs = Named<{ email: Email; resize: Resize }>

export async function namedTasks(): Promise<void> {
  const jobs = new Protoqueue<Jobs>(names)
  await jobs.enqueue({ name: 'email', data: { to: 'a@example.com' } })
  await jobs.enqueueBatch([
    { name: 'resize', data: { width: 1, height: 2 } },
    { name: 'email', data: { to: 'b@example.com' }, maxRetries: 1 },
  ])
  // @ts-expect-error: an email's data is an Email
  await jobs.enqueue({ name: 'email', data: { width: 1, height: 2 } })
  // @ts-expect-error: no task type of that name
  await jobs.enqueue({ name: 'fax', data: { to: 'x' } })
  // @ts-expect-error: a task of a Named queue needs its name
  await jobs.enqueue({ data: { to: 'a@example.com' } })
  await jobs.process(async (task) => {
    // @ts-expect-error: the data is narrowed only once the name is checked
    void task.data.to
    switch (task.name) {
      case 'email':
        expectType<Equal<typeof task.data, Email>>()
        return { success: task.data.to.includes('@') }
      case 'resize':
        expectType<Equal<typeof task.data, Resize>>()
        return { success: task.data.width > 0 }
    }
  })
  const letters: Array<DeadLetter<Jobs>> = await jobs.getDeadLetters()
  const first = letters[0]?.task
  if (first?.dataFormat === 'json') expectType<Equal<typeof first.data, Email | Resize>>()
  await jobs.schedule('nightly', { cron: '@daily' }, { name: 'resize', data: { width: 1, height: 1 } })
  // @ts-expect-error: a schedule's task is checked by name too
  await jobs.schedule('nightly', { cron: '@daily' }, { name: 'resize', data: { to: 'x' } })
}

export async function handlerResults(): Promise<void> {
  const queue = new Protoqueue<Email>(names)
  const retryLater: TaskHandler<Email, { retryAfter: number }> = async (task) =>
    task.data.to ? { success: true } : { success: false, error: 'no address', details: { retryAfter: 5 } }
  await queue.process(retryLater)
  // @ts-expect-error: the details of a result have the handler's type
  const wrong: TaskHandler<Email, { retryAfter: number }> = async () => ({ success: false, details: { retryAfter: 'soon' } })
  void wrong
  const result: TaskResult<{ code: number }> = { success: false, details: { code: 1 } }
  void result
  // @ts-expect-error: a result needs `success`
  await queue.process(async () => ({ error: 'x' }))
}

export async function rawAndSerializers(): Promise<void> {
  const raw = new Protoqueue<Buffer>({ ...names, serializer: 'raw' })
  await raw.enqueue({ data: Buffer.from('x') })
  await raw.enqueue({ data: new Uint8Array(4) })
  // @ts-expect-error: 'raw' data is bytes
  await raw.enqueue({ data: 'text' })
  await raw.process((task) => ({ success: task.data.byteLength > 0 }))

  interface Point {
    x: number
    y: number
  }
  const own = new Protoqueue<Point>({
    ...names,
    serializer: {
      contentType: 'application/x-point',
      encode: (p) => new Uint8Array(Float64Array.of(p.x, p.y).buffer),
      decode: (bytes) => ({ x: bytes.readDoubleLE(0), y: bytes.readDoubleLE(8) }),
    },
  })
  await own.enqueue({ data: { x: 1, y: 2 } })
  // @ts-expect-error: a serializer needs a content type
  new Protoqueue({ ...names, serializer: { encode: () => new Uint8Array(), decode: () => 1 } })
  // @ts-expect-error: no such built-in serializer
  new Protoqueue({ ...names, serializer: 'yaml' })
  new Protoqueue({ ...names, serializer: 'msgpack' })
}

export async function seedUsage(): Promise<void> {
  // The untyped usage of the original Protoqueue keeps compiling.
  const queue = await Protoqueue.create({ ...names, url: 'nats://localhost:4222' })
  await queue.enqueue({ data: { anything: [1, 'two'] }, metadata: { priority: 1 } })
  await queue.process(async (task: TaskData) => {
    void task.data
    return { success: true }
  })
  const typed = new Protoqueue<{ to: string }>(names)
  await typed.enqueue({ data: { to: 'x' }, name: 'optional on any queue' })
}

test('the typed API is types only: Named adds nothing at run time, the schema is a protobuf-es one', () => {
  assert.equal(OrderSchema.typeName, 'pqtest.Order')
  assert.equal(OrderSchema.kind, 'message')
})
