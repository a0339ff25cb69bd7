// @ts-check
'use strict'
// Values named in messages: what an unexpected value is (`describe`), where in a value a part is
// (`keyPath`), and the text of something thrown (`messageOf`). None of them throws, whatever it
// is given (a value with no string form, a getter or a Proxy that throws), so the message about a
// bad value never becomes a second error.

/** The longest description `describe` gives, in characters. */
const MAX_DESCRIPTION = 60

/** What `messageOf` says of a thrown value that cannot be turned into text. */
const NO_MESSAGE = 'an error with no string form'

/**
 * `value` as text, or `undefined` when that throws or gives no string (`Object.create(null)`,
 * a `toString` that throws, a Proxy whose traps throw).
 * @param {unknown} value
 * @returns {string | undefined}
 */
function textOf(value) {
  try {
    if (typeof value === 'string') return value
    const text = String(value)
    return typeof text === 'string' ? text : undefined
  } catch {
    return undefined
  }
}

/**
 * A short description of a value, for error messages: `null`, `an array`, `an object`,
 * `a function`, or its type and (the start of) its text, e.g. `number 1.5`.
 * @param {unknown} value
 * @returns {string}
 */
function describe(value) {
  if (value === null) return 'null'
  try {
    if (Array.isArray(value)) return 'an array'
  } catch {
    // A revoked Proxy.
    return 'an object'
  }
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'function') return 'a function'
  return `${typeof value} ${textOf(value) ?? ''}`.trim().slice(0, MAX_DESCRIPTION)
}

/**
 * An object key as a path step: `.name`, or `["odd key"]`.
 * @param {string} key
 */
function keyPath(key) {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
}

/**
 * The message of a thrown value: an `Error`'s message, any other value's string form, or
 * NO_MESSAGE when it has none that can be read.
 * @param {unknown} err
 * @returns {string}
 */
function messageOf(err) {
  try {
    if (err instanceof Error && typeof err.message === 'string') return err.message
    return String(err)
  } catch {
    return NO_MESSAGE
  }
}

module.exports = { describe, keyPath, messageOf, textOf, NO_MESSAGE }
