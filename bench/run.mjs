#!/usr/bin/env node
// The benchmark driver (`npm run bench`; bench/README.md). Starts its own nats-server, then runs
// every workload × system × repetition in a fresh child process on a fresh stream, samples the
// CPU used by the child, the server and everything else while the child's timed part runs,
// checks on the server that every task was stored or acked, and prints one summary table. Raw
// records go to bench/results/<timestamp>.jsonl.
import { execFileSync, spawn } from 'node:child_process'
import { appendFileSync, mkdirSync, readdirSync, statSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join, resolve as resolvePath } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'

import { startNatsServer } from './lib/nats-server.mjs'
import { REDIS_MISSING, findRedisServer, startRedisServer } from './lib/redis-server.mjs'
import { HELP, parseOptions } from './lib/options.mjs'
import { cpuBetween, peakRssKb, resetPeakRss, sample } from './lib/proc.mjs'
import { createProfiler } from './lib/profile.mjs'
import { metricValues, summarize, table } from './lib/report.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
/** A release addon is ~3-6 MB; a debug one ~80 MB. */
const MAX_RELEASE_ADDON_BYTES = 30 * 1024 * 1024
/** How long acks may take to reach the server after a worker closed. */
const SETTLE_TIMEOUT_MS = 10_000
const log = (message) => process.stderr.write(`[bench] ${message}\n`)

function run(command, args, env = {}) {
  execFileSync(command, args, { cwd: root, stdio: ['ignore', process.stderr, 'inherit'], env: { ...process.env, ...env } })
}

/** The Protoqueue runs must measure a release build: setup.mjs keeps any build that is newer than the sources. */
function ensureReleaseAddon() {
  const addons = readdirSync(root).filter((name) => /^protoqueue\..+\.node$/.test(name))
  if (addons.length > 0 && addons.every((name) => statSync(join(root, name)).size <= MAX_RELEASE_ADDON_BYTES)) return
  log(`the native addon is missing or a debug build: building release (~2-3 minutes)`)
  run('npx', ['napi', 'build', '--platform', '--release', '--js', 'native.js', '--dts', 'native.d.ts'])
}

const hostTarget = () => /^host: (.+)$/m.exec(execFileSync('rustc', ['-vV'], { encoding: 'utf8' }))[1]

/** Builds the wire-limit example for the host target, sharing the addon's build directory. */
function buildWireLimit(host) {
  log('building the Rust wire limit (cargo build --release --example wire_limit)')
  run('cargo', ['build', '--release', '--example', 'wire_limit', '--target', host])
  return join(root, 'target', host, 'release', 'examples', 'wire_limit')
}

function bunBin() {
  const bin = join(root, 'node_modules', '.bin', 'bun')
  try {
    return { bin, version: execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim() }
  } catch {
    return undefined
  }
}

/** The runs of one repetition: W3 once per batch size. */
function casesOf(options) {
  const cases = []
  for (const workload of options.workloads) {
    if (workload === 'w1') cases.push({ id: 'w1', label: 'W1 sequential enqueue', workload, n: options.n, batchSize: 1 })
    if (workload === 'w2') cases.push({ id: 'w2', label: `W2 batch enqueue (${options.window})`, workload, n: options.n, batchSize: 1 })
    if (workload === 'w5') {
      cases.push({ id: 'w5', label: `W5 ${options.producers} concurrent producers`, workload, n: options.n, batchSize: 1, producers: options.producers })
    }
    if (workload === 'w3') {
      for (const batchSize of options.batchSizes) {
        cases.push({ id: `w3-b${batchSize}`, label: `W3 process b=${batchSize}`, workload, n: options.n, batchSize })
      }
    }
    if (workload === 'w4') {
      const label = `W4 latency @${options.rate}/s`
      cases.push({ id: 'w4', label, workload, n: options.latencyTasks, batchSize: options.latencyBatchSize })
    }
  }
  return cases
}

