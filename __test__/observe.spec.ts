// Monitoring through the public API against a real nats-server: the events a queue object emits
// (`completed`, `failed`, `deadLettered`, `error`), listeners that throw, and `metrics()` parsed by
// Prometheus' own Python parser after a known workload, alone and through a prom-client registry.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import {
  Protoqueue,
  ProtoqueueError,
  registerMetrics,
  type CompletedEvent,
  type DeadLetteredEvent,
  type FailedEvent,
  type TaskData,
} from 'protoqueue'
import { Counter, Registry } from 'prom-client'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { parsePrometheus, sampleValue } from './helpers/prometheus'
import { eventually, rejectsWithCode, within } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

type Data = { n: number }

async function connected(names = uniqueQueue()) {
  const queue = new Protoqueue<Data>({ ...names, options: { maxRetries: 1, retryDelay: 10 } })
  await queue.connect(server.url)
  return queue
}

/**
 * The known workload: tasks 0..5 succeed; 6 and 7 always fail (retried once, then dead-lettered
 * as retriesExhausted); 8 fails with `retry: false` (rejected); 9 fails once, then succeeds.
 * 10 enqueued, 7 completed, 6 failed attempts, 3 retried, 3 dead letters, 13 handler runs.
 */
const workload = async (task: TaskData<Data>) => {
  const n = task.data.n
  if (n <= 5) return { success: true }
  if (n === 6 || n === 7) return { success: false, error: 'always' }
  if (n === 8) return { success: false, error: 'never again', retry: false }
  return task.attempt === 1 ? { success: false, error: 'once' } : { success: true }
}

const tasks = () => Array.from({ length: 10 }, (_, n) => ({ data: { n } }))

async function settled(queue: Protoqueue<Data>) {
  await eventually('the workload settled', async () => {
    const stats = await queue.getStats()
    return stats.deadLettered === 3 && stats.messages === 0 && stats.inFlight === 0
  })
}

