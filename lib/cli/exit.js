// @ts-check
'use strict'
// What the command line's exit codes mean, and the error that carries one.

const { messageOf } = require('../describe.js')

/** Exit codes of `protoqueue`: scripts can rely on them. */
const EXIT = Object.freeze({
  /** It did what was asked. */
  OK: 0,
  /** The operation failed (the `ERR_PQ_*` code is printed), or a confirmation was declined. */
  FAILED: 1,
  /** Usage error: unknown command or flag, a bad or missing value, or no `--yes` where one is needed. */
  USAGE: 2,
  /** No connection: no server reachable, credentials refused (`ERR_PQ_AUTH`) or TLS failed (`ERR_PQ_TLS`). */
  CONNECTION: 3,
})

/** Library codes that mean "could not connect" at `connect()`. */
const CONNECTION_CODES = new Set(['ERR_PQ_CONNECT', 'ERR_PQ_AUTH', 'ERR_PQ_TLS'])

/**
 * The code `--json` reports for a failure of the command line's own (no library code): a script
 * always gets one.
 * @type {Record<number, string>}
 */
const OWN_CODES = { [EXIT.FAILED]: 'ERR_PQ_CLI_FAILED', [EXIT.USAGE]: 'ERR_PQ_CLI_USAGE', [EXIT.CONNECTION]: 'ERR_PQ_CONNECT' }

/** An error the command line reports and exits with: `exitCode`, and `code` when the library gave one. */
class CliError extends Error {
  /**
   * @param {number} exitCode
   * @param {string} message
   * @param {string} [code] the library's `ERR_PQ_*` code
   */
  constructor(exitCode, message, code) {
    super(message)
    this.name = 'CliError'
    this.exitCode = exitCode
    this.code = code
  }

  /** The code `--json` reports: the library's, else the command line's own for its exit code. */
  get reportedCode() {
    return this.code ?? OWN_CODES[this.exitCode] ?? 'ERR_PQ_CLI_FAILED'
  }
}

/** @param {string} message */
const usage = (message) => new CliError(EXIT.USAGE, message)

/** The library's words for a stream the command line asked for that is not there. */
const MISSING_STREAM = /^invalid configuration: stream ("(?:[^"\\]|\\.)*") does not exist \(createStreams: false opens existing streams only\)$/

/**
 * The CliError for an error the library raised: configuration mistakes are usage errors,
 * connection failures at connect are `CONNECTION`, the rest `FAILED`.
 * @param {unknown} err
 * @param {{ connecting?: boolean }} [context]
 */
function fromLibrary(err, context = {}) {
  if (err instanceof CliError) return err
  const code = typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined
  const message = messageOf(err)
  const missing = code === 'ERR_PQ_INVALID_CONFIG' ? MISSING_STREAM.exec(message) : null
  if (missing) {
    // In the command line's words: it never creates a queue (`createStreams: false` is the library's).
    return new CliError(EXIT.USAGE, `no queue with stream ${missing[1]} on the server (protoqueue queues lists them)`, code)
  }
  if (code === 'ERR_PQ_INVALID_CONFIG') return new CliError(EXIT.USAGE, message, code)
  if (code !== undefined && (CONNECTION_CODES.has(code) || (context.connecting && code === 'ERR_PQ_TIMEOUT'))) {
    return new CliError(EXIT.CONNECTION, message, code)
  }
  return new CliError(EXIT.FAILED, message, code)
}

module.exports = { EXIT, CliError, usage, fromLibrary }
