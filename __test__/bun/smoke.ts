// The public API under Bun, against a real nats-server. Run with `bun run` (napi promises are
// known to stall under `bun test` in some Bun builds). Prints "N passed, M failed" and exits
// non-zero on any failure.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'

import { Protoqueue, type TaskData } from 'protoqueue'

import { fixture } from '../helpers/child'
import { NatsServer, uniqueQueue } from '../helpers/nats'
import { deferred, eventually, rejectsWithCode, within } from '../helpers/wait'

const results: Array<{ name: string; error?: unknown }> = []

async function check(name: string, body: () => Promise<void>) {
  try {
    await body()
    results.push({ name })
    console.log(`ok - ${name}`)
  } catch (error) {
    results.push({ name, error })
    console.log(`not ok - ${name}\n  ${String((error as Error)?.stack ?? error).replace(/\n/g, '\n  ')}`)
  }
}

/** Runs a fixture under Bun; resolves with its exit code and stdout lines. */
function runFixture(name: string, env: Record<string, string>, until?: RegExp, count = 1) {
  const child = spawn(process.execPath, ['run', fixture(name)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let stderr = ''
  const seen = deferred()
  child.stdout.on('data', (chunk) => {
    lines.push(...String(chunk).split('\n').filter(Boolean))
    if (until && lines.filter((l) => until.test(l)).length >= count) seen.resolve()
  })
  child.stderr.on('data', (chunk) => (stderr += chunk))
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  return { child, lines, exited, seen: seen.promise, stderr: () => stderr }
}

const server = await NatsServer.start()
const env = (names: { streamName: string; subject: string }) => ({ NATS_URL: server.url, STREAM: names.streamName, SUBJECT: names.subject })

await check('enqueue, enqueueBatch and process round-trip JSON', async () => {
  const queue = new Protoqueue<{ to: string; n?: number[] }>({ ...uniqueQueue('bun'), options: { batchSize: 20 } })
  await queue.connect(server.url)
  const first = await queue.enqueue({ data: { to: 'bün@example.com', n: [1, 2] }, metadata: { priority: 3 } })
  const rest = await queue.enqueueBatch(Array.from({ length: 200 }, (_, i) => ({ data: { to: `u${i}` } })))
  assert.equal(new Set(rest).size, 200)
  assert.deepStrictEqual([...rest].sort(), rest)
  const seen = new Map<string, TaskData<{ to: string; n?: number[] }>>()
  const all = deferred()
  await queue.process(async (task) => {
    seen.set(task.id, task)
    if (seen.size === 201) all.resolve()
    return { success: true }
  })
  await within('201 tasks', all.promise)
  assert.deepStrictEqual(seen.get(first)?.data, { to: 'bün@example.com', n: [1, 2] })
  assert.equal(seen.get(first)?.metadata?.priority, 3)
  const stats = await eventually('acked', async () => {
    const s = await queue.getStats()
    return s.messages === 0 ? s : undefined
  })
  assert.equal(stats.consumer_count, 1)
  assert.equal(stats.lastSequence, 201)
  await queue.disconnect()
})

await check('failures retry and dead-letter; sync throws do not crash', async () => {
  const queue = new Protoqueue({ ...uniqueQueue('bun'), options: { maxRetries: 1, retryDelay: 50 } })
  await queue.connect(server.url)
  let calls = 0
  await queue.process((task) => {
    calls++
    if (task.data === 'sync') throw new Error('sync throw')
    return Promise.reject(new Error('async reject'))
  })
  await queue.enqueueBatch([{ data: 'sync' }, { data: 'async' }])
  const letters = await eventually('2 dead letters', async () => {
    const l = await queue.getDeadLetters()
    return l.length === 2 ? l : undefined
  })
  assert.equal(calls, 4)
  assert.deepStrictEqual(new Set(letters.map((l) => l.error)), new Set(['sync throw', 'async reject']))
  assert.ok(letters.every((l) => l.attempts === 2 && l.reason === 'retriesExhausted'))
  await queue.disconnect()
})

await check('errors carry codes', async () => {
  assert.throws(() => new Protoqueue({ streamName: 'a.b', subject: 'x' }), { code: 'ERR_PQ_INVALID_CONFIG' })
  const queue = new Protoqueue(uniqueQueue('bun'))
  await rejectsWithCode(queue.enqueue({ data: 1 }), 'ERR_PQ_NOT_CONNECTED')
  await queue.connect(server.url)
  await rejectsWithCode(queue.enqueue({ data: 1n }), 'ERR_PQ_SERIALIZE')
  await rejectsWithCode(queue.enqueue({ data: 'x'.repeat(2_000_000) }), 'ERR_PQ_PAYLOAD_TOO_LARGE')
  await queue.disconnect()
  await rejectsWithCode(queue.getStats(), 'ERR_PQ_NOT_CONNECTED')
})

await check('the process exits by itself after disconnect()', async () => {
  const run = runFixture('exits.mjs', env(uniqueQueue('bunexit')))
  const code = await within('exit', run.exited, 20_000)
  assert.equal(code, 0, run.stderr())
  assert.deepStrictEqual(run.lines, ['handled true', 'disconnected'])
})

await check('awaited enqueues hold the process until answered, then it exits by itself', async () => {
  const run = runFixture('enqueue-only.mjs', env(uniqueQueue('bunenq')))
  const code = await within('exit', run.exited, 20_000)
  assert.equal(code, 0, run.stderr())
  assert.deepStrictEqual(run.lines, ['ids 22'])
})

await check('a worker survives Bun.gc() of its Protoqueue object', async () => {
  const names = uniqueQueue('bungc')
  const run = runFixture('gc-worker.mjs', env(names), /^handled /, 3)
  const producer = new Protoqueue(names)
  await producer.connect(server.url)
  try {
    await eventually('ready', () => run.lines.includes('ready'))
    await producer.enqueueBatch([{ data: 1 }, { data: 2 }, { data: 3 }])
    await within('3 tasks handled after GC', run.seen, 20_000)
    assert.equal(run.child.exitCode, null)
  } finally {
    run.child.kill('SIGKILL')
    await producer.disconnect()
  }
})

await check('delayed and recurring tasks', async () => {
  const queue = new Protoqueue({ ...uniqueQueue('bun'), options: { schedules: true } })
  await queue.connect(server.url)
  const due = Date.now() + 300
  const id = await queue.enqueue({ data: 'later', runAt: new Date(due) })
  const cancelled = await queue.enqueue({ data: 'never', delay: 60_000 })
  assert.equal(await queue.cancel(cancelled), true)
  await queue.schedule('tick', { every: 1000 }, { data: 'tick' })
  assert.deepStrictEqual((await queue.getSchedules()).map((s) => s.name), ['tick'])
  const ran: Array<{ id: string; at: number }> = []
  await queue.process(async (task) => {
    ran.push({ id: task.id, at: Date.now() })
    return { success: true }
  })
  await eventually('the delayed task and a tick', async () => ran.some((r) => r.id === id) && ran.some((r) => r.id.startsWith('tick:')))
  assert.ok((ran.find((r) => r.id === id)?.at ?? 0) >= due)
  assert.equal(await queue.unschedule('tick'), true)
  await rejectsWithCode(queue.enqueue({ data: 1, delay: -1 }), 'ERR_PQ_INVALID_TASK')
  await queue.disconnect()
})

await check('handlers on worker threads: process(moduleUrl, { threads })', async () => {
  const queue = new Protoqueue<{ kind: string; n: number; ms: number }>({ ...uniqueQueue('bun'), options: { results: { ttl: 60_000 } } })
  await queue.connect(server.url)
  const ids = await queue.enqueueBatch(Array.from({ length: 20 }, (_, n) => ({ data: { kind: 'spin', n, ms: 2 } })))
  await queue.process(new URL('../fixtures/threads/handler.mjs', import.meta.url), { threads: 2 })
  const results = await Promise.all(ids.map((id) => queue.waitFor<{ thread: number; n: number }>(id, { timeout: 20_000 })))
  assert.deepStrictEqual(results.map((r) => r.n), ids.map((_, n) => n))
  assert.ok(results.every((r) => r.thread !== 0), 'off the main thread')
  await queue.destroy({ force: true })
  await queue.disconnect()
})

await server.stop()
const failed = results.filter((r) => r.error).length
console.log(`${results.length - failed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