describe('events', () => {
  test('completed, failed and deadLettered tell each attempt with its timing', async () => {
    const queue = await connected()
    const completed: CompletedEvent[] = []
    const failed: FailedEvent[] = []
    const dead: DeadLetteredEvent[] = []
    queue.on('completed', (e) => completed.push(e))
    queue.on('failed', (e) => failed.push(e))
    queue.on('deadLettered', (e) => dead.push(e))
    const ids = await queue.enqueueBatch(tasks())
    await queue.process(workload)
    await eventually('every event', () => completed.length === 7 && failed.length === 6 && dead.length === 3)
    await settled(queue)

    assert.deepEqual(new Set(completed.map((e) => e.id)), new Set([...ids.slice(0, 6), ids[9]]))
    for (const e of [...completed, ...failed]) {
      assert.equal(e.maxAttempts, 2)
      assert.ok(e.durationMs >= 0 && e.waitMs >= 0 && e.sinceEnqueueMs >= e.waitMs, JSON.stringify(e))
      assert.ok(e.sequence >= 1)
    }
    assert.equal(completed.find((e) => e.id === ids[9])?.attempt, 2)
    const retried = failed.filter((e) => e.willRetry)
    assert.equal(retried.length, 3)
    assert.ok(retried.every((e) => e.attempt === 1 && e.retryDelayMs === 10))
    const final = failed.filter((e) => !e.willRetry)
    assert.deepEqual(final.map((e) => e.error).sort(), ['always', 'always', 'never again'])
    assert.deepEqual(
      dead.map((e) => [e.id, e.reason, e.error]).sort(),
      [
        [ids[6], 'retriesExhausted', 'always'],
        [ids[7], 'retriesExhausted', 'always'],
        [ids[8], 'rejected', 'never again'],
      ].sort(),
    )
    await queue.disconnect()
  })

  test('listeners that throw or reject hurt neither the worker nor the other listeners', async () => {
    const queue = await connected()
    // The default report is a process warning with its own code: taken here, not printed.
    const warnings: string[] = []
    const emitWarning = process.emitWarning
    process.emitWarning = ((message: string, options?: { code?: string }) => {
      assert.equal(options?.code, 'PROTOQUEUE_LISTENER_THREW')
      warnings.push(message)
    }) as typeof process.emitWarning
    try {
      const seen: string[] = []
      queue.on('completed', () => {
        throw new Error('listener bug')
      })
      queue.on('completed', async () => {
        throw new Error('async listener bug')
      })
      queue.on('completed', (e) => seen.push(e.id))
      queue.on('failed', () => {
        throw Object.create(null) // no string form
      })
      const handled: number[] = []
      await queue.enqueueBatch(Array.from({ length: 20 }, (_, n) => ({ data: { n } })))
      await queue.process(async (task) => {
        handled.push(task.data.n)
        return task.data.n === 0 && task.attempt === 1 ? { success: false, error: 'again' } : { success: true }
      })
      await eventually('all 20 completed', () => seen.length === 20)
      assert.equal(handled.length, 21)
      await eventually('the throws reported as warnings', () => warnings.filter((w) => w.includes('listener threw')).length >= 41)
    } finally {
      process.emitWarning = emitWarning
    }
    assert.ok(warnings.some((w) => w.includes("'failed' listener threw")))
    await queue.disconnect()
  })

  test('once listeners fire once; removed listeners get nothing', async () => {
    const queue = await connected()
    const once: string[] = []
    const removed: string[] = []
    const all: string[] = []
    queue.once('completed', (e) => once.push(e.id))
    const listener = (e: CompletedEvent) => removed.push(e.id)
    queue.on('completed', listener)
    queue.off('completed', listener)
    queue.on('completed', (e) => all.push(e.id))
    assert.equal(queue.listenerCount('completed'), 2)
    await queue.enqueueBatch([{ data: { n: 1 } }, { data: { n: 2 } }, { data: { n: 3 } }])
    await queue.process(async () => ({ success: true }))
    await eventually('three completed', () => all.length === 3)
    assert.equal(once.length, 1)
    assert.equal(removed.length, 0)
    assert.equal(queue.listenerCount('completed'), 1)
    queue.removeAllListeners()
    assert.deepEqual(queue.eventNames(), [])
    await queue.disconnect()
  })

  test("'error' tells connection trouble; without a listener nothing is thrown", async () => {
    const own = await NatsServer.start()
    try {
      const names = uniqueQueue()
      const withListener = new Protoqueue({ ...names })
      const silent = new Protoqueue({ ...names })
      // A third queue object of another queue: the three share one client, each is told.
      const neighbour = new Protoqueue({ ...uniqueQueue() })
      await withListener.connect(own.url)
      await silent.connect(own.url)
      await neighbour.connect(own.url)
      const errors: ProtoqueueError[] = []
      const neighbourErrors: ProtoqueueError[] = []
      withListener.on('error', (err) => errors.push(err))
      neighbour.on('error', (err) => neighbourErrors.push(err))
      await own.kill()
      const err = await eventually('an error event', () => errors[0], 20_000)
      const told = await eventually('an error event on the neighbour', () => neighbourErrors[0], 20_000)
      assert.equal(told.code, 'ERR_PQ_DISCONNECTED')
      assert.ok(err instanceof ProtoqueueError)
      assert.equal(err.code, 'ERR_PQ_DISCONNECTED')
      assert.ok(!err.message.includes('password'))
      // The silent queue lost its connection too, and this process is still here.
      await own.restart()
      await within('reconnected', withListener.enqueue({ data: 1 }), 30_000)
      await within('the silent queue too', silent.enqueue({ data: 2 }), 30_000)
      await withListener.disconnect()
      await silent.disconnect()
      await neighbour.disconnect()
    } finally {
      await own.stop()
    }
  })

  test('the listener methods refuse objects that are no queue', () => {
    const on = Protoqueue.prototype.on
    assert.throws(() => on.call({} as never, 'completed', () => {}), TypeError)
  })
})

