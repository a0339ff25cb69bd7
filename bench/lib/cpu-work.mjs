// W8's task: ~1 ms of synchronous CPU work, the same in every system and on every thread
// (bench/README.md "CPU-heavy handlers on threads"). Every W8 handler — a main-thread function,
// a Protoqueue handler module on worker threads (cpu-handler-protoqueue.mjs), a BullMQ sandboxed
// processor on worker threads (cpu-processor-bullmq.mjs) — calls `cpuTask`, which does the work
// and then reports the task to the runner's main thread over a BroadcastChannel: a handler on
// another thread cannot reach the runner's tally, and one path for all keeps the cases alike.
import { BroadcastChannel } from 'node:worker_threads'

/** The channel the handlers report on and the runner listens to (bench/lib/runner.mjs `w8`). */
export const CPU_CHANNEL = 'protoqueue-bench-w8'

/**
 * Rounds of the loop per task: ~1 ms on the machine of bench/README.md's run (AMD EPYC, Node 20).
 * A fixed count, not a time, so every system and thread does the same work; `measureWork` says
 * what it costs where the bench runs.
 */
export const WORK_ROUNDS = 600_000

/**
 * A deterministic busy loop (xorshift32 rounds from `seed`): integer arithmetic only, no memory
 * traffic, no allocation, nothing a thread could wait on. Returns the last state.
 */
export function work(seed) {
  let x = seed | 1
  for (let round = 0; round < WORK_ROUNDS; round++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
  }
  return x
}

/** This thread's channel, opened on its first task; unref'd: it must not keep a thread alive. */
let channel

/**
 * W8's handler body: does the work for task `data` and reports `{ i, start, check }` — `start` in
 * ms since the epoch (performance.timeOrigin differs per thread, the sum does not), `check` the
 * loop's result, which travels so that no compiler may drop the loop.
 */
export function cpuTask(data) {
  const start = performance.timeOrigin + performance.now()
  const check = work(data.i)
  if (!channel) {
    channel = new BroadcastChannel(CPU_CHANNEL)
    channel.unref()
  }
  channel.postMessage({ i: data.i, start, check })
}

/** What one `work` costs on this thread: the median ms of `runs` calls, after a warm-up. */
export function measureWork(runs = 300) {
  for (let i = 0; i < 50; i++) work(i)
  const times = []
  for (let i = 0; i < runs; i++) {
    const start = performance.now()
    work(i)
    times.push(performance.now() - start)
  }
  times.sort((a, b) => a - b)
  return times[runs >> 1]
}
