#!/usr/bin/env node
// How strong the baselines are: times each way of writing the nats.js and the BullMQ runner
// (bench/lib/variants.mjs) against the others, on the workloads each way can change, with
// run.mjs's machinery (a fresh child and stream per run, CPU accounting, the same checks on the
// server). Repetitions are interleaved and the variants' order rotates from one repetition to the
// next, so outside load and warm-up hit every variant alike. Prints, per case, each variant's
// median and range, CPU per task, and its median relative to the fastest variant's; raw records
// go to bench/results/baselines-<timestamp>.jsonl.
//
//   node bench/baselines.mjs --n 20000 --reps 3                      every variant of both systems
//   node bench/baselines.mjs --systems natsjs --variants default,callback --workloads w3
//   node bench/baselines.mjs --list                                  the variants and their sources
//   node bench/baselines.mjs --unloaded --summarize bench/results/baselines-A.jsonl,bench/results/baselines-B.jsonl
//
// Takes run.mjs's flags (node bench/run.mjs --help) plus --variants (names, default: all), --list,
// --unloaded (medians over the runs whose outside CPU stayed under --max-outside, where a cell has
// any; on a machine shared with other work) and --summarize FILES (no runs: the table of the runs
// recorded in those files); --systems picks from natsjs,bullmq (default: both).
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'

import { casesOf, runCase } from './lib/driver.mjs'
import { startNatsServer } from './lib/nats-server.mjs'
import { HELP, parseOptions } from './lib/options.mjs'
import { REDIS_MISSING, findRedisServer, startRedisServer } from './lib/redis-server.mjs'
import { median, metricValues, metricsOf } from './lib/report.mjs'
import { VARIANT_SYSTEMS, variantsOf } from './lib/variants.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const log = (message) => process.stderr.write(`[baselines] ${message}\n`)
const RUNNERS = { natsjs: 'natsjs.mjs', bullmq: 'bullmq.mjs' }

/** Takes this script's own flags out of argv; the rest is run.mjs's flags. */
function parseArgs(argv) {
  const rest = []
  let variants
  let summarizeFiles
  let list = false
  let unloaded = false
  const listOf = (text) => text.split(',').map((v) => v.trim()).filter(Boolean)
  for (let i = 0; i < argv.length; i++) {
    const variantsFlag = /^--variants(?:=(.*))?$/.exec(argv[i])
    const summarizeFlag = /^--summarize(?:=(.*))?$/.exec(argv[i])
    if (variantsFlag) variants = listOf(variantsFlag[1] ?? argv[++i])
    else if (summarizeFlag) summarizeFiles = listOf(summarizeFlag[1] ?? argv[++i])
    else if (argv[i] === '--list') list = true
    else if (argv[i] === '--unloaded') unloaded = true
    else rest.push(argv[i])
  }
  const explicitSystems = rest.some((a) => a.startsWith('--systems')) || process.env.BENCH_SYSTEMS
  const options = parseOptions(rest)
  if (!options) return undefined
  options.systems = explicitSystems ? options.systems.filter((s) => VARIANT_SYSTEMS.includes(s)) : VARIANT_SYSTEMS
  if (options.systems.length === 0) throw new Error(`--systems: choose from ${VARIANT_SYSTEMS.join(', ')}`)
  for (const name of variants ?? []) {
    if (!options.systems.some((s) => variantsOf(s)[name])) throw new Error(`unknown variant ${name}`)
  }
  return { options, variants, list, unloaded, summarizeFiles }
}

function printList(systems) {
  for (const system of systems) {
    console.log(`${system}:`)
    for (const [name, v] of Object.entries(variantsOf(system))) {
      console.log(`  ${name.padEnd(22)} ${v.workloads.join(',').padEnd(15)} ${v.what}`)
      for (const source of v.sources) console.log(`  ${''.padEnd(22)} ${''.padEnd(15)} ${source}`)
    }
  }
}

const format = (value, digits) => value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })

