// What bench/run.mjs and bench/baselines.mjs share: the runs of a repetition, one child run through
// the runner protocol (bench/lib/runner.mjs) with its CPU, memory and traffic, and the check on the
// server that the run stored or acked every task exactly once.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

import { cpuBetween, peakRssKb, resetPeakRss, sample } from './proc.mjs'
import { bullmqCompletedKept, variantFor } from './variants.mjs'

/** How long acks may take to reach the server after a worker closed. */
const SETTLE_TIMEOUT_MS = 10_000
/**
 * What Protoqueue keeps results for in the round trips (W6, W7) and bench/results-bench.mjs: the
 * issue's `options.results: { ttl: 60_000 }`, long enough that no record expires during a run.
 */
export const RESULTS = { ttl: 60_000 }
/**
 * W8's worker on the main thread: handlers at once (Protoqueue's and the nats.js runner's
 * `batchSize`, BullMQ's `concurrency`). With threads Protoqueue keeps it and shares it out among
 * them (each thread holds a few tasks ahead); BullMQ's sandboxed pool runs one job per thread.
 */
export const CPU_BATCH_SIZE = 16

/** The runs of one repetition: W3 once per batch size, W8 on the main thread and once per thread count. */
export function casesOf(options) {
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
    if (workload === 'w6') {
      // One call at a time: the worker's batchSize does not matter, W4's is taken. Once with the
      // worker in the caller's process, once in a process of its own (as a service would run it).
      // wire_limit.rs has no worker that answers: no Rust rows in W6 and W7.
      const base = { workload, n: options.roundTrips, batchSize: options.latencyBatchSize, results: RESULTS, skip: ['rust'] }
      cases.push({ id: 'w6', label: 'W6 round trip, sequential', ...base })
      cases.push({ id: 'w6-split', label: 'W6 round trip, worker in another process', ...base, split: true })
    }
    if (workload === 'w7') {
      // batchSize = the calls in flight: no call waits for a free handler slot.
      const label = `W7 round trips, ${options.producers} in flight`
      cases.push({ id: 'w7', label, workload, n: options.n, batchSize: options.producers, producers: options.producers, results: RESULTS, skip: ['rust'] })
    }
    if (workload === 'w8') {
      // Node only: the question is what worker threads bring a Node process. nats.js has no
      // threads of its own to offer (a user would build a pool by hand): it runs the main-thread case.
      const base = { workload, n: options.cpuTasks, batchSize: CPU_BATCH_SIZE }
      cases.push({ id: 'w8-main', label: 'W8 CPU 1 ms/task, main thread', ...base, skip: ['protoqueue-bun', 'rust'] })
      for (const threads of options.threads) {
        const label = `W8 CPU 1 ms/task, ${threads} thread${threads === 1 ? '' : 's'}`
        cases.push({ id: `w8-t${threads}`, label, ...base, threads, skip: ['protoqueue-bun', 'rust', 'natsjs'] })
      }
    }
  }
  return cases
}

/**
 * Runs one child through the ready → go → done → finish protocol (bench/lib/runner.mjs) and
 * returns its result with the CPU use and peak RSS measured over its timed part. `startProfile`,
 * if given, starts a profiler on the child before "go" and resolves to its stop function.
 */
