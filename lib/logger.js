// @ts-check
'use strict'
// `setLogger()`: the native core's log lines handed to the application's logger instead of
// written to stderr. One logger for the process (the core's log is the process's, as a shared
// connection's trouble concerns every queue on it); `setLogger()` without one restores stderr.

const { setLogger: nativeSetLogger } = require('../native.js')
const { describe } = require('./describe.js')
const { ProtoqueueError } = require('./errors.js')

/** The levels a line can have, most severe first. */
const LEVELS = /** @type {const} */ (['error', 'warn', 'info', 'debug', 'trace'])

/**
 * @typedef {(message: string, fields?: Record<string, unknown>) => unknown} LogMethod
 * @typedef {Partial<Record<'error' | 'warn' | 'info' | 'debug' | 'trace', LogMethod>>} Logger
 * @typedef {{ level: string, message: string, fields: Record<string, unknown> }} LogLine
 */

/**
 * The function the core calls with each line: the logger's method of the line's level (`trace`
 * falls back to `debug`), called as `method(message, fields)` — the shape of `console`, winston
 * and most loggers. A logger that throws is ignored: logging never breaks the queue.
 * @param {Logger} logger
 * @returns {(line: LogLine) => void}
 */
function forwardTo(logger) {
  return (line) => {
    const level = /** @type {keyof Logger} */ (line.level)
    const method = logger[level] ?? (level === 'trace' ? logger.debug : undefined)
    if (typeof method !== 'function') return
    try {
      method.call(logger, line.message, line.fields)
    } catch {
      // The application's logger failed: nothing to tell it with.
    }
  }
}

/**
 * Sends the core's log lines to `logger` (an object with any of `error`, `warn`, `info`, `debug`,
 * `trace`, each taking `(message, fields)`) instead of stderr; `setLogger()` or `setLogger(null)`
 * sends them to stderr again. Throws `ERR_PQ_INVALID_CONFIG` for anything else.
 * @param {Logger | null | undefined} [logger]
 */
function setLogger(logger) {
  if (logger === undefined || logger === null) {
    nativeSetLogger(null)
    return
  }
  const methods = typeof logger === 'object' || typeof logger === 'function' ? LEVELS.filter((level) => typeof logger[level] === 'function') : []
  if (methods.length === 0) {
    throw new ProtoqueueError(
      'ERR_PQ_INVALID_CONFIG',
      `setLogger(logger) takes an object with any of the methods ${LEVELS.join(', ')} (such as console, or a pino or winston logger), got ${describe(logger)}`,
    )
  }
  nativeSetLogger(forwardTo(logger))
}

module.exports = { setLogger, forwardTo }
