// @ts-check
'use strict'
// The dispatcher: the JavaScript end of a worker. The native worker hands it tasks in batches
// (one JSON text per call); it runs at most `limit` (`batchSize`) handlers at once, keeps the
// others waiting in order, and reports what happened through one native call per microtask
// turn: the tokens that succeeded, the failures, and the tokens it started (starts alone wait
// for the end of the event loop's turn, so a quick handler reports both in one call).
//
// Nothing a handler does may break it: a throw, a rejection or an odd result (values with no
// string form, getters or Proxies that throw, thenables whose `then` throws) is an ordinary
// failure, the handler's slot is freed, and the next task starts.

const { describe, textOf } = require('./describe.js')

/**
 * A failed attempt as the native side takes it.
 * @typedef {object} NativeFailure
 * @property {number} token the attempt's token, from the batch it came in
 * @property {string} [error] why it failed
 * @property {string} [details] the handler's `details` as JSON text
 * @property {boolean} [retry] `false` dead-letters the task without further attempts
 * @property {number} [retryDelay] ms before the next attempt, from the worker's `backoff` function
 * @property {boolean} [invalidData] the task's data could not be decoded: dead-letter it at once
 */

/**
 * What a worker may add to the dispatcher.
 * @typedef {object} DispatcherOptions
 * @property {(attempt: number, error: string) => unknown} [backoff] the user's backoff function:
 *   the ms to wait after failed attempt `attempt` (from 1); a throw or anything but a finite
 *   number ≥ 0 falls back to the configured backoff (and is logged)
 * @property {(message: string) => void} [warn] where that is logged (default `console.warn`)
 * @property {(task: any) => void} [decode] decodes a task's data in place before its handler
 *   starts (the queue's serializer); a throw dead-letters the task at once as `invalidData`, with
 *   the thrown message, without calling the handler
 * @property {boolean} [keepResults] the queue keeps results (`options.results`): a success's
 *   `result` (or the original API's `details`) goes back as JSON text
 */

/**
 * A success that returned a result, as the native side takes it.
 * @typedef {object} NativeReturned
 * @property {number} token the attempt's token
 * @property {string} [result] the result as JSON text
 * @property {string} [resultError] why the result has no JSON text
 */

/** The longest delay the native side takes, in ms. */
const MAX_DELAY = 2 ** 31 - 1

/**
 * The delay `backoff` asks for after failed attempt `attempt`, or `undefined` (then the
 * configured backoff applies) when it throws or returns anything but a finite number ≥ 0.
 * @param {NonNullable<DispatcherOptions['backoff']>} backoff
 * @param {number} attempt
 * @param {string} error
 * @param {(message: string) => void} warn
 * @returns {number | undefined}
 */
function askBackoff(backoff, attempt, error, warn) {
  let delay
  try {
    delay = backoff(attempt, error)
  } catch (err) {
    warn(`protoqueue: options.backoff threw (${textOf(err) ?? NO_STRING_FORM}); using the configured delay`)
    return undefined
  }
  if (typeof delay !== 'number' || !Number.isFinite(delay) || delay < 0) {
    warn(`protoqueue: options.backoff returned ${describe(delay)}, not a number of ms >= 0; using the configured delay`)
    return undefined
  }
  return Math.min(Math.round(delay), MAX_DELAY)
}

/**
 * The native side of a worker run: all the dispatcher ever calls.
 * @typedef {object} NativeSide
 * @property {(succeeded: Uint32Array, failed: NativeFailure[], started: Uint32Array, returned?: NativeReturned[]) => void} complete
 *   reports the attempts that succeeded, those that failed, those whose handler started since
 *   the last report (an attempt may start and settle in the same report), and the successes
 *   that returned a result (on a queue that keeps results; absent when none did)
 */

/**
 * The user's handler, as far as the dispatcher knows it: it may return anything.
 * @typedef {(task: any) => unknown} Handler
 */

/**
 * A normalized outcome, before its token is added.
 * @typedef {{ success: true, value?: unknown } | { success: false, error: string, details?: string, retry?: boolean }} Outcome
 */

/** Said of a thrown value (or an `error`) that cannot be turned into text. */
const NO_STRING_FORM = 'handler threw a value with no string form'

