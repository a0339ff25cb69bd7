// What the tarballs hold. `npm pack --dry-run` of the root package and of this machine's platform
// package must list only what a user needs (no Rust sources, tests or build artefacts), and dist/
// must hold the current tree (so the consumer test never installs stale tarballs), with the root
// package.json as published. `npm test` repacks first; after a change, run `npm run package`.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { gunzipSync } from 'node:zlib'

import { packedTarballs, repoRoot, rootManifest, runChecked } from '../helpers/package'

// A release addon is a few MB; a debug one is 82 MB and must never ship.
const MAX_ADDON_BYTES = 20_000_000

const tarballs = packedTarballs()
const platformDir = join(repoRoot, 'npm', tarballs.platformName)
const addon = `${rootManifest.napi.binaryName}.${tarballs.platformName}.node`

interface DryRun {
  shasum: string
  files: Array<{ path: string; size: number }>
}

function dryRun(dir: string): DryRun {
  return JSON.parse(runChecked('npm', ['pack', '--dry-run', '--json'], { cwd: dir }))[0]
}

const paths = (pack: DryRun) => pack.files.map((file) => file.path).sort()

test('the root package holds the JavaScript (the command line and the dashboard included), the types, README, CHANGELOG, LICENSE and package.json only', () => {
  const cli = ['bin/protoqueue.js', ...['commands', 'config', 'dashboard', 'exit', 'format', 'main', 'program', 'progress'].map((name) => `lib/cli/${name}.js`)]
  const dashboard = ['index.d.ts', 'index.js', 'sampler.js', 'public/app.js', 'public/index.html', 'public/style.css'].map((file) => `dashboard/${file}`)
  const expected = ['CHANGELOG.md', 'LICENSE', 'README.md', 'index.d.ts', 'index.js', 'index.mjs', 'lib/checks.js', 'lib/coalesce.js', 'lib/decode.js', 'lib/describe.js', 'lib/dispatcher.js', 'lib/errors.js', 'lib/events.js', 'lib/list-queues.js', 'lib/logger.js', 'lib/options.js', 'lib/prometheus.js', 'lib/queue.js', 'lib/serializers.js', 'lib/task-info.js', 'lib/tasks.js', 'lib/thread.js', 'lib/threads.js', 'lib/tracing.js', 'lib/unicode.js', ...cli, ...dashboard, 'native.d.ts', 'native.js', 'package.json'].sort()
  assert.deepStrictEqual(paths(dryRun(repoRoot)), expected)
})

test('the platform package holds the release addon, README and package.json only', () => {
  const pack = dryRun(platformDir)
  assert.deepStrictEqual(paths(pack), ['README.md', 'package.json', addon].sort())
  const { size } = pack.files.find((file) => file.path === addon)!
  assert.ok(size < MAX_ADDON_BYTES, `${addon} is ${size} bytes: a debug build?`)
})

test('the platform tarball in dist/ is exactly what npm pack makes of npm/<platform>/', () => {
  const sha1 = createHash('sha1').update(readFileSync(tarballs.platform)).digest('hex')
  assert.equal(sha1, dryRun(platformDir).shasum, `${tarballs.platform} is stale: run \`npm run package\``)
})

test('the root tarball in dist/ holds the current files, and lists every platform package as an optional dependency', () => {
  const packed = readTarball(tarballs.root)
  const files = paths(dryRun(repoRoot))
  assert.deepStrictEqual([...packed.keys()].sort(), files.map((file) => `package/${file}`))
  for (const file of files.filter((file) => file !== 'package.json')) {
    assert.ok(packed.get(`package/${file}`)!.equals(readFileSync(join(repoRoot, file))), `${file} in ${tarballs.root} is stale: run \`npm run package\``)
  }
  // As \`napi pre-publish\` publishes it: the repo's package.json plus the optional dependencies.
  const { optionalDependencies, ...manifest } = JSON.parse(packed.get('package/package.json')!.toString('utf8'))
  const { optionalDependencies: ownOptional, ...ownManifest } = rootManifest
  assert.deepStrictEqual(manifest, ownManifest)
  const platforms = readdirSync(join(repoRoot, 'npm'))
  assert.deepStrictEqual(optionalDependencies, {
    ...ownOptional,
    ...Object.fromEntries(platforms.map((platform) => [`${rootManifest.name}-${platform}`, rootManifest.version])),
  })
})

/** The files in an npm tarball (gzipped ustar), by path. */
function readTarball(file: string): Map<string, Buffer> {
  const tar = gunzipSync(readFileSync(file))
  const field = (header: Buffer, start: number, length: number) => header.toString('utf8', start, start + length).replace(/\0[\s\S]*$/, '')
  const files = new Map<string, Buffer>()
  for (let offset = 0; offset + 512 <= tar.length; ) {
    const header = tar.subarray(offset, offset + 512)
    const name = field(header, 0, 100)
    if (!name) break // the zero blocks that end the archive
    const size = parseInt(field(header, 124, 12).trim(), 8)
    files.set(name, tar.subarray(offset + 512, offset + 512 + size))
    offset += 512 + Math.ceil(size / 512) * 512
  }
  return files
}
