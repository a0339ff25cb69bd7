// The README's first command: `npm run demo` runs examples/demo.mjs, which starts its own server,
// enqueues 1,000 tasks and processes them (every 100th fails once), and ends with a summary of
// the queue. Run here on the addon the tests built.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { test } from 'node:test'

test('the demo enqueues and processes 1,000 tasks and ends with an empty queue', () => {
  const run = spawnSync(process.execPath, [join(__dirname, '..', 'examples', 'demo.mjs')], { encoding: 'utf8', timeout: 120_000 })
  assert.equal(run.status, 0, run.stderr)
  assert.match(run.stdout, /^producer: enqueued 1000 tasks in \d+ ms \(\d+ tasks\/s\)$/m)
  assert.match(run.stdout, /worker: 1000\/1000 processed/)
  assert.match(run.stdout, /^worker: 1000 tasks in [\d.]+ s \(handlers wait 1 ms; 10 failed once and ran again 100 ms later\)$/m)
  assert.match(run.stdout, /^queue: 0 stored, 0 waiting, 0 in flight, 0 dead letters$/m)
  assert.equal(run.stderr, '', 'nothing on stderr')
})
