// Runs the snippets of the README and the docs (marked `<!-- snippet: NAME -->`) as they are
// written, each in its own process against its own nats-server (NATS_URL points at it). Snippets
// that use an existing `queue` get a prelude that creates one. (docs.spec.ts type-checks every
// TypeScript block and checks the links; dashboard.spec.ts runs the `dashboard` snippet.)
import assert from 'node:assert/strict'
import { hostname } from 'node:os'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

import { Protoqueue } from 'protoqueue'

import { Child } from './helpers/child'
import { type NatsServer, withServer } from './helpers/nats'
import { expectQuickStartWorks, QUICK_START_QUEUE, quickStart, snippet, standalone } from './helpers/readme'
import { eventually, within } from './helpers/wait'

const scratch = join(__dirname, '.snippets')
mkdirSync(scratch, { recursive: true })

async function runSnippet(name: string, code: string, server: NatsServer): Promise<Child> {
  const file = join(scratch, `${name}.mts`)
  writeFileSync(file, code)
  return Child.run(process.execPath, ['--import', 'tsx', file], { NATS_URL: server.url })
}

async function queueOn(server: NatsServer, streamName: string, subject: string) {
  const queue = new Protoqueue({ streamName, subject })
  await queue.connect(server.url)
  return queue
}

/**
 * Makes `count` tasks of the snippets' prelude queue fail for good (dead letters of reason
 * `retriesExhausted`); resolves to their task ids once the queue holds `count + others` letters.
 */
async function deadLetters(server: NatsServer, count: number, others = 0): Promise<string[]> {
  const queue = new Protoqueue({ streamName: 'snippets', subject: 'snippets.tasks', options: { maxRetries: 0 } })
  await queue.connect(server.url)
  try {
    const ids = await queue.enqueueBatch(Array.from({ length: count }, (_, i) => ({ data: i })))
    await queue.process(async () => ({ success: false, error: 'smtp down' }))
    await eventually(`${count + others} dead letters`, async () => (await queue.getStats()).deadLettered === count + others)
    return ids
  } finally {
    await queue.disconnect()
  }
}

test('quick start (README), as written: NATS_URL chooses the server; it enqueues a task and processes it', () =>
  withServer(async (server) => {
    const child = await runSnippet('quick-start', snippet('quick-start'), server)
    try {
      await expectQuickStartWorks(child, server)
    } finally {
      await child.kill()
    }
  }))

test('quickStart() points the quick start at the given server whatever NATS_URL says (for the package tests)', () => {
  const code = quickStart({ url: 'nats://127.0.0.1:4999' } as NatsServer)
  assert.ok(code.includes("queue.connect('nats://127.0.0.1:4999')"), code)
  assert.ok(!code.includes('localhost:4222') && !code.includes('process.env'), code)
})

test('getting started: the producer enqueues ten tasks and exits, the worker processes them all', () =>
  withServer(async (server) => {
    const producer = await runSnippet('task-producer', snippet('task-producer'), server)
    const { code } = await within('the producer to exit by itself', producer.exited, 30_000)
    assert.equal(code, 0, producer.stderr)
    assert.deepStrictEqual(producer.lines, ['enqueued 10 tasks'])
    const queue = await queueOn(server, QUICK_START_QUEUE.streamName, QUICK_START_QUEUE.subject)
    assert.equal((await queue.getStats()).messages, 10)

    const worker = await runSnippet('simple-worker', snippet('simple-worker'), server)
    try {
      await eventually('the worker to process all ten', async () => (await queue.getStats()).messages === 0, 30_000)
      assert.equal((await queue.getStats()).deadLettered, 0)
      assert.equal(worker.process.exitCode, null, 'the worker keeps running')
    } finally {
      await worker.kill()
      await queue.disconnect()
    }
  }))

test('retries guide, error handling: the handler acks tasks', () =>
  withServer(async (server) => {
    const child = await runSnippet('error-handling', standalone('error-handling') + "console.log('ready');\n", server)
    try {
      await child.waitForLines(/^ready$/)
      const queue = await queueOn(server, 'snippets', 'snippets.tasks')
      await queue.enqueueBatch([{ data: 1 }, { data: 2 }])
      await eventually('both acked', async () => (await queue.getStats()).messages === 0)
      assert.equal((await queue.getStats()).deadLettered, 0)
      await queue.disconnect()
    } finally {
      await child.kill()
    }
  }))

