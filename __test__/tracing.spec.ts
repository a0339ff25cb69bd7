// OpenTelemetry tracing (README "Tracing"): enqueue/enqueueBatch run in PRODUCER spans whose W3C
// trace context travels in the envelope; each attempt of the handler runs in a CONSUMER span that
// is a child of that context and links to it; failures set the error status. Checked with the
// SDK's in-memory exporter and an async-hooks context manager. Tasks from clients without trace
// context, or with a foreign or garbage one, run untraced-from-upstream and never fail.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { after, before, beforeEach, describe, test } from 'node:test'

import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { Protoqueue, type TaskData } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually } from './helpers/wait'

const exporter = new InMemorySpanExporter()
let server: NatsServer
let nc: NatsConnection

before(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
  server = await NatsServer.start()
  nc = await connect({ servers: server.url })
})
after(async () => {
  await nc.close()
  await server.stop()
  trace.disable()
  context.disable()
})
beforeEach(() => exporter.reset())

/** The finished spans named `name`. */
function spans(name: string): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((span) => span.name === name)
}

async function finished(name: string, count: number): Promise<ReadableSpan[]> {
  return eventually(`${count} finished spans "${name}"`, async () => {
    const found = spans(name)
    return found.length >= count ? found : undefined
  })
}

/** A connected queue and its subject, disconnected after `body`. */
async function withQueue(body: (queue: Protoqueue, subject: string) => Promise<void>, options: Record<string, unknown> = {}) {
  const names = uniqueQueue('traced')
  const queue = new Protoqueue({ ...names, options: { retryDelay: 10, ...options } })
  await queue.connect(server.url)
  try {
    await body(queue, names.subject)
  } finally {
    await queue.disconnect()
  }
}

// A minimal protobuf writer for `protoqueue.v1.Task`, to publish what another client would.
function varint(value: number): number[] {
  const out: number[] = []
  let v = value
  do {
    let byte = v % 128
    v = Math.floor(v / 128)
    if (v > 0) byte |= 0x80
    out.push(byte)
  } while (v > 0)
  return out
}
function field(number: number, value: number | string | Uint8Array): number[] {
  if (typeof value === 'number') return [...varint(number << 3), ...varint(value)]
  const bytes = typeof value === 'string' ? new TextEncoder().encode(value) : value
  return [...varint((number << 3) | 2), ...varint(bytes.length), ...bytes]
}
function rawTask(id: string, trace?: { traceparent: Uint8Array | string; tracestate?: Uint8Array | string }): Uint8Array {
  const out = [...field(1, 1), ...field(2, id), ...field(3, '{"foreign":true}'), ...field(4, 'application/json'), ...field(6, 1_700_000_000_000)]
  if (trace) {
    const inner = [...field(1, trace.traceparent), ...(trace.tracestate === undefined ? [] : field(2, trace.tracestate))]
    out.push(...field(23, Uint8Array.from(inner)))
  }
  return Uint8Array.from(out)
}

