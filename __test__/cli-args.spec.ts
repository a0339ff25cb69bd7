// The command line's argument handling, without a server: the grammar (commands, flags, values,
// exit codes of usage errors), the configuration flags and environment make, task lines, error
// mapping, progress output and tables.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'

import { PassThrough } from 'node:stream'

import { confirmed, describeFilter, taskOf } from '../lib/cli/commands.js'
import { queueConfig, withSubjectFromServer } from '../lib/cli/config.js'
import { CliError, EXIT, fromLibrary } from '../lib/cli/exit.js'
import { letterTable, table, truncate } from '../lib/cli/format.js'
import { progressReporter } from '../lib/cli/progress.js'
import { parseCommandLine } from '../lib/cli/program.js'

function parse(argv: string[]) {
  let out = ''
  let err = ''
  const parsed = parseCommandLine(argv, { writeOut: (text) => (out += text), writeErr: (text) => (err += text) }, '1.2.3')
  return { parsed, out, err }
}

const queue = ['--stream', 's', '--subject', 't']

test('commands and flags parse into a selection; global flags go before or after the command', () => {
  assert.deepStrictEqual(parse(['stats', '--json', ...queue]).parsed, { run: { command: 'stats', args: [], options: { json: true, stream: 's', subject: 't' } } })
  const requeue = parse(['--server', 'nats://h:1', 'dlq', 'requeue', '--id', 'a', '--id', 'b', '--reason', 'rejected', '--limit', '5', '-y']).parsed
  assert.ok('run' in requeue)
  assert.equal(requeue.run.command, 'dlq requeue')
  assert.deepStrictEqual(requeue.run.options, { id: ['a', 'b'], reason: 'rejected', limit: 5, yes: true, server: 'nats://h:1' })
  const list = parse(['dlq', 'list']).parsed
  assert.ok('run' in list && list.run.options.limit === 100, 'dlq list shows 100 by default')
  const show = parse(['dlq', 'show', '42']).parsed
  assert.ok('run' in show && show.run.args[0] === '42')
  const enqueue = parse(['enqueue', '-', '--envelope', '-q']).parsed
  assert.ok('run' in enqueue)
  assert.deepStrictEqual([enqueue.run.args, enqueue.run.options.envelope, enqueue.run.options.quiet, enqueue.run.options.batchSize], [['-'], true, true, 500])
  const metrics = parse(['metrics', '--json']).parsed
  assert.ok('run' in metrics && metrics.run.command === 'metrics' && metrics.run.options.json === true)
  assert.deepStrictEqual(parse(['metrics', '--port', '9464']).parsed, { exit: EXIT.USAGE }, 'metrics takes no unknown flags')
  const dashboard = parse(['dashboard', '--port', '9464']).parsed
  assert.ok('run' in dashboard && dashboard.run.command === 'dashboard', 'stubs take any flags')
})

test('help and version exit 0 on stdout; usage errors exit 2 on stderr', () => {
  for (const argv of [['--help'], ['dlq', 'requeue', '--help'], ['help', 'enqueue'], ['-V']]) {
    const { parsed, out, err } = parse(argv)
    assert.deepStrictEqual(parsed, { exit: EXIT.OK }, argv.join(' '))
    assert.ok(out.length > 0 && err === '', argv.join(' '))
  }
  assert.equal(parse(['-V']).out.trim(), '1.2.3')
  const bad = [[], ['nope'], ['dlq'], ['stats', '--nope'], ['stats', 'extra'], ['dlq', 'list', '--limit', '1.5'], ['dlq', 'list', '--limit', '99999999999999999999'], ['dlq', 'purge', '--reason', 'x'], ['enqueue'], ['--connect-timeout', 'soon', 'stats']]
  for (const argv of bad) {
    const { parsed, err } = parse(argv)
    assert.deepStrictEqual(parsed, { exit: EXIT.USAGE }, argv.join(' '))
    assert.ok(err.length > 0, `${argv.join(' ')} says why`)
  }
})

