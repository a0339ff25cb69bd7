// scripts/prerequisites.mjs: npm test's first step checks in seconds what npm does not install
// and names the command that installs each missing one.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { test } from 'node:test'

import { atLeast, checks, versionOf } from '../scripts/prerequisites.mjs'

const SCRIPT = join(__dirname, '..', 'scripts', 'prerequisites.mjs')

test('versions are read from what tools print and compared part by part', () => {
  assert.deepEqual(versionOf('rustc 1.95.0 (59807616e 2026-04-14)'), [1, 95, 0])
  assert.deepEqual(versionOf('1.89'), [1, 89, 0])
  assert.deepEqual(versionOf('v20.20.2'), [20, 20, 2])
  assert.equal(versionOf('no version here'), undefined)
  assert.ok(atLeast([1, 89, 0], [1, 89, 0]))
  assert.ok(atLeast([1, 100, 0], [1, 89, 0]), 'numbers, not text')
  assert.ok(!atLeast([1, 88, 9], [1, 89, 0]))
})

test('every prerequisite is named with the command that installs it', () => {
  for (const check of checks()) {
    assert.ok(check.what.length > 0)
    assert.match(check.install, /apt-get|rustup|nodejs\.org|PYTHON/, check.what)
  }
})

test('what is missing is listed together, with how to install it, and the run stops at once', () => {
  const run = spawnSync(process.execPath, [SCRIPT], {
    encoding: 'utf8',
    env: { ...process.env, PROTOQUEUE_CHROMIUM: '/nonexistent/chromium', PYTHON: '/nonexistent/python3' },
    timeout: 30_000,
  })
  assert.equal(run.status, 1, run.stderr)
  assert.match(run.stderr, /Chromium[\s\S]*install: sudo apt-get install -y chromium/)
  assert.match(run.stderr, /Python 3 with pip[\s\S]*install: sudo apt-get install -y python3 python3-pip/)
  assert.doesNotMatch(run.stderr, /Rust ≥/, 'what is here is not listed')
})

test('passes quietly when everything is here', () => {
  const run = spawnSync(process.execPath, [SCRIPT], { encoding: 'utf8', timeout: 30_000 })
  assert.equal(run.status, 0, run.stderr)
  assert.equal(run.stdout + run.stderr, '')
})
