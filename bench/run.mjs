#!/usr/bin/env node
// The benchmark driver (`npm run bench`; bench/README.md). Starts its own nats-server, then runs
// every workload × system × repetition in a fresh child process on a fresh stream, samples the
// CPU used by the child, the server and everything else while the child's timed part runs,
// checks on the server that every task was stored or acked, and prints one summary table (and,
// with W8, how its handlers scale over threads). Raw records go to bench/results/<timestamp>.jsonl.
import { execFileSync } from 'node:child_process'
import { appendFileSync, mkdirSync, readdirSync, statSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'

import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'

import { measureWork } from './lib/cpu-work.mjs'
import { casesOf, runCase } from './lib/driver.mjs'
import { startNatsServer } from './lib/nats-server.mjs'
import { REDIS_MISSING, findRedisServer, startRedisServer } from './lib/redis-server.mjs'
import { HELP, parseOptions } from './lib/options.mjs'
import { createProfiler } from './lib/profile.mjs'
import { cpuScalingTable, metricValues, summarize, table } from './lib/report.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
/** A release addon is ~3-6 MB; a debug one ~80 MB. */
const MAX_RELEASE_ADDON_BYTES = 30 * 1024 * 1024
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
  // What W8's task costs alone on one thread, measured before any server runs: its ideal rate.
  const cpuWorkMs = cases.some((c) => c.workload === 'w8') ? measureWork() : undefined

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
    machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, bun: bun?.version, natsServer: server.version, redisServer: redis?.version, cpuWorkMs },
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
          if (c.skip?.includes(system)) continue
          const name = `${c.id}-${system}-${rep}`
          const startProfile = profiler && ((pid) => profiler.record(pid, name))
          const launcher = launchers[system](name)
          const record = await runCase({ c, system, rep, options, launcher, jsm, server, redis, cwd: root, startProfile })
          if (!record.valid) failures++
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
  if (cpuWorkMs !== undefined) {
    console.log(`\nW8, CPU-heavy handlers: each task's work takes ${cpuWorkMs.toFixed(3)} ms alone on one thread ` +
      `(${Math.round(1000 / cpuWorkMs).toLocaleString('en-US')} tasks/s per core), N=${options.cpuTasks}\n`)
    console.log(cpuScalingTable(cases, selected, records, options.maxOutside, cpuWorkMs))
    console.log(`\n× main thread / × 1 thread: this median over the same system's on its main thread / on one worker thread. ` +
      `Cores of work: tasks/s × the work's time alone, the cores the handlers kept busy. CPU client: the runner ` +
      `process, all its threads; CPU server: nats-server, for BullMQ redis-server.`)
  }
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
// After the main table (not after --help or a failed run): the feature paths beside their plain
// paths and BullMQ's (bench/features.mjs; BENCH_FEATURES=0 skips them), then W3 with and without
// kept results (bench/results-bench.mjs; BENCH_RESULTS=0 skips it), then Protobuf vs JSON task
// data (bench/serializers.mjs; BENCH_SERIALIZERS=0 skips it).
const more = !process.exitCode && !process.argv.includes('--help')
if (more && process.env.BENCH_FEATURES !== '0') await (await import('./features.mjs')).runFeatures()
if (more && process.env.BENCH_RESULTS !== '0') await (await import('./results-bench.mjs')).runResultsBench(process.argv.slice(2))
if (more && process.env.BENCH_SERIALIZERS !== '0') await import('./serializers.mjs')
