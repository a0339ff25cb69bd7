// Runs the README's snippets (marked `<!-- snippet: NAME -->`) as they are written, each in its own
// process against its own nats-server. The only edit: the quick start's hard-coded
// `nats://localhost:4222` points at the test server. Snippets that use an existing `queue` get
// a prelude that creates one.
import assert from 'node:assert/strict'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

import { Protoqueue } from 'protoqueue'

import { Child } from './helpers/child'
import { NatsServer } from './helpers/nats'
import { eventually, within } from './helpers/wait'

const root = join(__dirname, '..')
const readme = readFileSync(join(root, 'README.md'), 'utf8')
const scratch = join(__dirname, '.snippets')
mkdirSync(scratch, { recursive: true })

function snippet(name: string): string {
  const match = new RegExp(`<!-- snippet: ${name} -->\\n\`\`\`typescript\\n([\\s\\S]*?)\`\`\``).exec(readme)
  assert.ok(match, `README has a snippet named ${name}`)
  return match[1]
}

const PRELUDE = `import { Protoqueue } from 'protoqueue';
const queue = new Protoqueue({ streamName: 'snippets', subject: 'snippets.tasks' });
await queue.connect();
`

async function runSnippet(name: string, code: string, server: NatsServer): Promise<Child> {
  const file = join(scratch, `${name}.mts`)
  writeFileSync(file, code)
  return Child.run(process.execPath, ['--import', 'tsx', file], { NATS_URL: server.url })
}

async function withServer(body: (server: NatsServer) => Promise<void>) {
  const server = await NatsServer.start()
  try {
    await body(server)
  } finally {
    await server.stop()
  }
}

async function queueOn(server: NatsServer, streamName: string, subject: string) {
  const queue = new Protoqueue({ streamName, subject })
  await queue.connect(server.url)
  return queue
}

test('README quick start: enqueues a task and processes it', () =>
  withServer(async (server) => {
    const code = snippet('quick-start')
    assert.ok(code.includes("'nats://localhost:4222'"))
    const child = await runSnippet('quick-start', code.replace('nats://localhost:4222', server.url), server)
    try {
      const [line] = await child.waitForLines(/^Processing:/)
      assert.match(line, /user@example\.com/)
      const queue = await queueOn(server, 'my-stream', 'tasks.email')
      await eventually('the task acked', async () => (await queue.getStats()).messages === 0)
      await queue.disconnect()
      assert.equal(child.process.exitCode, null, 'the worker keeps running')
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
    const child = await runSnippet('error-handling', PRELUDE + snippet('error-handling') + "console.log('ready');\n", server)
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
    const child = await runSnippet('monitoring', PRELUDE + snippet('monitoring') + 'await queue.disconnect();\n', server)
    const { code } = await within('the snippet to exit', child.exited, 30_000)
    assert.equal(code, 0, child.stderr)
    assert.deepStrictEqual(child.lines, ['Messages: 3, Consumers: 0'])
    await queue.disconnect()
  }))
