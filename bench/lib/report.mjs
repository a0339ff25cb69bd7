// Turns run records into the summary table: medians and ranges per case and system, Protoqueue's
// ratios to nats.js and to the Rust wire limit (medians of the same benchmark run), CPU use.
import { ROUND_TRIP_WORKLOADS } from './runner.mjs'

export const PROTOQUEUE_SYSTEMS = ['protoqueue', 'protoqueue-bun']
const SYSTEM_LABELS = { protoqueue: 'Protoqueue (Node)', 'protoqueue-bun': 'Protoqueue (Bun)', natsjs: 'nats.js', bullmq: 'BullMQ', rust: 'Rust async-nats' }

/** What a case's runs are compared on. `better` says which way is faster. */
const THROUGHPUT = [{ key: 'tasksPerSec', label: 'tasks/s', better: 'higher', digits: 0 }]
const LATENCY = [
  { key: 'p50Ms', label: 'p50 ms', better: 'lower', digits: 2 },
  { key: 'p99Ms', label: 'p99 ms', better: 'lower', digits: 2 },
  { key: 'maxMs', label: 'max ms', better: 'lower', digits: 2 },
]
/** W6, W7: each call's latency (enqueue to result in hand), and calls per second. */
const ROUND_TRIP = [...LATENCY, { key: 'tasksPerSec', label: 'calls/s', better: 'higher', digits: 0 }]
export const metricsOf = (workload) => (workload === 'w4' ? LATENCY : ROUND_TRIP_WORKLOADS.includes(workload) ? ROUND_TRIP : THROUGHPUT)

/** The targets: the ratio Protoqueue / baseline must be at least (or, for latency, at most) this. */
const TARGETS = {
  'w1 tasksPerSec': { natsjs: 1.0, bullmq: 1.0, rust: 0.9 },
  'w2 tasksPerSec': { natsjs: 3, bullmq: 2, rust: 0.75 },
  'w3 tasksPerSec': { natsjs: 1.5, bullmq: 2 },
  'w4 p99Ms': { natsjs: 1.0, bullmq: 1.0 },
  // ≥ 1.5× the faster of nats.js and BullMQ: ≥ 1.5× each.
  'w5 tasksPerSec': { natsjs: 1.5, bullmq: 1.5 },
}