export function runChild({ command, args, env }, spec, server, timeoutMs, startProfile, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...args, JSON.stringify(spec)], { cwd, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    let stderr = ''
    let before, trafficBefore, measured, stopRecording
    /** The child, and the processes it started for the run (a worker of its own, W6 split). */
    let clientPids = [child.pid]
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
        clientPids = [child.pid, ...(message.pids ?? [])]
        stopRecording = await startProfile?.(child.pid)
        trafficBefore = await server.traffic()
        resetPeakRss(child.pid)
        before = sample(clientPids, server.pid)
        child.stdin.write('go\n')
      } else if (message.event === 'done') {
        const after = sample(clientPids, server.pid)
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
export function trafficBetween(before, after, tasks) {
  const perTask = (key) => (after[key] - before[key]) / tasks
  return { inMsgsPerTask: perTask('inMsgs'), outMsgsPerTask: perTask('outMsgs'), inBytesPerTask: perTask('inBytes'), outBytesPerTask: perTask('outBytes') }
}

/**
 * Checks on the server what the runner claims: every task handled exactly once, and stored
 * (W1, W2, W5) or acked and removed (W3, W4, W6, W7, W8); every round trip answered with its own task's
 * result; no dead letters; with Protoqueue's `options.results`, one record per task in the
 * queue's history stream. Throws on any mismatch.
 */
export async function verify(jsm, c, spec, result) {
  if (result.count !== c.n || result.distinct !== c.n || result.duplicates !== 0) {
    throw new Error(`runner counted ${result.distinct} distinct tasks of ${c.n} (${result.duplicates} duplicates, reported count ${result.count})`)
  }
  if (result.wrong) throw new Error(`${result.wrong} of ${c.n} round trips were answered with another task's result`)
  if (result.handled !== undefined && (result.handled !== c.n || result.handledDuplicates !== 0)) {
    throw new Error(`the worker ran ${result.handled} distinct tasks of ${c.n} (${result.handledDuplicates} more than once)`)
  }
  if (spec.system === 'bullmq') return verifyBullmq(c, spec)
  const expected = ['w1', 'w2', 'w5'].includes(c.workload) ? c.n : 0
  // Protoqueue's workers write one record per task there (options.results), before they ack it.
  const history = spec.results && spec.system.startsWith('protoqueue') ? `${spec.stream}_HISTORY` : undefined
  const deadline = Date.now() + SETTLE_TIMEOUT_MS
  for (;;) {
    const streams = []
    for await (const info of jsm.streams.list()) streams.push(info)
    const main = streams.find((s) => s.config.name === spec.stream)
    const records = streams.find((s) => s.config.name === history)?.state.messages
    const strays = streams.filter((s) => s.config.name !== spec.stream && s.config.name !== history && s.state.messages > 0)
    if (strays.length > 0) throw new Error(`unexpected messages in ${strays.map((s) => `${s.config.name} (${s.state.messages})`).join(', ')}`)
    const stored = main?.state.messages
    if (stored === expected && (!history || records === c.n)) return
    if (Date.now() > deadline) {
      if (stored !== expected) throw new Error(`stream ${spec.stream} holds ${stored} messages, expected ${expected}`)
      throw new Error(`history stream ${history} holds ${records} records, expected ${c.n} (one per task)`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/**
 * The same check in Redis for a BullMQ run: W1, W2 and W5 left exactly N waiting jobs; the others
 * left nothing waiting, active, delayed or failed, as many completed jobs as the runner's variant
 * keeps (bench/lib/variants.mjs `bullmqCompletedKept`), and — since a removed completed job leaves
 * nothing to count — N job ids handed out and no job left in Redis but the kept completed ones.
 */
async function verifyBullmq(c, spec) {
  const { Queue } = await import('bullmq')
  const { default: IORedis } = await import('ioredis')
  const connection = new IORedis(spec.url, { maxRetriesPerRequest: null })
  const queue = new Queue(spec.stream, { connection })
  try {
    // W3, W4, W6, W7, W8 ran every job: none waits.
    const stored = ['w1', 'w2', 'w5'].includes(c.workload)
    const completed = stored ? 0 : bullmqCompletedKept(variantFor('bullmq', c.workload, spec.variant), c.n)
    const expected = { wait: stored ? c.n : 0, completed, active: 0, delayed: 0, failed: 0, prioritized: 0, paused: 0 }
    const deadline = Date.now() + SETTLE_TIMEOUT_MS
    for (;;) {
      const counts = await queue.getJobCounts(...Object.keys(expected))
      const wrong = Object.entries(expected).filter(([state, n]) => counts[state] !== n)
      if (wrong.length === 0) break
      if (Date.now() > deadline) throw new Error(`queue ${spec.stream} holds ${wrong.map(([state]) => `${counts[state]} ${state}`).join(', ')}; expected ${wrong.map(([state, n]) => `${n} ${state}`).join(', ')}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    // Every job is a hash at <prefix>:<queue>:<id>; the ids come from the counter <prefix>:<queue>:id.
    const base = queue.toKey('')
    const ids = Number(await connection.get(`${base}id`))
    if (ids !== c.n) throw new Error(`queue ${spec.stream} handed out ${ids} job ids, expected ${c.n}`)
    let jobs = 0
    const isJob = (key) => /^\d+$/.test(key.slice(base.length))
    for (let cursor = '0'; ; ) {
      const [next, keys] = await connection.scan(cursor, 'MATCH', `${base}*`, 'COUNT', 1000)
      jobs += keys.filter(isJob).length
      cursor = next
      if (cursor === '0') break
    }
    const expectedJobs = stored ? c.n : completed
    if (jobs !== expectedJobs) throw new Error(`queue ${spec.stream} holds ${jobs} jobs in Redis, expected ${expectedJobs}`)
  } finally {
    await queue.close()
    await connection.quit()
  }
}

/** Deletes every stream, so each run starts on an empty server store. */
export async function deleteAllStreams(jsm) {
  const names = []
  for await (const info of jsm.streams.list()) names.push(info.config.name)
  for (const name of names) await jsm.streams.delete(name)
}

/**
 * One run of case `c` on `system` (variant `variant`, or its runner's default): a fresh stream or
 * queue, the child, the check, the cleanup. Resolves to the run's record; `record.valid` says
 * whether it passed (`record.error` says why not).
 */
export async function runCase({ c, system, variant, rep, options, launcher, jsm, server, redis, cwd, startProfile }) {
  const stream = `bench_${c.id}_${system}_${rep}_${Date.now().toString(36)}`.replaceAll('-', '_')
  // BullMQ runs against the driver's Redis: its pid and counters stand for "the server".
  const target = system === 'bullmq' ? redis : server
  const spec = {
    system,
    ...(variant ? { variant } : {}),
    workload: c.workload,
    n: c.n,
    batchSize: c.batchSize,
    window: options.window,
    rate: options.rate,
    producers: options.producers,
    url: target.url,
    stream,
    subject: `bench.${stream}`,
    // Protoqueue's options.results; handlers that return a result; a worker in a process of its own.
    ...(c.results ? { results: c.results } : {}),
    ...(c.withResult ? { withResult: true } : {}),
    ...(c.split ? { split: true } : {}),
    // W8: handlers on worker threads (none: on the main thread).
    ...(c.threads ? { threads: c.threads } : {}),
  }
  const record = { type: 'run', case: c.id, workload: c.workload, system, ...(variant ? { variant } : {}), rep, spec }
  try {
    Object.assign(record, await runChild(launcher, spec, target, options.runTimeout * 1000, startProfile, cwd))
    await verify(jsm, c, spec, record.result)
    record.valid = true
  } catch (err) {
    record.valid = false
    record.error = err.message
  }
  if (system === 'bullmq') await redis.flush()
  else await deleteAllStreams(jsm)
  return record
}
