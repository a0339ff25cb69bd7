#!/usr/bin/env node
// The delayed and priority paths of Protoqueue (bench/README.md, "Delayed tasks and priorities").
// Runs alone (`node bench/features.mjs [--n 20000] [--delayed 2000] [--reps 3]`) and at the end of
// `npm run bench`. Starts its own nats-server and, per repetition and case, a fresh stream:
//
// - plain: enqueueBatch of N tasks (chunks of 1,000), then one worker (batchSize 64) runs them;
// - priorities: the same on a queue with `options.priorities`, the tasks spread over the ten
//   levels (task i has priority 1 + i % 10), so the worker sweeps every level;
// - delayed: enqueueBatch of D tasks due 1–3 s after their enqueue (random), on a queue with
//   `options.schedules`; a worker runs them and the lateness (handler start − due time) is taken.
//
// Prints medians (and min–max) over the repetitions and the priority/plain ratios of the same
// run; raw records go to bench/results/features-<timestamp>.jsonl. In-process, like a user's
// program: the process's own CPU and the server's are printed with each case.
import { execFileSync } from 'node:child_process'
import { appendFileSync, mkdirSync, readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Protoqueue } from '../index.mjs'
import { startNatsServer } from './lib/nats-server.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const CHUNK = 1_000
const BATCH_SIZE = 64
/** Delayed tasks are due this long after enqueue, plus up to DELAY_SPREAD_MS. */
const DELAY_MIN_MS = 1_000
const DELAY_SPREAD_MS = 2_000
const RUN_TIMEOUT_MS = 120_000
const log = (message) => process.stderr.write(`[bench:features] ${message}\n`)

