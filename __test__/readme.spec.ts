// Runs the README's snippets (marked `<!-- snippet: NAME -->`) as they are written, each in its own
// process against its own nats-server. The only edit: the quick start's hard-coded
// `nats://localhost:4222` points at the test server. Snippets that use an existing `queue` get
// a prelude that creates one.
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

import { Protoqueue } from 'protoqueue'

import { Child } from './helpers/child'
import { type NatsServer, withServer } from './helpers/nats'
import { expectQuickStartWorks, quickStart, snippet, standalone } from './helpers/readme'
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

test('README quick start: enqueues a task and processes it', () =>
  withServer(async (server) => {
    const child = await runSnippet('quick-start', quickStart(server), server)
    try {
      await expectQuickStartWorks(child, server)
    } finally {
      await child.kill()
    }
  }))

test('README simple worker and task producer: ten tasks produced, all processed', () =>
  withServer(async (server) => {
    const producer = await runSnippet('task-producer', snippet('task-producer'), server)
    const { code } = await within('the producer to exit by itself', producer.exited, 30_000)
    assert.equal(code, 0, producer.stderr)
    const queue = await queueOn(server, 'tasks', 'tasks.email')
    assert.equal((await queue.getStats()).messages, 10)

    const worker = await runSnippet('simple-worker', snippet('simple-worker'), server)
    try {
      await eventually('the worker to process all ten', async () => (await queue.getStats()).messages === 0, 30_000)
      assert.equal(worker.process.exitCode, null, 'the worker keeps running')
    } finally {
      await worker.kill()
      await queue.disconnect()
    }
  }))

test('README error handling: the handler acks tasks', () =>
  withServer(async (server) => {
    const child = await runSnippet('error-handling', standalone('error-handling') + "console.log('ready');\n", server)
    try {
      await child.waitForLines(/^ready$/)
      const queue = await queueOn(server, 'snippets', 'snippets.tasks')
      await queue.enqueueBatch([{ data: 1 }, { data: 2 }])
      await eventually('both acked', async () => (await queue.getStats()).messages === 0)
      await queue.disconnect()
    } finally {
      await child.kill()
    }
  }))

test('README monitoring: prints the stats', () =>
  withServer(async (server) => {
    const queue = await queueOn(server, 'snippets', 'snippets.tasks')
    await queue.enqueueBatch([{ data: 1 }, { data: 2 }, { data: 3 }])
    const child = await runSnippet('monitoring', standalone('monitoring') + 'await queue.disconnect();\n', server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['Messages: 3, Consumers: 0'])
    await queue.disconnect()
  }))

test('README dead letters: a dead-letter worker, a requeue and a purge', () =>
  withServer(async (server) => {
    // Three tasks of the snippets' queue fail for good first.
    const queue = new Protoqueue({ streamName: 'snippets', subject: 'snippets.tasks', options: { maxRetries: 0 } })
    await queue.connect(server.url)
    await queue.enqueueBatch([{ data: 1 }, { data: 2 }, { data: 3 }])
    await queue.process(async () => ({ success: false, error: 'smtp down' }))
    await eventually('three dead letters', async () => (await queue.getStats()).deadLettered === 3)
    await queue.disconnect()
    const child = await runSnippet('dead-letters', standalone('dead-letters') + "console.log('ready');\n", server)
    try {
      await child.waitForLines(/^ready$/)
      const watcher = await queueOn(server, 'snippets', 'snippets.tasks')
      await eventually('every letter handled or requeued', async () => (await watcher.getStats()).deadLettered === 0)
      assert.ok(child.lines.some((l) => /^task .+ failed 1 times: smtp down$/.test(l)), child.lines.join('\n'))
      assert.ok(child.lines.some((l) => /requeued: \d, removed: 0/.test(l)), child.lines.join('\n'))
      await watcher.disconnect()
    } finally {
      await child.kill()
    }
  }))

test('README pause, resume, purge: prints the pause and the purge', () =>
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

test('README logger: takes console, then stderr again', () =>
  withServer(async (server) => {
    const child = await runSnippet('logger', standalone('logger') + "console.log('logged');\nawait queue.disconnect();\n", server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['logged'])
  }))