describe('tracing', () => {
  test('enqueue runs in a PRODUCER span; the handler in a CONSUMER span that is its child and links to it', async () => {
    await withQueue(async (queue, subject) => {
      const seen: Array<{ task: TaskData; active: string | undefined }> = []
      await queue.process(async (task) => {
        seen.push({ task, active: trace.getActiveSpan()?.spanContext().spanId })
        return { success: true }
      })
      const tracer = trace.getTracer('test')
      const id = await tracer.startActiveSpan('request', async (request) => {
        try {
          return await queue.enqueue({ data: { n: 1 } })
        } finally {
          request.end()
        }
      })
      const [send] = await finished(`send ${subject}`, 1)
      const [processed] = await finished(`process ${subject}`, 1)
      const [request] = spans('request')

      assert.equal(send.kind, SpanKind.PRODUCER)
      assert.equal(send.parentSpanContext?.spanId, request.spanContext().spanId, 'send is a child of the caller')
      assert.deepEqual(
        { ...send.attributes },
        {
          'messaging.system': 'nats',
          'messaging.destination.name': subject,
          'messaging.operation.type': 'send',
          'messaging.operation.name': 'enqueue',
          'messaging.message.id': id,
        },
      )

      assert.equal(processed.kind, SpanKind.CONSUMER)
      assert.equal(processed.spanContext().traceId, send.spanContext().traceId)
      assert.equal(processed.parentSpanContext?.spanId, send.spanContext().spanId, 'process is a child of send')
      assert.equal(processed.links.length, 1)
      assert.equal(processed.links[0].context.spanId, send.spanContext().spanId, 'process links to send')
      assert.equal(processed.attributes['messaging.operation.type'], 'process')
      assert.equal(processed.attributes['messaging.destination.name'], subject)
      assert.equal(processed.attributes['messaging.message.id'], id)
      assert.equal(processed.attributes['protoqueue.attempt'], 1)
      assert.equal(processed.status.code, SpanStatusCode.UNSET)

      assert.equal(seen.length, 1)
      assert.equal(seen[0].active, processed.spanContext().spanId, 'the handler runs inside the consumer span')
      assert.equal('trace' in seen[0].task, false, 'the trace context is not part of the task')
    })
  })

  test('each attempt gets its own span; throws and failures set the error status', async () => {
    await withQueue(
      async (queue, subject) => {
        await queue.process(async (task) => {
          if (task.attempt === 1) throw new TypeError('first attempt breaks')
          if (task.attempt === 2) return { success: false, error: 'second attempt fails' }
          return { success: true }
        })
        await queue.enqueue({ data: 'retried' })
        const attempts = (await finished(`process ${subject}`, 3)).sort((a, b) => Number(a.attributes['protoqueue.attempt']) - Number(b.attributes['protoqueue.attempt']))
        const [send] = spans(`send ${subject}`)
        assert.deepEqual(
          attempts.map((span) => span.attributes['protoqueue.attempt']),
          [1, 2, 3],
        )
        for (const span of attempts) assert.equal(span.parentSpanContext?.spanId, send.spanContext().spanId)

        assert.equal(attempts[0].status.code, SpanStatusCode.ERROR)
        assert.equal(attempts[0].status.message, 'first attempt breaks')
        assert.equal(attempts[0].attributes['error.type'], 'TypeError')
        const exception = attempts[0].events.find((event) => event.name === 'exception')
        assert.equal(exception?.attributes?.['exception.message'], 'first attempt breaks')

        assert.equal(attempts[1].status.code, SpanStatusCode.ERROR)
        assert.equal(attempts[1].status.message, 'second attempt fails')
        assert.equal(attempts[2].status.code, SpanStatusCode.UNSET)
      },
      { maxRetries: 2 },
    )
  })

  test('a synchronous throw is recorded too, and the task is retried as without tracing', async () => {
    await withQueue(
      async (queue, subject) => {
        await queue.process((task) => {
          if (task.attempt === 1) throw new Error('sync throw')
          return { success: true }
        })
        await queue.enqueue({ data: 1 })
        const attempts = await finished(`process ${subject}`, 2)
        const failedOnce = attempts.find((span) => span.attributes['protoqueue.attempt'] === 1)
        assert.equal(failedOnce?.status.code, SpanStatusCode.ERROR)
        assert.ok(failedOnce?.events.some((event) => event.name === 'exception'))
      },
      { maxRetries: 1 },
    )
  })

  test('single enqueues of one event-loop turn (sent to the server together) each carry their own context', async () => {
    await withQueue(async (queue, subject) => {
      await queue.process(async () => ({ success: true }))
      const tracer = trace.getTracer('test')
      const ids = await Promise.all(
        ['one', 'two', 'three'].map((name) =>
          tracer.startActiveSpan(name, (parent) => {
            const enqueued = queue.enqueue({ data: name })
            parent.end()
            return enqueued
          }),
        ),
      )
      const sends = await finished(`send ${subject}`, 3)
      const processed = await finished(`process ${subject}`, 3)
      for (const [i, name] of ['one', 'two', 'three'].entries()) {
        const [parent] = spans(name)
        const send = sends.find((span) => span.parentSpanContext?.spanId === parent.spanContext().spanId)
        assert.ok(send, `a send span under ${name}`)
        assert.equal(send.attributes['messaging.message.id'], ids[i])
        const handled = processed.find((span) => span.attributes['messaging.message.id'] === ids[i])
        assert.equal(handled?.parentSpanContext?.spanId, send.spanContext().spanId)
        assert.equal(handled?.spanContext().traceId, parent.spanContext().traceId)
      }
    })
  })

  test('enqueueBatch is one PRODUCER span with the batch size; each task is processed as its child', async () => {
    await withQueue(async (queue, subject) => {
      await queue.process(async () => ({ success: true }))
      const ids = await queue.enqueueBatch([{ data: 1 }, { data: 2 }, { data: 3 }])
      const [send] = await finished(`send ${subject}`, 1)
      assert.equal(send.kind, SpanKind.PRODUCER)
      assert.equal(send.attributes['messaging.batch.message_count'], 3)
      assert.equal(send.attributes['messaging.operation.name'], 'enqueueBatch')
      const processed = await finished(`process ${subject}`, 3)
      assert.deepEqual(processed.map((span) => span.attributes['messaging.message.id']).sort(), [...ids].sort())
      for (const span of processed) {
        assert.equal(span.parentSpanContext?.spanId, send.spanContext().spanId)
        assert.equal(span.links[0].context.spanId, send.spanContext().spanId)
      }
    })
  })

  test('a failed enqueue ends its span with the error status', async () => {
    await withQueue(async (queue, subject) => {
      await queue.disconnect()
      await assert.rejects(queue.enqueue({ data: 1 }), { code: 'ERR_PQ_NOT_CONNECTED' })
      const [send] = await finished(`send ${subject}`, 1)
      assert.equal(send.status.code, SpanStatusCode.ERROR)
      assert.equal(send.attributes['error.type'], 'ERR_PQ_NOT_CONNECTED')
    })
  })

  test('tasks without trace context, or with a garbage or foreign one, run in a new trace', async () => {
    await withQueue(async (queue, subject) => {
      const handled: TaskData[] = []
      await queue.process(async (task) => {
        handled.push(task)
        return { success: true }
      })
      const cases: Array<[string, Parameters<typeof rawTask>[1]]> = [
        ['plain', undefined],
        ['garbage', { traceparent: 'garbage', tracestate: 'not=checked' }],
        ['zero-ids', { traceparent: '00-00000000000000000000000000000000-0000000000000000-01' }],
        ['upper-case', { traceparent: '00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01' }],
        ['not-utf8', { traceparent: Uint8Array.from([0xff, 0xfe, 0x22, 0x7d]), tracestate: Uint8Array.from([0xff]) }],
        ['empty', { traceparent: '' }],
      ]
      for (const [id, context] of cases) nc.publish(subject, rawTask(id, context))
      await nc.flush()
      const processed = await finished(`process ${subject}`, cases.length)
      assert.deepEqual(handled.map((task) => task.id).sort(), cases.map(([id]) => id).sort())
      for (const task of handled) {
        assert.deepEqual(task.data, { foreign: true })
        assert.equal('trace' in task, false)
      }
      for (const span of processed) {
        assert.equal(span.parentSpanContext, undefined, `${span.attributes['messaging.message.id']} has no parent`)
        assert.equal(span.links.length, 0)
      }
      const stats = await queue.getStats()
      assert.equal(stats.deadLettered, 0, 'nothing dead-lettered')
    })
  })

  test('a valid context from another client is continued, with its tracestate', async () => {
    await withQueue(async (queue, subject) => {
      await queue.process(async () => ({ success: true }))
      const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
      nc.publish(subject, rawTask('foreign-traced', { traceparent, tracestate: 'vendor=value' }))
      await nc.flush()
      const [processed] = await finished(`process ${subject}`, 1)
      assert.equal(processed.spanContext().traceId, '4bf92f3577b34da6a3ce929d0e0e4736')
      assert.equal(processed.parentSpanContext?.spanId, '00f067aa0ba902b7')
      assert.equal(processed.links[0].context.traceState?.get('vendor'), 'value')
    })
  })
})

describe('without tracing', () => {
  test('without @opentelemetry/api, or without a tracer provider, queues work and tasks carry no trace fields', () => {
    const script = join(__dirname, 'fixtures', 'untraced.cjs')
    for (const blockApi of ['1', '0']) {
      const run = spawnSync(process.execPath, [script], {
        env: { ...process.env, PQ_URL: server.url, PQ_BLOCK_OTEL: blockApi, ...uniqueQueue('untraced') },
        encoding: 'utf8',
        timeout: 60_000,
      })
      assert.equal(run.status, 0, `blockApi=${blockApi}: ${run.stderr}`)
      assert.match(run.stdout, /^ok /m, run.stdout)
    }
  })
})
