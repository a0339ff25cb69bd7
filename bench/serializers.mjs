#!/usr/bin/env node
// Protobuf vs JSON (and MessagePack) task data for the same task (bench/README.md, "Serializers"):
// bytes per task (the data, the stored message, the client→server traffic), enqueue throughput
// (enqueueBatch in chunks of 1,000) and process throughput (one worker, batchSize 100). Starts its
// own nats-server; repetitions are interleaved (every format once, then again) and medians
// reported, with the CPU used outside this process and the server during each timed part, so
// runs spoiled by other load can be told apart.
//
//   node bench/serializers.mjs [--n 20000] [--reps 3] [--formats json,protobuf,msgpack]
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { create, toBinary } from '@bufbuild/protobuf'

import { Protoqueue } from '../index.mjs'
import { OrderSchema } from '../examples/protobuf/gen/shop/v1/order_pb.js'
import { startNatsServer } from './lib/nats-server.mjs'
import { cpuBetween, sample } from './lib/proc.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
// Not strict: run.mjs imports this file after its own runs, with its flags (`--n`, `--reps` apply).
const { values } = parseArgs({
  strict: false,
  options: {
    n: { type: 'string', default: process.env.BENCH_N ?? '20000' },
    reps: { type: 'string', default: process.env.BENCH_REPS ?? '3' },
    formats: { type: 'string', default: 'json,protobuf,msgpack' },
    help: { type: 'boolean', default: false },
  },
})
if (values.help) {
  process.stdout.write('node bench/serializers.mjs [--n 20000] [--reps 3] [--formats json,protobuf,msgpack]\n')
  process.exit(0)
}
const N = Number(values.n)
const REPS = Number(values.reps)
const FORMATS = String(values.formats).split(',')
if (!Number.isInteger(N) || N < 1 || !Number.isInteger(REPS) || REPS < 1 || FORMATS.some((f) => !['json', 'protobuf', 'msgpack'].includes(f))) {
  throw new Error('usage: node bench/serializers.mjs [--n 20000] [--reps 3] [--formats json,protobuf,msgpack]')
}
const CHUNK = 1_000
const BATCH_SIZE = 100
const log = (message) => process.stderr.write(`[serializers] ${message}\n`)

/** The same order as JSON data and as a shop.v1.Order (examples/protobuf): a typical small task. */
function order(i) {
  return {
    id: `order-${i}`,
    customerEmail: `customer${i}@example.com`,
    items: [
      { sku: 'tea-earl-grey-100g', quantity: 2 },
      { sku: 'mug-white-350ml', quantity: 1 },
      { sku: 'biscuits-shortbread', quantity: 3 },
    ],
    totalCents: 4_250 + i,
  }
}

const FORMAT = {
  json: { config: {}, data: (i) => order(i), size: (i) => Buffer.byteLength(JSON.stringify(order(i))) },
  protobuf: {
    config: { schema: OrderSchema },
    data: (i) => ({ ...order(i), totalCents: BigInt(order(i).totalCents) }),
    size: (i) => toBinary(OrderSchema, create(OrderSchema, { ...order(i), totalCents: BigInt(order(i).totalCents) })).length,
  },
  msgpack: {
    config: { serializer: 'msgpack' },
    data: (i) => order(i),
    size: async (i) => (await import('msgpackr')).pack(order(i)).length,
  },
}

const median = (xs) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

async function runOnce(server, format, rep) {
  const names = { streamName: `ser_${format}_${rep}_${Date.now()}`, subject: `ser.${format}.${rep}` }
  const queue = new Protoqueue({ ...names, ...FORMAT[format].config, options: { batchSize: BATCH_SIZE } })
  await queue.connect(server.url)
  const tasks = Array.from({ length: N }, (_, i) => ({ data: FORMAT[format].data(i) }))

  const trafficBefore = await server.traffic()
  const enqueueStart = sample(process.pid, server.pid)
  for (let i = 0; i < N; i += CHUNK) await queue.enqueueBatch(tasks.slice(i, i + CHUNK))
  const enqueueEnd = sample(process.pid, server.pid)
  const trafficAfter = await server.traffic()
  const stats = await queue.getStats()
  if (stats.messages !== N) throw new Error(`${format}: ${stats.messages} tasks stored, expected ${N}`)

  let handled = 0
  let first = 0
  let processStart
  const done = new Promise((resolve) => {
    queue.process(async (task) => {
      if (handled === 0) {
        first = performance.now()
        processStart = sample(process.pid, server.pid)
      }
      // Touch the data, as a real handler would.
      if (typeof task.data.id !== 'string') throw new Error('not decoded')
      if (++handled === N) resolve(performance.now())
      return { success: true }
    })
  })
  const last = await done
  const processEnd = sample(process.pid, server.pid)
  await queue.disconnect()

  const enqueueCpu = cpuBetween(enqueueStart, enqueueEnd)
  const processCpu = cpuBetween(processStart, processEnd)
  return {
    format,
    enqueuePerSec: N / ((enqueueEnd.at - enqueueStart.at) / 1000),
    processPerSec: (N - 1) / ((last - first) / 1000),
    storedBytesPerTask: stats.bytes / N,
    wireBytesPerTask: (trafficAfter.inBytes - trafficBefore.inBytes) / N,
    enqueueCpuUsPerTask: ((enqueueCpu.clientMs + enqueueCpu.serverMs) * 1000) / N,
    processCpuUsPerTask: ((processCpu.clientMs + processCpu.serverMs) * 1000) / N,
    outsidePct: Math.max(enqueueCpu.outsidePct, processCpu.outsidePct),
  }
}

const server = await startNatsServer(root)
log(`nats-server ${server.version}; ${N} tasks × ${REPS} reps × ${FORMATS.join(', ')}`)
const runs = []
try {
  for (let rep = 0; rep < REPS; rep++) {
    for (const format of FORMATS) {
      const result = await runOnce(server, format, rep)
      log(`${format} rep ${rep + 1}: enqueue ${Math.round(result.enqueuePerSec)}/s, process ${Math.round(result.processPerSec)}/s, outside CPU ${Math.round(result.outsidePct)}%`)
      runs.push(result)
    }
  }
} finally {
  await server.stop()
}

const rows = []
for (const format of FORMATS) {
  const mine = runs.filter((r) => r.format === format)
  const m = (key) => median(mine.map((r) => r[key]))
  rows.push({
    format,
    'data B/task': Math.round(await FORMAT[format].size(0)),
    'stored B/task': Math.round(m('storedBytesPerTask')),
    'wire in B/task': Math.round(m('wireBytesPerTask')),
    'enqueue tasks/s': Math.round(m('enqueuePerSec')),
    'process tasks/s': Math.round(m('processPerSec')),
    'µs CPU/task enqueue': Number(m('enqueueCpuUsPerTask').toFixed(1)),
    'µs CPU/task process': Number(m('processCpuUsPerTask').toFixed(1)),
    'outside CPU % (max)': Math.round(Math.max(...mine.map((r) => r.outsidePct))),
  })
}
const columns = Object.keys(rows[0])
const width = (c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length))
const line = (cells) => `| ${cells.map((cell, i) => String(cell).padStart(width(columns[i]))).join(' | ')} |`
process.stdout.write(`\nSerializers: the same order task (${N} tasks, medians of ${REPS}; client+server CPU per task)\n\n`)
process.stdout.write(`${line(columns)}\n| ${columns.map((c) => '-'.repeat(width(c))).join(' | ')} |\n`)
for (const row of rows) process.stdout.write(`${line(columns.map((c) => row[c]))}\n`)