describe('metrics', () => {
  test('the text format parses with Prometheus’ parser and counts a known workload', async () => {
    const names = uniqueQueue()
    const queue = await connected(names)
    await rejectsWithCode(new Protoqueue({ ...uniqueQueue() }).metrics(), 'ERR_PQ_NOT_CONNECTED')
    await queue.enqueueBatch(tasks())
    await queue.process(workload)
    await settled(queue)
    await eventually('counters caught up', async () => (await queue.metrics()).includes('protoqueue_tasks_completed_total{queue="' + names.streamName + '"} 7\n'))
    const text = await queue.metrics()
    const families = parsePrometheus(text)
    const q = { queue: names.streamName }
    const types = Object.fromEntries(families.map((f) => [f.name, f.type]))
    assert.deepEqual(types, {
      protoqueue_tasks_enqueued: 'counter',
      protoqueue_tasks_completed: 'counter',
      protoqueue_task_attempts_failed: 'counter',
      protoqueue_tasks_retried: 'counter',
      protoqueue_tasks_dead_lettered: 'counter',
      protoqueue_handler_duration_seconds: 'histogram',
      protoqueue_task_wait_seconds: 'histogram',
      protoqueue_tasks_pending: 'gauge',
      protoqueue_tasks_in_flight: 'gauge',
      protoqueue_tasks_delayed: 'gauge',
      protoqueue_dead_letters: 'gauge',
      protoqueue_consumers: 'gauge',
    })
    assert.ok(families.every((f) => f.documentation.length > 0 && f.samples.every((s) => s.labels.queue === names.streamName)))
    assert.equal(sampleValue(families, 'protoqueue_tasks_enqueued_total', q), 10)
    assert.equal(sampleValue(families, 'protoqueue_tasks_completed_total', q), 7)
    assert.equal(sampleValue(families, 'protoqueue_task_attempts_failed_total', q), 6)
    assert.equal(sampleValue(families, 'protoqueue_tasks_retried_total', q), 3)
    const dead = (reason: string) => sampleValue(families, 'protoqueue_tasks_dead_lettered_total', { ...q, reason })
    assert.equal(dead('retriesExhausted'), 2)
    assert.equal(dead('rejected'), 1)
    assert.equal(dead('invalidData'), 0)
    assert.equal(dead('invalidEnvelope'), 0)
    for (const histogram of ['protoqueue_handler_duration_seconds', 'protoqueue_task_wait_seconds']) {
      assert.equal(sampleValue(families, `${histogram}_count`, q), 13)
      assert.equal(sampleValue(families, `${histogram}_bucket`, { ...q, le: '+Inf' }), 13)
      assert.ok(sampleValue(families, `${histogram}_sum`, q) >= 0)
    }
    assert.equal(sampleValue(families, 'protoqueue_tasks_pending', q), 0)
    assert.equal(sampleValue(families, 'protoqueue_tasks_in_flight', q), 0)
    assert.equal(sampleValue(families, 'protoqueue_dead_letters', q), 3)
    assert.equal(sampleValue(families, 'protoqueue_consumers', q), 1)

    // The same numbers as objects.
    const objects = await queue.getMetricFamilies()
    const completed = objects.find((f) => f.name === 'protoqueue_tasks_completed_total')
    assert.deepEqual(completed?.values, [{ metricName: 'protoqueue_tasks_completed_total', labels: q, value: 7 }])

    await queue.disconnect()
    await rejectsWithCode(queue.metrics(), 'ERR_PQ_NOT_CONNECTED')
  })

  test('label values are escaped: a stream name with odd characters still parses', async () => {
    // Stream names cannot hold quotes or backslashes; the escaping itself is unit-tested in Rust.
    const names = { streamName: `odd-name_${Date.now()}`, subject: `odd.${Date.now()}` }
    const queue = await connected(names)
    const families = parsePrometheus(await queue.metrics())
    assert.equal(sampleValue(families, 'protoqueue_tasks_pending', { queue: names.streamName }), 0)
    await queue.disconnect()
  })

  test('a prom-client registry serves them beside its own metrics, one read per collection', async () => {
    const first = await connected()
    const second = await connected()
    await first.enqueueBatch([{ data: { n: 1 } }, { data: { n: 2 } }])
    await second.enqueue({ data: { n: 3 } })
    const registry = new Registry()
    const own = new Counter({ name: 'app_requests_total', help: 'Requests.', registers: [registry] })
    own.inc(5)
    let reads = 0
    const counted = {
      getMetricFamilies: () => {
        reads++
        return first.getMetricFamilies()
      },
    }
    const unregister = registerMetrics(registry, [counted as unknown as Protoqueue, second])
    const text = await registry.metrics()
    assert.equal(reads, 1, 'one read per collection')
    const families = parsePrometheus(text)
    assert.equal(sampleValue(families, 'app_requests_total'), 5)
    assert.equal(sampleValue(families, 'protoqueue_tasks_pending', { queue: (await first.getMetricFamilies())[0].values[0].labels.queue }), 2)
    const enqueued = families.find((f) => f.name === 'protoqueue_tasks_enqueued')
    assert.deepEqual(enqueued?.samples.map((s) => s.value).sort(), [1, 2])
    const json = await registry.getMetricsAsJSON()
    assert.ok(json.some((m) => m.name === 'protoqueue_task_wait_seconds' && String(m.type) === 'histogram'))

    // A collection with a queue that is not connected rejects with its code.
    await second.disconnect()
    await rejectsWithCode(registry.metrics(), 'ERR_PQ_NOT_CONNECTED')
    unregister()
    assert.equal(registry.getSingleMetric('protoqueue_tasks_pending'), undefined)
    assert.ok((await registry.metrics()).includes('app_requests_total 5'))
    assert.throws(() => registerMetrics({} as never, first), TypeError)
    assert.throws(() => registerMetrics(registry, {} as never), TypeError)
    await first.disconnect()
  })

  test('registerMetrics called again for one registry adds its queues to the same metrics (prom-client threw "already registered")', async () => {
    const a = uniqueQueue()
    const b = uniqueQueue()
    const first = await connected(a)
    const second = await connected(b)
    await first.enqueue({ data: { n: 1 } })
    await second.enqueueBatch([{ data: { n: 2 } }, { data: { n: 3 } }])
    const registry = new Registry()
    const pending = async () => {
      const families = parsePrometheus(await registry.metrics())
      return [a, b].map((names) => {
        try {
          return sampleValue(families, 'protoqueue_tasks_pending', { queue: names.streamName })
        } catch {
          return undefined
        }
      })
    }
    const unregisterFirst = registerMetrics(registry, first)
    const unregisterSecond = registerMetrics(registry, second)
    assert.deepEqual(await pending(), [1, 2])
    unregisterFirst()
    unregisterFirst()
    assert.deepEqual(await pending(), [undefined, 2], 'the second call still serves its queue')
    unregisterSecond()
    assert.equal(registry.getSingleMetric('protoqueue_tasks_pending'), undefined)
    // A registry cleared by the application takes them again.
    registerMetrics(registry, first)
    registry.clear()
    registerMetrics(registry, second)
    assert.deepEqual(await pending(), [undefined, 2])
    await first.disconnect()
    await second.disconnect()
  })

  test('two objects of one queue (producer and worker) are one set of series in a registry: counters add up', async () => {
    const names = uniqueQueue()
    const producer = await connected(names)
    const worker = await connected(names)
    await producer.enqueueBatch([{ data: { n: 1 } }, { data: { n: 2 } }])
    await worker.enqueue({ data: { n: 3 } })
    const registry = new Registry()
    registerMetrics(registry, [producer, worker])
    const families = parsePrometheus(await registry.metrics())
    const q = { queue: names.streamName }
    assert.equal(sampleValue(families, 'protoqueue_tasks_enqueued_total', q), 3)
    assert.equal(sampleValue(families, 'protoqueue_tasks_pending', q), 3)
    const pending = families.find((f) => f.name === 'protoqueue_tasks_pending')
    assert.equal(pending?.samples.length, 1, 'one series per queue')
    await producer.disconnect()
    await worker.disconnect()
  })

  test('a scrape while the server is down fails with a code instead of hanging', async () => {
    const own = await NatsServer.start()
    try {
      const queue = new Protoqueue({ ...uniqueQueue() })
      await queue.connect(own.url)
      await own.kill()
      const err = await within('the scrape to fail', queue.metrics().then(() => assert.fail('resolved'), (e) => e), 30_000)
      assert.ok(['ERR_PQ_TIMEOUT', 'ERR_PQ_NATS'].includes(err.code), String(err.code))
      await queue.disconnect()
    } finally {
      await own.stop()
    }
  })
})
