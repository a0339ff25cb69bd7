// Protoqueue as users get it. The tarballs `npm run package` wrote to dist/ are installed into
// fresh apps outside the repo, one with `npm install`, one with `bun add`, with no Rust toolchain
// on the PATH. There the README's quick start runs under Node (ESM and CommonJS) and Bun against a
// real nats-server, and the README's snippets type-check with `tsc --strict` against the installed
// types. `npm test` repacks before it runs this file; after a change, run `npm run package` first.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { after, before, test } from 'node:test'

import { Child, fixture } from '../helpers/child'
import { type NatsServer, withServer } from '../helpers/nats'
import { packedTarballs, repoRoot, rootManifest, runChecked, userEnv } from '../helpers/package'
import { expectQuickStartWorks, quickStart, SNIPPET_NAMES, standalone } from '../helpers/readme'

const INSTALL_TIMEOUT_MS = 240_000
const TSC_TIMEOUT_MS = 60_000
const tarballs = packedTarballs()
const env = userEnv()
// This repo's Bun runs `bun add` (Bun 1.1 cannot add tarball paths); BUN_BIN picks the Bun that
// runs the app (CI runs the oldest supported release and the latest).
const repoBun = join(repoRoot, 'node_modules', 'bun', 'bin', 'bun.exe')
const bunRuntime = process.env.BUN_BIN ?? repoBun
const apps: string[] = []

/** An empty app in the temp folder, far from this repo's node_modules. */
function newApp(kind: string, manifest: object): string {
  const dir = mkdtempSync(join(tmpdir(), `protoqueue-app-${kind}-`))
  apps.push(dir)
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `protoqueue-app-${kind}`, private: true, ...manifest }, null, 2))
  return dir
}

/** Starts `command args` in `app` with the user's environment; output lines can be waited on. */
function start(app: string, command: string, args: string[]): Child {
  return new Child(spawn(command, args, { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] }))
}

/** The quick start as a CommonJS program: `require` instead of `import`, its awaits in an async function. */
function asCommonJs(esm: string): string {
  const importLine = "import { Protoqueue } from 'protoqueue';"
  assert.ok(esm.startsWith(importLine), 'the quick start begins with its import')
  return `const { Protoqueue } = require('protoqueue');\n(async () => {${esm.slice(importLine.length)}})();\n`
}

/** Runs a quick start program in `app` against a server of its own and checks it handles its task. */
function runQuickStart(app: string, file: string, code: (server: NatsServer) => string, command: string, args: string[] = []) {
  return withServer(async (server) => {
    writeFileSync(join(app, file), code(server))
    const child = start(app, command, [...args, file])
    try {
      await expectQuickStartWorks(child, server)
    } finally {
      await child.kill()
    }
  })
}

