// What the tarballs hold. `npm pack --dry-run` of the root package and of this machine's platform
// package must list only what a user needs (no Rust sources, tests or build artefacts), and dist/
// must hold exactly what `npm pack` makes of the current tree, so the consumer test never installs
// stale tarballs. `npm test` repacks first; after a change, run `npm run package`.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

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

test('the root package holds the JavaScript, the types, README, LICENSE and package.json only', () => {
  const expected = ['LICENSE', 'README.md', 'index.d.ts', 'index.js', 'index.mjs', 'native.d.ts', 'native.js', 'package.json']
  assert.deepStrictEqual(paths(dryRun(repoRoot)), expected)
})

test('the platform package holds the release addon, README and package.json only', () => {
  const pack = dryRun(platformDir)
  assert.deepStrictEqual(paths(pack), ['README.md', 'package.json', addon].sort())
  const { size } = pack.files.find((file) => file.path === addon)!
  assert.ok(size < MAX_ADDON_BYTES, `${addon} is ${size} bytes: a debug build?`)
})

test('dist/ holds exactly what npm pack makes of the current tree', () => {
  for (const [dir, tarball] of [
    [repoRoot, tarballs.root],
    [platformDir, tarballs.platform],
  ]) {
    const sha1 = createHash('sha1').update(readFileSync(tarball)).digest('hex')
    assert.equal(sha1, dryRun(dir).shasum, `${tarball} is stale: run \`npm run package\``)
  }
})