function parseArgs(argv) {
  const options = { n: 20_000, delayed: 2_000, reps: 3 }
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '')
    if (!(key in options)) throw new Error(`unknown option ${argv[i]} (known: --n, --delayed, --reps)`)
    const value = Number(argv[++i])
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${key} takes a positive integer`)
    options[key] = value
  }
  return options
}

function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

const median = (values) => percentile([...values].sort((a, b) => a - b), 50)

/** CPU seconds used by process `pid` so far (user + system), from /proc. */
function cpuSeconds(pid) {
  try {
    const stat = execFileSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' })
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return Number.NaN
  }
}

async function withQueue(server, name, options, body) {
  const queue = new Protoqueue({ streamName: name, subject: `bench.${name}`, options: { batchSize: BATCH_SIZE, ...options } })
  await queue.connect(server.url)
  try {
    return await body(queue)
  } finally {
    await queue.disconnect()
  }
}

/** Enqueues `tasks` in chunks; resolves to tasks per second. */
async function enqueueAll(queue, tasks) {
  const started = performance.now()
  for (let i = 0; i < tasks.length; i += CHUNK) await queue.enqueueBatch(tasks.slice(i, i + CHUNK))
  return tasks.length / ((performance.now() - started) / 1000)
}

/** Runs a worker until `count` tasks ran; `onTask(task)` is called at each start. */
async function processAll(queue, count, onTask = () => {}) {
  let done = 0
  let finish
  const finished = new Promise((resolve, reject) => {
    finish = resolve
    setTimeout(() => reject(new Error(`only ${done} of ${count} tasks ran within ${RUN_TIMEOUT_MS} ms`)), RUN_TIMEOUT_MS).unref()
  })
  const started = performance.now()
  await queue.process(async (task) => {
    onTask(task)
    if (++done === count) finish()
    return { success: true }
  })
  await finished
  return count / ((performance.now() - started) / 1000)
}

async function throughputCase(server, name, n, options, priorityOf) {
  return withQueue(server, name, options, async (queue) => {
    const tasks = Array.from({ length: n }, (_, i) => ({ data: { i, body: 'x'.repeat(64) }, ...priorityOf(i) }))
    const cpu0 = cpuSeconds(process.pid)
    const server0 = cpuSeconds(server.pid)
    const t0 = performance.now()
    const enqueuePerSec = await enqueueAll(queue, tasks)
    const processPerSec = await processAll(queue, n)
    const seconds = (performance.now() - t0) / 1000
    return {
      enqueuePerSec,
      processPerSec,
      clientCpuPct: ((cpuSeconds(process.pid) - cpu0) / seconds) * 100,
      serverCpuPct: ((cpuSeconds(server.pid) - server0) / seconds) * 100,
    }
  })
}

async function delayedCase(server, name, count) {
  return withQueue(server, name, { schedules: true }, async (queue) => {
    const due = new Map()
    const tasks = Array.from({ length: count }, (_, i) => ({ data: { i }, delay: DELAY_MIN_MS + Math.floor(Math.random() * DELAY_SPREAD_MS) }))
    const t0 = Date.now()
    const started = performance.now()
    for (let i = 0; i < tasks.length; i += CHUNK) {
      const chunk = tasks.slice(i, i + CHUNK)
      const sentAt = Date.now()
      const ids = await queue.enqueueBatch(chunk)
      // Due no earlier than the delay from the moment the chunk was sent.
      ids.forEach((id, k) => due.set(id, sentAt + chunk[k].delay))
    }
    const enqueuePerSec = count / ((performance.now() - started) / 1000)
    const lateness = []
    let early = 0
    await processAll(queue, count, (task) => {
      const late = Date.now() - due.get(task.id)
      if (late < 0) early++
      lateness.push(late)
    })
    lateness.sort((a, b) => a - b)
    return { enqueuePerSec, latenessP50Ms: percentile(lateness, 50), latenessP99Ms: percentile(lateness, 99), early, spanMs: Date.now() - t0 }
  })
}

function isReleaseBuild() {
  const addons = readdirSync(root).filter((name) => /^protoqueue\..+\.node$/.test(name))
  return addons.length > 0 && addons.every((name) => statSync(join(root, name)).size <= 30 * 1024 * 1024)
}

/** Runs every case `reps` times; prints the summary; resolves to the records. */
export async function runFeatures(argv = []) {
  const options = parseArgs(argv)
  if (!isReleaseBuild()) log('WARNING: the native addon is a debug build; numbers are not representative (npm run bench builds release)')
  const resultsDir = join(root, 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const resultsFile = join(resultsDir, `features-${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl`)
  const server = await startNatsServer(root)
  const records = []
  try {
    for (let rep = 1; rep <= options.reps; rep++) {
      const name = (kind) => `FEAT_${kind}_${process.pid}_${rep}`
      const cases = [
        ['plain', () => throughputCase(server, name('PLAIN'), options.n, {}, () => ({}))],
        ['priorities', () => throughputCase(server, name('PRIO'), options.n, { priorities: true }, (i) => ({ priority: 1 + (i % 10) }))],
        ['delayed', () => delayedCase(server, name('DELAYED'), options.delayed)],
      ]
      for (const [kind, run] of cases) {
        const result = await run()
        const record = { kind, rep, n: kind === 'delayed' ? options.delayed : options.n, ...result }
        records.push(record)
        appendFileSync(resultsFile, `${JSON.stringify(record)}\n`)
        log(`${kind} rep ${rep}: ${Object.entries(result).map(([k, v]) => `${k} ${Number(v).toFixed(k.endsWith('Pct') || k.endsWith('Ms') ? 1 : 0)}`).join(', ')}`)
      }
    }
  } finally {
    await server.stop()
  }
  const of = (kind, key) => records.filter((r) => r.kind === kind).map((r) => r[key])
  const cell = (kind, key) => {
    const values = of(kind, key)
    return `${median(values).toFixed(0)} (${Math.min(...values).toFixed(0)}–${Math.max(...values).toFixed(0)})`
  }
  const ratio = (key) => {
    const reps = records.filter((r) => r.kind === 'priorities').map((p) => p[key] / records.find((r) => r.kind === 'plain' && r.rep === p.rep)[key])
    return median(reps).toFixed(2)
  }
  console.log(`\nProtoqueue delayed and priority paths — N=${options.n} (delayed: ${options.delayed}), ${options.reps} reps, ${server.version}\n`)
  console.log('| case | enqueue tasks/s | process tasks/s | client CPU % | server CPU % |')
  console.log('| --- | --- | --- | --- | --- |')
  for (const kind of ['plain', 'priorities']) {
    console.log(`| ${kind} | ${cell(kind, 'enqueuePerSec')} | ${cell(kind, 'processPerSec')} | ${cell(kind, 'clientCpuPct')} | ${cell(kind, 'serverCpuPct')} |`)
  }
  console.log(`| priorities / plain (same rep, median) | ${ratio('enqueuePerSec')} | ${ratio('processPerSec')} | | |`)
  console.log('\n| delayed | enqueue tasks/s | lateness p50 ms | lateness p99 ms | started early |')
  console.log('| --- | --- | --- | --- | --- |')
  console.log(`| ${options.delayed} tasks due in 1–3 s | ${cell('delayed', 'enqueuePerSec')} | ${cell('delayed', 'latenessP50Ms')} | ${cell('delayed', 'latenessP99Ms')} | ${of('delayed', 'early').reduce((a, b) => a + b, 0)} |`)
  console.log(`\nmedian (min–max) over the repetitions; CPU in % of one core over enqueue + process. Raw records: ${resultsFile}`)
  return records
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await runFeatures(process.argv.slice(2))
}
