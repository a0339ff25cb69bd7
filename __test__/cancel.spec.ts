// Cancelling tasks and stopping handlers against a real nats-server: `task.signal` is aborted
// when `cancel(id)` is called for a running task (from another object, or the command line in
// another process), when `taskTimeout` runs out and at `disconnect()`'s deadline, each with its
// reason; a cancelled task ends `cancelled` (never retried, never dead-lettered) even when its
// handler ignores the signal; a waiting task cancelled before any worker never runs; a cancel
// racing completion ends in exactly one of the two.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type ProtoqueueConfig, type TaskData } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { connectedQueue, type Names } from './helpers/queues'
import { deferred, eventually, rejectsWithCode, within } from './helpers/wait'

const HOUR = 3_600_000
const BIN = join(__dirname, '..', 'bin', 'protoqueue.js')

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

const connected = <T = unknown>(names: Names, options: ProtoqueueConfig['options'] = {}) => connectedQueue<T>(server.url, names, { results: { ttl: HOUR }, ...options })

/** Resolves with the signal's reason once it is aborted. */
function aborted(signal: AbortSignal): Promise<any> {
  if (signal.aborted) return Promise.resolve(signal.reason)
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(signal.reason), { once: true }))
}

/** The command line, in a process of its own; its exit code and output. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => (stdout += chunk))
  child.stderr.on('data', (chunk) => (stderr += chunk))
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })))
}

describe('cancel and task.signal', () => {
  test('a running task cancelled from another object: its signal aborts with ERR_PQ_TASK_CANCELLED, it ends cancelled, never retried nor dead-lettered', async () => {
    const names = uniqueQueue('cancel')
    const worker = await connected(names)
    const producer = await connected(names)
    const reasons: any[] = []
    let calls = 0
    const running = deferred()
    await worker.process(async (task) => {
      calls++
      running.resolve()
      reasons.push(await aborted(task.signal))
      return { success: true }
    })
    try {
      const id = await producer.enqueue({ data: { n: 1 } })
      await within('the handler runs', running.promise)
      assert.equal(await producer.cancel(id), true)
      await eventually('the signal aborted', () => reasons.length === 1)
      assert.equal(reasons[0].code, 'ERR_PQ_TASK_CANCELLED')
      assert.match(reasons[0].message, /cancel/)
      const failure = await rejectsWithCode(producer.waitFor(id, { timeout: 10_000 }), 'ERR_PQ_TASK_CANCELLED')
      assert.equal((failure as any).attempts, 1)
      assert.equal((await producer.getTask(id))?.state, 'cancelled')
      await eventually('nothing left', async () => {
        const stats = await producer.getStats()
        return stats.pending === 0 && stats.inFlight === 0 && stats.deadLettered === 0
      })
      assert.equal(await producer.cancel(id), false, 'ended: nothing to cancel')
      await new Promise((resolve) => setTimeout(resolve, 300))
      assert.equal(calls, 1, 'never run again')
    } finally {
      await Promise.all([worker.disconnect(), producer.disconnect()])
    }
  })

  test('a handler that ignores its signal: the task still ends cancelled at once; its late success changes nothing; its slot is busy until it returns', async () => {
    const names = uniqueQueue('cancel')
    const worker = await connected<{ n: number }>(names, { batchSize: 1 })
    const started: number[] = []
    const release = deferred()
    await worker.process(async (task) => {
      started.push(task.data.n)
      if (task.data.n === 1) await release.promise
      return { success: true, result: task.data.n }
    })
    try {
      const first = await worker.enqueue({ data: { n: 1 } })
      const second = await worker.enqueue({ data: { n: 2 } })
      await eventually('the first runs', () => started.length === 1)
      // The command line, in another process.
      const run = await cli(['cancel', first, '--server', server.url, '--stream', names.streamName, '--subject', names.subject])
      assert.equal(run.code, 0, run.stderr)
      assert.match(run.stdout, /Cancelled task/)
      await rejectsWithCode(worker.waitFor(first, { timeout: 10_000 }), 'ERR_PQ_TASK_CANCELLED')
      await new Promise((resolve) => setTimeout(resolve, 300))
      assert.deepEqual(started, [1], 'its slot is still taken')
      release.resolve()
      assert.equal(await worker.waitFor(second, { timeout: 10_000 }), 2)
      assert.equal((await worker.getTask(first))?.state, 'cancelled', 'the late success changed nothing')
    } finally {
      release.resolve()
      await worker.disconnect()
    }
  })

  test('taskTimeout aborts the signal with ERR_PQ_TIMEOUT and the attempt fails; a handler ignoring it still ends there', async () => {
    const names = uniqueQueue('cancel')
    const worker = await connected<{ listen: boolean }>(names, { taskTimeout: 400, maxRetries: 0 })
    const reasons: any[] = []
    await worker.process(async (task) => {
      if (task.data.listen) reasons.push(await aborted(task.signal))
      else await new Promise(() => {}) // never settles, never looks
      return { success: true }
    })
    try {
      const listening = await worker.enqueue({ data: { listen: true } })
      const ignoring = await worker.enqueue({ data: { listen: false } })
      for (const id of [listening, ignoring]) {
        const failure = await rejectsWithCode(worker.waitFor(id, { timeout: 10_000 }), 'ERR_PQ_TASK_FAILED')
        assert.match((failure as any).error, /taskTimeout/)
      }
      assert.equal(reasons.length, 1)
      assert.equal(reasons[0].code, 'ERR_PQ_TIMEOUT')
    } finally {
      await worker.disconnect()
    }
  })

  test("disconnect()'s deadline aborts the running handlers' signals with ERR_PQ_SHUTDOWN", async () => {
    const names = uniqueQueue('cancel')
    const worker = await connected(names, { shutdownTimeout: 300 })
    const reasons: any[] = []
    const running = deferred()
    await worker.process(async (task) => {
      running.resolve()
      reasons.push(await aborted(task.signal))
      return { success: true }
    })
    await worker.enqueue({ data: {} })
    await within('the handler runs', running.promise)
    await worker.disconnect()
    await eventually('the signal aborted', () => reasons.length === 1)
    assert.equal(reasons[0].code, 'ERR_PQ_SHUTDOWN')
  })

  test('a waiting task with its own id cancelled before any worker never runs; its id is free again at once', async () => {
    const names = uniqueQueue('cancel')
    const producer = await connected(names)
    await producer.enqueue({ data: { n: 1 }, id: 'order-7' })
    const kept = await producer.enqueue({ data: { n: 2 } })
    assert.equal(await producer.cancel('order-7'), true)
    // A new task with the id, while the cancelled one still waits in the stream.
    assert.equal(await producer.enqueue({ data: { n: 3 }, id: 'order-7' }), 'order-7')
    const worker = await connected<{ n: number }>(names)
    const seen: number[] = []
    await worker.process(async (task) => {
      seen.push(task.data.n)
      return { success: true, result: task.data.n }
    })
    try {
      await producer.waitFor(kept, { timeout: 10_000 })
      await eventually('the new task ran', async () => (await producer.getTask('order-7'))?.state === 'completed')
      assert.equal((await producer.getTask('order-7'))?.result, 3)
      assert.deepEqual(seen.sort(), [2, 3], 'the cancelled one never ran')
    } finally {
      await Promise.all([worker.disconnect(), producer.disconnect()])
    }
  })

  test('a waiting task with a generated id: cancel says false (no worker holds it), yet getTask says cancelled at once, and a worker refuses it', async () => {
    const names = uniqueQueue('cancel')
    const producer = await connected(names)
    const id = await producer.enqueue({ data: { n: 1 } })
    const other = await producer.enqueue({ data: { n: 2 } })
    assert.equal((await producer.getTask(id))?.state, 'waiting')
    assert.equal(await producer.cancel(id), false)
    assert.equal((await producer.getTask(id))?.state, 'cancelled', 'marked: it will not run')
    assert.equal((await producer.getTask(other))?.state, 'waiting')
    const worker = await connected<{ n: number }>(names)
    const seen: number[] = []
    await worker.process(async (task) => {
      seen.push(task.data.n)
      return { success: true }
    })
    try {
      await producer.waitFor(other, { timeout: 10_000 })
      await rejectsWithCode(producer.waitFor(id, { timeout: 10_000 }), 'ERR_PQ_TASK_CANCELLED')
      assert.deepEqual(seen, [2])
    } finally {
      await Promise.all([worker.disconnect(), producer.disconnect()])
    }
  })

  test('a delayed task cancelled before its time: with results or keepFailed on the cancelling object, it reads cancelled, never started, and its waiters hear it; without, nothing is kept', async () => {
    const names = uniqueQueue('cancel')
    const producer = await connected(names, { keepFailed: true })
    const plain = await connectedQueue(server.url, names)
    try {
      const id = await producer.enqueue({ data: { n: 1 }, delay: HOUR })
      const waiting = producer.waitFor(id, { timeout: 10_000 }).then(() => 'resolved', (err) => err.code)
      assert.equal((await producer.getTask(id))?.state, 'delayed')
      assert.equal(await producer.cancel(id), true)
      assert.equal(await waiting, 'ERR_PQ_TASK_CANCELLED', 'a waiter pending before the cancel hears it')
      const info = await producer.getTask(id)
      assert.deepEqual(
        [info?.state, info?.attempts, info?.startedAt, info?.error, info?.task?.data],
        ['cancelled', 0, undefined, 'cancelled by cancel()', { n: 1 }],
      )
      assert.ok(info!.enqueuedAt! > 0 && info!.finishedAt! >= info!.enqueuedAt!)
      assert.deepEqual((await producer.getTasks({ state: 'cancelled' })).tasks.map((t) => t.id), [id])
      assert.equal((await producer.getStats()).cancelled, 1)

      // Cancelled from an object that keeps nothing: no record, the task is just gone.
      const other = await plain.enqueue({ data: { n: 2 }, delay: HOUR })
      assert.equal(await plain.cancel(other), true)
      assert.equal(await plain.getTask(other), undefined)
    } finally {
      await plain.destroy({ force: true })
      await Promise.all([plain.disconnect(), producer.disconnect()])
    }
  })

  test('cancels racing completions: each task ends in exactly one of the two, and true is only said of a cancelled one', async () => {
    const names = uniqueQueue('cancel')
    const worker = await connected<{ ms: number }>(names, { batchSize: 40 })
    await worker.process(async (task: TaskData<{ ms: number }>) => {
      await new Promise((resolve) => setTimeout(resolve, task.data.ms))
      return { success: true, result: 'done' }
    })
    const producer = await connected(names)
    try {
      const ids = await producer.enqueueBatch(Array.from({ length: 40 }, (_, i) => ({ data: { ms: 20 + (i % 10) * 20 } })))
      const answers = await Promise.all(ids.map((id, i) => new Promise<boolean>((resolve, reject) => setTimeout(() => producer.cancel(id).then(resolve, reject), (i % 8) * 25))))
      for (const [i, id] of ids.entries()) {
        const ended = await producer.waitFor(id, { timeout: 10_000 }).then(
          () => 'completed',
          (err) => (err.code === 'ERR_PQ_TASK_CANCELLED' ? 'cancelled' : err.code),
        )
        assert.ok(ended === 'completed' || ended === 'cancelled', `${id}: ${ended}`)
        if (answers[i]) assert.equal(ended, 'cancelled', `${id}: cancel said true`)
      }
    } finally {
      await Promise.all([worker.disconnect(), producer.disconnect()])
    }
  })

  test('hostile ids are refused with ERR_PQ_INVALID_TASK; cancel on a closed object with ERR_PQ_NOT_CONNECTED', async () => {
    const names = uniqueQueue('cancel')
    const queue = await connected(names)
    for (const id of ['', 'a b', 'x'.repeat(300), 42 as never, '\ud800']) await rejectsWithCode(queue.cancel(id), 'ERR_PQ_INVALID_TASK')
    assert.equal(await queue.cancel('never-enqueued'), false)
    await queue.disconnect()
    await rejectsWithCode(queue.cancel('x'), 'ERR_PQ_NOT_CONNECTED')
  })
})