/**
 * Runs one child through the ready → go → done → finish protocol (bench/lib/runner.mjs) and
 * returns its result with the CPU use and peak RSS measured over its timed part. `startProfile`,
 * if given, starts a profiler on the child before "go" and resolves to its stop function.
 */
function runChild({ command, args, env }, spec, server, timeoutMs, startProfile) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...args, JSON.stringify(spec)], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    let stderr = ''
    let before, trafficBefore, measured, stopRecording
    const fail = (err) => {
      child.kill('SIGKILL')
      reject(new Error(`${err.message}${stderr ? `\n--- runner stderr ---\n${stderr.slice(-4000)}` : ''}`))
    }
    const timer = setTimeout(() => fail(new Error(`run did not finish within ${timeoutMs / 1000} s`)), timeoutMs)
    child.stderr.on('data', (chunk) => {
      stderr += chunk
    })
    child.on('error', fail)
    const onLine = async (line) => {
      let message
      try {
        message = JSON.parse(line)
      } catch {
        return fail(new Error(`runner printed something that is not a protocol line: ${line}`))
      }
      if (message.event === 'ready') {
        stopRecording = await startProfile?.(child.pid)
        trafficBefore = await server.traffic()
        resetPeakRss(child.pid)
        before = sample(child.pid, server.pid)
        child.stdin.write('go\n')
      } else if (message.event === 'done') {
        const after = sample(child.pid, server.pid)
        const { event, ...result } = message
        const peak = peakRssKb(child.pid)
        const traffic = trafficBetween(trafficBefore, await server.traffic(), result.count)
        measured = { result, cpu: cpuBetween(before, after), peakRssKb: peak, traffic }
        await stopRecording?.()
        child.stdin.write('finish\n')
      }
    }
    createInterface({ input: child.stdout }).on('line', (line) => onLine(line).catch(fail))
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (code !== 0) return fail(new Error(`runner exited with ${signal ?? `code ${code}`}`))
      if (!measured) return fail(new Error('runner exited without a result'))
      resolve(measured)
    })
  })
}

/** Messages and bytes per task that the server received from / sent to clients during the run. */
function trafficBetween(before, after, tasks) {
  const perTask = (key) => (after[key] - before[key]) / tasks
  return { inMsgsPerTask: perTask('inMsgs'), outMsgsPerTask: perTask('outMsgs'), inBytesPerTask: perTask('inBytes'), outBytesPerTask: perTask('outBytes') }
}

/**
 * Checks on the server what the runner claims: every task handled exactly once, and stored
 * (W1, W2) or acked and removed (W3, W4); no dead letters. Throws on any mismatch.
 */