/** `tsc --strict --noEmit` over `files` in the npm app: its exit code and output. */
function typeCheck(app: string, files: string[]) {
  const tsc = join(app, 'node_modules', 'typescript', 'bin', 'tsc')
  const args = [tsc, '--strict', '--noEmit', '--module', 'nodenext', '--target', 'es2022', '--types', 'node', ...files]
  const result = spawnSync(process.execPath, args, { cwd: app, env, encoding: 'utf8', timeout: TSC_TIMEOUT_MS })
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

/** The package folders an install put into `app`'s node_modules, with the .node files in each. */
function installedAddons(app: string): Record<string, string[]> {
  const installed: Record<string, string[]> = {}
  for (const name of [rootManifest.name, `${rootManifest.name}-${tarballs.platformName}`]) {
    const dir = join(app, 'node_modules', name)
    installed[name] = existsSync(dir) ? readdirSync(dir).filter((file) => file.endsWith('.node')) : ['(not installed)']
  }
  return installed
}

let npmApp: string
let bunApp: string

before(
  () => {
    assert.notEqual(spawnSync('cargo', ['--version'], { env }).status, 0, 'cargo is not on the PATH of the apps')
    const { typescript, '@types/node': nodeTypes } = rootManifest.devDependencies
    npmApp = newApp('npm', { type: 'module' })
    // Both tarballs in one command: the platform package is an optional dependency of the root
    // package that the registry does not have, so installed alone the root package has no binary.
    const install = ['install', '--no-audit', '--no-fund', tarballs.platform, tarballs.root, `typescript@${typescript}`, `@types/node@${nodeTypes}`]
    runChecked('npm', install, { cwd: npmApp, env, timeout: INSTALL_TIMEOUT_MS })
    bunApp = newApp('bun', {})
    runChecked(repoBun, ['add', tarballs.platform, tarballs.root], { cwd: bunApp, env, timeout: INSTALL_TIMEOUT_MS })
  },
  { timeout: 2 * INSTALL_TIMEOUT_MS },
)

after(() => apps.forEach((dir) => rmSync(dir, { recursive: true, force: true })))

test('the apps live outside the repo, and the binary comes from the platform package', () => {
  for (const app of [npmApp, bunApp]) {
    assert.ok(relative(repoRoot, app).startsWith('..'), `${app} is outside ${repoRoot}`)
    assert.deepStrictEqual(installedAddons(app), {
      [rootManifest.name]: [],
      [`${rootManifest.name}-${tarballs.platformName}`]: [`${rootManifest.napi.binaryName}.${tarballs.platformName}.node`],
    })
  }
})

test('npm: the README quick start runs under Node as ESM', () =>
  runQuickStart(npmApp, 'quick-start.mjs', quickStart, process.execPath))

test('npm: the README quick start runs under Node as CommonJS (require)', () =>
  runQuickStart(npmApp, 'quick-start.cjs', (server) => asCommonJs(quickStart(server)), process.execPath))

test('bun add: the README quick start runs under Bun', () =>
  runQuickStart(bunApp, 'quick-start.ts', quickStart, bunRuntime, ['run']))

test('npm: handlers on worker threads run from the installed package (each thread loads the addon from the platform package)', () =>
  withServer(async (server) => {
    writeFileSync(join(npmApp, 'thread-handler.mjs'), "import { threadId } from 'node:worker_threads'\nexport default async (task) => ({ success: true, result: { thread: threadId, n: task.data.n } })\n")
    const program = `import { Protoqueue } from 'protoqueue'
const queue = new Protoqueue({ streamName: 'threads_app', subject: 'tasks.threads_app', options: { results: { ttl: 60000 } } })
await queue.connect(${JSON.stringify(server.url)})
const ids = await queue.enqueueBatch([1, 2, 3, 4].map((n) => ({ data: { n } })))
await queue.process(new URL('./thread-handler.mjs', import.meta.url), { threads: 2 })
const results = await Promise.all(ids.map((id) => queue.waitFor(id, { timeout: 20000 })))
await queue.destroy({ force: true })
await queue.disconnect()
console.log(JSON.stringify(results))
`
    writeFileSync(join(npmApp, 'threads.mjs'), program)
    const run = spawnSync(process.execPath, ['threads.mjs'], { cwd: npmApp, env, encoding: 'utf8', timeout: 60_000 })
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`)
    const results = JSON.parse(run.stdout) as Array<{ thread: number; n: number }>
    assert.deepStrictEqual(results.map((r) => r.n), [1, 2, 3, 4])
    assert.ok(results.every((r) => r.thread > 0), 'run on worker threads')
  }))

test('npm: `npx protoqueue --help` works in the app, and the command line operates a queue there', () =>
  withServer(async (server) => {
    const help = spawnSync('npx', ['--no-install', 'protoqueue', '--help'], { cwd: npmApp, env, encoding: 'utf8', shell: process.platform === 'win32' })
    assert.equal(help.status, 0, `${help.stdout}\n${help.stderr}`)
    assert.match(help.stdout, /Usage: protoqueue/)
    const queue = { NATS_URL: server.url, PROTOQUEUE_STREAM: 'cli_app', PROTOQUEUE_SUBJECT: 'tasks.cli_app' }
    // The CLI never creates a queue: the app's own code does.
    const create = "const { Protoqueue } = require('protoqueue'); Protoqueue.create({ streamName: 'cli_app', subject: 'tasks.cli_app', url: process.env.NATS_URL }).then((q) => q.disconnect())"
    runChecked(process.execPath, ['-e', create], { cwd: npmApp, env: { ...env, ...queue } })
    const cli = (args: string[]) => spawnSync('npx', ['--no-install', 'protoqueue', ...args], { cwd: npmApp, env: { ...env, ...queue }, encoding: 'utf8', shell: process.platform === 'win32' })
    const enqueued = cli(['enqueue', '{"n":1}', '--json'])
    assert.equal(enqueued.status, 0, enqueued.stderr)
    assert.equal(JSON.parse(enqueued.stdout).count, 1)
    const stats = cli(['stats', '--json'])
    assert.equal(stats.status, 0, stats.stderr)
    assert.equal(JSON.parse(stats.stdout).messages, 1)
    // `metrics` from the installed package: the queue's Prometheus text, its gauges from the server.
    const metrics = cli(['metrics'])
    assert.equal(metrics.status, 0, metrics.stderr)
    assert.match(metrics.stdout, /^protoqueue_tasks_pending\{queue="cli_app"\} 1$/m)
  }))

test('the README snippets type-check under tsc --strict against the installed types', () => {
  mkdirSync(join(npmApp, 'snippets'))
  const files = SNIPPET_NAMES.map((name) => {
    const file = join('snippets', `${name}.ts`)
    writeFileSync(join(npmApp, file), standalone(name))
    return file
  })
  const { status, output } = typeCheck(npmApp, files)
  assert.equal(status, 0, output)
})

test('wrong usage fails to type-check: every @ts-expect-error line is an error', () => {
  const source = readFileSync(fixture('wrong-usage.ts'), 'utf8')
  writeFileSync(join(npmApp, 'wrong-usage.ts'), source)
  const marked = typeCheck(npmApp, ['wrong-usage.ts'])
  assert.equal(marked.status, 0, marked.output)

  // Without the directives, the errors are on exactly the lines they marked (tsc counts from 1).
  const lines = source.split('\n')
  const expected = lines.flatMap((line, i) => (line.startsWith('// @ts-expect-error') ? [i + 2] : []))
  const unmarked = lines.map((line) => (line.startsWith('// @ts-expect-error') ? '' : line)).join('\n')
  writeFileSync(join(npmApp, 'wrong-usage-unmarked.ts'), unmarked)
  const { status, output } = typeCheck(npmApp, ['wrong-usage-unmarked.ts'])
  assert.notEqual(status, 0)
  const errorLines = [...output.matchAll(/wrong-usage-unmarked\.ts\((\d+),\d+\): error/g)].map((m) => Number(m[1]))
  assert.deepStrictEqual([...new Set(errorLines)], expected, output)
})

test('npm: `protoqueue dashboard` serves its page and the charting library from the installed package', () =>
  withServer(async (server) => {
    // The installed bin run by Node itself: a SIGTERM to `npx` would not reach it.
    const bin = join(npmApp, 'node_modules', 'protoqueue', 'bin', 'protoqueue.js')
    const child = spawn(process.execPath, [bin, 'dashboard', '--port', '0'], { cwd: npmApp, env: { ...env, NATS_URL: server.url }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (chunk) => (out += chunk))
    child.stderr.on('data', (chunk) => (err += chunk))
    const closed = new Promise((resolve) => child.on('exit', resolve))
    try {
      const deadline = Date.now() + 30_000
      let url: string | undefined
      while (!(url = /(http:\/\/\S+\/)/.exec(out)?.[1])) {
        assert.ok(Date.now() < deadline, `no URL printed: ${out}\n${err}`)
        await new Promise((r) => setTimeout(r, 50))
      }
      for (const path of ['', 'assets/app.js', 'assets/uPlot.js', 'api/overview']) {
        const response: Response = await fetch(`${url}${path}`)
        assert.equal(response.status, 200, path)
      }
    } finally {
      child.kill('SIGTERM')
      assert.equal(await closed, 0, err)
    }
  }))
