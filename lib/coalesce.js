// @ts-check
'use strict'
// Single calls made in the same turn of the event loop cross into the native side together: one
// native call (and one answer back) for all of them instead of one each. Each caller still gets
// its own result. Used by `enqueue()`: many request handlers enqueueing at once then cost about
// what one `enqueueBatch` costs.
//
// A native call returns nothing: it is a number, and its answer comes later through `answer`
// (one long-lived function the native side calls), not through a promise of its own — a
// promise per call costs the JavaScript thread more than the rest of a single enqueue's work
// there (src/napi/settle.rs).

/**
 * One item's result from the native side: a value, or an error (`"<code>: <message>"` text).
 * @template R
 * @typedef {{ value?: R, error?: string | null }} ItemResult
 */

/**
 * @template I, R
 * @typedef {object} Coalesced
 * @property {(input: I) => Promise<R>} call resolves to `input`'s own result
 * @property {(call: number, results: Array<ItemResult<R>> | undefined, error?: string | null) => void} answer
 *   settles call number `call`'s inputs: with one result per input, in order, or all with `error`
 */

/**
 * Coalesces calls: inputs given before the current microtasks run out go to `start` together,
 * in call order, with a call number; `answer(number, ...)` later settles them. If `start` throws,
 * every input of that call fails with its error. `toError` turns an error text into the value a
 * promise rejects with.
 * @template I, R
 * @param {(inputs: I[], call: number) => void} start
 * @param {(text: string) => unknown} toError
 * @returns {Coalesced<I, R>}
 */
function coalesce(start, toError) {
  /** @type {Map<number, Array<Caller<I, R>>>} */
  const calls = new Map()
  /** @type {Array<Caller<I, R>>} */
  let pending = []
  let next = 0
  const flush = () => {
    const batch = pending
    pending = []
    const number = next
    next = (next + 1) >>> 0
    calls.set(number, batch)
    try {
      start(
        batch.map((item) => item.input),
        number,
      )
    } catch (err) {
      calls.delete(number)
      batch.forEach((item) => item.reject(err))
    }
  }
  return {
    call: (input) =>
      new Promise((resolve, reject) => {
        if (pending.length === 0) queueMicrotask(flush)
        pending.push({ input, resolve, reject })
      }),
    // Made apart from `flush`'s scope: the native side keeps this function, and it must hold
    // nothing but the waiting callers (not the queue, which could then never be collected).
    answer: answerer(calls, toError),
  }
}

/**
 * @template I, R
 * @typedef {{ input: I, resolve: (value: R) => void, reject: (reason: unknown) => void }} Caller
 */

/**
 * The function that settles the callers of `calls` by call number.
 * @template I, R
 * @param {Map<number, Array<Caller<I, R>>>} calls
 * @param {(text: string) => unknown} toError
 * @returns {Coalesced<I, R>['answer']}
 */
function answerer(calls, toError) {
  return (number, results, error) => {
    const batch = calls.get(number)
    if (batch === undefined) return
    calls.delete(number)
    if (typeof error === 'string' || results === undefined) {
      const reason = toError(error ?? 'ERR_PQ_NATS: no result for this call')
      batch.forEach((item) => item.reject(reason))
      return
    }
    batch.forEach((item, i) => {
      const result = results[i]
      if (result === undefined) item.reject(toError('ERR_PQ_NATS: no result for this call'))
      else if (typeof result.error === 'string') item.reject(toError(result.error))
      else item.resolve(/** @type {R} */ (result.value))
    })
  }
}

module.exports = { coalesce }
