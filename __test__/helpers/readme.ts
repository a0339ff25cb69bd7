// The README's snippets (marked `<!-- snippet: NAME -->`), read at test time so the tests always
// check what users read.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { Protoqueue } from 'protoqueue'

import type { Child } from './child'
import type { NatsServer } from './nats'
import { eventually } from './wait'

const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8')

/** The snippets marked in the README, in the order a user meets them. */
export const SNIPPET_NAMES = ['quick-start', 'simple-worker', 'task-producer', 'error-handling', 'monitoring', 'dead-letters', 'control', 'logger'] as const

/** The TypeScript of the README snippet `name`. */
export function snippet(name: (typeof SNIPPET_NAMES)[number]): string {
  const match = new RegExp(`<!-- snippet: ${name} -->\\n\`\`\`typescript\\n([\\s\\S]*?)\`\`\``).exec(readme)
  assert.ok(match, `README has a snippet named ${name}`)
  return match[1]
}

/** Snippets that use an existing `queue` (error handling, monitoring) run after this prelude. */
const PRELUDE = `import { Protoqueue } from 'protoqueue';
const queue = new Protoqueue({ streamName: 'snippets', subject: 'snippets.tasks' });
await queue.connect();
`

/** A snippet as a complete module: with the prelude where it uses an existing `queue`. */
export function standalone(name: (typeof SNIPPET_NAMES)[number]): string {
  const code = snippet(name)
  return code.includes('new Protoqueue(') ? code : PRELUDE + code
}

/** The quick start pointed at `server`: its one hard-coded value is `nats://localhost:4222`. */
export function quickStart(server: NatsServer): string {
  const code = snippet('quick-start')
  assert.ok(code.includes("'nats://localhost:4222'"))
  return code.replace('nats://localhost:4222', server.url)
}

/**
 * Waits until a running quick start has handled its task and the task is acked; the worker must
 * keep the process running.
 */
export async function expectQuickStartWorks(child: Child, server: NatsServer): Promise<void> {
  await child.waitForLines(/^Processing:/)
  // Node prints `task.data` on that line; Bun spreads it over the next ones.
  await child.waitForLines(/user@example\.com/)
  const queue = new Protoqueue({ streamName: 'my-stream', subject: 'tasks.email' })
  await queue.connect(server.url)
  try {
    await eventually('the task acked', async () => (await queue.getStats()).messages === 0)
  } finally {
    await queue.disconnect()
  }
  assert.equal(child.process.exitCode, null, 'the worker keeps running')
}
