// The README and the documentation under docs/ as a whole: every relative link leads to a file
// that exists (and every #anchor to a heading there), every TypeScript block type-checks under
// `tsc --strict` against this package's types, the examples do not step on each other's queues,
// every marked snippet is run by a test, and the README stays a landing page.
//
// Type-checking: each ```typescript block becomes a module of its own. Fragments may use these
// without declaring them (see GLOBALS): `queue` (a connected queue), `streamName`, `subject`,
// `users`, and `Protoqueue` without its import. `<!-- typecheck: from DIR -->` on the line before a
// block resolves its relative imports from DIR (a folder of this repository).
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, normalize, relative, sep } from 'node:path'
import { describe, test } from 'node:test'

import { markdownFiles, markedSnippets, repoRoot, SNIPPET_NAMES } from './helpers/readme'

const files = markdownFiles()
const read = (file: string) => readFileSync(join(repoRoot, file), 'utf8')

interface Block {
  file: string
  /** 1-based line of the opening fence. */
  line: number
  lang: string
  code: string
  /** The line before the opening fence. */
  before: string
}

/** The fenced code blocks of a Markdown text, and the text with them blanked out. */
function parse(file: string): { blocks: Block[]; prose: string[] } {
  const lines = read(file).split('\n')
  const blocks: Block[] = []
  const prose: string[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)\s*$/.exec(lines[i])
    if (!open) {
      prose.push(lines[i])
      continue
    }
    const [, indent, fence, lang] = open
    const body: string[] = []
    let j = i + 1
    while (j < lines.length && !new RegExp(`^\\s*${fence[0] === '`' ? '`' : '~'}{${fence.length},}\\s*$`).test(lines[j])) {
      body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j])
      j++
    }
    assert.ok(j < lines.length, `${file}:${i + 1}: a code fence that is never closed`)
    blocks.push({ file, line: i + 1, lang, code: body.join('\n') + '\n', before: i > 0 ? lines[i - 1] : '' })
    for (let k = i; k <= j; k++) prose.push('')
    i = j
  }
  return { blocks, prose }
}

const parsed = new Map(files.map((file) => [file, parse(file)]))
const tsBlocks = [...parsed.values()].flatMap(({ blocks }) => blocks.filter((b) => ['typescript', 'ts', 'tsx'].includes(b.lang)))

/** GitHub's anchor for a heading's text (github-slugger: lower case, punctuation dropped, spaces to hyphens). */
function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // links and images: their text
    .replace(/`/g, '')
    .replace(/<[^>]+>/g, '')
    .trim()
    .toLowerCase()
  return text.replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-')
}

/** The anchors the headings of a Markdown file produce, duplicates numbered as GitHub numbers them. */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>()
  const result = new Set<string>()
  for (const line of parsed.get(file)?.prose ?? parse(file).prose) {
    const heading = /^#{1,6}\s+(.+?)\s*#*\s*$/.exec(line)
    if (!heading) continue
    const base = slug(heading[1])
    const count = seen.get(base) ?? 0
    seen.set(base, count + 1)
    result.add(count === 0 ? base : `${base}-${count}`)
  }
  return result
}

/** Every Markdown link and image of a file's prose (inline code left out): its target and line. */
function links(file: string): Array<{ target: string; line: number }> {
  const found: Array<{ target: string; line: number }> = []
  parsed.get(file)!.prose.forEach((text, i) => {
    const prose = text.replace(/`+[^`]*`+/g, '')
    for (const match of prose.matchAll(/!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      found.push({ target: match[1], line: i + 1 })
    }
  })
  return found
}