test('metrics guide, statistics: prints the stats', () =>
  withServer(async (server) => {
    const queue = await queueOn(server, 'snippets', 'snippets.tasks')
    await queue.enqueueBatch([{ data: 1 }, { data: 2 }, { data: 3 }])
    const child = await runSnippet('monitoring', standalone('monitoring') + 'await queue.disconnect();\n', server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['Messages: 3, Consumers: 0'])
    await queue.disconnect()
  }))

test('metrics guide, live workers: lists the worker running in another process', () =>
  withServer(async (server) => {
    const queue = await queueOn(server, 'snippets', 'snippets.tasks')
    await queue.process(async () => ({ success: true }))
    const child = await runSnippet('workers', standalone('workers') + 'await queue.disconnect();\n', server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.equal(child.lines.length, 1, child.lines.join('\n'))
    assert.match(child.lines[0], new RegExp(`^${hostname()} pid ${process.pid}: since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z, 0/10 running, 0 completed$`))
    await queue.disconnect()
  }))

test('results guide: enqueueAndWait, waitFor and getTask print what the guide says', () =>
  withServer(async (server) => {
    const child = await runSnippet('results', snippet('results'), server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['{ sum: 5 }', '{ sum: 2 }', 'completed'])
  }))

test('results guide, history: keepCompleted records the tasks; getTasks pages them newest first', () =>
  withServer(async (server) => {
    const child = await runSnippet('history', snippet('history'), server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ["{ sentTo: 'b@example.com' }", "{ sentTo: 'a@example.com' }"])
  }))

test('dead-letters guide, a dead-letter worker: handles and removes every letter', () =>
  withServer(async (server) => {
    const ids = await deadLetters(server, 3)
    const child = await runSnippet('dead-letters', standalone('dead-letters') + "console.log('ready');\n", server)
    try {
      await child.waitForLines(/^ready$/)
      const watcher = await queueOn(server, 'snippets', 'snippets.tasks')
      await eventually('every letter handled', async () => (await watcher.getStats()).deadLettered === 0)
      const handled = child.lines.filter((l) => l !== 'ready')
      assert.deepStrictEqual(handled.sort(), ids.map((id) => `task ${id} failed 1 times: smtp down`).sort())
      assert.equal((await watcher.getStats()).messages, 0, 'nothing requeued')
      await watcher.disconnect()
    } finally {
      await child.kill()
    }
  }))

test('dead-letters guide, requeue or remove: requeues the exhausted tasks and removes the letter that does not decode', () =>
  withServer(async (server) => {
    // A task in bytes on the JSON queue does not decode: the worker dead-letters it as invalidData.
    const raw = new Protoqueue({ streamName: 'snippets', subject: 'snippets.tasks', serializer: 'raw' })
    await raw.connect(server.url)
    await raw.enqueue({ data: Buffer.from('not json') })
    await raw.disconnect()
    const ids = await deadLetters(server, 3, 1)
    const watcher = await queueOn(server, 'snippets', 'snippets.tasks')
    const letters = await watcher.getDeadLetters(10)
    assert.deepStrictEqual(letters.map((letter) => letter.reason).sort(), ['invalidData', 'retriesExhausted', 'retriesExhausted', 'retriesExhausted'])

    const child = await runSnippet('dead-letters-requeue', standalone('dead-letters-requeue') + 'await queue.disconnect();\n', server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['requeued 3, removed 1'])
    const stats = await watcher.getStats()
    assert.equal(stats.deadLettered, 0)
    assert.equal(stats.messages, 3, 'the requeued tasks wait for a worker')
    // Requeued with their ids: a worker gets the three tasks back.
    const seen: string[] = []
    await watcher.process(async (task) => {
      seen.push(task.id)
      return { success: true }
    })
    await eventually('the requeued tasks handled', () => seen.length === 3)
    assert.deepStrictEqual(seen.sort(), [...ids].sort())
    await watcher.disconnect()
  }))

test('queue-control guide, pause, resume, purge: prints the pause and the purge', () =>
  withServer(async (server) => {
    const queue = await queueOn(server, 'snippets', 'snippets.tasks')
    await queue.enqueueBatch([{ data: 1 }, { data: 2 }])
    const child = await runSnippet('control', standalone('control') + 'await queue.disconnect();\n', server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['true', 'purged 2 waiting tasks'])
    assert.equal((await queue.getStats()).paused, false)
    await queue.disconnect()
  }))

test('logging guide: takes console, then stderr again', () =>
  withServer(async (server) => {
    const child = await runSnippet('logger', standalone('logger') + "console.log('logged');\nawait queue.disconnect();\n", server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['logged'])
  }))
