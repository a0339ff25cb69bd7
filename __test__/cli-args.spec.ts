// The command line's argument handling, without a server: the grammar (commands, flags, values,
// exit codes of usage errors), the configuration flags and environment make, task lines, error
// mapping, progress output and tables.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'

import { PassThrough } from 'node:stream'

import { confirmed, describeFilter, flagFields, taskOf } from '../lib/cli/commands.js'
import { queueConfig, withSubjectFromServer } from '../lib/cli/config.js'
import { CliError, EXIT, fromLibrary } from '../lib/cli/exit.js'
import { letterTable, queueTable, scheduleTable, table, truncate } from '../lib/cli/format.js'
import { progressReporter } from '../lib/cli/progress.js'
import { epochMs, parseCommandLine } from '../lib/cli/program.js'

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

test('enqueue\'s task flags parse into the fields of every task; bad values, and --delay with --run-at, are usage errors', () => {
  const parsed = parse(['enqueue', '-', '--id', 'a1', '--name', 'refund', '--priority', '3', '--delay', '0', '--task-subject', 'tasks.eu']).parsed
  assert.ok('run' in parsed)
  assert.deepStrictEqual(flagFields(parsed.run.options), { id: 'a1', name: 'refund', priority: 3, delay: 0, subject: 'tasks.eu' })
  const at = parse(['enqueue', '1', '--run-at', '2030-01-01T09:00:00+02:00']).parsed
  assert.ok('run' in at)
  assert.deepStrictEqual(flagFields(at.run.options), { runAt: Date.UTC(2030, 0, 1, 7) })
  const ms = parse(['enqueue', '1', '--run-at', '1893456000000', '--priority', '10']).parsed
  assert.ok('run' in ms)
  assert.deepStrictEqual(flagFields(ms.run.options), { runAt: 1893456000000, priority: 10 })
  assert.deepStrictEqual(flagFields({ json: true, quiet: true, batchSize: 500, subject: 'queue.subject' }), {}, 'only the task flags')
  const bad = [
    ['--priority', '0'],
    ['--priority', '11'],
    ['--priority', 'x'],
    ['--priority', '-1'],
    ['--delay', '-1'],
    ['--delay', '1e3'],
    ['--delay', '99999999999999999999'],
    ['--run-at', 'yesterday'],
    ['--run-at', ''],
    ['--delay', '1', '--run-at', '2030-01-01'],
    ['--run-at', '2030-01-01', '--delay', '1'],
  ]
  for (const flags of bad) {
    const { parsed, err } = parse(['enqueue', '1', ...flags])
    assert.deepStrictEqual(parsed, { exit: EXIT.USAGE }, flags.join(' '))
    assert.ok(err.length > 0, `${flags.join(' ')} says why`)
  }
  for (const command of [['queues'], ['schedules'], ['unschedule', 'n'], ['cancel', 'i']]) {
    const selected = parse([...command, '--json']).parsed
    assert.ok('run' in selected && selected.run.command === command[0] && selected.run.args.join() === command.slice(1).join(), command.join(' '))
  }
})

test('times: ISO 8601 (a date, a time to the minute or finer, an offset) or ms since the epoch; nothing else', () => {
  assert.equal(epochMs('2030-01-01T00:00:00Z'), Date.UTC(2030, 0, 1))
  assert.equal(epochMs('2030-01-01T00:00:00.250Z'), Date.UTC(2030, 0, 1) + 250)
  assert.equal(epochMs('2030-01-01'), Date.UTC(2030, 0, 1))
  assert.equal(epochMs('2030-06-15T12:30-04:00'), Date.UTC(2030, 5, 15, 16, 30))
  assert.equal(epochMs('2030-06-15T12:30'), new Date(2030, 5, 15, 12, 30).getTime(), 'no offset: local time')
  assert.equal(epochMs('2024-02-29'), Date.UTC(2024, 1, 29))
  assert.equal(epochMs('0'), 0)
  assert.equal(epochMs('1893456000000'), 1893456000000)
  for (const text of ['yesterday', 'now', '', ' 2030-01-01', '2030-02-30', '2023-02-29', '2030-13-01', '2030-00-10', '2030-01-01T25:00Z', 'Jan 1 2030', '2030/01/01', '-5', '1.5', '1e12', '99999999999999999999', '+020000-01-01']) {
    assert.equal(epochMs(text), undefined, JSON.stringify(text))
  }
})