/**
 * A property of `value`, or `undefined` when reading it throws.
 * @param {any} value
 * @param {string} key
 * @returns {unknown}
 */
function read(value, key) {
  try {
    return value[key]
  } catch {
    return undefined
  }
}

/**
 * `JSON.stringify(value)` that never throws: `{ text }` (`text` undefined when the value has no
 * JSON form: a function, a symbol, `undefined`), or `{ failed }` with why it could not be
 * serialized (a cycle, a BigInt, a `toJSON` that throws; `undefined` when it gives no reason).
 * @param {unknown} value
 * @returns {{ text: string | undefined } | { failed: string | undefined }}
 */
function jsonOf(value) {
  try {
    const text = JSON.stringify(value)
    return { text: typeof text === 'string' ? text : undefined }
  } catch (err) {
    return { failed: err instanceof Error ? textOf(read(err, 'message')) : textOf(err) }
  }
}

/**
 * JSON text of `value`, or `undefined` when it has none (a function, a symbol, `undefined`).
 * A value that cannot be serialized (a cycle, a BigInt, a `toJSON` that throws) is described
 * instead, so the failure keeps a record of it.
 * @param {unknown} value
 * @returns {string | undefined}
 */
function detailsJson(value) {
  const json = jsonOf(value)
  return 'text' in json ? json.text : JSON.stringify({ unserializable: json.failed ?? 'details could not be serialized' })
}

/**
 * What a success returned, as JSON text: its `result`, else (the original API's) `details`;
 * `undefined` when it returned neither. A value with no JSON text (a cycle, a BigInt, a
 * function) gives the reason instead: the task completes without a result.
 * @param {unknown} value the handler's `{ success: true, ... }`
 * @returns {{ result: string } | { resultError: string } | undefined}
 */
function resultOf(value) {
  let kept = read(value, 'result')
  if (kept === undefined) kept = read(value, 'details')
  if (kept === undefined) return undefined
  const json = jsonOf(kept)
  if (!('text' in json)) return { resultError: `the handler's result cannot be written as JSON (${json.failed ?? 'no reason given'}), so it was not kept` }
  if (json.text === undefined) return { resultError: `the handler's result (${describe(kept)}) has no JSON form, so it was not kept` }
  return { result: json.text }
}

/**
 * `{ success: false, error, details? }`.
 * @param {string} error
 * @param {string} [details]
 * @returns {Outcome}
 */
function failure(error, details) {
  return details === undefined ? { success: false, error } : { success: false, error, details }
}

/**
 * The failure for a thrown value or a rejection: an `Error`'s message with its name and stack as
 * details, any other value's string form, or a description when it has none.
 * @param {unknown} thrown
 * @returns {Outcome}
 */
function thrownFailure(thrown) {
  let isError = false
  try {
    isError = thrown instanceof Error
  } catch {
    // A Proxy whose getPrototypeOf trap throws: not an Error as far as we can tell.
  }
  if (!isError) return failure(textOf(thrown) ?? NO_STRING_FORM)
  const message = read(thrown, 'message')
  const error = typeof message === 'string' ? message : (textOf(thrown) ?? NO_STRING_FORM)
  const name = textOf(read(thrown, 'name'))
  const stack = textOf(read(thrown, 'stack'))
  return failure(error, JSON.stringify({ name, stack }))
}

/**
 * Checks a handler's result: anything that is not `{ success: boolean, ... }` (or cannot be
 * read) is a failure.
 * @param {unknown} result
 * @returns {Outcome}
 */
function normalizeResult(result) {
  let isObject = false
  try {
    isObject = typeof result === 'object' && result !== null && !Array.isArray(result)
  } catch {
    // A revoked Proxy.
  }
  const success = isObject ? read(result, 'success') : undefined
  if (typeof success !== 'boolean') {
    return failure(`handler returned ${describe(result)}; expected { success: boolean, error?, details? }`)
  }
  if (success) return { success: true, value: result }
  const error = read(result, 'error')
  /** @type {Outcome} */
  const outcome = {
    success: false,
    error: error === undefined || error === null ? 'handler returned { success: false }' : (textOf(error) ?? 'handler returned an error with no string form'),
  }
  const details = read(result, 'details')
  if (details !== undefined && details !== null) {
    const json = detailsJson(details)
    if (json !== undefined) outcome.details = json
  }
  const retry = read(result, 'retry')
  if (typeof retry === 'boolean') outcome.retry = retry
  return outcome
}

