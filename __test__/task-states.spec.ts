// `getTask` of tasks that have not ended, against a real nats-server, from an object that is not
// the worker: waiting (generated and own ids, behind a backlog, on a priority level), running (with
// its attempt, start and latest progress, from a worker in this process), retrying (with the last
// attempt's error and when the next may start), a delayed task fired by its schedule, and how the
// state follows the task to its end. No option is needed for any of them.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type ProtoqueueConfig, type TaskInfo } from 'protoqueue'

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

const open = (names: Names, options: ProtoqueueConfig['options'] = {}) => connectedQueue(server.url, names, options)

/** Resolves once `check` holds, polling `getTask(id)`; the last answer otherwise. */
async function stateOf(queue: Protoqueue, id: string, check: (info: TaskInfo | undefined) => boolean) {
  let last: TaskInfo | undefined
  await eventually(`getTask(${id}) to change (last: ${JSON.stringify(last)})`, async () => {
    last = await queue.getTask(id)
    return check(last)
  })
  return last as TaskInfo
}

describe('getTask of tasks that have not ended', () => {
  test('waiting: generated and own ids, the newest and one behind a backlog, with no worker', async () => {
    const names = uniqueQueue('states')
    const queue = await open(names)
    try {
      const first = await queue.enqueue({ data: { n: 0 }, metadata: { source: 'test' } })
      await queue.enqueueBatch(Array.from({ length: 2_000 }, (_, n) => ({ data: { n } })))
      const own = await queue.enqueue({ id: 'order/42:ünï.*>', data: { n: -1 } })
      // A producer's own id that is a UUIDv7 too (as a generated one is).
      const ms = Date.now().toString(16).padStart(12, '0')
      const ownUuid = await queue.enqueue({ id: `${ms.slice(0, 8)}-${ms.slice(8)}-7abc-8def-0123456789ab`, data: { n: -2 } })
      const last = await queue.enqueue({ data: { n: 1 } })
      for (const id of [first, own, ownUuid, last]) {
        const info = await queue.getTask(id)
        assert.equal(info?.state, 'waiting', `${id}: ${JSON.stringify(info)}`)
        assert.equal(info.id, id)
        assert.equal(info.attempts, 0)
        assert.ok(Math.abs(info.enqueuedAt! - Date.now()) < 60_000)
        assert.equal(info.startedAt, undefined)
      }
      const stored = (await queue.getTask(first))?.task
      assert.deepEqual([stored?.data, stored?.metadata.source, stored?.dataFormat, stored?.contentType], [{ n: 0 }, 'test', 'json', 'application/json'], 'the task as stored: its data and metadata')
      assert.equal(await queue.getTask('never-enqueued'), undefined)
      assert.equal(await queue.getTask('0190a0c8-7a8b-7c3d-9e4f-a1b2c3d4e5f6'), undefined, 'a UUIDv7 no task has')
    } finally {
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })

  test('purged: a waiting task purge() removed is found nowhere; its waiters time out', async () => {
    const names = uniqueQueue('states')
    const queue = await open(names, { results: { ttl: 60_000 } })
    try {
      const [generated, own] = [await queue.enqueue({ data: { n: 1 } }), await queue.enqueue({ id: 'purged/1', data: { n: 2 } })]
      assert.equal((await queue.getTask(generated))?.state, 'waiting')
      assert.equal(await queue.purge(), 2)
      for (const id of [generated, own]) {
        assert.equal(await queue.getTask(id), undefined, id)
        await rejectsWithCode(queue.waitFor(id, { timeout: 300 }), 'ERR_PQ_TIMEOUT')
      }
    } finally {
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })

  test('running: its attempt, when it started and its latest progress, seen from another object; then completed or gone', async () => {
    const names = uniqueQueue('states')
    const worker = await open(names, { results: { ttl: 60_000 } })
    const monitor = await open(names, { results: { ttl: 60_000 } })
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    let started!: () => void
    const running = new Promise<void>((resolve) => (started = resolve))
    try {
      await worker.process(async (task) => {
        task.progress({ step: 'halfway', done: 50 })
        started()
        await released
        return { success: true, result: 'done' }
      })
      const id = await monitor.enqueue({ data: {} })
      await running
      const info = await stateOf(monitor, id, (info) => info?.state === 'running' && info.progress !== undefined)
      assert.equal(info.attempts, 1)
      assert.ok(info.startedAt! >= info.enqueuedAt! - 1_000 && info.startedAt! <= Date.now() + 1_000, JSON.stringify(info))
      assert.deepEqual(info.progress, { step: 'halfway', done: 50 })
      release()
      assert.equal(await monitor.waitFor(id, { timeout: 10_000 }), 'done')
      assert.equal((await monitor.getTask(id))?.state, 'completed')
    } finally {
      release()
      await worker.disconnect()
      await monitor.disconnect()
    }
  })

  test('retrying: the failed attempts, the last error and when the next may start; then running again', async () => {
    const names = uniqueQueue('states')
    const worker = await open(names, { maxRetries: 3, retryDelay: 3_000 })
    const monitor = await open(names)
    let attempts = 0
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    try {
      await worker.process(async () => {
        attempts += 1
        if (attempts === 1) throw new Error('the mail server said no')
        await released
        return { success: true }
      })
      const id = await monitor.enqueue({ data: {} })
      const retrying = await stateOf(monitor, id, (info) => info?.state === 'retrying')
      assert.equal(retrying.attempts, 1)
      assert.match(retrying.error!, /the mail server said no/)
      assert.ok(retrying.runAt! > Date.now() - 1_000 && retrying.runAt! <= Date.now() + 3_500, JSON.stringify(retrying))
      assert.equal(retrying.failures?.length, 1)
      const [failed] = retrying.failures!
      assert.equal(failed.attempt, 1)
      assert.match(failed.error, /the mail server said no/)
      assert.ok(failed.startedAt <= failed.failedAt && failed.failedAt <= Date.now() + 1_000, JSON.stringify(failed))
      const again = await stateOf(monitor, id, (info) => info?.state === 'running')
      assert.equal(again.attempts, 2, JSON.stringify(again))
      assert.match(again.error!, /the mail server said no/, 'the last failed attempt is still told while the next runs')
      assert.deepEqual(again.failures, retrying.failures)
      release()
      await stateOf(monitor, id, (info) => info === undefined)
    } finally {
      release()
      await worker.disconnect()
      await monitor.disconnect()
    }
  })

  test('priorities: a waiting task tells its level; a delayed task fired by its schedule is waiting', async () => {
    const names = uniqueQueue('states')
    const queue = await open(names, { priorities: true })
    try {
      const urgent = await queue.enqueue({ data: {}, priority: 1 })
      const plain = await queue.enqueue({ data: {} })
      assert.equal((await queue.getTask(urgent))?.priority, 1)
      assert.equal((await queue.getTask(plain))?.priority, 5)
      const delayed = await queue.enqueue({ data: {}, delay: 1_000 })
      assert.equal((await queue.getTask(delayed))?.state, 'delayed')
      const fired = await stateOf(queue, delayed, (info) => info?.state === 'waiting')
      assert.equal(fired.attempts, 0)
    } finally {
      await queue.destroy({ force: true })
      await queue.disconnect()
    }
  })
})
