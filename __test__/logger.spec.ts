// setLogger(): the native core's log lines go to the application's logger instead of stderr
// (issue 25: the library wrote to stderr by itself, outside the application's logger).
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { setLogger } from 'protoqueue'

import { forwardTo } from '../lib/logger.js'
import { Child, fixture, fixtureEnv } from './helpers/child'
import { coreLogger } from './helpers/logs'
import { NatsServer, uniqueQueue } from './helpers/nats'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

/** Runs the logger fixture against a server of its own, kills that server, and returns once
 *  `pattern` shows on the fixture's stdout (with LOGGER=1) or stderr (without). */
async function linesWhenTheServerGoes(env: Record<string, string>, pattern: RegExp) {
  const own = await NatsServer.start()
  const child = Child.run(process.execPath, [fixture('logger.mjs')], fixtureEnv(uniqueQueue('log'), own.url, env))
  try {
    await child.waitForLines(/^connected$/)
    await own.kill()
    const deadline = Date.now() + 20_000
    while (!pattern.test(child.lines.join('\n') + child.stderr) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    return { stdout: child.lines, stderr: child.stderr }
  } finally {
    await child.kill()
    await own.stop()
  }
}

const logged = (lines: string[]) =>
  lines.filter((line) => line.startsWith('{"logged"')).map((line) => JSON.parse(line) as { logged: string; message: string; fields: Record<string, unknown> })

test('with a logger, a lost connection is logged to it with its fields, and nothing to stderr', async () => {
  const { stdout, stderr } = await linesWhenTheServerGoes({ LOGGER: '1' }, /NATS connection lost/)
  const lost = logged(stdout).find((line) => line.message.includes('NATS connection lost'))
  assert.ok(lost, `the logger got the line; stdout:\n${stdout.join('\n')}`)
  assert.equal(lost.logged, 'warn')
  assert.match(String(lost.fields.url), /^nats:\/\/127\.0\.0\.1:\d+$/)
  assert.equal(stderr, '', 'nothing on stderr')
  assert.deepEqual(
    logged(stdout).filter((line) => line.logged === 'debug'),
    [],
    'debug lines only with verbose',
  )
})

test('without one, the same line goes to stderr', async () => {
  const { stdout, stderr } = await linesWhenTheServerGoes({}, /NATS connection lost/)
  assert.match(stderr, /WARN NATS connection lost; reconnecting/)
  assert.deepEqual(logged(stdout), [])
})

test('verbose sends debug lines to the logger too', async () => {
  const { stdout, stderr } = await linesWhenTheServerGoes({ LOGGER: '1', VERBOSE: '1' }, /NATS connection lost/)
  assert.ok(
    logged(stdout).some((line) => line.logged === 'debug'),
    `debug lines; stdout:\n${stdout.join('\n')}`,
  )
  assert.equal(stderr, '')
})

test('a line goes to the method of its level, trace to debug when missing, and a throwing logger is ignored', () => {
  const seen: Array<[string, string, unknown]> = []
  const forward = forwardTo({
    warn: (message: string, fields?: Record<string, unknown>) => seen.push(['warn', message, fields]),
    debug: (message: string) => seen.push(['debug', message, undefined]),
    error: () => {
      throw new Error('the logger is broken')
    },
  })
  forward({ level: 'warn', message: 'w', fields: { id: 'a' } })
  forward({ level: 'trace', message: 't', fields: {} })
  forward({ level: 'info', message: 'no info method', fields: {} })
  forward({ level: 'error', message: 'thrown', fields: {} })
  assert.deepEqual(seen, [
    ['warn', 'w', { id: 'a' }],
    ['debug', 't', undefined],
  ])
})

test('setLogger refuses what is not a logger, and takes console or nothing', () => {
  for (const bad of [42, 'console', {}, { warn: 'loud' }, [console.warn]]) {
    assert.throws(
      () => setLogger(bad as never),
      (err: { code?: string; message: string }) => err.code === 'ERR_PQ_INVALID_CONFIG' && /setLogger\(logger\) takes an object/.test(err.message),
    )
  }
  setLogger(console)
  setLogger(null)
  setLogger()
  setLogger(coreLogger) // the tests' own: kept, shown if a test fails
})