test('the queue and the connection come from flags, else from the environment; secrets from files or the environment only', () => {
  const secrets = mkdtempSync(join(tmpdir(), 'pq-cli-args-'))
  try {
    assert.deepStrictEqual(queueConfig({}, { PROTOQUEUE_STREAM: 'e', PROTOQUEUE_SUBJECT: 'f' }), { streamName: 'e', subject: 'f', createStreams: false })
    assert.deepStrictEqual(queueConfig({ stream: 's', subject: 't', server: 'nats://a' }, { PROTOQUEUE_STREAM: 'e' }), { streamName: 's', subject: 't', createStreams: false, url: 'nats://a' })
    // No subject: the queue's own is read from the server (withSubjectFromServer).
    assert.equal(queueConfig({ stream: 's' }, {}).subject, '')
    assert.throws(() => queueConfig({ subject: 't' }, {}), (err: CliError) => err.exitCode === EXIT.USAGE)
    const names = { stream: 's', subject: 't' }
    assert.deepStrictEqual(queueConfig(names, { NATS_TOKEN: 'tok' }).auth, { token: 'tok' })
    assert.deepStrictEqual(queueConfig(names, { NATS_USER: 'ada', NATS_PASSWORD: 'pw' }).auth, { user: 'ada', pass: 'pw' })
    assert.deepStrictEqual(queueConfig({ ...names, user: 'bob' }, { NATS_PASSWORD: 'pw', NATS_TOKEN: 'tok' }).auth, { user: 'bob', pass: 'pw' }, 'a credential flag turns the token variable off')
    writeFileSync(join(secrets, 'pw'), 'filepw\n')
    writeFileSync(join(secrets, 'seed'), 'SUSEED\n')
    writeFileSync(join(secrets, 'empty'), '')
    assert.deepStrictEqual(queueConfig({ ...names, user: 'bob', passwordFile: join(secrets, 'pw') }, { NATS_PASSWORD: 'envpw' }).auth, { user: 'bob', pass: 'filepw' })
    assert.deepStrictEqual(queueConfig({ ...names, nkey: join(secrets, 'seed') }, {}).auth, { nkeySeed: 'SUSEED' })
    assert.deepStrictEqual(queueConfig({ ...names, creds: '/x.creds' }, { NATS_TOKEN: 'tok' }).auth, { credsFile: '/x.creds' })
    assert.deepStrictEqual(queueConfig(names, { NATS_CREDS: '/y.creds' }).auth, { credsFile: '/y.creds' })
    for (const flags of [{ user: 'bob' }, { passwordFile: join(secrets, 'pw') }, { tokenFile: join(secrets, 'missing') }, { tokenFile: join(secrets, 'empty') }]) {
      assert.throws(() => queueConfig({ ...names, ...flags }, {}), (err: CliError) => err.exitCode === EXIT.USAGE && !err.message.includes('filepw'), JSON.stringify(flags))
    }
    assert.equal(queueConfig({ ...names, tls: true }, {}).tls, true)
    assert.deepStrictEqual(queueConfig({ ...names, tlsCa: 'ca.pem', tlsHandshakeFirst: true }, { NATS_CERT: 'c.pem', NATS_KEY: 'k.pem' }).tls, { caFile: 'ca.pem', certFile: 'c.pem', keyFile: 'k.pem', handshakeFirst: true })
    assert.deepStrictEqual(queueConfig({ ...names, connectTimeout: 700 }, {}).options, { connectTimeout: 700 })
  } finally {
    rmSync(secrets, { recursive: true, force: true })
  }
})

test('task lines: data alone, or { data, metadata } with --envelope; anything else is a usage error naming the line', () => {
  assert.deepStrictEqual(taskOf('{"a":1}', false, 'line 1'), { data: { a: 1 } })
  assert.deepStrictEqual(taskOf('"text"', false, 'line 1'), { data: 'text' })
  assert.deepStrictEqual(taskOf('{"data":[1],"metadata":{"m":true}}', true, 'line 1'), { data: [1], metadata: { m: true } })
  for (const [text, envelope] of [['{oops', false], ['[1]', true], ['{"payload":1}', true], ['{"data":1,"extra":2}', true], ['null', true]] as const) {
    assert.throws(() => taskOf(text, envelope, 'line 7'), (err: CliError) => err.exitCode === EXIT.USAGE && err.message.includes('line 7'), text)
  }
})

test('library errors map to exit codes: bad configuration 2, no connection 3, other failures 1', () => {
  const coded = (code: string) => Object.assign(new Error('m'), { code })
  assert.equal(fromLibrary(coded('ERR_PQ_INVALID_CONFIG')).exitCode, EXIT.USAGE)
  for (const code of ['ERR_PQ_CONNECT', 'ERR_PQ_AUTH', 'ERR_PQ_TLS']) assert.equal(fromLibrary(coded(code)).exitCode, EXIT.CONNECTION)
  assert.equal(fromLibrary(coded('ERR_PQ_TIMEOUT'), { connecting: true }).exitCode, EXIT.CONNECTION)
  for (const code of ['ERR_PQ_TIMEOUT', 'ERR_PQ_STREAM_CONFLICT', 'ERR_PQ_PAYLOAD_TOO_LARGE', 'ERR_PQ_NATS']) {
    const failure = fromLibrary(coded(code))
    assert.deepStrictEqual([failure.exitCode, failure.code], [EXIT.FAILED, code])
  }
  assert.equal(fromLibrary(new Error('plain')).exitCode, EXIT.FAILED)
})

