// Live workers (`getWorkers()`, `getStats().workers`) against a real nats-server: listed from any
// process while they run, gone at once when they stop and within 20 s when killed (the defaults
// users get), what each holds, and hostile cases: records from other clients, the workers stream
// deleted under a running worker, `createStreams: false`, `destroy()`, reuse after disconnect.
import assert from 'node:assert/strict'
import { hostname } from 'node:os'
import { after, before, describe, test } from 'node:test'

import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { Protoqueue, type WorkerInfo } from 'protoqueue'

import { Child, fixture, fixtureEnv } from './helpers/child'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually, rejectsWithCode } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

async function connected<T = unknown>(names = uniqueQueue('workers'), options: Record<string, unknown> = {}) {
  const queue = new Protoqueue<T>({ ...names, options })
  await queue.connect(server.url)
  return queue
}

/** A raw NATS client, as another tool would be. */
async function rawClient() {
  const nc = await connect({ servers: server.url })
  return { nc, jsm: await jetstreamManager(nc) }
}

describe('getWorkers', () => {
  test('a queue no worker ran has none; a worker is listed from another queue object at once, with where it runs and since when; stopping removes it at once', async () => {
    const names = uniqueQueue('workers')
    const monitor = await connected(names)
    assert.deepEqual(await monitor.getWorkers(), [])
    assert.equal((await monitor.getStats()).workers, 0)

    const worker = await connected(names, { batchSize: 7 })
    const before = Date.now()
    await worker.process(async () => ({ success: true }))
    const [listed, ...others] = await monitor.getWorkers()
    assert.deepEqual(others, [])
    assert.match(listed.id, /^[0-9a-f]{12}$/)
    assert.deepEqual(
      [listed.host, listed.pid, listed.kind, listed.batchSize, listed.inFlight, listed.subjects],
      [hostname(), process.pid, 'tasks', 7, 0, undefined],
    )
    assert.ok(listed.startedAt >= before - 1000 && listed.startedAt <= Date.now(), `startedAt ${listed.startedAt}`)
    assert.ok(listed.seenAt >= listed.startedAt)
    assert.match(listed.version, /^\d+\.\d+\.\d+/)
    const stats = await monitor.getStats()
    assert.deepEqual([stats.workers, stats.consumers], [1, 1])

    await worker.disconnect()
    assert.deepEqual(await monitor.getWorkers(), [], 'a stopped worker is gone at once')
    const after = await monitor.getStats()
    assert.deepEqual([after.workers, after.consumers], [0, 1], 'its consumer stays: it counts no worker')
    await monitor.disconnect()
  })

  test('what a worker holds and has done is in its record within a beat (5 s)', async () => {
    const names = uniqueQueue('workers')
    const worker = await connected<{ n: number }>(names, { batchSize: 4 })
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    await worker.enqueueBatch([{ data: { n: 0 } }, ...Array.from({ length: 3 }, (_, i) => ({ data: { n: i + 1 } }))])
    let done = 0
    await worker.process(async (task) => {
      if (task.data.n > 0) await gate
      done++
      return task.data.n === 0 ? { success: true } : { success: true }
    })
    try {
      await eventually('the first task done', () => done === 1)
      const [held] = await eventually(
        'a record with 3 tasks running and 1 completed',
        async () => {
          const workers = await worker.getWorkers()
          return workers[0]?.inFlight === 3 && workers[0]?.completed === 1 ? workers : undefined
        },
        15_000,
      )
      assert.equal(held.failed, 0)
    } finally {
      release()
      await worker.disconnect()
    }
  })

  test('several processes: each worker is listed; one killed -9 is gone within 20 s of its last record', async () => {
    const names = uniqueQueue('workers')
    const monitor = await connected(names)
    const local = await connected(names)
    await local.process(async () => ({ success: true }))
    const doomed = Child.run('node', [fixture('worker.mjs')], fixtureEnv(names, server.url))
    try {
      await doomed.waitForLines(/^ready$/)
      const both = await monitor.getWorkers()
      assert.deepEqual(both.map((w) => w.pid).sort(), [process.pid, doomed.process.pid].sort())
      assert.ok(both[0].startedAt <= both[1].startedAt, 'oldest first')
      await doomed.kill('SIGKILL')
      const killedAt = Date.now()
      await eventually('the killed worker gone', async () => (await monitor.getWorkers()).every((w) => w.pid === process.pid), 40_000)
      const gone = Date.now() - killedAt
      assert.ok(gone <= 30_000, `gone after ${gone} ms`)
      assert.equal((await monitor.getWorkers()).length, 1, 'the live one stays listed')
    } finally {
      await doomed.kill()
      await local.disconnect()
      await monitor.disconnect()
    }
  })

  test('dead-letter workers and workers of part of a subject tree say so', async () => {
    const names = { ...uniqueQueue('workers'), subject: `tree.${Date.now()}.>` }
    const queue = await connected(names)
    await queue.process(async () => ({ success: true }), { subjects: [names.subject.replace('>', 'eu.>')] })
    await queue.processDLQ(async () => ({ success: true }))
    const workers = await queue.getWorkers()
    assert.deepEqual(
      workers.map((w) => [w.kind, w.subjects]).sort(),
      [
        ['deadLetters', undefined],
        ['tasks', [names.subject.replace('>', 'eu.>')]],
      ].sort(),
    )
    await queue.disconnect()
    assert.deepEqual(await (await connected(names)).getWorkers(), [])
  })
})

