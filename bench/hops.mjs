#!/usr/bin/env node
// Where one awaited `enqueue` spends its time (W1), hop by hop (bench/README.md "W1 hop by hop").
//
//   node bench/hops.mjs [--n 3000] [--warmup 1000] [--rounds 3]
//
// Starts its own nats-server, then, in rounds (interleaved so outside load hits all alike):
//   - Protoqueue through the public API: `await queue.enqueue(...)` in a loop (the W1 number);
//   - the same path taken apart: `lib/coalesce.js` over the native `enqueueEach` exactly as
//     lib/queue.js wires them, with marks on the JavaScript thread, and the addon's own marks on the
//     runtime thread (src/hops.rs, on with PROTOQUEUE_HOPS=1, which this script sets);
//   - nats.js `await js.publish(...)` in a loop (one thread: the W1 baseline), and `await nc.flush()`
//     (a core NATS PING/PONG: the round trip without JetStream), so the server's own share is the
//     difference;
//   - with a redis-server 7+ on the PATH (as bench/run.mjs finds it), BullMQ `await queue.add()` and
//     an ioredis PING the same way.
// Every mark is CLOCK_MONOTONIC (process.hrtime.bigint() here, clock_gettime in Rust). Prints the
// median and p90 of each hop in µs, then each whole call's median, mean and p90. Needs a release addon (npm run build) for numbers that mean
// something; Linux only.
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { jetstream, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'

import { startNatsServer } from './lib/nats-server.mjs'
import { findRedisServer, startRedisServer } from './lib/redis-server.mjs'
import { taskData } from './lib/runner.mjs'

process.env.PROTOQUEUE_HOPS = '1' // read once when the addon loads, below
const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const { Protoqueue } = require('../index.js')
const { NativeQueue } = require('../native.js')
const hopsTake = () => NativeQueue.hopsTake()
const { coalesce } = require('../lib/coalesce.js')

const args = Object.fromEntries(process.argv.slice(2).join(' ').split('--').filter(Boolean).map((a) => a.trim().split(/\s+/)))
const N = Number(args.n ?? 3000)
const WARMUP = Number(args.warmup ?? 1000)
const ROUNDS = Number(args.rounds ?? 3)

const now = () => Number(process.hrtime.bigint())
/** Rust's marks (src/hops.rs `Hop`), by number. */
const RUST = { 1: 'taskStart', 2: 'connected', 3: 'handed', 4: 'acked', 5: 'done' }

/** The hops reported, each from one mark to the next. */
const HOPS = [
  ['call', 'flush', 'JS: enqueue() call → coalesced flush (encode, microtask)'],
  ['flush', 'returned', 'JS: native enqueueEach() call, synchronous part (convert, spawn)'],
  ['flush', 'taskStart', 'JS thread → runtime thread: the task starts (cross-thread wake)'],
  ['taskStart', 'connected', 'runtime: conversion, connection lock, publisher set-up'],
  ['connected', 'handed', 'runtime: encode, hand the publish to async-nats'],
  ['handed', 'acked', 'runtime: socket write → server → ack read → matched (round trip)'],
  ['acked', 'done', 'runtime: results built'],
  ['done', 'settled', 'runtime → JS thread: the answer arrives (second wake)'],
  ['settled', 'resumed', 'JS: per-caller promise → awaiting code resumes'],
  ['call', 'resumed', 'total, one enqueue'],
]

const median = (sorted) => sorted[sorted.length >> 1]
const p90 = (sorted) => sorted[Math.floor(sorted.length * 0.9)]
const us = (ns) => (ns / 1000).toFixed(1)

async function instrumented(url, stream) {
  const nq = new NativeQueue({ streamName: stream, subject: `${stream}.tasks` })
  await nq.connect(url)
  let marks
  const enqueues = coalesce(
    (inputs, call) => {
      marks.flush = now()
      // As lib/tasks.js sends them: a task that is only data as its JSON text.
      nq.enqueueEach(call, inputs.map((input) => input.data))
      marks.returned = now()
    },
    (text) => new Error(text),
  )
  nq.answerEnqueuesWith(({ call, ids, failures, error }) => {
    marks.settled = now()
    if (typeof error === 'string') return enqueues.answer(call, undefined, error)
    const results = ids.split('\n').map((id) => ({ value: id }))
    for (const { index, error } of failures ?? []) results[index] = { error }
    enqueues.answer(call, results)
  })
  const enqueueOne = enqueues.call
  const samples = []
  for (let i = 0; i < WARMUP + N; i++) {
    marks = { call: now() }
    await enqueueOne({ data: JSON.stringify(taskData(i)) })
    marks.resumed = now()
    const rust = hopsTake()
    for (let k = 0; k < rust.length; k += 2) marks[RUST[rust[k]]] ??= rust[k + 1]
    if (i >= WARMUP) samples.push(marks)
  }
  await nq.disconnect(false)
  return samples
}

/** Times `op(i)` awaited N times after WARMUP: one duration (ns) per call. */
async function timed(op) {
  for (let i = 0; i < WARMUP; i++) await op(i)
  const durations = new Float64Array(N)
  for (let i = 0; i < N; i++) {
    const start = now()
    await op(i)
    durations[i] = now() - start
  }
  return [...durations]
}

async function publicApi(url, stream) {
  const queue = new Protoqueue({ streamName: stream, subject: `${stream}.tasks` })
  await queue.connect(url)
  const durations = await timed((i) => queue.enqueue({ data: taskData(i) }))
  await queue.disconnect()
  hopsTake()
  return durations
}

async function natsjs(url, stream) {
  const nc = await connect({ servers: url, noAsyncTraces: true })
  const jsm = await jetstreamManager(nc)
  await jsm.streams.add({ name: stream, subjects: [`${stream}.tasks`], retention: RetentionPolicy.Workqueue, storage: StorageType.File })
  const js = jetstream(nc)
  const publish = await timed((i) => js.publish(`${stream}.tasks`, JSON.stringify(taskData(i))))
  const ping = await timed(() => nc.flush())
  await nc.close()
  return { publish, ping }
}

/** BullMQ's `queue.add` and a Redis PING, when a redis-server is there (as bench/run.mjs starts it). */
async function bullmq(redis, name) {
  const { Queue } = await import('bullmq')
  const { default: IORedis } = await import('ioredis')
  const connection = new IORedis(redis.url, { maxRetriesPerRequest: null })
  const queue = new Queue(name, { connection })
  const add = await timed((i) => queue.add('task', taskData(i)))
  const ping = await timed(() => connection.ping())
  await queue.close()
  await connection.quit()
  await redis.flush()
  return { add, ping }
}

const server = await startNatsServer(root)
const redisBin = findRedisServer()
const redis = redisBin && (await startRedisServer(redisBin))
const nc = await connect({ servers: server.url })
const jsm = await jetstreamManager(nc)
const all = []
const totals = { 'Protoqueue `await queue.enqueue()`': [], 'nats.js `await js.publish()`': [], 'nats.js `await nc.flush()` (PING/PONG, no JetStream)': [] }
if (redis) Object.assign(totals, { 'BullMQ `await queue.add()`': [], 'ioredis `await ping()`': [] })
try {
  for (let round = 1; round <= ROUNDS; round++) {
    all.push(...(await instrumented(server.url, `hops_i_${round}`)))
    totals['Protoqueue `await queue.enqueue()`'].push(...(await publicApi(server.url, `hops_a_${round}`)))
    const n = await natsjs(server.url, `hops_n_${round}`)
    totals['nats.js `await js.publish()`'].push(...n.publish)
    totals['nats.js `await nc.flush()` (PING/PONG, no JetStream)'].push(...n.ping)
    if (redis) {
      const b = await bullmq(redis, `hops_b_${round}`)
      totals['BullMQ `await queue.add()`'].push(...b.add)
      totals['ioredis `await ping()`'].push(...b.ping)
    }
    for (const name of [`hops_i_${round}`, `hops_a_${round}`, `hops_n_${round}`]) await jsm.streams.delete(name).catch(() => {})
  }
} finally {
  await nc.close()
  await server.stop()
  await redis?.stop()
}

console.log(`W1 hop by hop: ${ROUNDS} rounds × ${N} sequential enqueues (after ${WARMUP} warm-up), ${server.version}`)
console.log('| hop | median µs | p90 µs |\n| --- | --- | --- |')
for (const [from, to, label] of HOPS) {
  const values = all.filter((m) => m[from] !== undefined && m[to] !== undefined).map((m) => m[to] - m[from]).sort((a, b) => a - b)
  if (values.length === 0) {
    console.log(`| ${label} | – | – |`)
    continue
  }
  console.log(`| ${label} | ${us(median(values))} | ${us(p90(values))} |`)
}
const sortedOf = (values) => [...values].sort((a, b) => a - b)
const mean = (values) => values.reduce((sum, v) => sum + v, 0) / values.length
console.log('\n| one awaited call | median µs | mean µs (= 1 / W1 throughput) | p90 µs |\n| --- | --- | --- | --- |')
for (const [label, values] of Object.entries(totals)) {
  const sorted = sortedOf(values)
  console.log(`| ${label} | ${us(median(sorted))} | ${us(mean(values))} | ${us(p90(sorted))} |`)
}
const api = mean(totals['Protoqueue `await queue.enqueue()`'])
const ratios = [`nats.js ${(mean(totals['nats.js `await js.publish()`']) / api).toFixed(2)}×`]
if (redis) ratios.push(`BullMQ ${(mean(totals['BullMQ `await queue.add()`']) / api).toFixed(2)}×`)
console.log(`\nW1 throughput ratio Protoqueue / …: ${ratios.join(', ')} (same process, same minutes)`)