async function verify(jsm, c, spec, result) {
  if (result.count !== c.n || result.distinct !== c.n || result.duplicates !== 0) {
    throw new Error(`runner counted ${result.distinct} distinct tasks of ${c.n} (${result.duplicates} duplicates, reported count ${result.count})`)
  }
  if (spec.system === 'bullmq') return verifyBullmq(c, spec)
  const expected = ['w1', 'w2', 'w5'].includes(c.workload) ? c.n : 0
  const deadline = Date.now() + SETTLE_TIMEOUT_MS
  for (;;) {
    const streams = []
    for await (const info of jsm.streams.list()) streams.push(info)
    const main = streams.find((s) => s.config.name === spec.stream)
    const strays = streams.filter((s) => s.config.name !== spec.stream && s.state.messages > 0)
    if (strays.length > 0) throw new Error(`unexpected messages in ${strays.map((s) => `${s.config.name} (${s.state.messages})`).join(', ')}`)
    const stored = main?.state.messages
    if (stored === expected) return
    if (Date.now() > deadline) throw new Error(`stream ${spec.stream} holds ${stored} messages, expected ${expected}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/**
 * The same check in Redis for a BullMQ run: W1, W2 and W5 left exactly N waiting jobs; W3 and W4
 * left N completed jobs and nothing waiting, active, delayed or failed.
 */
async function verifyBullmq(c, spec) {
  const { Queue } = await import('bullmq')
  const { default: IORedis } = await import('ioredis')
  const connection = new IORedis(spec.url, { maxRetriesPerRequest: null })
  const queue = new Queue(spec.stream, { connection })
  try {
    const stored = ['w1', 'w2', 'w5'].includes(c.workload)
    const expected = { wait: stored ? c.n : 0, completed: stored ? 0 : c.n, active: 0, delayed: 0, failed: 0, prioritized: 0, paused: 0 }
    const deadline = Date.now() + SETTLE_TIMEOUT_MS
    for (;;) {
      const counts = await queue.getJobCounts(...Object.keys(expected))
      const wrong = Object.entries(expected).filter(([state, n]) => counts[state] !== n)
      if (wrong.length === 0) return
      if (Date.now() > deadline) throw new Error(`queue ${spec.stream} holds ${wrong.map(([state]) => `${counts[state]} ${state}`).join(', ')}; expected ${wrong.map(([state, n]) => `${n} ${state}`).join(', ')}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  } finally {
    await queue.close()
    await connection.quit()
  }
}

/** Deletes every stream, so each run starts on an empty server store. */
async function deleteAllStreams(jsm) {
  const names = []
  for await (const info of jsm.streams.list()) names.push(info.config.name)
  for (const name of names) await jsm.streams.delete(name)
}

async function main() {
  const options = parseOptions(process.argv.slice(2))
  if (!options) return console.log(HELP)
  const host = options.systems.includes('rust') || options.profile ? hostTarget() : undefined
  const wantsProtoqueue = options.systems.some((s) => s.startsWith('protoqueue'))
  if (wantsProtoqueue) ensureReleaseAddon()
  const wireLimit = options.systems.includes('rust') ? buildWireLimit(host) : undefined
  const bun = bunBin()
  const redisBin = options.systems.includes('bullmq') ? findRedisServer() : undefined
  if (options.systems.includes('bullmq') && !redisBin) log(REDIS_MISSING)
  if (options.systems.includes('protoqueue-bun') && !bun) log('bun does not run here: skipping protoqueue-bun')
  const profiler = options.profile
    ? createProfiler({ root, dir: resolvePath(options.profile), host, withAddon: wantsProtoqueue, run, log })
    : undefined
  /** How each system's runner is started: command, arguments, extra environment. */
  const launchers = {
    protoqueue: (name) => nodeRunner('protoqueue.mjs', name),
    natsjs: (name) => nodeRunner('natsjs.mjs', name),
    'protoqueue-bun': bun && (() => ({ command: bun.bin, args: [join('bench', 'protoqueue.mjs')], env: profiler?.env })),
    rust: wireLimit && (() => ({ command: wireLimit, args: [] })),
    bullmq: redisBin && ((name) => nodeRunner('bullmq.mjs', name)),
  }
  function nodeRunner(script, name) {
    const args = [...(profiler?.nodeArgs(name) ?? []), join('bench', script)]
    return { command: process.execPath, args, env: script === 'protoqueue.mjs' ? profiler?.env : undefined }
  }
  const selected = options.systems.filter((s) => launchers[s])
  const cases = casesOf(options)

  const server = await startNatsServer(root)
  const redis = redisBin && selected.includes('bullmq') ? await startRedisServer(redisBin) : undefined
  const nc = await connect({ servers: server.url })
  const jsm = await jetstreamManager(nc)
  const resultsDir = join(root, 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const started = new Date()
  const resultsFile = join(resultsDir, `${started.toISOString().replace(/[:.]/g, '-')}.jsonl`)
  const write = (record) => appendFileSync(resultsFile, `${JSON.stringify(record)}\n`)
  const meta = {
    type: 'meta',
    startedAt: started.toISOString(),
    options,
    systems: selected,
    machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, bun: bun?.version, natsServer: server.version, redisServer: redis?.version },
  }
  write(meta)
  log(`nats-server ${server.version} at ${server.url}; ${cases.length} cases × ${selected.length} systems × ${options.reps} reps; results → ${resultsFile}`)

  const records = []
  let failures = 0
  try {
    // Interleaved (every system once per case, then the next repetition) so that a burst of
    // outside load hits all systems alike instead of all repetitions of one.
    for (let rep = 1; rep <= options.reps; rep++) {
      for (const c of cases) {
        for (const system of selected) {
          const stream = `bench_${c.id}_${system}_${rep}_${Date.now().toString(36)}`.replaceAll('-', '_')
          // BullMQ runs against the driver's Redis: its pid and counters stand for "the server".
          const target = system === 'bullmq' ? redis : server
          const spec = {
            system,
            workload: c.workload,
            n: c.n,
            batchSize: c.batchSize,
            window: options.window,
            rate: options.rate,
            producers: options.producers,
            url: target.url,
            stream,
            subject: `bench.${stream}`,
          }
          const record = { type: 'run', case: c.id, workload: c.workload, system, rep, spec }
          const name = `${c.id}-${system}-${rep}`
          const startProfile = profiler && ((pid) => profiler.record(pid, name))
          try {
            Object.assign(record, await runChild(launchers[system](name), spec, target, options.runTimeout * 1000, startProfile))
            await verify(jsm, c, spec, record.result)
            record.valid = true
          } catch (err) {
            record.valid = false
            record.error = err.message
            failures++
          }
          if (system === 'bullmq') await redis.flush()
          else await deleteAllStreams(jsm)
          records.push(record)
          write(record)
          log(progressLine(record, c, options))
        }
      }
    }
  } finally {
    await nc.close()
    await server.stop()
    await redis?.stop()
  }

  const rows = summarize(cases, selected, records, options.maxOutside)
  write({ type: 'summary', rows })
  console.log(`\nProtoqueue benchmark, ${started.toISOString()} — N=${options.n}, ${options.reps} reps, ` +
    `${meta.machine.cores} cores (${meta.machine.cpu}), Node ${process.version}${bun ? `, Bun ${bun.version}` : ''}, ${server.version}` +
    `${redis ? `, ${redis.version} (AOF everysec)` : ''}\n`)
  console.log(table(rows))
  console.log(`\nmedian and min–max over the valid runs; ratios are Protoqueue's median / the baseline's median ` +
    `(throughput: higher is better, latency: lower is better). CPU: mean % of one core during the timed part ` +
    `(this machine has ${meta.machine.cores * 100}%); "loaded" counts runs in which other processes used more than ` +
    `${options.maxOutside}% — their numbers are less trustworthy.\nRaw records: ${resultsFile}`)
  if (failures > 0) {
    console.error(`\n${failures} run(s) FAILED:`)
    for (const r of records.filter((r) => !r.valid)) console.error(`- ${r.case} ${r.system} rep ${r.rep}: ${r.error}`)
    process.exitCode = 1
  }
}

function progressLine(record, c, options) {
  const where = `${c.label} | ${record.system} | rep ${record.rep}/${options.reps}`
  if (!record.valid) return `${where} | FAILED: ${record.error.split('\n')[0]}`
  const values = Object.entries(metricValues(record))
    .map(([key, value]) => `${key} ${value.toFixed(key === 'tasksPerSec' ? 0 : 2)}`)
    .join(', ')
  const { clientPct, serverPct, outsidePct } = record.cpu
  const loaded = outsidePct > options.maxOutside ? ' LOADED' : ''
  return `${where} | ${values} | CPU client ${clientPct.toFixed(0)}% server ${serverPct.toFixed(0)}% outside ${outsidePct.toFixed(0)}%${loaded}`
}

await main()
// After the main table (not after --help or a failed run): the delayed and priority paths
// (bench/features.mjs; BENCH_FEATURES=0 skips them), then Protobuf vs JSON task data
// (bench/serializers.mjs; BENCH_SERIALIZERS=0 skips it).
const more = !process.exitCode && !process.argv.includes('--help')
if (more && process.env.BENCH_FEATURES !== '0') await (await import('./features.mjs')).runFeatures()
if (more && process.env.BENCH_SERIALIZERS !== '0') await import('./serializers.mjs')
