// Backpressure: a producer much faster than the handler must not make the worker buffer the backlog
// (its memory stays flat, at most `batchSize` handlers run at once), and one enqueueBatch of 100,000
// tasks completes with bounded memory and 100,000 unique, ordered ids.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { Protoqueue, type TaskData } from 'protoqueue'

import { Child, fixture, fixtureEnv } from './helpers/child'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { deferred, eventually, within } from './helpers/wait'

const MB = 1024 * 1024
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

const mb = (bytes: number) => Math.round(bytes / MB)

test('a slow handler and a fast producer: the worker stays within batchSize and its memory stays flat', { timeout: 300_000 }, async (t) => {
  const BATCH_SIZE = 8
  const HANDLER_MS = 30
  const BACKLOG = 20_000
  /** ~4 KB per task: a worker that buffered the backlog would hold ~80 MB more than one that does not. */
  const PADDING = 'x'.repeat(4_000)
  /** Enough handled tasks to see the worker's memory settle; far fewer than the backlog. */
  const HANDLED = 1_500
  const names = uniqueQueue('slow')
  const worker = Child.run('node', [fixture('worker.mjs')], fixtureEnv(names, server.url, {
    BATCH_SIZE: String(BATCH_SIZE),
    HANDLER_MS: String(HANDLER_MS),
    QUIET: '1',
    REPORT_MS: '500',
  }))
  const producer = new Protoqueue({ ...names })
  try {
    await producer.connect(server.url)
    await worker.waitForLines(/^ready$/, 1, 60_000)
    // Enqueue the whole backlog while the worker runs: the producer outpaces it many times over.
    let mostWaiting = 0
    for (let first = 0; first < BACKLOG; first += 1_000) {
      await producer.enqueueBatch(Array.from({ length: 1_000 }, (_, i) => ({ data: { n: first + i, padding: PADDING } })))
      mostWaiting = Math.max(mostWaiting, (await producer.getStats()).pending)
    }
    await worker.waitForLines(/^handled /, HANDLED, 240_000)
    // Two more reports, so the last sample is taken with the backlog still waiting.
    const reportsSoFar = worker.lines.filter((l) => l.startsWith('report ')).length
    await worker.waitForLines(/^report /, reportsSoFar + 2, 10_000)
    const stats = await producer.getStats()

    const reports = worker.lines.filter((l) => l.startsWith('report ')).map((l) => l.split(' ').map(Number))
    const rss = reports.map(([, bytes]) => bytes)
    const mostRunning = Math.max(...reports.map(([, , running]) => running))
    const startRss = rss[0]
    const peakRss = Math.max(...rss)
    t.diagnostic(
      `backpressure: batchSize ${BATCH_SIZE}, most handlers at once ${mostRunning}, most tasks waiting ${mostWaiting}, ` +
        `waiting at the end ${stats.pending}, worker RSS start ${mb(startRss)} MB, peak ${mb(peakRss)} MB, ` +
        `last ${mb(rss[rss.length - 1])} MB (${rss.length} samples)`,
    )

    assert.equal(mostRunning, BATCH_SIZE, 'the worker used all its slots and never more')
    assert.ok(stats.pending > BACKLOG / 2, `the backlog is still waiting on the server (${stats.pending} tasks)`)
    // The worker never holds more than batchSize tasks, so its memory must not follow the backlog
    // (~40 MB of payload). 30 MB leaves room for heap growth and JIT warm-up on a debug build.
    assert.ok(peakRss - startRss < 30 * MB, `worker RSS grew from ${mb(startRss)} MB to ${mb(peakRss)} MB`)
  } finally {
    await worker.kill()
    await producer.disconnect()
  }
})

test('one enqueueBatch of 100,000 tasks: bounded memory, 100,000 unique ordered ids, each the id of its task', { timeout: 300_000 }, async (t) => {
  const COUNT = 100_000
  const names = uniqueQueue('big')
  // A separate process, so its memory is the producer's alone.
  const child = Child.run('node', [fixture('enqueue-batch.mjs')], fixtureEnv(names, server.url, { COUNT: String(COUNT) }))
  const { code } = await within('the 100,000-task enqueueBatch', child.exited, 240_000)
  assert.equal(code, 0, child.stderr)
  const { ids, ms, rss } = JSON.parse(child.lines[0]) as { ids: string[]; ms: number; rss: Record<string, number> }
  t.diagnostic(
    `enqueueBatch(${COUNT}): ${ms} ms; producer RSS connected ${mb(rss.connected)} MB, input built ${mb(rss.inputBuilt)} MB, ` +
      `peak ${mb(rss.peak)} MB, after ${mb(rss.after)} MB`,
  )

  assert.equal(ids.length, COUNT)
  assert.equal(new Set(ids).size, COUNT, 'unique')
  assert.deepEqual(ids.filter((id) => !UUID_V7.test(id)), [], 'UUIDv7 strings')
  assert.ok(ids.every((id, i) => i === 0 || ids[i - 1] < id), 'time-ordered in input order')
  // What the call needs besides its input: each task's JSON text, its encoded envelope and its id
  // (a few hundred bytes; ~560 B measured). 1 KB per task is a ceiling that a copy per publish or
  // a leak would break.
  assert.ok(rss.peak - rss.inputBuilt < COUNT * 1024, `producer RSS grew ${mb(rss.peak - rss.inputBuilt)} MB`)

  const queue = new Protoqueue({ ...names, options: { batchSize: 500 } })
  await queue.connect(server.url)
  try {
    assert.equal((await queue.getStats()).messages, COUNT, 'every task is stored')
    // Each id belongs to the task at its position: the handler sees data.i with the id returned at i.
    const position = new Map(ids.map((id, i) => [id, i]))
    const misplaced: string[] = []
    let handled = 0
    const all = deferred()
    await queue.process((task: TaskData) => {
      const { i } = task.data as { i: number }
      if (position.get(task.id) !== i) misplaced.push(`${task.id} has data.i ${i}, returned at ${position.get(task.id)}`)
      if (++handled === COUNT) all.resolve()
      return { success: true }
    })
    await within('every task handled', all.promise, 240_000)
    assert.deepEqual(misplaced.slice(0, 10), [], 'each id is the id of the task at its position')
    await eventually('the stream empty', async () => (await queue.getStats()).messages === 0, 30_000)
  } finally {
    await queue.disconnect()
  }
})
