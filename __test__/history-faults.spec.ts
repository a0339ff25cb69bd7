// The task history (`options.results`) under hostile conditions, against a real nats-server: a
// history stream full and refusing writes (every task still completes; waiters of the refused
// records time out, the others get their result), a history stream made by another tool with
// deny_delete and deny_purge (results work; requeueing a dead letter, whose old record cannot be
// removed, marks it requeued instead: waiters get the new outcome, never the old), a
// waiter across a worker process killed mid-task (it gets the result of the worker that ran the
// task again), and a handler that ignores its signal at taskTimeout (the attempt fails and is
// retried; its late success changes nothing).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { DiscardPolicy, jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream'
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node'
import { Protoqueue, setLogger, type FailedEvent, type CompletedEvent, type ProtoqueueConfig, type TaskInfo } from 'protoqueue'

import { Child, fixture, fixtureEnv } from './helpers/child'
import { coreLogger } from './helpers/logs'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { connectedQueue } from './helpers/queues'
import { deferred, eventually, rejectsWithCode, within } from './helpers/wait'

const HOUR = 3_600_000

let server: NatsServer
let nc: NatsConnection
let jsm: JetStreamManager
before(async () => {
  server = await NatsServer.start()
  nc = await natsConnect({ servers: server.url })
  jsm = await jetstreamManager(nc)
})
after(async () => {
  await nc?.close()
  await server.stop()
})

type Names = { streamName: string; subject: string }

const connected = <T = unknown>(names: Names, options: ProtoqueueConfig['options'] = {}) => connectedQueue<T>(server.url, names, { results: { ttl: HOUR }, ...options })

/**
 * `<streamName>_HISTORY` as another tool would make it before any worker ran: the layout
 * Protoqueue creates (src/history/layout.rs, src/shape.rs `side_stream`) with `changes` on top.
 */
async function historyStream(names: Names, changes: Partial<StreamConfig>): Promise<string> {
  const name = `${names.streamName}_HISTORY`
  await jsm.streams.add({
    name,
    subjects: [`protoqueue.history.${names.streamName}.*.*`],
    retention: RetentionPolicy.Limits,
    max_msgs_per_subject: 1,
    discard: DiscardPolicy.Old,
    storage: StorageType.File,
    num_replicas: 1,
    allow_msg_ttl: true,
    allow_direct: true,
    description: `Protoqueue task history of stream ${names.streamName}`,
    metadata: { protoqueue: 'history', 'protoqueue.stream': names.streamName },
    ...changes,
  })
  return name
}

/** What a waiter got: its value, or its rejection's code. */
function settled(promise: Promise<unknown>): Promise<{ value: unknown } | { code: string | undefined }> {
  return promise.then(
    (value) => ({ value }),
    (err: Error & { code?: string }) => ({ code: err.code }),
  )
}

/** The core's warnings from now on (still kept with the file's logs); `stop()` puts the tests' logger back. */
function capturedWarnings() {
  const lines: string[] = []
  setLogger({
    ...coreLogger,
    warn: (message: string, fields?: Record<string, unknown>) => {
      lines.push(message)
      coreLogger.warn(message, fields)
    },
  })
  return { lines, stop: () => setLogger(coreLogger) }
}