test('progress: a bar redrawn in place on a terminal, plain lines at most every interval elsewhere', () => {
  let tty = ''
  const bar = progressReporter({ isTTY: true, write: (text) => (tty += text) }, 'requeued')
  bar.update({ seen: 50, total: 100, done: 40 })
  bar.update({ seen: 100, total: 100, done: 90 })
  bar.finish()
  assert.match(tty, /\r.*50%.*40 requeued/)
  assert.ok(tty.endsWith('\r\x1b[2K'), 'the bar is cleared before the result')

  let plain = ''
  let now = 0
  const lines = progressReporter({ isTTY: false, write: (text) => (plain += text) }, 'removed', { now: () => now, intervalMs: 1000 })
  lines.update({ seen: 1, total: 10, done: 1 })
  now = 1500
  lines.update({ seen: 5, total: 10, done: 5 })
  lines.update({ seen: 6, total: 10, done: 6 })
  lines.finish()
  assert.equal(plain, 'progress: 5/10 looked at, 5 removed\n')
})

test('tables pad their columns; errors are cut to one line; filters read as words', () => {
  assert.equal(table(['A', 'LONG'], [['xyz', '1'], ['1', '22']]), 'A    LONG\nxyz  1\n1    22')
  assert.equal(truncate('a\nb   c', 10), 'a b c')
  assert.equal(truncate('x'.repeat(20), 10).length, 10)
  const letter = { sequence: 7, reason: 'rejected' as const, error: 'boom', attempts: 2, failedAt: 0, task: undefined }
  assert.match(letterTable([letter]).split('\n')[1], /^7\s+-\s+rejected\s+2\s+-\s+boom$/)
  assert.equal(describeFilter({}, 12), 'all 12 dead letters')
  assert.equal(describeFilter({ reason: 'rejected', limit: 3 }, 12), 'the dead letters with reason rejected (of 12 stored), at most 3')
})

test('confirmation: asked on a terminal (only y or yes goes on), refused with a usage error elsewhere, skipped with --yes', async () => {
  const ask = async (answer: string | null, tty: { stdin: boolean; stderr: boolean }, yes = false) => {
    const stdin = Object.assign(new PassThrough(), { isTTY: tty.stdin })
    let asked = ''
    const stderr = { isTTY: tty.stderr, write: (text: string) => (asked += text) }
    const context = { options: { yes }, io: { stdin, stdout: { write: () => true }, stderr } } as unknown as Parameters<typeof confirmed>[0]
    if (answer === null) stdin.end()
    else stdin.write(`${answer}\n`)
    const result = await confirmed(context, 'Remove all 3 dead letters?')
    return { result, asked }
  }
  const terminal = { stdin: true, stderr: true }
  for (const answer of ['y', 'YES', ' yes ']) assert.equal((await ask(answer, terminal)).result, true, answer)
  for (const answer of ['', 'n', 'no', 'yep', null]) assert.equal((await ask(answer, terminal)).result, false, String(answer))
  assert.match((await ask('y', terminal)).asked, /Remove all 3 dead letters\? \[y\/N\]/)
  for (const tty of [{ stdin: false, stderr: true }, { stdin: true, stderr: false }]) {
    await assert.rejects(ask('y', tty), (err: CliError) => err.exitCode === EXIT.USAGE && /--yes/.test(err.message))
  }
  assert.deepStrictEqual(await ask(null, { stdin: false, stderr: false }, true), { result: true, asked: '' })
})

test('without --subject the queue\'s subject comes from its stream on the server; an unknown stream is a usage error', async () => {
  const queues = [
    { streamName: 'TREE', subject: 'shop.orders.>', schedules: false, priorities: true, tree: true, foundBy: 'marker' as const },
  ]
  const listQueues = async () => ({ server: 'nats://x', queues })
  const found = await withSubjectFromServer(queueConfig({ stream: 'TREE', server: 'nats://x' }, {}), listQueues)
  assert.equal(found.subject, 'shop.orders.>')
  const given = await withSubjectFromServer(queueConfig({ stream: 'TREE', subject: 'mine' }, {}), async () => {
    throw new Error('not asked when a subject is given')
  })
  assert.equal(given.subject, 'mine')
  await assert.rejects(withSubjectFromServer(queueConfig({ stream: 'NOPE' }, {}), listQueues), (err: CliError) => err.exitCode === EXIT.USAGE)
})