/** Rows per case × system × metric × variant: median, range, relative to the best variant's median. */
function summarize(cases, plan, records, maxOutside, unloaded) {
  const rows = []
  for (const c of cases) {
    for (const [system, names] of plan) {
      for (const metric of metricsOf(c.workload)) {
        const stats = []
        for (const variant of names) {
          const valid = records.filter((r) => r.case === c.id && r.system === system && r.variant === variant && r.valid)
          const quiet = valid.filter((r) => r.cpu.outsidePct <= maxOutside)
          const runs = unloaded && quiet.length > 0 ? quiet : valid
          if (runs.length === 0) continue
          const values = runs.map((r) => metricValues(r)[metric.key])
          stats.push({
            variant,
            runs,
            median: median(values),
            min: Math.min(...values),
            max: Math.max(...values),
            clientUs: median(runs.map((r) => (1000 * r.cpu.clientMs) / r.result.count)),
            serverUs: median(runs.map((r) => (1000 * r.cpu.serverMs) / r.result.count)),
            inMsgs: median(runs.map((r) => r.traffic.inMsgsPerTask)),
            loaded: runs.filter((r) => r.cpu.outsidePct > maxOutside).length,
            of: valid.length,
          })
        }
        if (stats.length === 0) continue
        const higher = metric.better === 'higher'
        // A variant that breaks the workload's rules (more than the window unconfirmed) is never the best.
        const eligible = stats.filter((s) => !variantsOf(system)[s.variant].exceedsWindow)
        const best = (eligible.length > 0 ? eligible : stats).reduce((a, b) => ((higher ? b.median > a.median : b.median < a.median) ? b : a))
        for (const s of stats) {
          // Within noise of the best: the ranges of the two overlap.
          const overlaps = higher ? s.max >= best.min : s.min <= best.max
          const exceedsWindow = Boolean(variantsOf(system)[s.variant].exceedsWindow)
          rows.push({ case: c.label, system, metric: metric.label, digits: metric.digits, ...s, vsBest: s.median / best.median, isBest: s === best, overlaps, exceedsWindow })
        }
      }
    }
  }
  return rows
}

