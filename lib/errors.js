// @ts-check
'use strict'
// Protoqueue's errors: `ProtoqueueError`, whose `code` is stable, and the native side's errors
// turned into one. napi-rs cannot set a code on errors of async methods, so the native side sends
// "<code>: <message>" and this module reads the code back out.

const { messageOf } = require('./describe.js')

const CODED_MESSAGE = /^(ERR_PQ_[A-Z_]+): ([\s\S]*)$/

/** An error raised by Protoqueue; `code` is stable, `message` is for people. */
class ProtoqueueError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {ErrorOptions} [options]
   */
  constructor(code, message, options) {
    super(message, options)
    this.name = 'ProtoqueueError'
    this.code = code
  }
}

/**
 * Turns a native error into a `ProtoqueueError` with its code; an error without one (which the
 * native side should never raise) gets `fallback`.
 * @param {unknown} err
 * @param {string} fallback
 * @returns {ProtoqueueError}
 */
function withCode(err, fallback) {
  if (err instanceof ProtoqueueError) return err
  const message = messageOf(err)
  const match = CODED_MESSAGE.exec(message)
  return match ? new ProtoqueueError(match[1], match[2]) : new ProtoqueueError(fallback, message, { cause: err })
}

/**
 * The result of a native call, or its error with its code (`fallback` when it has none).
 * @template T
 * @param {() => T | Promise<T>} call
 * @param {string} [fallback]
 * @returns {Promise<T>}
 */
async function native(call, fallback = 'ERR_PQ_NATS') {
  try {
    return await call()
  } catch (err) {
    throw withCode(err, fallback)
  }
}

module.exports = { ProtoqueueError, withCode, native }
