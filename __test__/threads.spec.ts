// Handlers on worker threads — `process(moduleUrl, { threads })` — against a real nats-server:
// tasks spread over the threads and each runs once, results, events and progress reach the
// queue object on the main thread, taskTimeout and cancel() abort a thread's handler through its
// signal, a thread that exits mid-task is replaced and its task retried, shutdown ends the
// threads, and bad modules and options are refused before anything runs.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { pathToFileURL } from 'node:url'

import { type ProtoqueueConfig } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { connectedQueue, type Names } from './helpers/queues'
import { eventually, rejectsWithCode } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

const FIXTURES = join(__dirname, 'fixtures', 'threads')
const HANDLER = pathToFileURL(join(FIXTURES, 'handler.mjs'))
const HOUR = 3_600_000

type Data = { kind: string; n?: number; ms?: number }
const open = (names: Names, options: ProtoqueueConfig['options'] = {}) => connectedQueue<Data>(server.url, names, { results: { ttl: HOUR }, ...options })

describe('process(moduleUrl, { threads })', () => {
  test('tasks spread over the threads, each runs once off the main thread; results, completed events and metrics reach the main object', async () => {
    const names = uniqueQueue('threads')
    const queue = await open(names, { batchSize: 8 })
    try {
      const completed: string[] = []
      queue.on('completed', (event) => completed.push(event.id))
      const ids = await queue.enqueueBatch(Array.from({ length: 40 }, (_, n) => ({ data: { kind: 'spin', n, ms: 5 } })))
      await queue.process(HANDLER, { threads: 2 })
      const results = (await Promise.all(ids.map((id) => queue.waitFor<{ thread: number; n: number }>(id, { timeout: 30_000 }))))
      assert.deepEqual(results.map((r) => r.n), ids.map((_, n) => n), 'each task its own result')
      const threads = new Set(results.map((r) => r.thread))
      assert.ok(!threads.has(0), 'no task ran on the main thread')
      assert.equal(threads.size, 2, `both threads ran tasks: ${[...threads]}`)
      await eventually('every completed event', () => completed.length === ids.length)
      assert.deepEqual([...completed].sort(), [...ids].sort(), 'each task completed once')
      await eventually('the metrics count them', async () => (await queue.metrics()).includes(`protoqueue_tasks_completed_total{queue="${names.streamName}"} ${ids.length}\n`))
      const stats = await queue.getStats()
      assert.equal(stats.messages, 0)
    } finally {
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })

  test("progress from a thread's handler: getTask and the progress event on the main object see it", async () => {
    const names = uniqueQueue('threads')
    const queue = await open(names)
    try {
      const heard: unknown[] = []
      queue.on('progress', (event) => heard.push(event.progress))
      await queue.process(HANDLER, { threads: 1 })
      const id = await queue.enqueue({ data: { kind: 'progress', ms: 1_500 } })
      await eventually('progress seen by getTask', async () => {
        const info = await queue.getTask(id)
        return info?.state === 'running' && JSON.stringify(info.progress) === JSON.stringify({ step: 1 })
      })
      await queue.waitFor(id, { timeout: 10_000 })
      assert.deepEqual(heard, [{ step: 1 }])
    } finally {
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })

  test("taskTimeout and cancel(id) abort a thread's handler through its signal", async () => {
    const names = uniqueQueue('threads')
    const queue = await open(names, { taskTimeout: 500, maxRetries: 0 })
    try {
      await queue.process(HANDLER, { threads: 2 })
      const timedOut = await queue.enqueue({ data: { kind: 'waitForSignal' } })
      const failed = await rejectsWithCode(queue.waitFor(timedOut, { timeout: 10_000 }), 'ERR_PQ_TASK_FAILED')
      assert.match(String((failed as { error?: string }).error), /taskTimeout/)

      const cancelled = await queue.enqueue({ data: { kind: 'waitForSignal' } })
      await eventually('it runs', async () => (await queue.getTask(cancelled))?.state === 'running')
      assert.equal(await queue.cancel(cancelled), true)
      await rejectsWithCode(queue.waitFor(cancelled, { timeout: 10_000 }), 'ERR_PQ_TASK_CANCELLED')
      assert.equal((await queue.getStats()).deadLettered, 1, 'the timed-out one only')
    } finally {
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })

  test('a thread that exits mid-task: its task fails that attempt and is retried on a new thread; the others are not disturbed', async () => {
    const names = uniqueQueue('threads')
    const warnings: string[] = []
    const warn = console.warn
    console.warn = (...args: unknown[]) => warnings.push(args.join(' '))
    const queue = await open(names, { maxRetries: 2, backoff: (attempt) => 10 * attempt })
    try {
      await queue.process(HANDLER, { threads: 2 })
      const exiting = await queue.enqueue({ data: { kind: 'exitFirst' } })
      const others = await queue.enqueueBatch(Array.from({ length: 10 }, (_, n) => ({ data: { kind: 'spin', n, ms: 1 } })))
      assert.deepEqual(((await queue.waitFor(exiting, { timeout: 30_000 })) as { attempt: number }).attempt, 2)
      for (const id of others) await queue.waitFor(id, { timeout: 30_000 })
      // The pool has its two threads again: a new batch still spreads over two.
      const more = await queue.enqueueBatch(Array.from({ length: 20 }, (_, n) => ({ data: { kind: 'spin', n, ms: 5 } })))
      const threads = new Set((await Promise.all(more.map((id) => queue.waitFor<{ thread: number }>(id, { timeout: 30_000 })))).map((r) => r.thread))
      assert.equal(threads.size, 2)
      assert.equal((await queue.getStats()).deadLettered, 0)
    } finally {
      console.warn = warn
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })

  test('the only thread exits: the tasks handed over until its replacement is ready wait for it, and use no attempt', async () => {
    const names = uniqueQueue('threads')
    const warn = console.warn
    console.warn = () => {}
    const queue = await open(names, { maxRetries: 1, retryDelay: 0 })
    try {
      await queue.process(HANDLER, { threads: 1 })
      const exiting = await queue.enqueue({ data: { kind: 'exitFirst' } })
      // Ready at once (no backoff): its retry, and these, come while no thread is attached.
      const others = await queue.enqueueBatch(Array.from({ length: 10 }, (_, n) => ({ data: { kind: 'spin', n, ms: 1 } })))
      assert.equal(((await queue.waitFor(exiting, { timeout: 30_000 })) as { attempt: number }).attempt, 2, 'one attempt lost with the thread, none more')
      for (const id of others) assert.equal((await queue.getTask(id).then(() => queue.waitFor<{ n: number }>(id, { timeout: 30_000 }))).n >= 0, true)
      const infos = await Promise.all(others.map((id) => queue.getTask(id)))
      assert.deepEqual(infos.map((info) => [info?.state, info?.attempts]), others.map(() => ['completed', 1]), 'none failed for want of a thread')
      assert.equal((await queue.getStats()).deadLettered, 0)
    } finally {
      console.warn = warn
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })

  test('bad handlers and options are refused before anything runs', async () => {
    const names = uniqueQueue('threads')
    const queue = await open(names)
    try {
      const missing = pathToFileURL(join(FIXTURES, 'nowhere.mjs'))
      const refused = await rejectsWithCode(queue.process(missing, { threads: 1 }), 'ERR_PQ_INVALID_HANDLER')
      assert.match(refused.message, /could not be loaded/)
      assert.match((await rejectsWithCode(queue.process(pathToFileURL(join(FIXTURES, 'no-handler.mjs'))), 'ERR_PQ_INVALID_HANDLER')).message, /exports no handler/)
      assert.match((await rejectsWithCode(queue.process(pathToFileURL(join(FIXTURES, 'throws-on-load.mjs')), { threads: 2 }), 'ERR_PQ_INVALID_HANDLER')).message, /refuses to load/)
      assert.match((await rejectsWithCode(queue.process(async () => ({ success: true }), { threads: 2 } as never), 'ERR_PQ_INVALID_HANDLER')).message, /module's URL/)
      await rejectsWithCode(queue.process('./relative/handler.mjs' as never, { threads: 1 }), 'ERR_PQ_INVALID_HANDLER')
      // 11: more than batchSize (10), the most handlers that run at once.
      for (const threads of [0, -1, 1.5, 257, '2', Number.NaN, 11]) {
        await rejectsWithCode(queue.process(HANDLER, { threads: threads as never }), 'ERR_PQ_INVALID_CONFIG')
      }
      // A queue with a backoff function: the module must export its own (this one does); one
      // without it is refused.
      const withBackoff = await open(uniqueQueue('threads'), { backoff: () => 5 })
      try {
        assert.match((await rejectsWithCode(withBackoff.process(pathToFileURL(join(FIXTURES, 'no-handler.mjs')), { threads: 1 }), 'ERR_PQ_INVALID_HANDLER')).message, /exports no handler/)
        await withBackoff.process(HANDLER, { threads: 1 })
      } finally {
        await withBackoff.destroy({ force: true })
        await withBackoff.disconnect()
      }
      // After all those refusals the queue still processes (nothing half-started).
      await queue.process(HANDLER, { threads: 1 })
      const id = await queue.enqueue({ data: { kind: 'spin', n: 1, ms: 1 } })
      assert.deepEqual(((await queue.waitFor(id, { timeout: 10_000 })) as { n: number }).n, 1)
    } finally {
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })

  test('disconnect() lets the running tasks finish, ends the threads, and the process exits by itself', async () => {
    const names = uniqueQueue('threads')
    const producer = await open(names)
    try {
      const ids = await producer.enqueueBatch(Array.from({ length: 6 }, (_, n) => ({ data: { kind: 'spin', n, ms: 300 } })))
      const script = `
        const { Protoqueue } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
        const queue = new Protoqueue(${JSON.stringify({ ...names, options: { results: { ttl: HOUR }, batchSize: 2 } })})
        queue.connect(${JSON.stringify(server.url)})
          .then(() => queue.process(new URL(${JSON.stringify(HANDLER.href)}), { threads: 2 }))
          .then(() => new Promise((resolve) => setTimeout(resolve, 150)))
          .then(() => queue.disconnect())
          .then(() => console.log('disconnected'))
      `
      const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      child.stdout.on('data', (chunk) => (out += chunk))
      const code = await new Promise((resolve) => child.on('exit', resolve))
      assert.equal(code, 0)
      assert.match(out, /disconnected/)
      // The two it had started completed; the rest wait for the next worker.
      const infos = await Promise.all(ids.map((id) => producer.getTask(id)))
      const completed = infos.filter((info) => info?.state === 'completed').length
      assert.ok(completed >= 2, `${completed} completed`)
      assert.equal(infos.filter((info) => info?.state === 'waiting').length, ids.length - completed, 'the others wait, none lost')
    } finally {
      await producer.destroy({ force: true })
      await producer.disconnect()
    }
  })
})
