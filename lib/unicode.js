// @ts-check
'use strict'
// Well-formed text. A JavaScript string is UTF-16 and may hold a lone surrogate (half of a pair,
// e.g. '\uD800'), which has no UTF-8 form: napi-rs turns it into U+FFFD on its way into Rust, so
// an id, a name or a subject would reach the server as another string than the one given (and
// two ids that differ only there would name one task). Strings that cross into the native side
// as strings are checked here first and refused.

/** `String.prototype.isWellFormed` (Node ≥ 20, Bun), or `undefined` (Node 18). */
const nativeIsWellFormed = /** @type {((this: string) => boolean) | undefined} */ (
  /** @type {any} */ (String.prototype).isWellFormed
)

/** A high surrogate not followed by a low one, or a low surrogate not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/**
 * Whether `text` holds no lone surrogate, so that it crosses into Rust unchanged.
 * @param {string} text
 * @returns {boolean}
 */
function isWellFormed(text) {
  return typeof nativeIsWellFormed === 'function' ? nativeIsWellFormed.call(text) : !LONE_SURROGATE.test(text)
}

/**
 * Where `text`'s first lone surrogate is, for error messages: e.g. `a lone surrogate (U+D800) at
 * index 1`. Call only when `isWellFormed(text)` is false.
 * @param {string} text
 * @returns {string}
 */
function describeLoneSurrogate(text) {
  const found = LONE_SURROGATE.exec(text)
  if (found === null) return 'a lone surrogate'
  const unit = found[0].charCodeAt(0).toString(16).toUpperCase()
  return `a lone surrogate (U+${unit}) at index ${found.index}, which has no UTF-8 form`
}

module.exports = { isWellFormed, describeLoneSurrogate }