/**
 * Runs the user's handler on one task. Never rejects: a throw, a rejection or a malformed
 * result becomes a failure.
 * @param {Handler} handler
 * @param {unknown} task
 * @returns {Promise<Outcome>}
 */
async function runHandler(handler, task) {
  let result
  try {
    result = await handler(task)
  } catch (err) {
    return thrownFailure(err)
  }
  return normalizeResult(result)
}

/** The waiting list's smallest capacity (a power of two); it never shrinks below it. */
const MIN_CAPACITY = 16

/**
 * Tasks waiting for a slot, in order: a ring buffer that grows by doubling when full and shrinks
 * back when it empties, so its memory follows the longest backlog, not the number of tasks
 * that ever went through it.
 */
class Waiting {
  constructor() {
    /** @type {number[]} */
    this.tokens = new Array(MIN_CAPACITY).fill(0)
    /** @type {unknown[]} */
    this.tasks = new Array(MIN_CAPACITY).fill(undefined)
    this.head = 0
    this.length = 0
  }

  /** @returns {number} how many tasks it can hold without growing */
  get capacity() {
    return this.tokens.length
  }

  /**
   * @param {number} token
   * @param {unknown} task
   */
  push(token, task) {
    if (this.length === this.tokens.length) this.grow()
    const at = (this.head + this.length) & (this.tokens.length - 1)
    this.tokens[at] = token
    this.tasks[at] = task
    this.length++
  }

  /** Removes the first; call only when `length > 0`. @returns {number} its index until the next push */
  shift() {
    const at = this.head
    this.head = (this.head + 1) & (this.tokens.length - 1)
    this.length--
    return at
  }

  clear() {
    this.tokens = new Array(MIN_CAPACITY).fill(0)
    this.tasks = new Array(MIN_CAPACITY).fill(undefined)
    this.head = 0
    this.length = 0
  }

  /** Shrinks back after a backlog ended (only when empty: nothing to move). */
  compact() {
    if (this.length === 0 && this.tokens.length > MIN_CAPACITY) this.clear()
  }

  grow() {
    const capacity = this.tokens.length
    /** @type {number[]} */
    const tokens = new Array(capacity * 2).fill(0)
    /** @type {unknown[]} */
    const tasks = new Array(capacity * 2).fill(undefined)
    for (let i = 0; i < this.length; i++) {
      const from = (this.head + i) & (capacity - 1)
      tokens[i] = this.tokens[from]
      tasks[i] = this.tasks[from]
    }
    this.tokens = tokens
    this.tasks = tasks
    this.head = 0
  }
}

/**
 * The function the native worker hands tasks to, in batches: one call into JavaScript per batch,
 * with the tasks as one JSON text already shaped like `TaskData` (one `JSON.parse` instead of
 * per-field native calls): `{"limit": number, "tokens": number[], "tasks": TaskData[]}`, or
 * `{"close": true}` when the worker takes back what has not started. At most `limit`
 * (`batchSize`) handlers run at once; the other tasks (prefetched by the worker) wait here, in
 * order, and the next starts as soon as a handler finishes, without a round trip through the
 * native side. What happened goes back in one native call per microtask turn: the tokens of the
 * successes as a `Uint32Array`, the failures as objects, and the tokens started since the last
 * report (the native side counts `taskTimeout` from there). The report is queued as a microtask
 * behind the outcomes already settling, so handlers that finish together report together
 * without waiting for another turn of the event loop; starts alone wait for the end of the turn
 * (or the close message, which reports them before it returns).
 *
 * A closed dispatcher drops the tasks still waiting, ignores later batches and never starts
 * another task; handlers already running still report.
 *
 * @param {Handler} handler
 * @param {NativeSide} native
 * @param {DispatcherOptions} [options]
 */
