// Routing over a subject tree through the public API, against a real nats-server: two parts with
// two workers each get their own tasks only, shared; a task for a part without workers waits;
// bad subjects reject with codes and nothing is sent.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually, rejectsWithCode } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

function treeNames() {
  const { streamName, subject } = uniqueQueue()
  return { streamName, root: subject, subject: `${subject}.>` }
}

async function open(names: { streamName: string; subject: string }, options: Record<string, unknown> = {}) {
  const queue = new Protoqueue<string>({ streamName: names.streamName, subject: names.subject, options: { batchSize: 1, prefetch: 0, ...options } })
  await queue.connect(server.url)
  return queue
}

describe('routing over a subject tree', () => {
  test('two parts with two workers each: every task reaches a worker of its part, shared', async () => {
    const names = treeNames()
    const producer = await open(names)
    const ran: Array<{ worker: number; data: string; subject: string }> = []
    const workers: Protoqueue<string>[] = []
    for (const [worker, region] of ['eu', 'eu', 'us', 'us'].entries()) {
      const queue = await open(names)
      await queue.process(
        async (task) => {
          ran.push({ worker, data: task.data, subject: region })
          assert.equal(task.subject, `${names.root}.${region}`, 'the handler sees the routed subject')
          assert.equal(task.priority, undefined, 'no priority without options.priorities')
          await new Promise((r) => setTimeout(r, 2))
          return { success: true }
        },
        { subjects: [`${names.root}.${region}`] },
      )
      workers.push(queue)
    }
    const tasks = []
    for (let i = 0; i < 50; i++) {
      tasks.push({ data: `eu${i}`, subject: `${names.root}.eu` }, { data: `us${i}`, subject: `${names.root}.us` })
    }
    await producer.enqueueBatch(tasks)
    await producer.enqueue({ data: 'asia', subject: `${names.root}.asia` })
    await eventually('every eu and us task ran', () => ran.length >= 100)
    for (const { worker, data, subject } of ran) assert.ok(data.startsWith(subject), `worker ${worker} (${subject}) ran ${data}`)
    assert.equal(new Set(ran.map((r) => r.data)).size, 100, 'each task ran once')
    assert.equal(new Set(ran.map((r) => r.worker)).size, 4, 'every worker shared its part')
    // The last acks may still be on their way: the task for a part without workers stays, waiting.
    await eventually('only the asia task left', async () => {
      const stats = await producer.getStats()
      return stats.messages === 1 && stats.pending === 1
    })
    assert.ok(!ran.some((r) => r.data === 'asia'))
    await Promise.all([...workers, producer].map((q) => q.disconnect()))
  })

  test('bad subjects reject with codes, nothing sent', async () => {
    const names = treeNames()
    const queue = await open(names)
    for (const bad of ['elsewhere.eu', `${names.root}.*`, `${names.root}.>`, `${names.root}..eu`, `${names.root}x`, '', 42]) {
      await rejectsWithCode(queue.enqueue({ data: 'x', subject: bad as string }), 'ERR_PQ_INVALID_TASK')
      await rejectsWithCode(queue.enqueueBatch([{ data: 'ok', subject: `${names.root}.eu` }, { data: 'x', subject: bad as string }]), 'ERR_PQ_INVALID_TASK')
    }
    assert.equal((await queue.getStats()).messages, 0)
    const worker = await open(names)
    await rejectsWithCode(worker.process(async () => ({ success: true }), { subjects: ['elsewhere.>'] }), 'ERR_PQ_INVALID_CONFIG')
    await rejectsWithCode(worker.process(async () => ({ success: true }), { subjects: 'x' as unknown as string[] }), 'ERR_PQ_INVALID_CONFIG')
    await worker.disconnect()
    await queue.disconnect()

    const plain = await open(uniqueQueue())
    await rejectsWithCode(plain.enqueue({ data: 'x', subject: 'a.b' }), 'ERR_PQ_INVALID_TASK')
    await plain.disconnect()
  })
})
