#!/usr/bin/env node
// What keeping results costs a worker (bench/README.md, "Results on and off"): W3 — N tasks
// enqueued before timing, one worker with a trivial handler, `batchSize` at once — on a Protoqueue
// queue with `options.results: { ttl: 60_000 }` against the same queue without it. The handler is
// the same in both (it returns `{ success: true, result: { ok: i } }`), so the only difference is
// the option: with it the worker writes one record per task to the queue's history stream before
// it acks the task.
//
// Runs at the end of `npm run bench` (BENCH_RESULTS=0 skips it) and alone, with run.mjs's flags
// (`--n`, `--reps`, `--batch-sizes`, `--run-timeout`, `--max-outside`; the others are ignored):
//
//   node bench/results-bench.mjs [--n 20000] [--reps 3] [--batch-sizes 10,100]
//
// Every run is run.mjs's: a fresh child process (bench/protoqueue.mjs under Node) on a fresh stream
// of its own nats-server, CPU sampled over the timed part, and the driver's check (every task ran
// once, the stream is empty, and with results the history stream holds one record per task).
// Off and on alternate within a repetition, and which goes first alternates between repetitions,
// so neither always runs right after the other. Prints medians and the on/off ratio of the same
// repetition; raw records go to bench/results/results-<timestamp>.jsonl.
import { appendFileSync, mkdirSync, readdirSync, statSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'

import { RESULTS, runCase } from './lib/driver.mjs'
import { startNatsServer } from './lib/nats-server.mjs'
import { HELP, parseOptions } from './lib/options.mjs'
import { median } from './lib/report.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const log = (message) => process.stderr.write(`[bench:results] ${message}\n`)

function isReleaseBuild() {
  const addons = readdirSync(root).filter((name) => /^protoqueue\..+\.node$/.test(name))
  return addons.length > 0 && addons.every((name) => statSync(join(root, name)).size <= 30 * 1024 * 1024)
}

/** The two cases of one batch size: the same W3, without and with kept results. */
function casesOf(options) {
  return options.batchSizes.map((batchSize) => {
    const base = { workload: 'w3', n: options.n, batchSize, withResult: true }
    return {
      batchSize,
      off: { ...base, id: `w3-b${batchSize}-off`, label: `W3 b=${batchSize}, results off` },
      on: { ...base, id: `w3-b${batchSize}-on`, label: `W3 b=${batchSize}, results on`, results: RESULTS },
    }
  })
}

const tasksPerSec = (r) => (r.result.count * 1000) / r.result.elapsedMs
const cpuUsPerTask = (r) => (1000 * (r.cpu.clientMs + r.cpu.serverMs)) / r.result.count
const fixed = (value, digits) => value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
const range = (values, digits, unit = '') =>
  `${fixed(median(values), digits)}${unit} (${fixed(Math.min(...values), digits)}–${fixed(Math.max(...values), digits)})`

/** The summary table: per batch size, off and on, then on/off of the same repetition. */
function table(pairs, records, maxOutside) {
  const lines = [
    '| W3 | results | tasks/s median (min–max) | µs CPU/task client + server | msgs/task in / out | peak RSS | CPU outside | loaded |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for (const { batchSize, off, on } of pairs) {
    const runsOf = (c) => records.filter((r) => r.case === c.id && r.valid)
    for (const [c, what] of [[off, 'off'], [on, `on (ttl ${RESULTS.ttl / 1000} s)`]]) {
      const runs = runsOf(c)
      if (runs.length === 0) {
        lines.push(`| b=${batchSize} | ${what} | no valid run | | | | | |`)
        continue
      }
      const client = median(runs.map((r) => (1000 * r.cpu.clientMs) / r.result.count))
      const server = median(runs.map((r) => (1000 * r.cpu.serverMs) / r.result.count))
      const msgsIn = median(runs.map((r) => r.traffic.inMsgsPerTask))
      const msgsOut = median(runs.map((r) => r.traffic.outMsgsPerTask))
      const rss = Math.max(...runs.map((r) => r.peakRssKb ?? 0)) / 1024
      const outside = runs.reduce((sum, r) => sum + r.cpu.outsidePct, 0) / runs.length
      const loaded = runs.filter((r) => r.cpu.outsidePct > maxOutside).length
      lines.push(`| b=${batchSize} | ${what} | ${range(runs.map(tasksPerSec), 0)} | ${fixed(client, 1)} + ${fixed(server, 1)} | ` +
        `${fixed(msgsIn, 2)} / ${fixed(msgsOut, 2)} | ${fixed(rss, 0)} MB | ${fixed(outside, 0)}% | ${loaded}/${runs.length} |`)
    }
    // Ratios of the same repetition: outside load that hits one repetition hits both of its runs.
    const offRuns = runsOf(off)
    const same = runsOf(on).map((r) => [offRuns.find((o) => o.rep === r.rep), r]).filter(([o]) => o)
    if (same.length > 0) {
      const speed = same.map(([o, r]) => tasksPerSec(r) / tasksPerSec(o))
      const cpu = same.map(([o, r]) => cpuUsPerTask(r) / cpuUsPerTask(o))
      lines.push(`| b=${batchSize} | on / off, same rep | ${range(speed, 2, '×')} | ${range(cpu, 2, '×')} | | | | |`)
    }
  }
  return lines.join('\n')
}

/** Runs every case `reps` times; prints the summary; resolves to the records. */
export async function runResultsBench(argv = []) {
  // run.mjs passes its own flags: the ones that mean nothing here (--systems…) are ignored.
  const options = parseOptions(argv)
  if (!options) return void console.log(`node bench/results-bench.mjs [--n 20000] [--reps 3] [--batch-sizes 10,100]\n(run.mjs's flags:)\n${HELP}`)
  if (!isReleaseBuild()) log('WARNING: the native addon is a debug build; numbers are not representative (npm run bench builds release)')
  const resultsDir = join(root, 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const started = new Date()
  const resultsFile = join(resultsDir, `results-${started.toISOString().replace(/[:.]/g, '-')}.jsonl`)
  const write = (record) => appendFileSync(resultsFile, `${JSON.stringify(record)}\n`)
  const server = await startNatsServer(root)
  const nc = await connect({ servers: server.url })
  const jsm = await jetstreamManager(nc)
  const pairs = casesOf(options)
  write({ type: 'meta', startedAt: started.toISOString(), options, machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, natsServer: server.version } })
  log(`${server.version}; W3 results off/on × batch sizes ${options.batchSizes.join(', ')} × ${options.reps} reps, N=${options.n}; results → ${resultsFile}`)
  const launcher = { command: process.execPath, args: [join('bench', 'protoqueue.mjs')] }
  const records = []
  try {
    for (let rep = 1; rep <= options.reps; rep++) {
      for (const { off, on } of pairs) {
        for (const c of rep % 2 === 1 ? [off, on] : [on, off]) {
          const record = await runCase({ c, system: 'protoqueue', rep, options, launcher, jsm, server, cwd: root })
          records.push(record)
          write(record)
          const outcome = record.valid
            ? `${fixed(tasksPerSec(record), 0)} tasks/s, ${fixed(cpuUsPerTask(record), 1)} µs CPU/task client+server, outside ${fixed(record.cpu.outsidePct, 0)}%`
            : `FAILED: ${record.error.split('\n')[0]}`
          log(`${c.label} | rep ${rep}/${options.reps} | ${outcome}`)
        }
      }
    }
  } finally {
    await nc.close()
    await server.stop()
  }
  const summary = table(pairs, records, options.maxOutside)
  write({ type: 'summary', table: summary })
  console.log(`\nW3 with and without kept results (Protoqueue, Node) — N=${options.n}, ${options.reps} reps, ${server.version}\n`)
  console.log(summary)
  console.log(`\nmedian (min–max) over the valid runs; "on / off": the ratio of the two runs of each repetition, median (min–max) ` +
    `(tasks/s: below 1 is slower with results; CPU: above 1 costs more). Raw records: ${resultsFile}`)
  const failed = records.filter((r) => !r.valid)
  if (failed.length > 0) {
    console.error(`\n${failed.length} run(s) FAILED:`)
    for (const r of failed) console.error(`- ${r.case} rep ${r.rep}: ${r.error}`)
    process.exitCode = 1
  }
  return records
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await runResultsBench(process.argv.slice(2))
}