describe('hostile cases', () => {
  test('records written by other clients are skipped; a workers stream deleted under a running worker comes back with its next beat', async () => {
    const names = uniqueQueue('workers')
    const queue = await connected(names)
    await queue.process(async () => ({ success: true }))
    const { nc, jsm } = await rawClient()
    try {
      nc.publish(`protoqueue.workers.${names.streamName}.intruder`, 'not json')
      nc.publish(`protoqueue.workers.${names.streamName}.other`, JSON.stringify({ id: 42 }))
      await nc.flush()
      const workers: WorkerInfo[] = await queue.getWorkers()
      assert.deepEqual(workers.map((w) => w.pid), [process.pid])

      await jsm.streams.delete(`${names.streamName}_WORKERS`)
      assert.deepEqual(await queue.getWorkers(), [])
      assert.equal((await queue.getStats()).workers, 0)
      await eventually('listed again', async () => (await queue.getWorkers()).length === 1, 15_000)
    } finally {
      await nc.close()
      await queue.disconnect()
    }
  })

  test('with createStreams: false no workers stream is made (the worker runs unlisted); destroy() removes it with the queue', async () => {
    const names = uniqueQueue('workers')
    const owner = await connected(names)
    await owner.disconnect()
    const locked = new Protoqueue({ ...names, createStreams: false })
    await locked.connect(server.url)
    await locked.enqueue({ data: 1 })
    let ran = 0
    await locked.process(async () => {
      ran++
      return { success: true }
    })
    await eventually('the task ran', () => ran === 1)
    assert.deepEqual(await locked.getWorkers(), [])
    await locked.disconnect()

    const queue = await connected(names)
    await queue.process(async () => ({ success: true }))
    assert.equal((await queue.getWorkers()).length, 1)
    await queue.disconnect()
    const deleted = await (await connected(names)).destroy()
    assert.ok(deleted.includes(`${names.streamName}_WORKERS`), deleted.join(', '))
  })

  test('getWorkers before connect() and after disconnect() rejects with ERR_PQ_NOT_CONNECTED', async () => {
    const queue = new Protoqueue({ ...uniqueQueue('workers') })
    await rejectsWithCode(queue.getWorkers(), 'ERR_PQ_NOT_CONNECTED')
    await queue.connect(server.url)
    await queue.disconnect()
    await rejectsWithCode(queue.getWorkers(), 'ERR_PQ_NOT_CONNECTED')
  })
})