describe('history faults', () => {
  test('a full history stream refusing writes: every task still completes once and is acked; waiters of refused records time out, the others resolve', async () => {
    const names = uniqueQueue('hfull')
    const room = 50
    // Full after `room` records, and then refusing new ones (discard new) rather than dropping old ones.
    const history = await historyStream(names, { max_msgs: room, discard: DiscardPolicy.New })
    const warnings = capturedWarnings()
    const handled = new Map<string, number>()
    const worker = await connected<{ n: number }>(names, { maxRetries: 0 }) // any failed attempt would be a dead letter
    const producer = await connected<{ n: number }>(names)
    try {
      await worker.process(async (task) => {
        handled.set(task.id, (handled.get(task.id) ?? 0) + 1)
        return { success: true, result: { n: task.data.n } }
      })
      // The first `room` tasks fill the stream: their waiters, pending before the tasks ran, get the results.
      const fitting = await producer.enqueueBatch(Array.from({ length: room }, (_, n) => ({ data: { n } })))
      const fitted = await Promise.all(fitting.map((id) => producer.waitFor(id, { timeout: 60_000 })))
      assert.deepEqual(fitted, fitting.map((_, n) => ({ n })))
      assert.equal((await jsm.streams.info(history)).state.messages, room, 'the history stream is full')

      // The rest: their records are refused, so their waiters (a short timeout) time out...
      const refusing = Date.now()
      const refused = await producer.enqueueBatch(Array.from({ length: 150 }, (_, i) => ({ data: { n: room + i } })))
      const outcomes = await Promise.all(refused.map((id) => settled(producer.waitFor(id, { timeout: 1_500 }))))
      assert.deepEqual(new Set(outcomes.map((o) => JSON.stringify(o))), new Set([JSON.stringify({ code: 'ERR_PQ_TIMEOUT' })]))
      // ...and yet every task is handled, acked (the stream empties) and none is dead-lettered.
      const all = [...fitting, ...refused]
      await eventually('every task handled', () => all.every((id) => handled.has(id)), 60_000)
      await eventually('every task acked', async () => {
        const stats = await producer.getStats()
        return stats.messages === 0 && stats.inFlight === 0
      }, 60_000)
      assert.equal((await producer.getStats()).deadLettered, 0, 'no dead letters')
      assert.deepEqual(await producer.getDeadLetters(), [])
      assert.deepEqual([...handled.keys()].sort(), [...all].sort(), 'no task unknown, none lost')

      // The refused records were not written: still full with the first ones; waiting again times out again.
      assert.equal((await jsm.streams.info(history)).state.messages, room)
      assert.equal(await producer.getTask(refused[0]), undefined, 'a completed task without a record is not found')
      await rejectsWithCode(producer.waitFor(refused[refused.length - 1], { timeout: 300 }), 'ERR_PQ_TIMEOUT')
      const info = (await producer.getTask(fitting[0])) as TaskInfo
      assert.deepEqual([info.state, info.result], ['completed', { n: 0 }])
      assert.deepEqual(await producer.waitFor(fitting[room - 1], { timeout: 5_000 }), { n: room - 1 }, 'a written record still answers')
      // The refusals were logged (the documented "logged and the task completes"), without a line
      // per task: the first at once, then at most one every 10 s, counting those between.
      await eventually('the refusals logged', () =>
        warnings.lines.some((l) => /record was not written.*maximum messages exceeded/.test(l)),
      )
      const refusalLines = warnings.lines.filter((l) => /record was not written/.test(l))
      const most = 1 + Math.floor((Date.now() - refusing) / 10_000)
      assert.ok(refusalLines.length <= most, `${refusalLines.length} warnings for ${refused.length} refused records in ${Date.now() - refusing} ms`)
      // The worker still writes records once there is room again.
      await jsm.streams.purge(history)
      assert.deepEqual(await producer.enqueueAndWait({ data: { n: -1 } }, { timeout: 10_000 }), { n: -1 })
    } finally {
      warnings.stop()
      await Promise.all([worker.disconnect(), producer.disconnect()])
    }
  })

  test('a history stream with deny_delete and deny_purge: results work; a requeued dead letter\'s old record, which cannot be removed, is marked requeued: waiters get the new outcome', async () => {
    const names = uniqueQueue('hdeny')
    const history = await historyStream(names, { deny_delete: true, deny_purge: true })
    let fixed = false
    const calls = new Map<string, number>()
    const worker = await connected<{ fail: boolean }>(names, { maxRetries: 0 })
    const producer = await connected<{ fail: boolean }>(names)
    try {
      await worker.process(async (task) => {
        calls.set(task.id, (calls.get(task.id) ?? 0) + 1)
        if (task.data.fail && !fixed) return { success: false, error: 'down', retry: false }
        return { success: true, result: fixed ? 'fixed' : 'ok' }
      })
      assert.equal(await producer.enqueueAndWait({ data: { fail: false } }, { timeout: 10_000 }), 'ok')
      const failing = await producer.enqueueBatch([{ data: { fail: true } }, { data: { fail: true } }])
      for (const id of failing) {
        const failure = (await rejectsWithCode(producer.waitFor(id, { timeout: 10_000 }), 'ERR_PQ_TASK_FAILED')) as Error & { reason?: string }
        assert.equal(failure.reason, 'rejected')
      }
      await eventually('both letters stored', async () => (await producer.getStats()).deadLettered === 2)
      const { config } = await jsm.streams.info(history)
      assert.deepEqual([config.deny_delete, config.deny_purge], [true, true], 'Protoqueue left the other tool\'s stream as it was')

      // The requeue cannot remove the old records (a purge by subject, which the stream denies):
      // it writes a "requeued" record over each, which stands for none.
      fixed = true
      assert.equal(await producer.requeueDeadLetters(), 2)
      const outcomes = await Promise.all(failing.map((id) => producer.waitFor(id, { timeout: 10_000 })))
      assert.deepEqual(outcomes, ['fixed', 'fixed'], 'the new outcome, not the old one')
      for (const id of failing) {
        assert.equal(calls.get(id), 2)
        const info = await producer.getTask(id)
        assert.equal(info?.state, 'completed')
        assert.equal(info.result, 'fixed')
      }
      assert.equal((await producer.getStats()).deadLettered, 0)
      const kept = await jsm.streams.info(history, { subjects_filter: '>' })
      assert.ok(Object.keys(kept.state.subjects ?? {}).some((subject) => subject.includes('.deadLettered.')), 'the marked records stay (they cannot be removed)')
    } finally {
      await Promise.all([worker.disconnect(), producer.disconnect()])
    }
  })

  test('waitFor across a worker process killed mid-task resolves with the result of the worker that ran it again', async () => {
    const names = uniqueQueue('hkill')
    const ackWait = 2_000
    const doomed = Child.run(process.execPath, [fixture('worker.mjs')], fixtureEnv(names, server.url, {
      ACK_WAIT: String(ackWait),
      HANDLER_MS: '-1', // the handler blocks until the process dies
      BATCH_SIZE: '1',
    }))
    const producer = await connected<string>(names)
    let rescuer: Protoqueue<string> | undefined
    try {
      await doomed.waitForLines(/^ready$/, 1, 60_000)
      const id = await producer.enqueue({ data: 'payload' })
      const waiting = settled(producer.waitFor(id, { timeout: 30_000 }))
      await doomed.waitForLines(new RegExp(`^started ${id} 1$`))
      const { signal } = await doomed.kill('SIGKILL')
      assert.equal(signal, 'SIGKILL')
      assert.ok(!doomed.lines.some((line) => line.startsWith('handled ')), 'the killed worker never finished it')

      const ran: Array<{ id: string; attempt?: number }> = []
      rescuer = await connected<string>(names, { ackWait })
      await rescuer.process(async (task) => {
        ran.push({ id: task.id, attempt: task.attempt })
        return { success: true, result: { by: 'rescuer', data: task.data } }
      })
      assert.deepEqual(await within('the waiter', waiting, 40_000), { value: { by: 'rescuer', data: 'payload' } })
      // The killed delivery had no outcome: a stalled delivery, not an attempt (docs/guides/retries.md).
      assert.deepEqual(ran, [{ id, attempt: 1 }])
      const info = (await producer.getTask(id)) as TaskInfo
      assert.deepEqual([info.state, info.attempts, info.result], ['completed', 1, { by: 'rescuer', data: 'payload' }])
      await eventually('acked', async () => (await producer.getStats()).messages === 0)
    } finally {
      await doomed.kill()
      await Promise.all([rescuer?.disconnect(), producer.disconnect()])
    }
  })

  // The dead-letter side (maxRetries 0: an ignoring handler's task fails for good with a
  // taskTimeout error) is in cancel.spec.ts and faults.spec.ts; this is the retry side.
  test('a handler ignoring its signal at taskTimeout: the attempt fails and is retried at once; its late success is ignored', async () => {
    const names = uniqueQueue('htimeout')
    const taskTimeout = 1_000
    // Two slots: the first attempt's handler keeps its slot until it returns (docs/guides/processing.md).
    const worker = await connected<string>(names, { taskTimeout, maxRetries: 1, retryDelay: 0, batchSize: 2, prefetch: 0 })
    const events: Array<FailedEvent | CompletedEvent> = []
    worker.on('failed', (e) => events.push(e))
    worker.on('completed', (e) => events.push(e))
    const firstStarted = deferred<AbortSignal>()
    const releaseFirst = deferred()
    const firstReturning = deferred()
    const secondStarted = deferred()
    const releaseSecond = deferred()
    const attempts: number[] = []
    await worker.process(async (task) => {
      if (task.data === 'marker') return { success: true, result: 'marker' }
      attempts.push(task.attempt ?? 0)
      if (task.attempt === 1) {
        firstStarted.resolve(task.signal)
        await releaseFirst.promise // never looks at task.signal
        firstReturning.resolve()
        return { success: true, result: 'late first attempt' }
      }
      secondStarted.resolve()
      await releaseSecond.promise
      return { success: true, result: 'second attempt' }
    })
    try {
      const id = await worker.enqueue({ data: 'x' })
      const waiting = settled(worker.waitFor(id, { timeout: 30_000 }))
      const signal = await within('the first attempt', firstStarted.promise)
      // At taskTimeout the attempt fails and, with a retry left, runs again (the second slot) while
      // the first handler still runs.
      await within('the retry', secondStarted.promise, 30_000)
      // The first handler now returns a success, while the retry runs: too late, it must neither
      // ack the task nor write its record. (The retry is let go at once: it has its own taskTimeout.)
      releaseFirst.resolve()
      await firstReturning.promise
      releaseSecond.resolve()
      assert.equal(signal.aborted, true)
      assert.equal((signal.reason as { code?: string }).code, 'ERR_PQ_TIMEOUT')
      const failed = await eventually('the failed event', () => {
        const heard = events.filter((e): e is FailedEvent => e.type === 'failed')
        return heard.length > 0 && heard
      })
      assert.deepEqual(failed.map((e) => [e.id, e.attempt, e.willRetry]), [[id, 1, true]])
      assert.match(failed[0].error, /taskTimeout/)
      assert.deepEqual(await within('the waiter', waiting, 30_000), { value: 'second attempt' })
      const info = (await worker.getTask(id)) as TaskInfo
      assert.deepEqual([info.state, info.attempts, info.result], ['completed', 2, 'second attempt'])
      await eventually('acked', async () => (await worker.getStats()).messages === 0)
      // A later task round-trips through the same worker: by then a late outcome would have shown.
      assert.equal(await worker.enqueueAndWait({ data: 'marker' }, { timeout: 10_000 }), 'marker')
      assert.deepEqual([((await worker.getTask(id)) as TaskInfo).result, attempts], ['second attempt', [1, 2]])
      assert.deepEqual(
        events.filter((e) => e.id === id).map((e) => [e.type, e.attempt]),
        [['failed', 1], ['completed', 2]],
      )
      assert.deepEqual(await worker.getDeadLetters(), [])
    } finally {
      releaseFirst.resolve()
      releaseSecond.resolve()
      await worker.disconnect()
    }
  })
})
