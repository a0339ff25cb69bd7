// What a test file's servers and the native core logged, kept in memory and written to stderr
// only when a test of the file failed (the file's process then exits non-zero): a passing run
// stays short, a failing one shows what led to it. Set PQ_TEST_LOGS=1 to see the lines as they come.
import { writeSync } from 'node:fs'

import { setLogger } from 'protoqueue'

/** The newest lines kept; older ones are dropped (a long test's start rarely explains its end). */
const MAX_LINES = 3_000
const lines: string[] = []
let dropped = 0
let installed = false

/** Keeps `text` (one or more lines) from `source`, e.g. `nats-server :4222` or `core`. */
export function keepLog(source: string, text: string): void {
  install()
  const stamp = new Date().toISOString().slice(11, 23)
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    const entry = `${stamp} [${source}] ${line}`
    if (process.env.PQ_TEST_LOGS) writeSync(2, `${entry}\n`)
    lines.push(entry)
  }
  if (lines.length > MAX_LINES) {
    dropped += lines.length - MAX_LINES
    lines.splice(0, lines.length - MAX_LINES)
  }
}

/** Routes the core's log into the kept lines and shows them at exit if a test failed. Idempotent. */
export function install(): void {
  if (installed) return
  installed = true
  setLogger(coreLogger)
  process.on('exit', (code) => {
    if (code === 0 || lines.length === 0 || process.env.PQ_TEST_LOGS) return
    const header = dropped > 0 ? ` (the last ${lines.length}; ${dropped} earlier ones dropped)` : ''
    writeSync(2, `\n--- logs of this file's servers and native core${header} ---\n${lines.join('\n')}\n--- end of logs ---\n`)
  })
}

/**
 * The logger `setLogger()` gets in tests: every line kept with its fields. A test of
 * `setLogger` itself puts this one back when it is done.
 */
export const coreLogger = Object.fromEntries(
  (['error', 'warn', 'info', 'debug', 'trace'] as const).map((level) => [
    level,
    (message: string, fields?: Record<string, unknown>) =>
      keepLog('core', `${level.toUpperCase()} ${message}${fields && Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : ''}`),
  ]),
)
