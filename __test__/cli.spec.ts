// The command line (`bin/protoqueue.js`) as a user runs it: a child process against a real
// nats-server. Every command, --json output parsed, exit codes (0 done, 1 failed with its code,
// 2 usage, 3 connection), stdin enqueue of many lines, enqueue's task flags (delay, run-at,
// priority, id, name, task subject) on queues the library made for them, the server's queues,
// recurring tasks, cancel, tasks looked up, listed by state and waited for (task, tasks, wait),
// live workers (and worker records with hostile text), a requeue's progress on a non-terminal
// (no bar), and secrets never printed.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'

import { jetstream } from '@nats-io/jetstream'
import { connect as natsConnect } from '@nats-io/transport-node'
import { Protoqueue, type ProtoqueueConfig, type WorkerInfo } from 'protoqueue'

import { freePort, NatsServer, uniqueQueue, withServer } from './helpers/nats'
import { parsePrometheus, sampleValue } from './helpers/prometheus'
import { deferred, eventually } from './helpers/wait'

const BIN = join(__dirname, '..', 'bin', 'protoqueue.js')
const TOKEN = 'cli-s3cret-token-value'

let server: NatsServer
let tokens: NatsServer
let dir: string
before(async () => {
  ;[server, tokens] = await Promise.all([NatsServer.start(), NatsServer.startWithConfig(`authorization { token: ${JSON.stringify(TOKEN)} }`)])
  dir = mkdtempSync(join(tmpdir(), 'pq-cli-'))
})
after(async () => {
  await Promise.all([server?.stop(), tokens?.stop()])
  rmSync(dir, { recursive: true, force: true })
})

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs the CLI with `args`; `env` is added to a clean environment (no NATS_* or PROTOQUEUE_* of the caller). */
function cli(args: string[], options: { env?: Record<string, string>; input?: string } = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) if (!/^(NATS_|PROTOQUEUE_)/.test(key)) env[key] = value
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => (stdout += chunk))
  child.stderr.on('data', (chunk) => (stderr += chunk))
  child.stdin.on('error', () => {}) // a CLI that exits before reading everything
  child.stdin.end(options.input ?? '')
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })))
}

/** The flags naming a fresh queue on the test server. */
function queueFlags(names = uniqueQueue('cli')) {
  return { names, flags: ['--server', server.url, '--stream', names.streamName, '--subject', names.subject] }
}

/** The flags naming a fresh queue whose streams exist (the CLI never creates them). */
async function existingQueue(options?: ProtoqueueConfig['options']) {
  const { names, flags } = queueFlags()
  const queue = new Protoqueue({ ...names, options })
  await queue.connect(server.url)
  await queue.disconnect()
  return { names, flags }
}

const expectExit = (run: Run, code: number) => assert.equal(run.code, code, `exit ${run.code}, expected ${code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`)

/** `n` dead letters (reason `rejected`, error `smtp down`) on a fresh queue; the library makes them. */
async function deadLetters(n: number) {
  const { names, flags } = queueFlags()
  const queue = new Protoqueue<{ n: number }>({ ...names, options: { retryDelay: 50 } })
  await queue.connect(server.url)
  // The letters must be stored in enqueue order (tests read them back in order): the next task
  // is enqueued once the one before is a dead letter (dead letters of tasks failing together are
  // stored in any order).
  const failing = new Protoqueue(names)
  await failing.connect(server.url)
  await failing.process(async () => ({ success: false, error: 'smtp down\nsecond line', retry: false }))
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    ids.push(await queue.enqueue({ data: { n: i } }))
    await eventually(`task ${i} dead-lettered`, async () => (await queue.getStats()).deadLettered === i + 1, 60_000)
  }
  await failing.disconnect()
  return { queue, ids, names, flags }
}

describe('usage', () => {
  test('--help works for the program and every command, with exit code 0', async () => {
    const commands = [[], ['stats'], ['dlq'], ['dlq', 'list'], ['dlq', 'show'], ['dlq', 'requeue'], ['dlq', 'purge'], ['pause'], ['resume'], ['purge'], ['enqueue'], ['queues'], ['schedules'], ['unschedule'], ['cancel'], ['workers'], ['task'], ['tasks'], ['wait']]
    const runs = await Promise.all([...commands.map((command) => cli([...command, '--help'])), cli(['help', 'dlq']), cli(['--version'])])
    for (const run of runs) {
      expectExit(run, 0)
      assert.ok(run.stdout.length > 0, 'help on stdout')
    }
    assert.match(runs[0].stdout, /Exit codes/)
    for (const command of ['queues', 'schedules', 'unschedule <name>', 'cancel <id>', 'workers', 'task <id>', 'tasks \\[options\\]', 'wait \\[options\\] <id>']) {
      assert.match(runs[0].stdout, new RegExp(`^  ${command} +\\S`, 'm'), `${command} in the program's help, with its description`)
    }
    for (const flag of ['--id <id>', '--name <name>', '--priority <1-10>', '--delay <ms>', '--run-at <time>', '--task-subject <subject>']) {
      assert.ok(runs[commands.findIndex((command) => command[0] === 'enqueue')].stdout.includes(flag), `${flag} in enqueue --help`)
    }
  })

  test('unknown commands and flags, bad values, a missing queue and no command exit with 2', async () => {
    const { flags } = await existingQueue()
    const bad = [
      [],
      ['nope'],
      ['dlq'],
      ['dlq', 'nope'],
      ['stats', '--nope'],
      ['dlq', 'list', '--limit', '0', ...flags],
      ['dlq', 'list', '--limit', 'ten', ...flags],
      ['dlq', 'requeue', '--reason', 'bogus', ...flags],
      ['dlq', 'show', ...flags],
      ['stats', '--server', server.url],
      ['stats', '--server', server.url, '--stream', 'x'],
      ['stats', '--server', server.url, '--stream', 'bad.name', '--subject', 'x'],
      ['workers', '--server', server.url],
      ['workers', 'extra', ...flags],
      ['enqueue', '{not json', ...flags],
      ['enqueue', '--envelope', '{"payload":1}', ...flags],
      ['stats', '--token-file', join(dir, 'missing'), ...flags],
      ['stats', '--user', 'ada', ...flags],
      ['stats', '--connect-timeout', '-5', ...flags],
    ]
    const runs = await Promise.all(bad.map((args) => cli(args)))
    runs.forEach((run, i) => {
      assert.equal(run.code, 2, `${JSON.stringify(bad[i])}: exit ${run.code}\n${run.stderr}`)
      assert.ok(run.stderr.length > 0, `${JSON.stringify(bad[i])} says why on stderr`)
    })
  })
})

describe('connecting', () => {
  test('no server: exit 3 with ERR_PQ_CONNECT (as JSON on stderr with --json)', async () => {
    const url = `nats://127.0.0.1:${await freePort()}`
    const run = await cli(['stats', '--json', '--server', url, '--stream', 's', '--subject', 't', '--connect-timeout', '500'])
    expectExit(run, 3)
    assert.equal(JSON.parse(run.stderr).error.code, 'ERR_PQ_CONNECT')
    assert.equal(run.stdout, '')
  })

  test('a token from NATS_TOKEN, a file or the URL works; a wrong one exits 3 with ERR_PQ_AUTH; the secret is never printed', async () => {
    const names = uniqueQueue('cli')
    const queue = ['--stream', names.streamName, '--subject', names.subject]
    const owner = new Protoqueue({ ...names, auth: { token: TOKEN } })
    await owner.connect(tokens.url)
    await owner.disconnect()
    const tokenFile = join(dir, 'token')
    writeFileSync(tokenFile, `${TOKEN}\n`)
    const wrong = 'wrong-s3cret-token'
    const runs = await Promise.all([
      cli(['stats', '--server', tokens.url, ...queue], { env: { NATS_TOKEN: TOKEN } }),
      cli(['stats', '--server', tokens.url, '--token-file', tokenFile, ...queue], { env: { NATS_TOKEN: wrong } }),
      cli(['stats', ...queue], { env: { NATS_URL: `nats://${TOKEN}@127.0.0.1:${tokens.port}` } }),
      cli(['stats', '--server', tokens.url, ...queue], { env: { NATS_TOKEN: wrong } }),
      cli(['stats', ...queue], { env: { NATS_URL: `nats://${wrong}@127.0.0.1:${tokens.port}` } }),
      cli(['stats', '--server', tokens.url, ...queue]),
      cli(['stats', '--server', tokens.url, '--token', TOKEN, ...queue]),
      cli(['stats', '--server', `nats://${TOKEN}@127.0.0.1:${tokens.port}`, ...queue]),
    ])
    runs.slice(0, 3).forEach((run) => expectExit(run, 0))
    // Secrets are not taken as flags: --token, nor a token in --server's URL.
    runs.slice(6, 8).forEach((run) => expectExit(run, 2))
    assert.match(runs[7].stderr, /NATS_TOKEN/)
    for (const run of runs.slice(3, 6)) {
      expectExit(run, 3)
      assert.match(run.stderr, /ERR_PQ_AUTH/)
    }
    for (const run of runs) {
      const output = run.stdout + run.stderr
      assert.ok(!output.includes(TOKEN) && !output.includes(wrong), `a secret was printed:\n${output}`)
    }
  })
})

