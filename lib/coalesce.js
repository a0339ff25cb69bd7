// @ts-check
'use strict'
// Single calls made in the same turn of the event loop cross into the native side together: one
// native call (and one promise resolution back) for all of them instead of one each. Each caller
// still gets its own result. Used by `enqueue()`: many request handlers enqueueing at once then
// cost about what one `enqueueBatch` costs.

/**
 * One item's result from the native side: a value, or an error (`"<code>: <message>"` text).
 * @template R
 * @typedef {{ value?: R, error?: string | null }} ItemResult
 */

/**
 * Returns `call(input)`, which resolves to `input`'s own result. Inputs given before the current
 * microtasks run out go to `sendAll` together, in call order; `sendAll` resolves to one result per
 * input, in the same order. If `sendAll` itself fails, every input of that call fails with its
 * error. `toError` turns an item's error text into the value its promise rejects with.
 * @template I, R
 * @param {(inputs: I[]) => Promise<Array<ItemResult<R>>>} sendAll
 * @param {(text: string) => unknown} toError
 * @returns {(input: I) => Promise<R>}
 */
function coalesce(sendAll, toError) {
  /** @type {Array<{ input: I, resolve: (value: R) => void, reject: (reason: unknown) => void }>} */
  let pending = []
  const flush = () => {
    const batch = pending
    pending = []
    /** @param {unknown} err */
    const failAll = (err) => batch.forEach((item) => item.reject(err))
    let sent
    try {
      sent = sendAll(batch.map((item) => item.input))
    } catch (err) {
      return failAll(err)
    }
    sent.then((results) => {
      batch.forEach((item, i) => {
        const result = results[i]
        if (result === undefined) item.reject(toError('ERR_PQ_NATS: no result for this call'))
        else if (typeof result.error === 'string') item.reject(toError(result.error))
        else item.resolve(/** @type {R} */ (result.value))
      })
    }, failAll)
  }
  return (input) =>
    new Promise((resolve, reject) => {
      if (pending.length === 0) queueMicrotask(flush)
      pending.push({ input, resolve, reject })
    })
}

module.exports = { coalesce }
