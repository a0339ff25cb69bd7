// The API reference is generated from index.d.ts's doc comments (TypeDoc, `npm run docs:api`):
// it builds without a warning (a broken {@link}, an exported type left out) and documents the
// public API.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'

const root = join(__dirname, '..')

test('the API reference builds from index.d.ts without a warning and documents the public API', () => {
  const out = mkdtempSync(join(tmpdir(), 'protoqueue-api-'))
  try {
    const run = spawnSync('npx', ['typedoc', '--out', out], { cwd: root, encoding: 'utf8', timeout: 120_000 })
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`)
    const classes = readdirSync(join(out, 'classes'))
    assert.ok(classes.some((file) => file.includes('Protoqueue')), classes.join(', '))
    const functions = readdirSync(join(out, 'functions')).join(' ')
    for (const name of ['listQueues', 'registerMetrics', 'setLogger']) assert.match(functions, new RegExp(name))
    const queue = readFileSync(join(out, 'classes', classes.find((file) => /^index\.Protoqueue/.test(file) || /Protoqueue\.html$/.test(file))!), 'utf8')
    for (const method of ['enqueueBatch', 'process', 'getStats', 'destroy', 'requeueDeadLetters']) assert.ok(queue.includes(method), method)
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
})