describe('passwords in --server', () => {
  const PASSWORD = 'pa55-in-url-s3cret'
  let users: NatsServer
  before(async () => {
    users = await NatsServer.startWithConfig(`authorization { user: ops, password: ${JSON.stringify(PASSWORD)} }`)
  })
  after(async () => {
    await users?.stop()
  })

  test('a URL with a password (or a token) in --server is refused with exit 2, pointing to NATS_PASSWORD, NATS_URL and the file flags; in NATS_URL it works', async () => {
    const names = uniqueQueue('cli')
    const queue = ['--stream', names.streamName, '--subject', names.subject]
    const owner = new Protoqueue({ ...names, auth: { user: 'ops', pass: PASSWORD } })
    await owner.connect(users.url)
    await owner.disconnect()
    const host = `127.0.0.1:${users.port}`
    const passwordFile = join(dir, 'ops-password')
    writeFileSync(passwordFile, `${PASSWORD}\n`)
    const refused = await Promise.all([
      cli(['stats', '--server', `nats://ops:${PASSWORD}@${host}`, ...queue]),
      cli(['stats', '--json', '--server', `nats://ops:${PASSWORD}@${host}`, ...queue]),
      cli(['stats', '-s', `nats://ops:${encodeURIComponent(`${PASSWORD}@/`)}@${host}`, ...queue]),
      cli(['stats', '--server', `nats://127.0.0.1:1,nats://ops:${PASSWORD}@${host}`, ...queue]),
      cli(['stats', '--server', `nats://ops:${PASSWORD},x@${host}`, ...queue]),
      // On a port already taken: had it been accepted, it would stop (exit 1) rather than serve.
      cli(['dashboard', '--port', String(users.port), '--server', `nats://ops:${PASSWORD}@${host}`]),
    ])
    for (const run of refused) {
      expectExit(run, 2)
      assert.ok(!(run.stdout + run.stderr).includes(PASSWORD), `the password was printed:\n${run.stderr}`)
    }
    assert.match(refused[0].stderr, /NATS_PASSWORD/)
    assert.match(refused[0].stderr, /--password-file/)
    assert.match(refused[0].stderr, /NATS_URL/)
    assert.equal(JSON.parse(refused[1].stderr).error.exitCode, 2)

    // Where the password may go: NATS_URL, or --user with a file or NATS_PASSWORD.
    const accepted = await Promise.all([
      cli(['stats', ...queue], { env: { NATS_URL: `nats://ops:${PASSWORD}@${host}` } }),
      cli(['stats', '--server', users.url, '--user', 'ops', '--password-file', passwordFile, ...queue]),
      cli(['stats', '--server', users.url, ...queue], { env: { NATS_USER: 'ops', NATS_PASSWORD: PASSWORD } }),
    ])
    for (const run of accepted) {
      expectExit(run, 0)
      assert.ok(!(run.stdout + run.stderr).includes(PASSWORD))
    }
  })
})

