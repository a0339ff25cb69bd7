// @ts-check
'use strict'
// Checks of the values a caller hands over, shared by tasks, options and the queue's methods.
// Each throws a `ProtoqueueError` with the code the caller names, saying what is wrong.

const { describe } = require('./describe.js')
const { ProtoqueueError } = require('./errors.js')
const { describeLoneSurrogate, isWellFormed } = require('./unicode.js')

/**
 * Whether `value` is an object that is not an array (nor null).
 * @param {unknown} value
 * @returns {value is Record<string, any>}
 */
function isPlainObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * `text`, or `code` when it holds a lone UTF-16 surrogate: the native side would get U+FFFD in
 * its place, so the server would see another string than the caller gave (lib/unicode.js).
 * @param {string} text
 * @param {string} what
 * @param {string} code
 * @returns {string}
 */
function wellFormed(text, what, code) {
  if (isWellFormed(text)) return text
  throw new ProtoqueueError(code, `${what} holds ${describeLoneSurrogate(text)}; it would reach the server changed`)
}

/**
 * Checks a schedule name or task id is a string (the native side checks its form).
 * @param {unknown} value
 * @param {string} what
 * @param {string} code
 * @returns {string}
 */
function checkedString(value, what, code) {
  if (typeof value !== 'string') throw new ProtoqueueError(code, `${what} must be a string, got ${describe(value)}`)
  return wellFormed(value, what, code)
}

module.exports = { isPlainObject, wellFormed, checkedString }