test('task lines with --envelope: any field JSON can hold, runAt also as ISO text, the line\'s own fields over the flags\'', () => {
  const flags = { name: 'flag', priority: 9, delay: 1000 }
  assert.deepStrictEqual(taskOf('{"x":1}', false, 'line 1', flags), { ...flags, data: { x: 1 } })
  const all = { data: 1, metadata: { m: 1 }, id: 'i', name: 'n', priority: 2, delay: 5, subject: 't.a', maxRetries: 0, backoff: { type: 'fixed', delay: 10 } }
  assert.deepStrictEqual(taskOf(JSON.stringify(all), true, 'line 1', flags), all)
  assert.deepStrictEqual(taskOf('{"data":1,"runAt":"2030-01-01T00:00:00Z"}', true, 'line 1', flags), { data: 1, name: 'flag', priority: 9, runAt: Date.UTC(2030, 0, 1) }, 'its own time replaces the flags\'')
  assert.deepStrictEqual(taskOf('{"data":1,"runAt":1893456000000}', true, 'line 1', { runAt: 5 }), { data: 1, runAt: 1893456000000 })
  assert.deepStrictEqual(taskOf('{"data":1,"delay":null}', true, 'line 1', { runAt: 5 }), { data: 1, delay: null }, 'null: no time, as the library reads it')
  assert.deepStrictEqual(taskOf('{"data":1}', true, 'line 1', flags), { ...flags, data: 1 })
  // Values are the library's to check (its ERR_PQ_INVALID_TASK names them).
  assert.deepStrictEqual(taskOf('{"data":1,"priority":"high","runAt":true}', true, 'line 1'), { data: 1, priority: 'high', runAt: true })
  for (const [text, why] of [
    ['{"data":1,"priorty":1}', /line 4: priorty is not a task field \(a task is \{ "data", "metadata"\?, "id"\?/],
    ['{"data":1,"runAt":"tomorrow"}', /line 4: runAt "tomorrow" is not an ISO 8601 time/],
    ['{"metadata":{}}', /line 4: with --envelope each task is an object with "data"/],
  ] as const) {
    assert.throws(() => taskOf(text, true, 'line 4', flags), (err: CliError) => err.exitCode === EXIT.USAGE && why.test(err.message), text)
  }
})

test('the queues and schedules tables', () => {
  const queues = [
    { streamName: 'A', subject: 'a.>', deadLetterStream: 'A_DLQ', schedules: true, priorities: false, tree: true, foundBy: 'marker' as const },
    { streamName: 'OLD', subject: 'old', schedules: false, priorities: true, tree: false, foundBy: 'deadLetterStream' as const },
  ]
  assert.deepStrictEqual(queueTable(queues).split('\n'), [
    'STREAM  SUBJECT  DEAD LETTERS  SCHEDULES  PRIORITIES',
    'A       a.>      A_DLQ         yes        no',
    'OLD     old      -             no         yes',
  ])
  const lines = scheduleTable([
    { name: 'n', spec: { cron: '@daily' }, data: { a: 1 } },
    { name: 'z', spec: { cron: '0 0 * * * *', timeZone: 'Asia/Tokyo' }, data: new Uint8Array(3), nextRun: Date.UTC(2030, 0, 1) },
    { name: 'e', spec: { every: 5000 }, data: undefined },
  ]).split('\n')
  assert.match(lines[1], /^n\s+cron @daily\s+UTC\s+-\s+\{"a":1\}$/)
  assert.match(lines[2], /^z\s+cron 0 0 \* \* \* \*\s+Asia\/Tokyo\s+2030-01-01T00:00:00.000Z\s+\(3 bytes\)$/)
  assert.match(lines[3], /^e\s+every 5000 ms\s+-\s+-\s+-$/)
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

test('every failure has a code for --json: the library\'s, else the command line\'s own; a missing stream in the command line\'s words', () => {
  assert.equal(new CliError(EXIT.USAGE, 'no --stream').reportedCode, 'ERR_PQ_CLI_USAGE')
  assert.equal(new CliError(EXIT.FAILED, 'declined').reportedCode, 'ERR_PQ_CLI_FAILED')
  assert.equal(new CliError(EXIT.FAILED, 'm', 'ERR_PQ_NATS').reportedCode, 'ERR_PQ_NATS')
  const missing = Object.assign(new Error('invalid configuration: stream "ORDERS" does not exist (createStreams: false opens existing streams only)'), { code: 'ERR_PQ_INVALID_CONFIG' })
  const failure = fromLibrary(missing)
  assert.deepStrictEqual([failure.exitCode, failure.code, failure.message], [EXIT.USAGE, 'ERR_PQ_INVALID_CONFIG', 'no queue with stream "ORDERS" on the server (protoqueue queues lists them)'])
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