describe('commands', () => {
  test('enqueue: an argument, many stdin lines in batches (blank lines skipped), --envelope with metadata, --quiet, --json', async () => {
    const { names, flags } = await existingQueue()
    const one = await cli(['enqueue', '{"to":"ada"}', ...flags])
    expectExit(one, 0)
    assert.match(one.stdout.trim(), /^[0-9a-f-]{36}$/)

    const lines = Array.from({ length: 2500 }, (_, n) => JSON.stringify({ n })).join('\n')
    const many = await cli(['enqueue', '-', '--batch-size', '400', ...flags], { input: `${lines}\n\n` })
    expectExit(many, 0)
    const ids = many.stdout.trim().split('\n')
    assert.equal(ids.length, 2500)
    assert.equal(new Set(ids).size, 2500)

    const quiet = await cli(['enqueue', '-', '--quiet', ...flags], { input: '1\n2\n3' })
    assert.equal(quiet.stdout.trim(), '3')
    const stats = JSON.parse((await cli(['stats', '--json', ...flags])).stdout)
    assert.equal(stats.messages, 1 + 2500 + 3)

    const queue = new Protoqueue(names)
    await queue.connect(server.url)
    await queue.purge()
    const envelope = await cli(['enqueue', '-', '--envelope', '--json', ...flags], { input: '{"data":{"x":1},"metadata":{"source":"cli"}}\n' })
    expectExit(envelope, 0)
    const { count, ids: [id] } = JSON.parse(envelope.stdout)
    assert.equal(count, 1)
    const seen: Array<{ id: string; data: unknown; source: unknown }> = []
    await queue.process(async (task) => {
      seen.push({ id: task.id, data: task.data, source: task.metadata?.source })
      return { success: true }
    })
    await eventually('the enveloped task', () => seen.length === 1)
    assert.deepStrictEqual(seen, [{ id, data: { x: 1 }, source: 'cli' }])
    await queue.disconnect()
  })

  test('enqueue stops at a line that is not JSON (exit 2), naming it, after the lines before it', async () => {
    const { flags } = await existingQueue()
    const run = await cli(['enqueue', '-', '--batch-size', '2', ...flags], { input: '1\n2\n{oops\n4\n' })
    expectExit(run, 2)
    assert.match(run.stderr, /line 3/)
    assert.equal(run.stdout.trim().split('\n').length, 2, 'the two tasks before it were enqueued and printed')
    // Within one batch (the default 500) too: the lines before the bad one go out, nothing after it.
    const within = await existingQueue()
    const inBatch = await cli(['enqueue', '-', ...within.flags], { input: '1\n2\n3\n{oops\n5\n' })
    expectExit(inBatch, 2)
    assert.match(inBatch.stderr, /line 4.*\(3 tasks before it were enqueued\)/)
    assert.equal(inBatch.stdout.trim().split('\n').length, 3, 'the three tasks before it were enqueued and printed')
    const queue = new Protoqueue(within.names)
    await queue.connect(server.url)
    assert.equal((await queue.getStats()).messages, 3)
    await queue.disconnect()
  })

  test('an operation that fails exits 1 with its ERR_PQ code: a task above max_payload, a stream made for another subject', async () => {
    const { names, flags } = await existingQueue()
    const huge = await cli(['enqueue', '-', ...flags], { input: `${JSON.stringify('x'.repeat(1_200_000))}\n` })
    expectExit(huge, 1)
    assert.match(huge.stderr, /ERR_PQ_PAYLOAD_TOO_LARGE/)
    const conflict = await cli(['stats', '--json', '--server', server.url, '--stream', names.streamName, '--subject', 'tasks.other'])
    expectExit(conflict, 1)
    assert.equal(JSON.parse(conflict.stderr).error.code, 'ERR_PQ_STREAM_CONFLICT')
  })

  test('the CLI never creates a queue (a missing stream exits 2, nothing made), and works on one whose dead letters have a retention', async () => {
    const { names, flags } = queueFlags()
    const missing = await cli(['stats', '--json', ...flags])
    expectExit(missing, 2)
    assert.equal(JSON.parse(missing.stderr).error.code, 'ERR_PQ_INVALID_CONFIG')
    assert.match(JSON.parse(missing.stderr).error.message, /^no queue with stream ".+" on the server \(protoqueue queues lists them\)$/)
    const usage = await cli(['stats', '--json', '--server', server.url])
    expectExit(usage, 2)
    assert.equal(JSON.parse(usage.stderr).error.code, 'ERR_PQ_CLI_USAGE', 'a usage error has a code too')
    expectExit(await cli(['enqueue', '1', ...flags]), 2)
    const owner = new Protoqueue({ ...names, options: { deadLetterMaxAge: 86_400_000, deadLetterMaxCount: 1000 } })
    await owner.connect(server.url)
    assert.equal((await owner.getStats()).messages, 0, 'the stream did not exist before')
    const run = await cli(['enqueue', '1', ...flags])
    expectExit(run, 0)
    assert.equal(JSON.parse((await cli(['stats', '--json', ...flags])).stdout).messages, 1)
    await owner.disconnect()
  })

  test('--stream alone opens the queue as its stream is: every priority level is paused, counted and purged', async () => {
    const names = uniqueQueue('cli')
    const owner = new Protoqueue({ ...names, options: { priorities: true, schedules: true } })
    await owner.connect(server.url)
    const flags = ['--server', server.url, '--stream', names.streamName]
    expectExit(await cli(['pause', ...flags]), 0)
    await owner.enqueueBatch(Array.from({ length: 10 }, (_, i) => ({ data: { i }, priority: i + 1 })))
    const stats = JSON.parse((await cli(['stats', '--json', ...flags])).stdout)
    assert.equal(stats.paused, true)
    assert.deepStrictEqual([stats.pending, stats.delayed], [10, 0])
    assert.deepStrictEqual(stats.pendingByPriority, Array(10).fill(1))
    let handled = 0
    await owner.process(async () => {
      handled++
      return { success: true }
    })
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.equal(handled, 0, 'no level runs while paused')
    const purged = JSON.parse((await cli(['purge', '--yes', '--json', ...flags])).stdout)
    assert.equal(purged.purged, 10)
    expectExit(await cli(['resume', ...flags]), 0)
    assert.equal((await owner.getStats()).paused, false)
    await owner.disconnect()
  })

  test('delete: asks, needs --yes off a terminal, is refused while a worker runs unless --force, and leaves nothing', async () => {
    const { names, flags } = await existingQueue()
    const owner = new Protoqueue(names)
    await owner.connect(server.url)
    await owner.enqueueBatch([{ data: 1 }, { data: 2 }])
    expectExit(await cli(['delete', ...flags]), 2)
    await owner.process(async () => ({ success: true }))
    const refused = await cli(['delete', '--yes', '--json', ...flags])
    expectExit(refused, 1)
    assert.equal(JSON.parse(refused.stderr).error.code, 'ERR_PQ_QUEUE_IN_USE')
    await owner.disconnect()
    const deleted = await cli(['delete', '--yes', '--json', ...flags])
    expectExit(deleted, 0)
    // A worker ran: its workers stream goes with the queue.
    assert.deepStrictEqual(JSON.parse(deleted.stdout), { deleted: [names.streamName, `${names.streamName}_DLQ`, `${names.streamName}_WORKERS`, `${names.streamName}_CANCELS`] })
    const gone = await cli(['stats', '--json', ...flags])
    expectExit(gone, 2)
    assert.match(gone.stderr, /no queue with stream|does not exist/)

    const other = await existingQueue()
    const worker = new Protoqueue(other.names)
    await worker.connect(server.url)
    await worker.process(async () => ({ success: true }))
    const forced = await cli(['delete', '--yes', '--force', ...other.flags])
    expectExit(forced, 0)
    const { streamName } = other.names
    assert.match(forced.stdout, new RegExp(`^Deleted queue ${streamName} \\(streams ${streamName}, ${streamName}_DLQ, ${streamName}_WORKERS, ${streamName}_CANCELS\\)\\.$`, 'm'))
    await worker.disconnect()
  })

  test('stats, pause and resume, as tables and as JSON', async () => {
    const { flags, names } = await existingQueue()
    const table = await cli(['stats', ...flags])
    expectExit(table, 0)
    assert.match(table.stdout, new RegExp(names.streamName))
    for (const row of ['delayed', 'recurring', 'dead letters', 'completed \\(kept\\)', 'failed \\(kept\\)', 'cancelled \\(kept\\)', 'consumers', 'workers']) {
      assert.match(table.stdout, new RegExp(`^${row} +\\d+$`, 'm'), `the ${row} row`)
    }
    expectExit(await cli(['pause', ...flags]), 0)
    assert.equal(JSON.parse((await cli(['stats', '--json', ...flags])).stdout).paused, true)
    assert.deepStrictEqual(JSON.parse((await cli(['resume', '--json', ...flags])).stdout), { paused: false })
    assert.equal(JSON.parse((await cli([...flags, '--json', 'stats'])).stdout).paused, false, 'global flags before the command too')
  })

  test('workers: none on a queue no worker runs; one of this process listed (table and JSON) with its tasks in flight, counted by stats beside its consumer; gone once it stops', async () => {
    const { names, flags } = await existingQueue()
    const none = await cli(['workers', ...flags])
    expectExit(none, 0)
    assert.equal(none.stdout, `No workers running on queue ${names.streamName}.\n`)
    assert.deepStrictEqual(JSON.parse((await cli(['workers', '--json', ...flags])).stdout), [])
    assert.match((await cli(['stats', ...flags])).stdout, /^workers +0$/m)

    const worker = new Protoqueue<{ n: number }>({ ...names, options: { batchSize: 3 } })
    await worker.connect(server.url)
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const started = Date.now()
    await worker.process(async () => {
      await gate
      return { success: true }
    })
    try {
      await worker.enqueueBatch([{ data: { n: 1 } }, { data: { n: 2 } }])
      // Its record says what its handlers run as of its next beat (every 5 s).
      await eventually('a record with 2 tasks in flight', async () => (await worker.getWorkers())[0]?.inFlight === 2, 15_000)
      const listed = await cli(['workers', '--json', ...flags])
      expectExit(listed, 0)
      const workers: WorkerInfo[] = JSON.parse(listed.stdout)
      assert.equal(workers.length, 1, listed.stdout)
      const [info] = workers
      assert.match(info.id, /^[0-9a-f]{12}$/)
      assert.deepStrictEqual(
        [info.host, info.pid, info.kind, info.batchSize, info.inFlight, info.completed, info.failed, info.subjects],
        [hostname(), process.pid, 'tasks', 3, 2, 0, 0, undefined],
      )
      assert.ok(info.startedAt >= started - 1000 && info.seenAt >= info.startedAt, `startedAt ${info.startedAt}, seenAt ${info.seenAt}`)
      // As getWorkers() gives it: the same fields, no others.
      const [own] = await worker.getWorkers()
      assert.deepStrictEqual({ ...info, seenAt: 0 }, { ...own, seenAt: 0 })

      const table = await cli(['workers', ...flags])
      expectExit(table, 0)
      const rows = table.stdout.trim().split('\n')
      assert.equal(rows.length, 2, table.stdout)
      assert.match(rows[0], /^ID\s+HOST\s+PID\s+KIND\s+SINCE\s+IN FLIGHT\s+BATCH\s+COMPLETED\s+FAILED\s+LAST SEEN\s+SUBJECTS$/)
      const cells = rows[1].split(/\s+/)
      assert.match(cells[9], /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/, 'last seen: an ISO time')
      assert.deepStrictEqual(
        [...cells.slice(0, 9), cells[10]],
        [info.id, hostname(), String(process.pid), 'tasks', new Date(info.startedAt).toISOString(), '2', '3', '0', '0', '-'],
      )

      // Counted by stats, beside the consumer.
      const stats = JSON.parse((await cli(['stats', '--json', ...flags])).stdout)
      assert.deepStrictEqual([stats.workers, stats.consumers], [1, 1])
      assert.match((await cli(['stats', ...flags])).stdout, /^workers +1$/m)
    } finally {
      release()
      await worker.disconnect()
    }
    // Stopped: gone at once. Its durable consumer stays, and counts no worker.
    const gone = await cli(['workers', ...flags])
    expectExit(gone, 0)
    assert.equal(gone.stdout, `No workers running on queue ${names.streamName}.\n`)
    assert.deepStrictEqual(JSON.parse((await cli(['workers', '--json', ...flags])).stdout), [])
    const after = JSON.parse((await cli(['stats', '--json', ...flags])).stdout)
    assert.deepStrictEqual([after.workers, after.consumers], [0, 1])
    const table = (await cli(['stats', ...flags])).stdout
    assert.match(table, /^consumers +1$/m)
    assert.match(table, /^workers +0$/m)
  })

  test('metrics: the Prometheus text (parsed by Prometheus\' parser) and --json; the server\'s gauges, this process\'s counters at 0', async () => {
    const { flags, names } = await existingQueue()
    const producer = new Protoqueue(names)
    await producer.connect(server.url)
    await producer.enqueueBatch([{ data: 1 }, { data: 2 }, { data: 3 }])
    await producer.disconnect()
    const text = await cli(['metrics', ...flags])
    expectExit(text, 0)
    const families = parsePrometheus(text.stdout)
    const queue = { queue: names.streamName }
    assert.equal(sampleValue(families, 'protoqueue_tasks_pending', queue), 3)
    assert.equal(sampleValue(families, 'protoqueue_dead_letters', queue), 0)
    assert.equal(sampleValue(families, 'protoqueue_tasks_enqueued_total', queue), 0, 'counters are per process')
    const json = await cli(['metrics', '--json', ...flags])
    expectExit(json, 0)
    const pending = JSON.parse(json.stdout).find((f: { name: string }) => f.name === 'protoqueue_tasks_pending')
    assert.deepStrictEqual(pending.values, [{ metricName: 'protoqueue_tasks_pending', labels: queue, value: 3 }])
  })

  test('purge asks for --yes off a terminal (exit 2, nothing removed), and removes the waiting tasks with it', async () => {
    const { flags } = await existingQueue()
    await cli(['enqueue', '-', ...flags], { input: '1\n2\n3\n' })
    expectExit(await cli(['purge', ...flags]), 2)
    assert.equal(JSON.parse((await cli(['stats', '--json', ...flags])).stdout).messages, 3)
    const run = await cli(['purge', '--yes', '--json', ...flags])
    expectExit(run, 0)
    assert.deepStrictEqual(JSON.parse(run.stdout), { purged: 3 })
  })

  test('dlq list and show: a table, JSON, one letter by sequence or task id; an unknown one exits 1', async () => {
    const { queue, ids, flags } = await deadLetters(3)
    const listed = await cli(['dlq', 'list', '--json', ...flags])
    expectExit(listed, 0)
    const letters = JSON.parse(listed.stdout)
    assert.deepStrictEqual(letters.map((letter: { task: { id: string } }) => letter.task.id), ids)
    assert.equal(letters[0].reason, 'rejected')
    assert.deepStrictEqual(letters[0].task.data, { n: 0 })

    const table = await cli(['dlq', 'list', '--limit', '2', ...flags])
    expectExit(table, 0)
    const rows = table.stdout.trim().split('\n')
    assert.equal(rows.length, 3, 'a header and two letters')
    assert.match(rows[0], /SEQ\s+TASK ID\s+REASON\s+ATTEMPTS\s+FAILED AT\s+ERROR/)
    assert.ok(rows[1].includes(ids[0]) && rows[1].includes('smtp down second line'), rows[1])

    const bySequence = JSON.parse((await cli(['dlq', 'show', String(letters[1].sequence), '--json', ...flags])).stdout)
    assert.equal(bySequence.task.id, ids[1])
    const byId = await cli(['dlq', 'show', ids[2], ...flags])
    expectExit(byId, 0)
    assert.match(byId.stdout, /"n": 2/)
    expectExit(await cli(['dlq', 'show', '999999', ...flags]), 1)
    await queue.disconnect()
  })

  test('dlq show <task id> among many letters: a few requests more than by sequence, not one per letter', async () => {
    const count = 300
    const { names, flags } = queueFlags()
    const queue = new Protoqueue<{ n: number }>({ ...names, options: { batchSize: 32 } })
    await queue.connect(server.url)
    await queue.process(async () => ({ success: false, error: 'down', retry: false }))
    await queue.enqueueBatch(Array.from({ length: count }, (_, n) => ({ data: { n } })))
    await eventually('every task dead-lettered', async () => (await queue.getStats()).deadLettered === count, 60_000)
    const letters = await queue.getDeadLetters(count)
    const oldest = letters[0]
    const newest = letters[count - 1]
    // Every JetStream API request the CLI makes, seen by another client of the server.
    const watcher = await natsConnect({ servers: server.url })
    const seen: string[] = []
    const watching = watcher.subscribe('$JS.API.>', { callback: (_err, msg) => void seen.push(msg.subject) })
    await watcher.flush()
    const requestsOf = async (args: string[]) => {
      const before = seen.length
      const run = await cli([...args, '--json', ...flags])
      await watcher.flush()
      return { run, requests: seen.slice(before) }
    }
    const bySequence = await requestsOf(['dlq', 'show', String(newest.sequence)])
    expectExit(bySequence.run, 0)
    for (const wanted of [oldest, newest]) {
      const byId = await requestsOf(['dlq', 'show', wanted.task!.id])
      expectExit(byId.run, 0)
      assert.equal(JSON.parse(byId.run.stdout).sequence, wanted.sequence)
      // Reading every letter one by one took `count` requests more.
      assert.ok(byId.requests.length <= bySequence.requests.length + 10, `by id: ${byId.requests.length} requests (${byId.requests.join(' ')}); by sequence: ${bySequence.requests.length}`)
    }
    const missing = await requestsOf(['dlq', 'show', 'no-such-task'])
    expectExit(missing.run, 1)
    assert.ok(missing.requests.length <= bySequence.requests.length + 10, `${missing.requests.length} requests`)
    watching.unsubscribe()
    await watcher.close()
    await queue.disconnect()
  })

  test('dlq requeue and purge: --yes needed off a terminal, filters, counts as JSON', async () => {
    const { queue, ids, flags } = await deadLetters(4)
    const refused = await cli(['dlq', 'requeue', ...flags])
    expectExit(refused, 2)
    assert.match(refused.stderr, /--yes/)
    expectExit(await cli(['dlq', 'purge', ...flags]), 2)
    assert.equal((await queue.getStats()).deadLettered, 4, 'nothing done')

    const byId = await cli(['dlq', 'requeue', '--id', ids[3], '--yes', '--json', ...flags])
    expectExit(byId, 0)
    assert.deepStrictEqual(JSON.parse(byId.stdout), { requeued: 1 })
    const limited = await cli(['dlq', 'requeue', '--reason', 'rejected', '--limit', '2', '-y', '--json', ...flags])
    assert.deepStrictEqual(JSON.parse(limited.stdout), { requeued: 2 })
    assert.deepStrictEqual(JSON.parse((await cli(['dlq', 'purge', '--reason', 'retriesExhausted', '--yes', '--json', ...flags])).stdout), { removed: 0 })
    const purged = await cli(['dlq', 'purge', '--yes', ...flags])
    expectExit(purged, 0)
    assert.match(purged.stdout, /1/)
    const stats = await queue.getStats()
    assert.deepStrictEqual([stats.deadLettered, stats.messages], [0, 3])
    await queue.disconnect()
  })

  test('a requeue of many letters off a terminal prints no progress bar: no carriage returns or escape codes', async () => {
    const { queue, flags } = await deadLetters(3000)
    const run = await cli(['dlq', 'requeue', '--yes', ...flags])
    expectExit(run, 0)
    assert.match(run.stdout, /3000/)
    assert.ok(!/[\r\x1b]/.test(run.stderr + run.stdout), `control characters in ${JSON.stringify(run.stderr)}`)
    assert.equal((await queue.getStats()).messages, 3000)
    await queue.disconnect()
  })

  // util-linux `script` gives the CLI a terminal (stdin, stdout and stderr on one pty).
  const hasScript = process.platform === 'linux' && spawnSync('script', ['--version']).status === 0
  test('on a terminal: dlq requeue asks (n: exit 1, nothing done; y: done) and draws a progress bar', { skip: !hasScript && 'needs util-linux script' }, async () => {
    const { queue, flags } = await deadLetters(1500)
    const onTerminal = (answer: string) =>
      new Promise<Run>((resolve) => {
        const command = ['node', BIN, 'dlq', 'requeue', ...flags].map((arg) => `'${arg}'`).join(' ')
        const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
        let stdout = ''
        let answered = false
        child.stdout.on('data', (chunk) => {
          stdout += chunk
          if (!answered && /\[y\/N\]/.test(stdout)) {
            answered = true
            child.stdin.write(`${answer}\n`)
          }
        })
        child.once('close', (code) => resolve({ code, stdout, stderr: '' }))
      })
    const declined = await onTerminal('n')
    expectExit(declined, 1)
    assert.match(declined.stdout, /Requeue the tasks of all 1500 dead letters/)
    assert.equal((await queue.getStats()).deadLettered, 1500, 'nothing done')
    const accepted = await onTerminal('y')
    expectExit(accepted, 0)
    assert.match(accepted.stdout, /\r\x1b\[2K\[[#-]+\] \d+% /, 'a bar redrawn in place')
    assert.match(accepted.stdout, /Requeued 1500 tasks/)
    assert.equal((await queue.getStats()).messages, 1500)
    await queue.disconnect()
  })
})

/** A fresh queue the library made with `options` (the CLI never creates or changes a stream), and the flags naming it. */
async function queueWith(options: { schedules?: boolean; priorities?: boolean }, names = uniqueQueue('cli')) {
  const owner = new Protoqueue({ ...names, options })
  await owner.connect(server.url)
  return { owner, names, flags: ['--server', server.url, '--stream', names.streamName, '--subject', names.subject] }
}

describe('looking things up: queues, delayed, prioritised and recurring tasks', () => {
  test('queues: an empty server says so; a priorities queue is listed (stream, subject, dead letters, schedules, priorities) as a table and as JSON, with no --stream', () =>
    withServer(async (own) => {
      const empty = await cli(['queues', '--server', own.url])
      expectExit(empty, 0)
      assert.equal(empty.stdout, `No Protoqueue queues on ${own.url}.\n`)
      assert.deepStrictEqual(JSON.parse((await cli(['queues', '--json', '--server', own.url])).stdout), { server: own.url, queues: [] })

      const names = uniqueQueue('cli')
      const owner = new Protoqueue({ ...names, options: { priorities: true } })
      await owner.connect(own.url)
      await owner.disconnect()
      const table = await cli(['queues', '--server', own.url], { env: { PROTOQUEUE_STREAM: 'ignored' } })
      expectExit(table, 0)
      const rows = table.stdout.trim().split('\n')
      assert.equal(rows.length, 2, table.stdout)
      assert.match(rows[0], /^STREAM\s+SUBJECT\s+DEAD LETTERS\s+SCHEDULES\s+PRIORITIES$/)
      // Schedules: on by default for a stream the queue made.
      assert.deepStrictEqual(rows[1].split(/\s+/), [names.streamName, names.subject, `${names.streamName}_DLQ`, 'yes', 'yes'])
      const listing = JSON.parse((await cli(['--json', 'queues'], { env: { NATS_URL: own.url } })).stdout)
      assert.equal(listing.server, own.url)
      assert.equal(listing.queues.length, 1)
      const [queue] = listing.queues
      assert.deepStrictEqual(
        [queue.streamName, queue.subject, queue.deadLetterStream, queue.schedules, queue.priorities],
        [names.streamName, names.subject, `${names.streamName}_DLQ`, true, true],
      )
    }))

  test('queues: no server exits 3 with ERR_PQ_CONNECT; a --server URL with a token is refused (exit 2)', async () => {
    const url = `nats://127.0.0.1:${await freePort()}`
    const none = await cli(['queues', '--json', '--server', url, '--connect-timeout', '500'])
    expectExit(none, 3)
    assert.equal(JSON.parse(none.stderr).error.code, 'ERR_PQ_CONNECT')
    expectExit(await cli(['queues', '--server', `nats://${TOKEN}@127.0.0.1:${tokens.port}`]), 2)
  })

  test('enqueue --delay and --run-at (ISO 8601 or ms): counted as delayed; cancel removes one, then exits 1 for it and for an unknown id', async () => {
    const { owner, flags } = await queueWith({ schedules: true })
    const later = new Date(Date.now() + 3_600_000)
    const runs = await Promise.all([
      cli(['enqueue', '{"n":1}', '--delay', '600000', ...flags]),
      cli(['enqueue', '{"n":2}', '--run-at', later.toISOString(), ...flags]),
      cli(['enqueue', '{"n":3}', '--run-at', String(later.getTime()), ...flags]),
      cli(['enqueue', '-', '--delay', '600000', '--json', ...flags], { input: '4\n5\n' }),
    ])
    runs.forEach((run) => expectExit(run, 0))
    const stats = await owner.getStats()
    assert.deepStrictEqual([stats.delayed, stats.pending], [5, 0], 'every task waits for its time')

    const id = runs[0].stdout.trim()
    const cancelled = await cli(['cancel', id, '--json', ...flags])
    expectExit(cancelled, 0)
    assert.deepStrictEqual(JSON.parse(cancelled.stdout), { id, cancelled: true })
    assert.equal((await owner.getStats()).delayed, 4)
    const again = await cli(['cancel', id, ...flags])
    expectExit(again, 1)
    assert.match(again.stderr, /was not cancelled: it ended first, or nothing is known of it/)
    const unknown = await cli(['cancel', 'no-such-task', '--json', ...flags])
    expectExit(unknown, 1)
    assert.match(JSON.parse(unknown.stderr).error.message, /task no-such-task of queue .* was not cancelled/)
    const human = await cli(['cancel', runs[1].stdout.trim(), ...flags])
    expectExit(human, 0)
    assert.equal(human.stdout, `Cancelled task ${runs[1].stdout.trim()}.\n`)
    assert.equal((await owner.getStats()).delayed, 3)
    await owner.disconnect()
  })

  test('enqueue --priority, --id and --name: the task lands at its level with its id and name', async () => {
    const { owner, flags } = await queueWith({ priorities: true })
    const run = await cli(['enqueue', '{"urgent":true}', '--priority', '1', '--id', 'order-1', '--name', 'refund', ...flags])
    expectExit(run, 0)
    assert.equal(run.stdout, 'order-1\n')
    expectExit(await cli(['enqueue', '-', '--priority', '10', '--quiet', ...flags], { input: '1\n2\n' }), 0)
    const stats = await owner.getStats()
    assert.equal(stats.pending, 3)
    assert.deepStrictEqual(stats.pendingByPriority, [1, 0, 0, 0, 0, 0, 0, 0, 0, 2])
    const seen: Array<{ id: string; name?: string; data: unknown }> = []
    await owner.process(async (task) => {
      seen.push({ id: task.id, name: task.name, data: task.data })
      return { success: true }
    })
    await eventually('the three tasks', () => seen.length === 3)
    assert.deepStrictEqual(seen[0], { id: 'order-1', name: 'refund', data: { urgent: true } }, 'the most urgent first')
    await owner.disconnect()
  })

  test('enqueue --task-subject routes the task within a subject tree', async () => {
    const root = uniqueQueue('cli').subject
    const { owner, flags } = await queueWith({}, { streamName: uniqueQueue('cli').streamName, subject: `${root}.>` })
    expectExit(await cli(['enqueue', '"eu"', '--task-subject', `${root}.eu`, ...flags]), 0)
    expectExit(await cli(['enqueue', '"root"', ...flags]), 0)
    const seen: Array<{ data: unknown; subject?: string }> = []
    await owner.process(async (task) => {
      seen.push({ data: task.data, subject: task.subject })
      return { success: true }
    })
    await eventually('both tasks', () => seen.length === 2)
    assert.deepStrictEqual(
      seen.sort((a, b) => String(a.data).localeCompare(String(b.data))),
      [
        { data: 'eu', subject: `${root}.eu` },
        { data: 'root', subject: root },
      ],
    )
    await owner.disconnect()
  })

  test('enqueue --envelope takes the task fields (runAt as an ISO time), its own winning over the flags', async () => {
    const { owner, flags } = await queueWith({ schedules: true, priorities: true })
    const runAt = new Date(Date.now() + 3_600_000).toISOString()
    const lines = [
      { data: { n: 1 }, id: 'own-id', priority: 2, name: 'own', metadata: { m: 1 }, maxRetries: 0 },
      { data: { n: 2 }, runAt },
      { data: { n: 3 }, delay: null },
      { data: { n: 4 } },
    ]
    const run = await cli(['enqueue', '-', '--envelope', '--json', '--name', 'flag', '--priority', '9', '--delay', '600000', ...flags], {
      input: lines.map((line) => JSON.stringify(line)).join('\n'),
    })
    expectExit(run, 0)
    const { ids } = JSON.parse(run.stdout)
    assert.equal(ids[0], 'own-id')
    const stats = await owner.getStats()
    // n 1: its own priority, no time of its own: the flag's delay; n 2: its own runAt;
    // n 3: its own delay (none) wins over the flag's: pending at priority 9; n 4: the flags'.
    assert.deepStrictEqual([stats.delayed, stats.pending], [3, 1])
    assert.deepStrictEqual(stats.pendingByPriority, [0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    assert.equal(await owner.cancel('own-id'), true, 'the first line was delayed, under its own id')
    await owner.disconnect()
  })

  test('enqueue refuses bad flags and envelopes with exit 2 (nothing sent), and the library\'s errors exit 1 with its code', async () => {
    const { owner, flags } = await queueWith({ schedules: true, priorities: true })
    const { flags: plain } = await existingQueue({ schedules: false })
    const usageErrors: Array<[string[], string?, RegExp?]> = [
      [['--priority', '0']],
      [['--priority', '11']],
      [['--priority', 'x']],
      [['--priority', '2.5']],
      [['--delay', '-1']],
      [['--delay', '1.5']],
      [['--delay', 'soon']],
      [['--run-at', 'yesterday']],
      [['--run-at', '2030-02-30']],
      [['--run-at', 'Jan 1 2030']],
      [['--delay', '5', '--run-at', '2030-01-01T00:00:00Z'], undefined, /cannot be used with/],
      [['--envelope'], '{"data":1,"priorty":2}', /priorty is not a task field/],
      [['--envelope'], '{"data":1,"runAt":"tomorrow"}', /runAt "tomorrow" is not an ISO 8601 time/],
      [['--envelope'], '{"priority":1}', /"data"/],
    ]
    const runs = await Promise.all(usageErrors.map(([args, input]) => cli(['enqueue', ...(input === undefined ? ['1'] : ['-']), ...args, ...flags], { input })))
    runs.forEach((run, i) => {
      assert.equal(run.code, 2, `${JSON.stringify(usageErrors[i])}: exit ${run.code}\n${run.stderr}`)
      assert.equal(run.stdout, '')
      const why = usageErrors[i][2]
      if (why) assert.match(run.stderr, why)
    })
    assert.match(runs[11].stderr, /line 1/, 'the envelope error names the line')

    const failures: Array<[string[], string, string?]> = [
      [['enqueue', '1', '--priority', '3', ...plain], 'ERR_PQ_INVALID_TASK'],
      [['enqueue', '1', '--delay', '1000', ...plain], 'ERR_PQ_SCHEDULES_OFF'],
      [['enqueue', '1', '--delay', String(11 * 366 * 86_400_000), ...flags], 'ERR_PQ_INVALID_TASK'],
      [['enqueue', '-', '--envelope', ...flags], 'ERR_PQ_INVALID_TASK', '{"data":1,"priority":11}'],
      [['enqueue', '-', '--envelope', ...flags], 'ERR_PQ_INVALID_TASK', '{"data":1,"delay":5,"runAt":0}'],
      [['enqueue', '1', '--task-subject', 'elsewhere.x', ...flags], 'ERR_PQ_INVALID_TASK'],
    ]
    const failed = await Promise.all(failures.map(([args, , input]) => cli(['--json', ...args], { input })))
    failed.forEach((run, i) => {
      assert.equal(run.code, 1, `${JSON.stringify(failures[i])}: exit ${run.code}\n${run.stderr}`)
      assert.equal(JSON.parse(run.stderr).error.code, failures[i][1], run.stderr)
    })
    assert.equal((await owner.getStats()).messages, 0, 'nothing was enqueued')
    assert.equal(JSON.parse((await cli(['stats', '--json', ...plain])).stdout).messages, 0)
    await owner.disconnect()
  })

  test('schedules lists recurring tasks (cron with its time zone, interval) as a table and JSON; unschedule removes one, an unknown name exits 1', async () => {
    const { owner, flags } = await queueWith({ schedules: true })
    const none = await cli(['schedules', ...flags])
    expectExit(none, 0)
    assert.equal(none.stdout, 'No recurring tasks.\n')
    assert.deepStrictEqual(JSON.parse((await cli(['schedules', '--json', ...flags])).stdout), [])

    await owner.schedule('nightly', { cron: '0 0 3 * * *', timeZone: 'Europe/Paris' }, { data: { report: 'sales', note: 'x'.repeat(200) }, name: 'report' })
    await owner.schedule('tick', { every: 60_000 }, { data: 'ping' })
    const table = await cli(['schedules', ...flags])
    expectExit(table, 0)
    const rows = table.stdout.trim().split('\n')
    assert.equal(rows.length, 3, table.stdout)
    assert.match(rows[0], /^NAME\s+SCHEDULE\s+TIME ZONE\s+NEXT RUN\s+DATA$/)
    assert.match(rows[1], /^nightly\s+cron 0 0 3 \* \* \*\s+Europe\/Paris\s+\S+\s+\{"report":"sales","note":"x+…$/)
    assert.ok(rows[1].length < 160, 'long data is cut')
    assert.match(rows[2], /^tick\s+every 60000 ms\s+-\s+\S+\s+"ping"$/)
    const listed = JSON.parse((await cli(['schedules', '--json', ...flags])).stdout)
    assert.deepStrictEqual(
      listed.map((schedule: { name: string; spec: unknown; data: unknown; taskName?: string }) => [schedule.name, schedule.spec, schedule.taskName]),
      [
        ['nightly', { cron: '0 0 3 * * *', timeZone: 'Europe/Paris' }, 'report'],
        ['tick', { every: 60_000 }, undefined],
      ],
    )
    assert.equal(listed[1].data, 'ping')

    const removed = await cli(['unschedule', 'tick', '--json', ...flags])
    expectExit(removed, 0)
    assert.deepStrictEqual(JSON.parse(removed.stdout), { name: 'tick', unscheduled: true })
    assert.deepStrictEqual((await owner.getSchedules()).map((schedule) => schedule.name), ['nightly'])
    const again = await cli(['unschedule', 'tick', ...flags])
    expectExit(again, 1)
    assert.match(again.stderr, /no recurring task named tick/)
    const human = await cli(['unschedule', 'nightly', ...flags])
    expectExit(human, 0)
    assert.equal(human.stdout, 'Removed recurring task nightly.\n')
    assert.equal((await owner.getStats()).recurring, 0)
    await owner.disconnect()
  })

  test('schedules and unschedule on a queue without schedules exit 1 with ERR_PQ_SCHEDULES_OFF, cancel of an unknown task exits 1; a missing name or id is a usage error', async () => {
    const { flags } = await existingQueue({ schedules: false })
    const cancelled = await cli(['cancel', 'x', ...flags])
    expectExit(cancelled, 1)
    assert.match(cancelled.stderr, /was not cancelled: it ended first, or nothing is known of it/)
    const runs = await Promise.all([['schedules'], ['unschedule', 'x']].map((args) => cli([...args, '--json', ...flags])))
    for (const run of runs) {
      expectExit(run, 1)
      assert.equal(JSON.parse(run.stderr).error.code, 'ERR_PQ_SCHEDULES_OFF')
    }
    for (const args of [['unschedule'], ['cancel'], ['schedules', 'extra'], ['queues', 'extra']]) expectExit(await cli([...args, ...flags]), 2)
  })
})

describe('task results: task and wait', () => {
  /** A queue whose worker (in this process) keeps results: `{ n: 1 }` for a task, a rejection for `{ reject: true }`. */
  async function resultsQueue() {
    const { names, flags } = queueFlags()
    const worker = new Protoqueue<{ reject?: boolean }>({ ...names, options: { results: { ttl: 60_000 } } })
    await worker.connect(server.url)
    await worker.process(async (task) => (task.data.reject ? { success: false, retry: false, error: 'declined' } : { success: true, result: { n: 1 } }))
    return { worker, flags }
  }

  test('a completed task: task shows it with its result (--json as getTask gives it); wait prints the result', async () => {
    const { worker, flags } = await resultsQueue()
    try {
      const id = await worker.enqueue({ data: {} })
      const waited = await cli(['wait', id, ...flags])
      expectExit(waited, 0)
      assert.deepStrictEqual(JSON.parse(waited.stdout), { n: 1 })
      const waitedJson = await cli(['wait', id, '--json', ...flags])
      expectExit(waitedJson, 0)
      assert.deepStrictEqual(JSON.parse(waitedJson.stdout), { id, result: { n: 1 } })

      const shown = await cli(['task', id, ...flags])
      expectExit(shown, 0)
      const rows = Object.fromEntries(shown.stdout.trim().split('\n').map((line) => line.split(/ {2,}/) as [string, string]))
      assert.equal(rows.id, id)
      assert.equal(rows.state, 'completed')
      assert.equal(rows.attempts, '1')
      assert.equal(rows.result, '{"n":1}')
      const info = (await worker.getTask(id))!
      assert.equal(rows.finished, new Date(info.finishedAt!).toISOString())
      for (const absent of ['run at', 'error', 'reason', 'result error']) assert.ok(!(absent in rows), `no ${absent} in\n${shown.stdout}`)

      const exact = await cli(['task', id, '--json', ...flags])
      expectExit(exact, 0)
      assert.deepStrictEqual(JSON.parse(exact.stdout), info)
    } finally {
      await worker.disconnect()
    }
  })

  test('a rejected task: wait exits 1 with ERR_PQ_TASK_FAILED and its error; task shows it dead-lettered', async () => {
    const { worker, flags } = await resultsQueue()
    try {
      const id = await worker.enqueue({ data: { reject: true } })
      const failed = await cli(['wait', id, '--json', ...flags])
      expectExit(failed, 1)
      assert.equal(failed.stdout, '')
      const { error } = JSON.parse(failed.stderr)
      assert.equal(error.code, 'ERR_PQ_TASK_FAILED')
      assert.match(error.message, /rejected\): declined/)
      const human = await cli(['wait', id, ...flags])
      expectExit(human, 1)
      assert.match(human.stderr, /^protoqueue: ERR_PQ_TASK_FAILED: .*declined\n$/)
      const shown = await cli(['task', id, ...flags])
      expectExit(shown, 0)
      assert.match(shown.stdout, /^state +deadLettered$/m)
      assert.match(shown.stdout, /^error +declined$/m)
      assert.match(shown.stdout, /^reason +rejected$/m)
    } finally {
      await worker.disconnect()
    }
  })

  test('wait on a task no worker runs times out (exit 1, ERR_PQ_TIMEOUT); task of an unknown id exits 1; a delayed task shows when it runs; a missing id is a usage error', async () => {
    // The queue keeps results (its history stream exists) but no worker runs.
    const { names, flags } = await existingQueue({ results: { ttl: 60_000 } })
    const owner = new Protoqueue(names)
    await owner.connect(server.url)
    try {
      const id = await owner.enqueue({ data: 1 })
      const started = Date.now()
      const timedOut = await cli(['wait', id, '--timeout', '300', '--json', ...flags])
      expectExit(timedOut, 1)
      assert.equal(JSON.parse(timedOut.stderr).error.code, 'ERR_PQ_TIMEOUT')
      assert.ok(Date.now() - started >= 300)

      const unknown = await cli(['task', 'no-such-task', '--json', ...flags])
      expectExit(unknown, 1)
      const { error } = JSON.parse(unknown.stderr)
      assert.equal(error.code, 'ERR_PQ_CLI_FAILED')
      assert.match(error.message, /no task no-such-task/)
      const unknownHuman = await cli(['task', 'no-such-task', ...flags])
      expectExit(unknownHuman, 1)
      assert.equal(unknownHuman.stderr.trim().split('\n').length, 1, unknownHuman.stderr)

      const runAt = Date.now() + 3_600_000
      const delayed = await owner.enqueue({ data: 2, delay: 3_600_000 })
      const shown = await cli(['task', delayed, ...flags])
      expectExit(shown, 0)
      assert.match(shown.stdout, /^state +delayed$/m)
      assert.match(shown.stdout, /^attempts +0$/m)
      const at = /^run at +(\S+)$/m.exec(shown.stdout)
      assert.ok(at, shown.stdout)
      assert.ok(Math.abs(Date.parse(at[1]) - runAt) < 60_000, at[1])
      assert.equal(JSON.parse((await cli(['task', delayed, '--json', ...flags])).stdout).state, 'delayed')

      for (const args of [['task'], ['wait'], ['wait', id, '--timeout', 'soon'], ['task', id, 'extra']]) expectExit(await cli([...args, ...flags]), 2)
    } finally {
      await owner.disconnect()
    }
  })

  test('task <id> of a waiting task (with its priority) and of a running one (its attempt, start and latest progress, asked of the live worker)', async () => {
    const { owner, flags } = await queueWith({ priorities: true })
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    try {
      const waiting = await owner.enqueue({ data: { n: 1 }, priority: 2 })
      const shown = await cli(['task', waiting, ...flags])
      expectExit(shown, 0)
      const rows = Object.fromEntries(shown.stdout.trim().split('\n').map((line) => line.split(/ {2,}/) as [string, string]))
      const info = (await owner.getTask(waiting))!
      assert.deepStrictEqual(rows, { id: waiting, state: 'waiting', attempts: '0', priority: '2', enqueued: new Date(info.enqueuedAt!).toISOString(), data: '{"n":1}' })
      assert.deepStrictEqual(JSON.parse((await cli(['task', waiting, '--json', ...flags])).stdout), info)

      const started = deferred()
      await owner.process(async (task) => {
        await task.progress({ done: 3, of: 10 })
        started.resolve()
        await gate
        return { success: true }
      })
      await started.promise
      // Its progress reaches the worker's answer once the handler's call returned.
      await eventually('the running task with its progress', async () => (await owner.getTask(waiting))?.progress !== undefined)
      const running = await cli(['task', waiting, ...flags])
      expectExit(running, 0)
      const now = Object.fromEntries(running.stdout.trim().split('\n').map((line) => line.split(/ {2,}/) as [string, string]))
      assert.equal(now.state, 'running')
      assert.equal(now.attempts, '1')
      assert.equal(now.priority, '2')
      assert.equal(now.progress, '{"done":3,"of":10}')
      assert.match(now.started, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)
      for (const absent of ['finished', 'run at', 'result', 'error']) assert.ok(!(absent in now), `no ${absent} in\n${running.stdout}`)
      const exact = JSON.parse((await cli(['task', waiting, '--json', ...flags])).stdout)
      assert.deepStrictEqual([exact.state, exact.attempts, exact.progress], ['running', 1, { done: 3, of: 10 }])

      const listed = await cli(['tasks', '--state', 'running', ...flags])
      expectExit(listed, 0)
      const lines = listed.stdout.trim().split('\n')
      assert.equal(lines.length, 2, listed.stdout)
      assert.match(lines[0], /^ID\s+STATE\s+ATTEMPTS\s+(PRIORITY\s+)?ENQUEUED\s+STARTED\s+PROGRESS$/)
      assert.ok(lines[1].startsWith(`${waiting}  running`), lines[1])
      assert.ok(lines[1].endsWith(`${now.started}  {"done":3,"of":10}`), lines[1])
    } finally {
      release()
      await owner.disconnect()
    }
  })

  test('wait on a queue whose workers never kept results (no history stream) exits 1 saying so', async () => {
    const { names, flags } = await existingQueue()
    const owner = new Protoqueue(names)
    await owner.connect(server.url)
    try {
      const id = await owner.enqueue({ data: 1 })
      const run = await cli(['wait', id, '--timeout', '300', ...flags])
      expectExit(run, 1)
      assert.match(run.stderr, /keeps no task outcomes .*options\.results/)
      const asJson = await cli(['wait', id, '--timeout', '300', '--json', ...flags])
      expectExit(asJson, 1)
      assert.equal(JSON.parse(asJson.stderr).error.code, 'ERR_PQ_RESULTS_OFF')
    } finally {
      await owner.disconnect()
    }
  })
})

describe('listing tasks by state: tasks', () => {
  /** The cells of a table's rows (header first), split at runs of two spaces or more. */
  const cellsOf = (stdout: string) => stdout.trim().split('\n').map((line) => line.split(/ {2,}/))
  /** The `--cursor` a page printed for the next one, if any. */
  const nextCursor = (stdout: string) => /^More may follow: add --cursor (\S+) for the next page\.$/m.exec(stdout)?.[1]

  test('waiting: a table newest first, a page at a time; each page\'s --cursor leads to the next and the pages join up; --json prints each page as getTasks gives it', async () => {
    const { names, flags } = await existingQueue()
    const owner = new Protoqueue(names)
    await owner.connect(server.url)
    try {
      const none = await cli(['tasks', '--state', 'waiting', ...flags])
      expectExit(none, 0)
      assert.equal(none.stdout, `No waiting tasks on queue ${names.streamName}.\n`)
      assert.deepStrictEqual(JSON.parse((await cli(['tasks', '--state', 'waiting', '--json', ...flags])).stdout), { tasks: [] })

      // One at a time: each is stored after the one before, so newest first is their reverse.
      const ids: string[] = []
      for (let n = 0; n < 5; n++) ids.push(await owner.enqueue({ data: { n } }))
      const seen: string[] = []
      let cursor: string | undefined
      for (let page = 0; ; page++) {
        assert.ok(page < 5, 'at most 3 pages of 2, and an empty one')
        const run = await cli(['tasks', '--state', 'waiting', '--limit', '2', ...(cursor === undefined ? [] : ['--cursor', cursor]), ...flags])
        expectExit(run, 0)
        cursor = nextCursor(run.stdout)
        const lines = run.stdout.trim().split('\n')
        if (lines[0] === 'No more waiting tasks.') {
          assert.ok(page > 0, 'only after a page that said more may follow')
        } else {
          const rows = cellsOf(lines.slice(0, cursor === undefined ? undefined : -1).join('\n'))
          assert.deepStrictEqual(rows[0], ['ID', 'STATE', 'ATTEMPTS', 'ENQUEUED'])
          assert.ok(rows.length >= 2 && rows.length <= 3, run.stdout)
          for (const [id, state, attempts, enqueued] of rows.slice(1)) {
            assert.deepStrictEqual([state, attempts], ['waiting', '0'])
            assert.match(enqueued, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)
            seen.push(id)
          }
        }
        if (cursor === undefined) break
      }
      assert.deepStrictEqual(seen, [...ids].reverse())

      // --json: the pages as the library gives them, cursors included, and they lead on the same way.
      const pages: unknown[] = []
      let jsonCursor: string | undefined
      do {
        const run = await cli(['tasks', '--state', 'waiting', '--limit', '2', '--json', ...(jsonCursor === undefined ? [] : ['--cursor', jsonCursor]), ...flags])
        expectExit(run, 0)
        const page = JSON.parse(run.stdout)
        assert.deepStrictEqual(page, await owner.getTasks({ state: 'waiting', limit: 2, ...(jsonCursor === undefined ? {} : { cursor: jsonCursor }) }))
        assert.deepStrictEqual(Object.keys(page).sort(), page.cursor === undefined ? ['tasks'] : ['cursor', 'tasks'])
        pages.push(...page.tasks)
        jsonCursor = page.cursor
      } while (jsonCursor !== undefined)
      assert.deepStrictEqual(pages, (await owner.getTasks({ state: 'waiting' })).tasks)
      assert.deepStrictEqual(
        pages.map((task) => (task as { id: string }).id),
        [...ids].reverse(),
      )
    } finally {
      await owner.disconnect()
    }
  })

  test('delayed: when each is due (RUN AT); a priority column on a queue with priorities', async () => {
    const { owner, flags } = await queueWith({ schedules: true, priorities: true })
    try {
      const runAt = Date.now() + 3_600_000
      const delayed = await owner.enqueue({ data: 'later', delay: 3_600_000 })
      const listed = await cli(['tasks', '--state', 'delayed', ...flags])
      expectExit(listed, 0)
      const rows = cellsOf(listed.stdout)
      assert.deepStrictEqual(rows[0], ['ID', 'STATE', 'ATTEMPTS', 'ENQUEUED', 'RUN AT'])
      assert.equal(rows.length, 2, listed.stdout)
      assert.deepStrictEqual(rows[1].slice(0, 3), [delayed, 'delayed', '0'])
      assert.ok(Math.abs(Date.parse(rows[1][4]) - runAt) < 60_000, rows[1][4])
      assert.equal(nextCursor(listed.stdout), undefined)
      assert.deepStrictEqual(JSON.parse((await cli(['tasks', '--state', 'delayed', '--json', ...flags])).stdout), await owner.getTasks({ state: 'delayed' }))

      const urgent = await owner.enqueue({ data: 'now', priority: 1 })
      const waiting = cellsOf((await cli(['tasks', '--state', 'waiting', ...flags])).stdout)
      assert.deepStrictEqual(waiting[0], ['ID', 'STATE', 'ATTEMPTS', 'PRIORITY', 'ENQUEUED'])
      assert.deepStrictEqual(waiting[1].slice(0, 4), [urgent, 'waiting', '0', '1'])
    } finally {
      await owner.disconnect()
    }
  })

  test('completed and failed: the records a worker with keepCompleted and keepFailed keeps (results cut, errors on one line), counted by stats; none kept says why', async () => {
    const { names, flags } = await existingQueue()
    const worker = new Protoqueue<{ n: number; reject?: boolean }>({ ...names, options: { keepCompleted: true, keepFailed: true } })
    await worker.connect(server.url)
    try {
      await worker.process(async (task) =>
        task.data.reject ? { success: false, retry: false, error: 'declined\nsecond line' } : { success: true, result: { n: task.data.n, note: 'x'.repeat(200) } },
      )
      const ids = await worker.enqueueBatch([{ data: { n: 1 } }, { data: { n: 2 } }, { data: { n: 3, reject: true } }])
      await eventually('2 completed and 1 failed, kept', async () => {
        const stats = await worker.getStats()
        return stats.completed === 2 && stats.failed === 1
      })

      const completed = await cli(['tasks', '--state', 'completed', ...flags])
      expectExit(completed, 0)
      const rows = cellsOf(completed.stdout)
      assert.deepStrictEqual(rows[0], ['ID', 'STATE', 'ATTEMPTS', 'ENQUEUED', 'FINISHED', 'RESULT'])
      const page = await worker.getTasks({ state: 'completed' })
      assert.deepStrictEqual(
        rows.slice(1).map((row) => row.slice(0, 5)),
        page.tasks.map((task) => [task.id, 'completed', '1', new Date(task.enqueuedAt!).toISOString(), new Date(task.finishedAt!).toISOString()]),
      )
      assert.deepStrictEqual(page.tasks.map((task) => task.id).sort(), ids.slice(0, 2).sort())
      for (const row of rows.slice(1)) {
        assert.match(row[5], /^\{"n":[12],"note":"x+…$/)
        assert.ok(row[5].length <= 60, row[5])
      }
      assert.deepStrictEqual(JSON.parse((await cli(['tasks', '--state', 'completed', '--json', ...flags])).stdout), page)

      for (const state of ['failed', 'deadLettered']) {
        const failed = await cli(['tasks', '--state', state, ...flags])
        expectExit(failed, 0)
        const cells = cellsOf(failed.stdout)
        assert.deepStrictEqual(cells[0], ['ID', 'STATE', 'ATTEMPTS', 'ENQUEUED', 'FINISHED', 'REASON', 'ERROR'])
        assert.equal(cells.length, 2, failed.stdout)
        assert.deepStrictEqual([...cells[1].slice(0, 3), ...cells[1].slice(5)], [ids[2], 'deadLettered', '1', 'rejected', 'declined second line'])
      }

      const stats = (await cli(['stats', ...flags])).stdout
      assert.match(stats, /^completed \(kept\) +2$/m)
      assert.match(stats, /^failed \(kept\) +1$/m)
      assert.match(stats, /^cancelled \(kept\) +0$/m)
      const counted = JSON.parse((await cli(['stats', '--json', ...flags])).stdout)
      assert.deepStrictEqual([counted.completed, counted.failed, counted.cancelled], [2, 1, 0])

      const cancelled = await cli(['tasks', '--state', 'cancelled', ...flags])
      expectExit(cancelled, 0)
      assert.equal(cancelled.stdout, `No cancelled tasks kept on queue ${names.streamName} (its workers keep them with options.keepFailed or options.results).\n`)
    } finally {
      await worker.disconnect()
    }
  })

  test('a bad or missing --state, a --limit out of 1..1000 or not a whole number, and a cursor no page gave exit 2', async () => {
    const { flags } = await existingQueue()
    const bad = [
      ['tasks'],
      ['tasks', '--state', 'bogus'],
      ['tasks', '--state', 'Waiting'],
      ['tasks', '--state'],
      ['tasks', '--state', 'waiting', '--limit', '0'],
      ['tasks', '--state', 'waiting', '--limit', '1001'],
      ['tasks', '--state', 'waiting', '--limit', 'ten'],
      ['tasks', '--state', 'waiting', '--limit', '2.5'],
      ['tasks', '--state', 'waiting', '--limit', '-1'],
      ['tasks', '--state', 'waiting', '--cursor', 'not-a-cursor'],
      ['tasks', 'extra', '--state', 'waiting'],
    ]
    const runs = await Promise.all(bad.map((args) => cli([...args, ...flags])))
    runs.forEach((run, i) => {
      assert.equal(run.code, 2, `${JSON.stringify(bad[i])}: exit ${run.code}\n${run.stderr}`)
      assert.equal(run.stdout, '')
      assert.ok(run.stderr.length > 0, `${JSON.stringify(bad[i])} says why on stderr`)
    })
    assert.match(runs[1].stderr, /waiting, delayed, running, retrying, completed, failed, deadLettered, cancelled/, 'the choices are listed')
    const cursor = await cli(['tasks', '--state', 'waiting', '--cursor', 'not-a-cursor', '--json', ...flags])
    expectExit(cursor, 2)
    assert.equal(JSON.parse(cursor.stderr).error.code, 'ERR_PQ_INVALID_CONFIG')
    for (const limit of ['1', '1000']) expectExit(await cli(['tasks', '--state', 'waiting', '--limit', limit, ...flags]), 0)
  })
})

describe('hostile text', () => {
  // What a handler's error (or a producer's id, data, metadata) holds reaches the operator's
  // terminal only escaped: an OSC 52 clipboard write, a screen clear, an 8-bit CSI, DEL, a
  // right-to-left override.
  const HOSTILE = '\x1b]52;c;aGVsbG8=\x07 then \x1b[2J csi \u009b31m del \x7f rtl \u202egnp.exe'
  /** Raw control characters, other than the newlines of the CLI's own layout. */
  const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/

  test('dlq list and show print control characters of errors, ids, data and metadata escaped; --json keeps them exact', async () => {
    const { names, flags } = queueFlags()
    const queue = new Protoqueue({ ...names, options: { maxRetries: 0 } })
    await queue.connect(server.url)
    await queue.process(async () => {
      throw new Error(HOSTILE)
    })
    const id = `order-\u202e-${names.streamName}`
    await queue.enqueue({ data: { note: HOSTILE }, metadata: { note: HOSTILE }, id })
    await eventually('the task dead-lettered', async () => (await queue.getStats()).deadLettered === 1, 30_000)

    const listed = await cli(['dlq', 'list', ...flags])
    expectExit(listed, 0)
    assert.ok(!RAW.test(listed.stdout), `raw control characters in ${JSON.stringify(listed.stdout)}`)
    assert.ok(listed.stdout.includes('\\u001b]52;c;aGVsbG8=\\u0007'), listed.stdout)
    assert.ok(listed.stdout.includes('order-\\u202e-'), listed.stdout)

    for (const wanted of [id, String(JSON.parse((await cli(['dlq', 'list', '--json', ...flags])).stdout)[0].sequence)]) {
      const shown = await cli(['dlq', 'show', wanted, ...flags])
      expectExit(shown, 0)
      assert.ok(!RAW.test(shown.stdout), `raw control characters in ${JSON.stringify(shown.stdout)}`)
      for (const escaped of ['\\u001b]52;c;aGVsbG8=\\u0007', '\\u001b[2J', '\\u009b31m', '\\u007f', '\\u202egnp.exe', 'order-\\u202e-']) {
        assert.ok(shown.stdout.includes(escaped), `${escaped} in\n${shown.stdout}`)
      }
    }

    const exact = await cli(['dlq', 'show', id, '--json', ...flags])
    expectExit(exact, 0)
    const letter = JSON.parse(exact.stdout)
    assert.ok(letter.error.includes(HOSTILE))
    assert.equal(letter.task.id, id)
    assert.deepStrictEqual([letter.task.data, letter.task.metadata.note], [{ note: HOSTILE }, HOSTILE])

    // An error message naming what the operator asked for: escaped on stderr, exact in --json.
    const missing = await cli(['dlq', 'show', 'nope-\x1b[2J', ...flags])
    expectExit(missing, 1)
    assert.ok(!RAW.test(missing.stderr), `raw control characters in ${JSON.stringify(missing.stderr)}`)
    assert.ok(missing.stderr.includes('nope-\\u001b[2J'), missing.stderr)
    const missingJson = await cli(['dlq', 'show', 'nope-\x1b[2J', '--json', ...flags])
    expectExit(missingJson, 1)
    assert.ok(JSON.parse(missingJson.stderr).error.message.includes('nope-\x1b[2J'))
    await queue.disconnect()
  })

  test('workers print what a worker record says (id, host, kind, subjects) escaped, one line each; --json keeps it exact', async () => {
    const { names, flags } = await existingQueue()
    // A worker makes the queue's workers stream; any client allowed to write there can add a record.
    const worker = new Protoqueue(names)
    await worker.connect(server.url)
    await worker.process(async () => ({ success: true }))
    const nc = await natsConnect({ servers: server.url })
    try {
      const record: WorkerInfo = {
        id: 'fake-\u202e-id',
        host: `host\nsecond line ${HOSTILE}`,
        pid: 4242,
        kind: `tasks ${HOSTILE}` as WorkerInfo['kind'],
        subjects: [`${names.subject}.${HOSTILE}`],
        startedAt: Date.now(),
        seenAt: Date.now(),
        batchSize: 1,
        inFlight: 0,
        completed: 0,
        failed: 0,
        version: `9.9.9 ${HOSTILE}`,
      }
      await jetstream(nc).publish(`protoqueue.workers.${names.streamName}.0123456789ab`, JSON.stringify(record))

      const listed = await cli(['workers', ...flags])
      expectExit(listed, 0)
      assert.ok(!RAW.test(listed.stdout), `raw control characters in ${JSON.stringify(listed.stdout)}`)
      assert.equal(listed.stdout.trim().split('\n').length, 3, `a header, the worker and the record:\n${listed.stdout}`)
      for (const escaped of ['host\\nsecond line', '\\u001b]52;c;aGVsbG8=\\u0007', '\\u001b[2J', '\\u009b31m', '\\u007f', '\\u202egnp.exe', 'fake-\\u202e-id']) {
        assert.ok(listed.stdout.includes(escaped), `${escaped} in\n${listed.stdout}`)
      }
      const exact: WorkerInfo[] = JSON.parse((await cli(['workers', '--json', ...flags])).stdout)
      assert.deepStrictEqual(exact.find((w) => w.pid === 4242), record)
      assert.ok(exact.some((w) => w.pid === process.pid))
    } finally {
      await nc.close()
      await worker.disconnect()
    }
  })

  test('tasks and task print a retrying task\'s error escaped, with when it may run again; --json keeps it exact', async () => {
    const { names, flags } = await existingQueue()
    // Its next attempt an hour away: it stays retrying while the test looks.
    const worker = new Protoqueue({ ...names, options: { retryDelay: 3_600_000 } })
    await worker.connect(server.url)
    try {
      await worker.process(async () => {
        throw new Error(HOSTILE)
      })
      const id = await worker.enqueue({ data: 1 })
      const info = await eventually('the task retrying', async () => {
        const task = await worker.getTask(id)
        return task?.state === 'retrying' ? task : undefined
      })
      const listed = await cli(['tasks', '--state', 'retrying', ...flags])
      expectExit(listed, 0)
      assert.ok(!RAW.test(listed.stdout), `raw control characters in ${JSON.stringify(listed.stdout)}`)
      const rows = listed.stdout.trim().split('\n')
      assert.equal(rows.length, 2, listed.stdout)
      assert.match(rows[0], /^ID\s+STATE\s+ATTEMPTS\s+ENQUEUED\s+RUN AT\s+ERROR$/)
      assert.ok(rows[1].startsWith(`${id}  retrying  1 `), rows[1])
      assert.ok(rows[1].includes(`  ${new Date(info.runAt!).toISOString()}  `), rows[1])
      assert.ok(rows[1].includes('\\u001b]52;c;aGVsbG8=\\u0007'), rows[1])

      const shown = await cli(['task', id, ...flags])
      expectExit(shown, 0)
      assert.ok(!RAW.test(shown.stdout), `raw control characters in ${JSON.stringify(shown.stdout)}`)
      assert.match(shown.stdout, /^state +retrying$/m)
      assert.match(shown.stdout, new RegExp(`^run at +${new Date(info.runAt!).toISOString().replace(/\./g, '\\.')}$`, 'm'))
      for (const escaped of ['\\u001b[2J', '\\u009b31m', '\\u007f', '\\u202egnp.exe']) assert.ok(shown.stdout.includes(escaped), `${escaped} in\n${shown.stdout}`)

      const exact = JSON.parse((await cli(['tasks', '--state', 'retrying', '--json', ...flags])).stdout)
      assert.ok(exact.tasks[0].error.includes(HOSTILE))
    } finally {
      await worker.disconnect()
    }
  })

  test('schedules print the data of recurring tasks escaped; cancel and unschedule of a hostile name say so escaped', async () => {
    const { owner, flags } = await queueWith({ schedules: true })
    await owner.schedule('hostile', { every: 60_000 }, { data: { note: HOSTILE } })
    const listed = await cli(['schedules', ...flags])
    expectExit(listed, 0)
    assert.ok(!RAW.test(listed.stdout), `raw control characters in ${JSON.stringify(listed.stdout)}`)
    assert.ok(listed.stdout.includes('\\u001b'), listed.stdout)
    assert.equal(JSON.parse((await cli(['schedules', '--json', ...flags])).stdout)[0].data.note, HOSTILE)
    // A right-to-left override is a valid id and name: not found (exit 1), said escaped. With an
    // escape code the library refuses them (a task id: ERR_PQ_INVALID_TASK, exit 1; a name:
    // ERR_PQ_INVALID_CONFIG, a usage error).
    const cases: Array<[string[], number, string]> = [
      [['cancel', 'id-\u202e-x'], 1, 'id-\\u202e-x'],
      [['unschedule', 'n-\u202e-x'], 1, 'n-\\u202e-x'],
      [['cancel', 'id-\x1b[2J'], 1, 'ERR_PQ_INVALID_TASK'],
      [['unschedule', 'n-\x1b[2J'], 2, 'ERR_PQ_INVALID_CONFIG'],
    ]
    for (const [args, code, said] of cases) {
      const run = await cli([...args, ...flags])
      expectExit(run, code)
      assert.ok(run.stderr.includes(said), run.stderr)
      assert.ok(!RAW.test(run.stderr), `raw control characters in ${JSON.stringify(run.stderr)}`)
    }
    await owner.disconnect()
  })
})