describe('links', () => {
  for (const file of files) {
    test(`${file}: every relative link leads to a file, every #anchor to a heading`, () => {
      const problems: string[] = []
      const fileLinks = links(file)
      for (const { target, line } of fileLinks) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue // https:, mailto:…
        const [path, anchor] = target.split('#', 2) as [string, string | undefined]
        const resolved = path === '' ? file : normalize(join(dirname(file), decodeURIComponent(path)))
        if (resolved.startsWith('..') || resolved.split(sep).includes('..')) {
          problems.push(`${file}:${line}: ${target} leaves the repository`)
          continue
        }
        if (!existsSync(join(repoRoot, resolved))) {
          problems.push(`${file}:${line}: ${target}: no ${resolved}`)
          continue
        }
        if (anchor !== undefined) {
          if (!resolved.endsWith('.md')) problems.push(`${file}:${line}: ${target}: an anchor into a file that is not Markdown`)
          else if (!anchors(resolved).has(anchor)) problems.push(`${file}:${line}: ${target}: no heading of ${resolved} makes #${anchor}`)
        }
      }
      assert.deepStrictEqual(problems, [])
      if (file !== 'README.md') assert.ok(fileLinks.length > 0, `${file} links somewhere`)
    })
  }

  test('every file under docs/ is reachable from README.md through links', () => {
    const reached = new Set<string>()
    const queue = ['README.md']
    while (queue.length > 0) {
      const file = queue.shift()!
      if (reached.has(file)) continue
      reached.add(file)
      for (const { target } of links(file)) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue
        const path = target.split('#')[0]
        const resolved = path === '' ? file : normalize(join(dirname(file), path)).split(sep).join('/')
        if (resolved.endsWith('.md') && files.includes(resolved)) queue.push(resolved)
      }
    }
    assert.deepStrictEqual(files.filter((file) => !reached.has(file)), [])
  })

  test('the anchor algorithm matches GitHub on the cases the docs use', () => {
    assert.equal(slug('How many tasks at once: `batchSize`'), 'how-many-tasks-at-once-batchsize')
    assert.equal(slug("A task's states"), 'a-tasks-states')
    assert.equal(slug('What "stored" means'), 'what-stored-means')
    assert.equal(slug('Delete a queue: `destroy()`'), 'delete-a-queue-destroy')
    assert.equal(slug('Task data: Protobuf, serializers, named tasks'), 'task-data-protobuf-serializers-named-tasks')
    assert.equal(slug('Limits: global concurrency and rate limits'), 'limits-global-concurrency-and-rate-limits')
  })
})

describe('the README', () => {
  const readme = read('README.md')

  test('is a landing page: under 200 lines', () => {
    const lines = readme.split('\n').length
    assert.ok(lines < 200, `README.md has ${lines} lines`)
  })

  test('states how to install, and the two commands for contributors', () => {
    assert.match(readme, /npm install protoqueue/)
    assert.match(readme, /npm install && npm run demo/)
    assert.match(readme, /^npm test\b/m)
    assert.match(readme, /\(CHANGELOG\.md\)/)
  })
})

describe('snippets', () => {
  const snippets = markedSnippets()

  test('every marked snippet is marked once and run by a test', () => {
    const names = snippets.map((s) => s.name)
    assert.deepStrictEqual(names.filter((name, i) => names.indexOf(name) !== i), [], 'marked twice')
    // readme.spec.ts runs SNIPPET_NAMES; dashboard.spec.ts reads the dashboard snippet from README.md.
    assert.deepStrictEqual([...names].sort(), [...SNIPPET_NAMES, 'dashboard'].sort())
    for (const name of ['quick-start', 'dashboard']) {
      assert.equal(snippets.find((s) => s.name === name)?.file, 'README.md', `the ${name} snippet is in README.md`)
    }
  })

  test('the copy of the dashboard snippet in docs/operating.md is the same code', () => {
    const code = snippets.find((s) => s.name === 'dashboard')!.code
    assert.ok(parsed.get('docs/operating.md')!.blocks.some((b) => b.code === code), 'docs/operating.md shows the README dashboard snippet as it is')
  })

  test("the quick start begins with its import and connects to NATS_URL, else nats://localhost:4222", () => {
    const quickStart = snippets.find((s) => s.name === 'quick-start')!.code
    assert.ok(quickStart.startsWith("import { Protoqueue } from 'protoqueue';\n"), 'the package tests turn it into CommonJS')
    assert.ok(quickStart.includes("process.env.NATS_URL ?? 'nats://localhost:4222'"))
    assert.ok(quickStart.split('\n').length <= 20, 'about fifteen lines')
  })
})