/** The metric values a run record contributes. */
export function metricValues(record) {
  const tasksPerSec = (record.result.count * 1000) / record.result.elapsedMs
  const { p50, p99, max } = record.result.latency ?? {}
  if (record.workload === 'w4') return { p50Ms: p50, p99Ms: p99, maxMs: max }
  if (ROUND_TRIP_WORKLOADS.includes(record.workload)) return { p50Ms: p50, p99Ms: p99, maxMs: max, tasksPerSec }
  return { tasksPerSec }
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

const mean = (values) => values.reduce((sum, v) => sum + v, 0) / values.length

function format(value, digits) {
  if (value === undefined || Number.isNaN(value)) return '–'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

function ratioCell(ratio, target, better) {
  if (ratio === undefined) return ''
  const text = `${ratio.toFixed(2)}×`
  if (target === undefined) return text
  const met = better === 'higher' ? ratio >= target : ratio <= target
  return `${text} ${met ? 'ok' : 'MISS'}`
}

function targetCell(target, better) {
  if (!target) return ''
  const sign = better === 'higher' ? '≥' : '≤'
  return [target.natsjs, target.bullmq, target.rust].map((t) => (t ? `${sign}${t}` : '–')).join(' / ')
}

/**
 * Summary rows: one per case × metric × system that has valid runs, with medians, ranges,
 * Protoqueue's ratios and mean CPU use.
 */
export function summarize(cases, systems, records, maxOutsidePct) {
  const rows = []
  for (const c of cases) {
    for (const metric of metricsOf(c.workload)) {
      const stats = {}
      for (const system of systems) {
        const runs = records.filter((r) => r.case === c.id && r.system === system && r.valid)
        if (runs.length === 0) continue
        const values = runs.map((r) => metricValues(r)[metric.key])
        stats[system] = {
          runs,
          median: median(values),
          min: Math.min(...values),
          max: Math.max(...values),
        }
      }
      const target = TARGETS[`${c.workload} ${metric.key}`]
      for (const [system, s] of Object.entries(stats)) {
        const isProtoqueue = PROTOQUEUE_SYSTEMS.includes(system)
        const ratioTo = (baseline) => (isProtoqueue && stats[baseline] ? s.median / stats[baseline].median : undefined)
        const rss = s.runs.map((r) => r.peakRssKb).filter((v) => v !== undefined)
        rows.push({
          case: c.label,
          metric: metric.label,
          system: SYSTEM_LABELS[system] ?? system,
          median: s.median,
          min: s.min,
          max: s.max,
          digits: metric.digits,
          vsNatsjs: ratioTo('natsjs'),
          vsBullmq: ratioTo('bullmq'),
          vsRust: ratioTo('rust'),
          target: isProtoqueue ? target : undefined,
          better: metric.better,
          clientCpuPct: mean(s.runs.map((r) => r.cpu.clientPct)),
          serverCpuPct: mean(s.runs.map((r) => r.cpu.serverPct)),
          outsideCpuPct: mean(s.runs.map((r) => r.cpu.outsidePct)),
          // CPU time per task varies less with outside load than throughput does.
          clientUsPerTask: median(s.runs.map((r) => (1000 * r.cpu.clientMs) / r.result.count)),
          serverUsPerTask: median(s.runs.map((r) => (1000 * r.cpu.serverMs) / r.result.count)),
          inMsgsPerTask: median(s.runs.map((r) => r.traffic.inMsgsPerTask)),
          outMsgsPerTask: median(s.runs.map((r) => r.traffic.outMsgsPerTask)),
          loadedRuns: s.runs.filter((r) => r.cpu.outsidePct > maxOutsidePct).length,
          runs: s.runs.length,
          peakRssMb: ['w3', 'w8'].includes(c.workload) && rss.length ? Math.max(...rss) / 1024 : undefined,
        })
      }
    }
  }
  return rows
}

/** The summary as a Markdown table (readable in a terminal, pasteable into an issue). */
export function table(rows) {
  const header = ['case', 'metric', 'system', 'median', 'min–max', 'PQ/nats.js', 'PQ/BullMQ', 'PQ/Rust', 'target nats.js / BullMQ / Rust', 'CPU client', 'CPU server', 'CPU outside', 'loaded', 'µs CPU/task client+server', 'msgs/task in/out', 'peak RSS']
  const lines = rows.map((r) => [
    r.case,
    r.metric,
    r.system,
    format(r.median, r.digits),
    `${format(r.min, r.digits)}–${format(r.max, r.digits)}`,
    ratioCell(r.vsNatsjs, r.target?.natsjs, r.better),
    ratioCell(r.vsBullmq, r.target?.bullmq, r.better),
    ratioCell(r.vsRust, r.target?.rust, r.better),
    targetCell(r.target, r.better),
    `${r.clientCpuPct.toFixed(0)}%`,
    `${r.serverCpuPct.toFixed(0)}%`,
    `${r.outsideCpuPct.toFixed(0)}%`,
    `${r.loadedRuns}/${r.runs}`,
    `${r.clientUsPerTask.toFixed(0)} + ${r.serverUsPerTask.toFixed(0)}`,
    `${r.inMsgsPerTask.toFixed(2)} / ${Number.isNaN(r.outMsgsPerTask) ? '–' : r.outMsgsPerTask.toFixed(2)}`,
    r.peakRssMb === undefined ? '' : `${r.peakRssMb.toFixed(0)} MB`,
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const render = (cells) => `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(' | ')} |`
  return [render(header), render(widths.map((w) => '-'.repeat(w))), ...lines.map(render)].join('\n')
}

/** How each system runs W8's handler in case `c`: on the main thread, or on `c.threads` threads. */
function cpuSetup(system, c) {
  const how = c.threads === undefined
    ? { protoqueue: `process(fn), batchSize ${c.batchSize}`, bullmq: `function processor, concurrency ${c.batchSize}`, natsjs: `consume(), ${c.batchSize} at once` }
    : { protoqueue: `process(url, { threads: ${c.threads} })`, bullmq: `processor file, useWorkerThreads, concurrency ${c.threads}` }
  return `${SYSTEM_LABELS[system]}: ${how[system]}`
}

/**
 * W8 read for scaling (after the main table): per case and system, tasks/s, the speedup over the
 * same system on its main thread and on one thread (ratios of medians), how many cores' worth of
 * handler work that is (tasks/s × `workMs`, what one task's work takes alone on one thread), and
 * who used the CPU: the client process (all its threads), the server (nats-server; Redis for
 * BullMQ), everything else.
 */
export function cpuScalingTable(cases, systems, records, maxOutsidePct, workMs) {
  const w8 = cases.filter((c) => c.workload === 'w8')
  const runsOf = (id, system) => records.filter((r) => r.case === id && r.system === system && r.valid)
  const tasksPerSec = (r) => metricValues(r).tasksPerSec
  const medianOf = (id, system) => {
    const runs = runsOf(id, system)
    return runs.length ? median(runs.map(tasksPerSec)) : undefined
  }
  const speedup = (value, base) => (base === undefined ? '–' : `${(value / base).toFixed(2)}×`)
  const lines = [
    '| case | system | tasks/s median (min–max) | × main thread | × 1 thread | cores of work | CPU client | CPU server | CPU outside | µs CPU/task client + server | peak RSS | loaded |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for (const c of w8) {
    for (const system of systems) {
      const runs = runsOf(c.id, system)
      if (runs.length === 0) continue
      const values = runs.map(tasksPerSec)
      const value = median(values)
      const vsMain = c.threads === undefined ? undefined : medianOf('w8-main', system)
      const vsOne = c.threads > 1 ? medianOf('w8-t1', system) : undefined
      const perTask = (key) => median(runs.map((r) => (1000 * r.cpu[key]) / r.result.count))
      const cells = [
        c.label,
        cpuSetup(system, c),
        `${format(value, 0)} (${format(Math.min(...values), 0)}–${format(Math.max(...values), 0)})`,
        speedup(value, vsMain),
        speedup(value, vsOne),
        ((value * workMs) / 1000).toFixed(2),
        `${mean(runs.map((r) => r.cpu.clientPct)).toFixed(0)}%`,
        `${mean(runs.map((r) => r.cpu.serverPct)).toFixed(0)}%`,
        `${mean(runs.map((r) => r.cpu.outsidePct)).toFixed(0)}%`,
        `${perTask('clientMs').toFixed(0)} + ${perTask('serverMs').toFixed(0)}`,
        `${(Math.max(...runs.map((r) => r.peakRssKb ?? 0)) / 1024).toFixed(0)} MB`,
        `${runs.filter((r) => r.cpu.outsidePct > maxOutsidePct).length}/${runs.length}`,
      ]
      lines.push(`| ${cells.join(' | ')} |`)
    }
  }
  return lines.join('\n')
}
