// The snippets of the README and the docs (marked `<!-- snippet: NAME -->` right before a
// ```typescript fence), read at test time so the tests always check what users read. A name is
// marked once, in README.md or in one Markdown file under docs/.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { Protoqueue } from 'protoqueue'

import type { Child } from './child'
import type { NatsServer } from './nats'
import { eventually } from './wait'

/** The repository's root. */
export const repoRoot = join(__dirname, '..', '..')

/**
 * The snippets the tests run (readme.spec.ts) and type-check in an installed app
 * (package/consumer.spec.ts), in the order a user meets them. The `dashboard` snippet, in
 * README.md, is run by dashboard.spec.ts.
 */
export const SNIPPET_NAMES = ['quick-start', 'simple-worker', 'task-producer', 'error-handling', 'monitoring', 'dead-letters', 'dead-letters-requeue', 'control', 'logger', 'workers', 'results', 'history'] as const

export type SnippetName = (typeof SNIPPET_NAMES)[number]

/** README.md, then every Markdown file under docs/ (sorted), as paths relative to the repository root. */
export function markdownFiles(): string[] {
  const files = ['README.md']
  const walk = (dir: string) => {
    for (const entry of readdirSync(join(repoRoot, dir), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = `${dir}/${entry.name}`
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.md')) files.push(path)
    }
  }
  walk('docs')
  return files
}

/** A marked snippet: where it is and its TypeScript. */
export interface MarkedSnippet {
  name: string
  file: string
  code: string
}

const MARKER = /^<!-- snippet: ([^\s]+) -->$/gm
const MARKED = /^<!-- snippet: ([^\s]+) -->\n```typescript\n([\s\S]*?)```/

/**
 * Every marked snippet of README.md and docs/. Throws when a marker is not followed by a
 * ```typescript fence on the next line.
 */
export function markedSnippets(): MarkedSnippet[] {
  const found: MarkedSnippet[] = []
  for (const file of markdownFiles()) {
    const text = readFileSync(join(repoRoot, file), 'utf8')
    for (const marker of text.matchAll(MARKER)) {
      const match = MARKED.exec(text.slice(marker.index))
      assert.ok(match, `${file}: the snippet marker "${marker[0]}" is followed by a \`\`\`typescript fence on the next line`)
      found.push({ name: match[1], file, code: match[2] })
    }
  }
  return found
}

/** The marked snippet `name`: found in exactly one place of README.md and docs/. */
export function markedSnippet(name: string): MarkedSnippet {
  const found = markedSnippets().filter((s) => s.name === name)
  assert.ok(found.length > 0, `no snippet named ${name} in README.md or docs/`)
  assert.equal(found.length, 1, `the snippet ${name} is marked in more than one place: ${found.map((s) => s.file).join(', ')}`)
  return found[0]
}

/** The TypeScript of the snippet `name`. */
export function snippet(name: SnippetName): string {
  return markedSnippet(name).code
}

/** Snippets that use an existing `queue` (error handling, monitoring…) run after this prelude. */
const PRELUDE = `import { Protoqueue } from 'protoqueue';
const queue = new Protoqueue({ streamName: 'snippets', subject: 'snippets.tasks' });
await queue.connect();
`

/** A snippet as a complete module: with the prelude where it uses an existing `queue`. */
export function standalone(name: SnippetName): string {
  const code = snippet(name)
  // A snippet that makes its own queue (`new Protoqueue(` or `new Protoqueue<T>(`) needs no prelude.
  return /new Protoqueue[<(]/.test(code) ? code : PRELUDE + code
}

/**
 * The quick start pointed at `server` whatever the environment says: its one hard-coded value,
 * `process.env.NATS_URL ?? 'nats://localhost:4222'`, becomes the server's URL.
 */
export function quickStart(server: NatsServer): string {
  const code = snippet('quick-start')
  assert.ok(code.includes("'nats://localhost:4222'"))
  return code.replace(/(process\.env\.NATS_URL \?\? )?'nats:\/\/localhost:4222'/, `'${server.url}'`)
}

/** The queue of the quick start (and of the getting-started producer and worker). */
export const QUICK_START_QUEUE = { streamName: 'emails', subject: 'tasks.email' } as const

/**
 * Waits until a running quick start has handled its task and the task is acked; the worker must
 * keep the process running.
 */
export async function expectQuickStartWorks(child: Child, server: NatsServer): Promise<void> {
  await child.waitForLines(/^Processing:/)
  // Node prints `task.data` on that line; Bun spreads it over the next ones.
  await child.waitForLines(/user@example\.com/)
  const queue = new Protoqueue(QUICK_START_QUEUE)
  await queue.connect(server.url)
  try {
    await eventually('the task acked', async () => (await queue.getStats()).messages === 0)
  } finally {
    await queue.disconnect()
  }
  assert.equal(child.process.exitCode, null, 'the worker keeps running')
}