function table(rows) {
  const header = ['case', 'system', 'variant', 'metric', 'median', 'min–max', 'vs best', 'µs CPU/task client+server', 'msgs in/task', 'loaded', 'runs']
  const lines = rows.map((r) => [
    r.case,
    r.system,
    r.variant,
    r.metric,
    format(r.median, r.digits),
    `${format(r.min, r.digits)}–${format(r.max, r.digits)}`,
    r.isBest ? 'best' : `${r.vsBest.toFixed(2)}×${r.overlaps ? ' ≈' : ''}${r.exceedsWindow ? ' (2× window)' : ''}`,
    `${r.clientUs.toFixed(0)} + ${r.serverUs.toFixed(0)}`,
    r.inMsgs.toFixed(2),
    `${r.loaded}/${r.runs.length}`,
    `${r.runs.length}/${r.of}`,
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const render = (cells) => `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(' | ')} |`
  return [render(header), render(widths.map((w) => '-'.repeat(w))), ...lines.map(render)].join('\n')
}

/** Runs every planned variant on every case, `options.reps` times; resolves to the run records. */
async function runAll(cases, plan, options) {
  const redisBin = plan.has('bullmq') ? findRedisServer() : undefined
  const server = await startNatsServer(root)
  const redis = redisBin ? await startRedisServer(redisBin) : undefined
  const nc = await connect({ servers: server.url })
  const jsm = await jetstreamManager(nc)
  const resultsDir = join(root, 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const started = new Date()
  const resultsFile = join(resultsDir, `baselines-${started.toISOString().replace(/[:.]/g, '-')}.jsonl`)
  const write = (record) => appendFileSync(resultsFile, `${JSON.stringify(record)}\n`)
  const machine = { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, natsServer: server.version, redisServer: redis?.version }
  write({ type: 'meta', startedAt: started.toISOString(), options, plan: Object.fromEntries(plan), machine })
  log(`nats-server ${server.version}${redis ? `, ${redis.version}` : ''}; results → ${resultsFile}`)

  const records = []
  try {
    for (let rep = 1; rep <= options.reps; rep++) {
      for (const c of cases) {
        for (const [system, names] of plan) {
          const here = names.filter((name) => variantsOf(system)[name].workloads.includes(c.workload))
          // Rotate the order each repetition: no variant always runs first (or right after another).
          const shift = (rep - 1) % Math.max(here.length, 1)
          for (const variant of [...here.slice(shift), ...here.slice(0, shift)]) {
            const launcher = { command: process.execPath, args: [join('bench', RUNNERS[system])] }
            const record = await runCase({ c, system, variant, rep, options, launcher, jsm, server, redis, cwd: root })
            records.push(record)
            write(record)
            const values = record.valid
              ? Object.entries(metricValues(record)).map(([k, v]) => `${k} ${v.toFixed(k === 'tasksPerSec' ? 0 : 2)}`).join(', ')
              : `FAILED: ${record.error.split('\n')[0]}`
            const outside = record.cpu ? ` | outside ${record.cpu.outsidePct.toFixed(0)}%` : ''
            log(`${c.label} | ${system} ${variant} | rep ${rep}/${options.reps} | ${values}${outside}`)
          }
        }
      }
    }
  } finally {
    await nc.close()
    await server.stop()
    await redis?.stop()
  }
  const header = `Baselines, ${started.toISOString()} — N=${options.n}, ${options.reps} reps, ${machine.cores} cores (${machine.cpu}), ` +
    `Node ${process.version}, ${server.version}${redis ? `, ${redis.version}` : ''}`
  return { records, header, resultsFile, write }
}

/** The run records saved in `files` (bench/results/baselines-*.jsonl). */
function readRecords(files) {
  return files.flatMap((file) =>
    readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line)).filter((r) => r.type === 'run'),
  )
}

async function main() {
  const parsed = parseArgs(process.argv.slice(2))
  if (!parsed) {
    return console.log(`${HELP}
  --variants        names from bench/lib/variants.mjs (all)
  --list            print the variants and where their settings come from
  --unloaded        medians over the runs with outside CPU under --max-outside, where a cell has any
  --summarize       files from bench/results/baselines-*.jsonl: print their table, run nothing`)
  }
  const { options, variants, list, unloaded, summarizeFiles } = parsed
  if (list) return printList(options.systems)
  let systems = options.systems
  if (!summarizeFiles && systems.includes('bullmq') && !findRedisServer()) {
    log(REDIS_MISSING)
    systems = systems.filter((s) => s !== 'bullmq')
  }
  /** system → the variant names it runs. */
  const plan = new Map(systems.map((s) => [s, Object.keys(variantsOf(s)).filter((v) => !variants || variants.includes(v))]))
  let cases = casesOf(options)

  let records, header, resultsFile, write
  if (summarizeFiles) {
    records = readRecords(summarizeFiles)
    cases = cases.filter((c) => records.some((r) => r.case === c.id))
    header = `Baselines recorded in ${summarizeFiles.join(', ')}`
  } else {
    ;({ records, header, resultsFile, write } = await runAll(cases, plan, options))
  }
  const rows = summarize(cases, plan, records, options.maxOutside, unloaded)
  write?.({ type: 'summary', rows: rows.map(({ runs, ...row }) => row) })
  console.log(`\n${header}\n`)
  console.log(table(rows))
  console.log(`\nmedian and min–max over the valid runs${unloaded ? ` (only those with outside CPU ≤ ${options.maxOutside}% where a cell has any)` : ''}; ` +
    `"vs best": the median over the fastest variant's median of the same ` +
    `case (≈: the two ranges overlap; "2× window": the variant has more than --window tasks unconfirmed, which W2 allows no ` +
    `system, so it is never the best); "loaded": runs in which other processes used more than ${options.maxOutside}% of a core; ` +
    `"runs": the runs summarized / the valid runs.` +
    `${resultsFile ? `\nRaw records: ${resultsFile}` : ''}`)
  const failed = records.filter((r) => !r.valid && plan.get(r.system)?.includes(r.variant))
  if (failed.length > 0) {
    console.error(`\n${failed.length} run(s) FAILED:`)
    for (const r of failed) console.error(`- ${r.case} ${r.system} ${r.variant} rep ${r.rep}: ${r.error}`)
    if (!summarizeFiles) process.exitCode = 1
  }
}

await main()