describe('examples', () => {
  test('no example sets a priority in metadata (priorities are `priority`, with options.priorities)', () => {
    const offending = tsBlocks.filter((b) => /metadata:\s*\{[^}]*\bpriority\b/.test(b.code))
    assert.deepStrictEqual(offending.map((b) => `${b.file}:${b.line}`), [])
  })

  test('no example calls browser-only functions', () => {
    const offending = tsBlocks.filter((b) => /\b(alert|confirm|prompt)\(/.test(b.code))
    assert.deepStrictEqual(offending.map((b) => `${b.file}:${b.line}`), [])
  })

  test('any two examples can run on one server: a subject belongs to one stream name, a stream name to one subject', () => {
    const queues = new Map<string, { subject: string; where: string }>()
    const problems: string[] = []
    const overlap = (a: string, b: string) => {
      const covers = (tree: string, other: string) => tree.endsWith('.>') && (other === tree.slice(0, -2) || other.startsWith(tree.slice(0, -1)))
      return a === b || covers(a, b) || covers(b, a)
    }
    for (const block of tsBlocks) {
      for (const match of block.code.matchAll(/streamName:\s*'([^']+)',\s*subject:\s*'([^']+)'/g)) {
        const [, streamName, subject] = match
        const where = `${block.file}:${block.line}`
        const known = queues.get(streamName)
        if (known && known.subject !== subject) problems.push(`${where}: stream ${streamName} with ${subject}, at ${known.where} with ${known.subject}`)
        for (const [other, seen] of queues) {
          if (other !== streamName && overlap(seen.subject, subject)) problems.push(`${where}: ${subject} (stream ${streamName}) overlaps ${seen.subject} (stream ${other}, ${seen.where})`)
        }
        if (!known) queues.set(streamName, { subject, where })
      }
    }
    assert.ok(queues.size >= 5, `examples found: ${[...queues.keys()].join(', ')}`)
    assert.deepStrictEqual(problems, [])
  })
})

/** Declarations that fragments may use without declaring them. */
const GLOBALS = `import type * as PQ from 'protoqueue';

declare global {
  /** A fragment's queue, connected. */
  const queue: PQ.Protoqueue<any>;
  const streamName: string;
  const subject: string;
  const users: Array<{ email: string }>;
  /** Fragments may use the class without importing it. */
  const Protoqueue: typeof PQ.Protoqueue;
  type Protoqueue<T = unknown> = PQ.Protoqueue<T>;
}
export {};
`

test('every TypeScript block of the README and the docs type-checks under tsc --strict', () => {
  assert.ok(tsBlocks.length >= 30, `${tsBlocks.length} TypeScript blocks`)
  const dir = join(__dirname, '.snippets', 'docs')
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'globals.d.ts'), GLOBALS)
  const names: string[] = []
  for (const block of tsBlocks) {
    let code = block.code
    const from = /^<!-- typecheck: from (\S+) -->$/.exec(block.before)
    if (from) {
      const base = join(repoRoot, from[1])
      assert.ok(existsSync(base), `${block.file}:${block.line}: no ${from[1]}`)
      code = code.replace(/(from\s+|import\s*\(\s*)'(\.{1,2}\/[^']+)'/g, (_, keyword: string, spec: string) => {
        const target = relative(dir, join(base, spec)).split(sep).join('/')
        return `${keyword}'${target.startsWith('.') ? target : `./${target}`}'`
      })
    } else {
      assert.ok(!/from\s+'\.{1,2}\//.test(code), `${block.file}:${block.line}: a relative import needs <!-- typecheck: from DIR --> before the block`)
    }
    const name = `${block.file.replace(/[/.]/g, '_')}-L${block.line}.mts`
    names.push(name)
    writeFileSync(join(dir, name), `// ${block.file}:${block.line}\n${code}\nexport {};\n`)
  }
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        module: 'nodenext',
        moduleResolution: 'nodenext',
        target: 'es2022',
        lib: ['es2022'], // no DOM: browser-only globals do not type-check
        types: ['node'],
        typeRoots: [join(repoRoot, 'node_modules', '@types')],
        skipLibCheck: true,
      },
      files: ['globals.d.ts', ...names],
    }),
  )
  const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc')
  const run = spawnSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json')], { cwd: dir, encoding: 'utf8', timeout: 120_000 })
  // Errors name the scratch file; its first line says where the block is.
  const output = `${run.stdout}${run.stderr}`.replace(/(\S+?)-L(\d+)\.mts/g, (_, file: string, line: string) => `${file}:${line}`)
  assert.equal(run.status, 0, output)
})
