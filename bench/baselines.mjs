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
//
// Takes run.mjs's flags (node bench/run.mjs --help) plus --variants (names, default: all) and --list;
// --systems picks from natsjs,bullmq (default: both).
import { appendFileSync, mkdirSync } from 'node:fs'
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

/** Takes --variants and --list out of argv; the rest is run.mjs's flags. */
function parseArgs(argv) {
  const rest = []
  let variants
  let list = false
  for (let i = 0; i < argv.length; i++) {
    const match = /^--variants(?:=(.*))?$/.exec(argv[i])
    if (match) variants = (match[1] ?? argv[++i]).split(',').map((v) => v.trim()).filter(Boolean)
    else if (argv[i] === '--list') list = true
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
  return { options, variants, list }
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
function summarize(cases, plan, records, maxOutside) {
  const rows = []
  for (const c of cases) {
    for (const [system, names] of plan) {
      for (const metric of metricsOf(c.workload)) {
        const stats = []
        for (const variant of names) {
          const runs = records.filter((r) => r.case === c.id && r.system === system && r.variant === variant && r.valid)
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
          })
        }
        if (stats.length === 0) continue
        const higher = metric.better === 'higher'
        const best = stats.reduce((a, b) => ((higher ? b.median > a.median : b.median < a.median) ? b : a))
        for (const s of stats) {
          // Within noise of the best: the ranges of the two overlap.
          const overlaps = higher ? s.max >= best.min : s.min <= best.max
          rows.push({ case: c.label, system, metric: metric.label, digits: metric.digits, ...s, vsBest: s.median / best.median, isBest: s === best, overlaps })
        }
      }
    }
  }
  return rows
}

function table(rows) {
  const header = ['case', 'system', 'variant', 'metric', 'median', 'min–max', 'vs best', 'µs CPU/task client+server', 'msgs in/task', 'loaded']
  const lines = rows.map((r) => [
    r.case,
    r.system,
    r.variant,
    r.metric,
    format(r.median, r.digits),
    `${format(r.min, r.digits)}–${format(r.max, r.digits)}`,
    r.isBest ? 'best' : `${r.vsBest.toFixed(2)}×${r.overlaps ? ' ≈' : ''}`,
    `${r.clientUs.toFixed(0)} + ${r.serverUs.toFixed(0)}`,
    r.inMsgs.toFixed(2),
    `${r.loaded}/${r.runs.length}`,
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const render = (cells) => `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(' | ')} |`
  return [render(header), render(widths.map((w) => '-'.repeat(w))), ...lines.map(render)].join('\n')
}

async function main() {
  const parsed = parseArgs(process.argv.slice(2))
  if (!parsed) return console.log(`${HELP}\n  --variants        names from bench/lib/variants.mjs (all)\n  --list            print the variants and where their settings come from`)
  const { options, variants, list } = parsed
  if (list) return printList(options.systems)
  const redisBin = options.systems.includes('bullmq') ? findRedisServer() : undefined
  if (options.systems.includes('bullmq') && !redisBin) log(REDIS_MISSING)
  const systems = options.systems.filter((s) => s !== 'bullmq' || redisBin)
  /** system → the variant names it runs. */
  const plan = new Map(systems.map((s) => [s, Object.keys(variantsOf(s)).filter((v) => !variants || variants.includes(v))]))
  const cases = casesOf(options)

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
  let failures = 0
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
            if (!record.valid) failures++
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
  const rows = summarize(cases, plan, records, options.maxOutside)
  write({ type: 'summary', rows: rows.map(({ runs, ...row }) => row) })
  console.log(`\nBaselines, ${started.toISOString()} — N=${options.n}, ${options.reps} reps, ${machine.cores} cores (${machine.cpu}), ` +
    `Node ${process.version}, ${server.version}${redis ? `, ${redis.version}` : ''}\n`)
  console.log(table(rows))
  console.log(`\nmedian and min–max over the valid runs; "vs best": the median over the fastest variant's median of the same ` +
    `case (≈: the two ranges overlap); "loaded": runs in which other processes used more than ${options.maxOutside}% of a core.\n` +
    `Raw records: ${resultsFile}`)
  if (failures > 0) {
    console.error(`\n${failures} run(s) FAILED:`)
    for (const r of records.filter((r) => !r.valid)) console.error(`- ${r.case} ${r.system} ${r.variant} rep ${r.rep}: ${r.error}`)
    process.exitCode = 1
  }
}

await main()
