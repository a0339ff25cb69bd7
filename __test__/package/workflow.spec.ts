// The release workflow cannot run here; this keeps it consistent with package.json and npm/:
// one build per napi target, one platform package per target at the package's version (the
// packed root package lists them as optional dependencies: contents.spec.ts), and tests on the
// Node versions package.json promises.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

import { parseTriple } from '@napi-rs/cli'
import { load } from 'js-yaml'

import { repoRoot, rootManifest } from '../helpers/package'

interface Workflow {
  jobs: Record<string, { needs?: string[]; strategy?: { matrix: Record<string, any> }; steps: Array<Record<string, any>> }>
}

const workflow = load(readFileSync(join(repoRoot, '.github', 'workflows', 'CI.yml'), 'utf8')) as Workflow
const targets: string[] = rootManifest.napi.targets
const sorted = (values: Iterable<string>) => [...values].sort()

test('the build matrix builds exactly the napi targets, each once', () => {
  const built = workflow.jobs.build.strategy!.matrix.settings.map((s: { target: string; build: string }) => {
    assert.match(s.build, new RegExp(`--target ${s.target}( |$)`), `the ${s.target} build passes its target`)
    return s.target
  })
  assert.deepStrictEqual(sorted(built), sorted(targets))
})

test('every target has its platform package in npm/, at the version of the root package', () => {
  const { name, version, engines, license } = rootManifest
  const platforms = targets.map((target) => parseTriple(target))
  assert.deepStrictEqual(sorted(readdirSync(join(repoRoot, 'npm'))), sorted(platforms.map((p) => p.platformArchABI)))
  for (const { platformArchABI, platform, arch, abi } of platforms) {
    const manifest = JSON.parse(readFileSync(join(repoRoot, 'npm', platformArchABI, 'package.json'), 'utf8'))
    const binary = `${rootManifest.napi.binaryName}.${platformArchABI}.node`
    assert.equal(manifest.name, `${name}-${platformArchABI}`)
    assert.equal(manifest.version, version)
    assert.deepStrictEqual([manifest.os, manifest.cpu], [[platform], [arch]], platformArchABI)
    const libc = { gnu: ['glibc'], musl: ['musl'] }[abi ?? '']
    assert.deepStrictEqual(manifest.libc, libc, `${platformArchABI} libc`)
    assert.deepStrictEqual([manifest.main, manifest.files], [binary, [binary]])
    assert.deepStrictEqual([manifest.engines, manifest.license], [engines, license])
  }
})

test('tests run on every OS of the targets, on Node 18, 20 and 22, and each tested binary is built', () => {
  const { test: nodeTests, 'test-musl': muslTests } = workflow.jobs
  assert.deepStrictEqual(nodeTests.strategy!.matrix.node, ['18', '20', '22'])
  assert.deepStrictEqual(muslTests.strategy!.matrix.node, ['18', '20', '22'])
  assert.equal(rootManifest.engines.node, '>= 18')
  const tested = [...nodeTests.strategy!.matrix.settings.map((s: { target: string }) => s.target), ...muslTests.strategy!.matrix.target]
  assert.deepStrictEqual(sorted(tested), sorted(targets))
})

test('publishing waits for lint and every test job, and runs on version tags only', () => {
  const { publish } = workflow.jobs as Record<string, any>
  assert.deepStrictEqual(sorted(publish.needs), sorted(Object.keys(workflow.jobs).filter((job) => job === 'lint' || job.startsWith('test'))))
  assert.match(publish.if, /refs\/tags\/v/)
  const commands = publish.steps.map((step: { run?: string }) => step.run ?? '').join('\n')
  for (const command of ['napi create-npm-dirs', 'napi artifacts', 'napi pre-publish -t npm', 'npm publish']) {
    assert.ok(commands.includes(command), `publish runs ${command}`)
  }
})