function dispatcher(handler, native, options = {}) {
  const { backoff, decode, keepResults } = options
  const warn = options.warn ?? ((message) => console.warn(message))
  let limit = 1
  let running = 0
  let closed = false
  const waiting = new Waiting()
  /** @type {number[]} */
  let succeeded = []
  /** @type {NativeFailure[]} */
  let failed = []
  /** @type {number[]} */
  let started = []
  /** @type {NativeReturned[]} */
  let returned = []
  let reportQueued = false
  let startsQueued = false

  const report = () => {
    reportQueued = false
    if (succeeded.length === 0 && failed.length === 0 && started.length === 0 && returned.length === 0) return
    const tokens = new Uint32Array(succeeded)
    const failures = failed
    const starts = new Uint32Array(started)
    const results = returned.length > 0 ? returned : undefined
    succeeded = []
    failed = []
    started = []
    if (results) returned = []
    try {
      native.complete(tokens, failures, starts, results)
    } catch {
      // The native side is gone (its worker stopped): nobody waits for these outcomes.
    }
  }
  const queueReport = () => {
    if (!reportQueued) {
      reportQueued = true
      queueMicrotask(report)
    }
  }
  const reportStarts = () => {
    startsQueued = false
    report()
  }
  /**
   * Starts wait for the end of this turn of the event loop (the native side only needs them to
   * count `taskTimeout`): a handler that settles sooner reports its start with its outcome, in
   * one native call and one wake-up of the worker instead of two.
   */
  const queueStarts = () => {
    if (!startsQueued) {
      startsQueued = true
      setImmediate(reportStarts)
    }
  }
  /**
   * @param {number} token
   * @param {Outcome} outcome
   * @param {unknown} task the task as handed to the handler (for its attempt number)
   */
  const settle = (token, outcome, task) => {
    queueReport()
    if (outcome.success) {
      const kept = keepResults ? resultOf(outcome.value) : undefined
      if (kept) returned.push({ token, ...kept })
      else succeeded.push(token)
    } else {
      /** @type {NativeFailure} */
      const reported = /** @type {any} */ (outcome)
      reported.token = token
      if (backoff !== undefined && outcome.retry !== false) {
        const attempt = read(task, 'attempt')
        const max = read(task, 'maxAttempts')
        if (typeof attempt === 'number' && !(typeof max === 'number' && attempt >= max)) {
          const delay = askBackoff(backoff, attempt, outcome.error, warn)
          if (delay !== undefined) reported.retryDelay = delay
        }
      }
      failed.push(reported)
    }
  }
  /**
   * @param {number} token
   * @param {unknown} task
   */
  const start = (token, task) => {
    if (decode !== undefined) {
      try {
        decode(task)
      } catch (err) {
        queueReport()
        started.push(token)
        const message = read(err, 'message')
        failed.push({ token, error: typeof message === 'string' ? message : (textOf(err) ?? 'the task could not be decoded'), invalidData: true })
        return
      }
    }
    running++
    queueStarts()
    started.push(token)
    runHandler(handler, task).then(
      (outcome) => finish(token, outcome, task),
      // runHandler never rejects; should it, the slot is still freed.
      (err) => finish(token, thrownFailure(err), task),
    )
  }
  /**
   * @param {number} token
   * @param {Outcome} outcome
   * @param {unknown} task
   */
  const finish = (token, outcome, task) => {
    running--
    settle(token, outcome, task)
    startWaiting()
  }
  const startWaiting = () => {
    while (running < limit && waiting.length > 0 && !closed) {
      const at = waiting.shift()
      const token = waiting.tokens[at]
      const task = waiting.tasks[at]
      waiting.tasks[at] = undefined
      start(token, task)
    }
    waiting.compact()
  }
  const close = () => {
    closed = true
    waiting.clear()
    // The native side gives back every task not reported started once this returns: report
    // the starts now, not at the end of the turn.
    report()
  }

  return {
    /**
     * Takes one batch from the native worker.
     * @param {string} batch
     */
    dispatch(batch) {
      if (closed) return
      const parsed = JSON.parse(batch)
      if (parsed.close === true) {
        close()
        return
      }
      const { tokens, tasks } = parsed
      limit = parsed.limit
      for (let i = 0; i < tasks.length; i++) waiting.push(tokens[i], tasks[i])
      startWaiting()
    },
    /** The worker stopped: tasks still waiting never start (the server redelivers them). */
    close,
    /** For tests: how many tasks wait, and the waiting list's capacity. */
    get stats() {
      return { running, waiting: waiting.length, capacity: waiting.capacity, closed }
    },
  }
}

module.exports = { dispatcher, runHandler, NO_STRING_FORM }
