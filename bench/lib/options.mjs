// The benchmark's settings: defaults, overridden by BENCH_* environment variables, overridden by
// --flags (e.g. `node bench/run.mjs --n 5000 --reps 1 --systems protoqueue,natsjs`).
import { availableParallelism } from 'node:os'

/** W8's thread counts: 1, 2 and every core this process may use, if that is more. */
const DEFAULT_THREADS = [...new Set([1, 2, availableParallelism()])].sort((a, b) => a - b).join(',')

/** name → [environment variable, default, parser]. */
const SETTINGS = {
  n: ['BENCH_N', '20000', positiveInteger],
  reps: ['BENCH_REPS', '3', positiveInteger],
  workloads: ['BENCH_WORKLOADS', 'w1,w2,w3,w4,w5,w6,w7,w8', list(['w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7', 'w8'])],
  producers: ['BENCH_PRODUCERS', '100', positiveInteger],
  systems: ['BENCH_SYSTEMS', 'protoqueue,protoqueue-bun,natsjs,bullmq,rust', list(['protoqueue', 'protoqueue-bun', 'natsjs', 'bullmq', 'rust'])],
  batchSizes: ['BENCH_BATCH_SIZES', '10,100', (text) => text.split(',').map(positiveInteger)],
  window: ['BENCH_WINDOW', '1000', positiveInteger],
  latencyTasks: ['BENCH_LATENCY_TASKS', '2000', positiveInteger],
  rate: ['BENCH_RATE', '500', positiveInteger],
  latencyBatchSize: ['BENCH_LATENCY_BATCH_SIZE', '10', positiveInteger],
  roundTrips: ['BENCH_ROUND_TRIPS', '2000', positiveInteger],
  cpuTasks: ['BENCH_CPU_TASKS', '2000', positiveInteger],
  threads: ['BENCH_THREADS', DEFAULT_THREADS, (text) => text.split(',').map(positiveInteger)],
  runTimeout: ['BENCH_RUN_TIMEOUT', '180', positiveInteger],
  maxOutside: ['BENCH_MAX_OUTSIDE', '25', positiveInteger],
  profile: ['BENCH_PROFILE', '', (text) => text],
}

export const HELP = `Usage: node bench/run.mjs [--flag value ...]   (or npm run bench -- --flag value)
  --n               BENCH_N                   tasks per run of W1-W3, W5 and W7 (20000)
  --reps            BENCH_REPS                repetitions of every workload and system (3)
  --workloads       BENCH_WORKLOADS           any of w1,w2,w3,w4,w5,w6,w7,w8
  --producers       BENCH_PRODUCERS           W5 concurrent producers, W7 round trips in flight (100)
  --systems         BENCH_SYSTEMS             any of protoqueue,protoqueue-bun,natsjs,bullmq,rust
  --batch-sizes     BENCH_BATCH_SIZES         W3 batchSize values (10,100)
  --window          BENCH_WINDOW              W2 chunk / publish window (1000)
  --latency-tasks   BENCH_LATENCY_TASKS       W4 tasks (2000)
  --rate            BENCH_RATE                W4 tasks per second (500)
  --latency-batch-size BENCH_LATENCY_BATCH_SIZE  W4 worker batchSize (10)
  --round-trips     BENCH_ROUND_TRIPS         W6 sequential round trips (enqueue and wait for the result) per run (2000)
  --cpu-tasks       BENCH_CPU_TASKS           W8 tasks (~1 ms of CPU work each) per run (2000)
  --threads         BENCH_THREADS             W8 worker-thread counts (${DEFAULT_THREADS})
  --run-timeout     BENCH_RUN_TIMEOUT         seconds before a run is killed (180)
  --max-outside     BENCH_MAX_OUTSIDE         % of one core used by other processes above which a run is flagged (25)
  --profile         BENCH_PROFILE             a folder: record perf and V8 profiles of every run's timed part (off)`

function positiveInteger(text) {
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1) throw new Error(`expected a positive integer, got ${JSON.stringify(text)}`)
  return value
}

function list(allowed) {
  return (text) => {
    const items = text.split(',').map((item) => item.trim()).filter(Boolean)
    const unknown = items.filter((item) => !allowed.includes(item))
    if (unknown.length > 0) throw new Error(`unknown ${unknown.join(', ')}; choose from ${allowed.join(', ')}`)
    return items
  }
}

const flagName = (name) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)

/** The settings from the environment and `argv` (flags as `--name value` or `--name=value`). */
export function parseOptions(argv, env = process.env) {
  const flags = {}
  for (let i = 0; i < argv.length; i++) {
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i])
    if (!match) throw new Error(`unexpected argument ${JSON.stringify(argv[i])}\n${HELP}`)
    flags[match[1]] = match[2] ?? argv[++i]
  }
  if ('help' in flags) return undefined
  const options = {}
  for (const [name, [variable, fallback, parse]] of Object.entries(SETTINGS)) {
    const text = flags[flagName(name)] ?? env[variable] ?? fallback
    delete flags[flagName(name)]
    try {
      options[name] = parse(text)
    } catch (err) {
      throw new Error(`--${flagName(name)} / ${variable}: ${err.message}`)
    }
  }
  const unknown = Object.keys(flags)
  if (unknown.length > 0) throw new Error(`unknown option --${unknown[0]}\n${HELP}`)
  return options
}
