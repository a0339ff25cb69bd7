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
//
// Each handler's task has a `signal` (an `AbortSignal`), aborted when the native side ends the
// attempt early (`taskTimeout`, `cancel(id)`, the worker's shutdown). Until it is read it is one
// shared accessor on the task, nothing more: see `SIGNAL`. It also has `progress(value)`, which
// reports how far the handler got through the native side, at most once per `PROGRESS_INTERVAL`
// ms per task (the newest value wins): see `Progress`.

const { describe, messageOf, textOf } = require('./describe.js')
const { ProtoqueueError } = require('./errors.js')

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
 * @property {(id: string, json: string) => void} [progress] reports a running task's progress:
 *   the task's `id` and the value as JSON text (a finite number, an object or an array). Without
 *   it, `task.progress(value)` checks its value and reports nothing
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

/**
 * Why the native side ends an attempt early, by the reason it sends (`src/worker/abort.rs`):
 * the `code` and message of the `ProtoqueueError` its handler's `task.signal` is aborted with.
 * @type {Map<string, [code: string, message: string]>}
 */
const ABORT_REASONS = new Map([
  ['timeout', ['ERR_PQ_TIMEOUT', 'the task ran past taskTimeout: this attempt counts as failed (retried while attempts remain), whatever the handler returns now']],
  ['cancelled', ['ERR_PQ_TASK_CANCELLED', 'cancel() was called for this task: it ends cancelled, not retried, whatever the handler returns now']],
  ['shutdown', ['ERR_PQ_SHUTDOWN', "the worker stopped (disconnect()'s shutdownTimeout ran out) while the handler ran: the task will be run again"]],
])

/**
 * The error a handler's `task.signal` is aborted with for `reason`; a reason this version does
 * not know ends the attempt as a cancel does.
 * @param {unknown} reason
 * @returns {ProtoqueueError}
 */
function abortError(reason) {
  const known = typeof reason === 'string' ? ABORT_REASONS.get(reason) : undefined
  if (known !== undefined) return new ProtoqueueError(known[0], known[1])
  return new ProtoqueueError('ERR_PQ_TASK_CANCELLED', `the worker ended this attempt early (${describe(reason)}, a reason this version of protoqueue does not know): whatever the handler returns now is ignored`)
}

/**
 * Each task's signal, once it has one: its `AbortController` after `task.signal` was first read,
 * or, until then, the `ProtoqueueError` the attempt was aborted with (a controller with its signal
 * costs microseconds, too much for every task). Weak: an entry lives as long as its task object,
 * so code that reads `task.signal` after the handler settled still gets the same signal, and
 * nothing is left once the task is gone. Tasks whose signal is never read nor aborted have none.
 * @type {WeakMap<object, AbortController | ProtoqueueError>}
 */
const signals = new WeakMap()

/**
 * `task.signal`: the task's signal, created on first read (already aborted when the attempt
 * ended before that).
 * @this {object}
 * @returns {AbortSignal}
 */
function signalOf() {
  const state = signals.get(this)
  if (state instanceof AbortController) return state.signal
  const controller = new AbortController()
  if (state !== undefined) controller.abort(state)
  signals.set(this, controller)
  return controller.signal
}

/**
 * How every task gets its `signal`: one descriptor, so one getter function, for all tasks of all
 * dispatchers. V8 then keeps tasks of one shape in one hidden class; a getter of its own per task
 * (or per dispatcher) turns them into slow dictionary objects. Not enumerable: the task's JSON,
 * keys, spread and deep equality stay as they were.
 */
const SIGNAL = Object.freeze({ configurable: true, enumerable: false, get: signalOf })

/** How often a task's progress is reported at most: once per this many ms, the newest value winning. */
const PROGRESS_INTERVAL = 100

/** The longest progress a handler may report: its JSON text, in bytes (UTF-8). */
const MAX_PROGRESS_BYTES = 64 * 1024

/**
 * The `ERR_PQ_INVALID_PROGRESS` for a `task.progress(value)` given `what`.
 * @param {string} what
 * @returns {ProtoqueueError}
 */
function invalidProgress(what) {
  return new ProtoqueueError('ERR_PQ_INVALID_PROGRESS', `task.progress(value) takes a finite number, or an object or array whose JSON text is at most ${MAX_PROGRESS_BYTES / 1024} KiB; got ${what}`)
}

/**
 * The JSON text a progress value is reported as; `ERR_PQ_INVALID_PROGRESS` for anything but a
 * finite number or a value whose JSON text is an object or array of at most `MAX_PROGRESS_BYTES`.
 * @param {unknown} value
 * @returns {string}
 */
function progressJson(value) {
  if (typeof value === 'number') {
    if (Number.isFinite(value)) return JSON.stringify(value)
    throw invalidProgress(describe(value))
  }
  if (typeof value !== 'object' || value === null) throw invalidProgress(describe(value))
  let text
  try {
    text = JSON.stringify(value)
  } catch (err) {
    throw invalidProgress(`${describe(value)} that cannot be written as JSON (${messageOf(err)})`)
  }
  if (typeof text !== 'string') throw invalidProgress(`${describe(value)} with no JSON form`)
  if (text[0] !== '{' && text[0] !== '[') throw invalidProgress(`${describe(value)} whose JSON text is no object or array but ${describe(text)}`)
  // Bytes are at least the UTF-16 length and at most three times it: most texts need no count.
  if (text.length > MAX_PROGRESS_BYTES || (text.length * 3 > MAX_PROGRESS_BYTES && Buffer.byteLength(text) > MAX_PROGRESS_BYTES)) {
    throw invalidProgress(`${describe(value)} whose JSON text is ${Buffer.byteLength(text)} bytes`)
  }
  return text
}

/**
 * A running task's progress reports, from the first read of its `task.progress` to the end of
 * its attempt: the first value goes to the native side at once; values given within
 * `PROGRESS_INTERVAL` ms of the last report wait (only the newest is kept, with one timer) and go
 * when the interval is up, or at once when the handler settles, before its outcome. Once the
 * handler settled or the attempt was ended (its signal aborted), values are ignored.
 */
class Progress {
  /**
   * @param {NativeSide} native
   * @param {unknown} id the task's `id`, read when its `task.progress` is first read
   */
  constructor(native, id) {
    /** @type {NativeSide | undefined} `undefined` once the attempt ended */
    this.native = native
    /** The native side takes reports (else values are only checked). */
    this.sends = typeof native.progress === 'function'
    this.id = /** @type {string} */ (id)
    /** When the last report went (`Date.now()`, which test clocks can mock). */
    this.reported = -Infinity
    /** @type {string | undefined} the newest value not reported yet, as JSON text */
    this.pending = undefined
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined
    /** `task.progress`: the same function on every read, and it needs no `this`. */
    this.report = (/** @type {unknown} */ value) => this.take(value)
  }

  /** @param {unknown} value */
  take(value) {
    if (this.native === undefined) return
    const json = progressJson(value)
    if (!this.sends) return
    if (this.timer === undefined) {
      const now = Date.now()
      const since = now - this.reported
      // A clock that went back counts as a full interval.
      if (since >= PROGRESS_INTERVAL || since < 0) {
        this.reported = now
        this.send(json)
        return
      }
      this.timer = setTimeout(() => this.due(), PROGRESS_INTERVAL - since)
      this.timer.unref?.()
    }
    this.pending = json
  }

  /** The interval is up: reports the value that waited. */
  due() {
    this.timer = undefined
    const json = this.pending
    if (json === undefined || this.native === undefined) return
    this.pending = undefined
    this.reported = Date.now()
    this.send(json)
  }

  /** @param {string} json */
  send(json) {
    try {
      this.native?.progress?.(this.id, json)
    } catch {
      // The native side is gone (its worker stopped): nobody waits for this report.
    }
  }

  /**
   * The attempt ended: later values are ignored.
   * @param {boolean} flush report a value still waiting (the handler settled), or drop it (the
   *   native side ended the attempt)
   */
  end(flush) {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    const json = this.pending
    this.pending = undefined
    if (flush && json !== undefined) this.send(json)
    this.native = undefined
  }
}

/**
 * The running handlers of every dispatcher, held weakly (a dispatcher whose worker is gone is
 * not kept): where a task's first `task.progress` read looks for it. Dead entries are dropped
 * when a dispatcher is made.
 * @type {Set<WeakRef<Slots>>}
 */
const everySlots = new Set()

/**
 * Adds `slots` to `everySlots`, dropping the entries of dispatchers collected since.
 * @param {Slots} slots
 */
function register(slots) {
  for (const ref of everySlots) {
    if (ref.deref() === undefined) everySlots.delete(ref)
  }
  everySlots.add(new WeakRef(slots))
}

/**
 * Each task's `Progress`, once `task.progress` was read while its handler ran. Weak, as `signals`.
 * @type {WeakMap<object, Progress>}
 */
const progresses = new WeakMap()

/** `task.progress` of a task that is not running (its handler settled, or its attempt ended). */
const IGNORED = Object.freeze(function progress() {})

/**
 * `task.progress`: the task's progress function, made on first read while its handler runs
 * (the search over the running slots happens once per task, and only for tasks that report
 * progress); a function that ignores every value once the task no longer runs.
 * @this {object}
 * @returns {(value: unknown) => void}
 */
function progressOf() {
  const known = progresses.get(this)
  if (known !== undefined) return known.report
  for (const ref of everySlots) {
    const slots = ref.deref()
    const slot = slots === undefined ? -1 : slots.tasks.indexOf(this)
    if (slots === undefined || slot === -1) continue
    const progress = new Progress(slots.native, read(this, 'id'))
    slots.progress[slot] = progress
    progresses.set(this, progress)
    return progress.report
  }
  return IGNORED
}

/**
 * How every task gets its `progress`: one accessor for all tasks, as `SIGNAL` (an accessor costs
 * a task less than a data property holding the function, and what it returns survives
 * `const { progress } = task`).
 */
const PROGRESS = Object.freeze({ configurable: true, enumerable: false, get: progressOf })

/**
 * Aborts a running task's signal with `error`, or keeps `error` for its first read. Listeners run
 * now, synchronously; in Node one that throws does not throw here: its error becomes an
 * `uncaughtException` on the next tick, as from any event listener (with a listener for that
 * event the process goes on, though microtasks pending then, a queued report among them, run
 * only after the next macrotask).
 * @param {object} task
 * @param {ProtoqueueError} error
 */
function abortSignal(task, error) {
  const state = signals.get(task)
  if (!(state instanceof AbortController)) {
    signals.set(task, error)
    return
  }
  try {
    state.abort(error)
  } catch {
    // A runtime whose listeners' errors escape abort(): the dispatcher has done its part already.
  }
}

/** The waiting list's smallest capacity (a power of two); it never shrinks below it. */
const MIN_CAPACITY = 16

/** Put in the waiting list instead of a task the native side ended before it started. */
const DROPPED = Symbol('dropped')

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

  /**
   * Drops the first waiting task with `token` (not already dropped): it stays in its place as
   * `DROPPED` and never starts. O(length), for the rare abort; the hot path only compares.
   * @param {number} token
   * @returns {boolean} whether there was one
   */
  drop(token) {
    const mask = this.tokens.length - 1
    for (let i = 0; i < this.length; i++) {
      const at = (this.head + i) & mask
      if (this.tokens[at] === token && this.tasks[at] !== DROPPED) {
        this.tasks[at] = DROPPED
        return true
      }
    }
    return false
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

/** A free slot in `Slots`. */
const FREE = Symbol('free')

/** A slot whose attempt the native side ended while its handler still runs. */
const ENDED = Symbol('ended')

/**
 * The running handlers, one slot each: the token and task of each, for aborts, and the task's
 * `Progress` once its handler read `task.progress`. There are as many slots as handlers ever ran
 * at once (`limit`, at most); the hot path takes and frees one with a few array writes, and only
 * an abort and a task's first `task.progress` read search them.
 */
class Slots {
  /** @param {NativeSide} native where the tasks' progress goes */
  constructor(native) {
    this.native = native
    /** @type {number[]} */
    this.tokens = []
    /** @type {unknown[]} the task, `FREE` or `ENDED` */
    this.tasks = []
    /** @type {Array<Progress | undefined>} the task's progress, once its handler read it */
    this.progress = []
    /** @type {number[]} */
    this.free = []
  }

  /**
   * @param {number} token
   * @param {unknown} task
   * @returns {number} the slot, until `release`
   */
  take(token, task) {
    if (this.free.length > 0) {
      const slot = /** @type {number} */ (this.free.pop())
      this.tokens[slot] = token
      this.tasks[slot] = task
      return slot
    }
    this.tokens.push(token)
    this.tasks.push(task)
    this.progress.push(undefined)
    return this.tasks.length - 1
  }

  /**
   * Ends the progress of the task in `slot`, if its handler read `task.progress`.
   * @param {number} slot
   * @param {boolean} flush see `Progress.end`
   */
  endProgress(slot, flush) {
    const progress = this.progress[slot]
    if (progress === undefined) return
    this.progress[slot] = undefined
    progress.end(flush)
  }

  /**
   * Frees a slot when its handler settled.
   * @param {number} slot
   * @returns {boolean} whether its attempt was ended meanwhile (`end`)
   */
  release(slot) {
    const ended = this.tasks[slot] === ENDED
    this.tasks[slot] = FREE
    this.free.push(slot)
    return ended
  }

  /**
   * Marks the attempt of the running task with `token` ended.
   * @param {number} token
   * @returns {{ task: unknown } | undefined} its task, or `undefined` when no running task
   *   has that token (unknown, settled, waiting, or ended already)
   */
  end(token) {
    for (let slot = 0; slot < this.tasks.length; slot++) {
      const task = this.tasks[slot]
      if (this.tokens[slot] === token && task !== FREE && task !== ENDED) {
        this.tasks[slot] = ENDED
        // A value waiting is dropped: the native side settled the attempt.
        this.endProgress(slot, false)
        return { task }
      }
    }
    return undefined
  }

  /**
   * @returns {{ slots: number, live: number, aborted: number }} how many slots there are, how many
   *   a handler holds, and how many of those were ended
   */
  get counts() {
    let live = 0
    let aborted = 0
    for (const task of this.tasks) {
      if (task === ENDED) aborted++
      else if (task !== FREE) live++
    }
    return { slots: this.tasks.length, live, aborted }
  }
}

/**
 * The function the native worker hands tasks to, in batches: one call into JavaScript per batch,
 * with the tasks as one JSON text already shaped like `TaskData` (one `JSON.parse` instead of
 * per-field native calls): `{"limit": number, "tokens": number[], "tasks": TaskData[]}`, or
 * `{"close": true}` when the worker takes back what has not started, or
 * `{"abort": [[token, reason], ...]}` when it ends attempts early. At most `limit`
 * (`batchSize`) handlers run at once; the other tasks (prefetched by the worker) wait here, in
 * order, and the next starts as soon as a handler finishes, without a round trip through the
 * native side. What happened goes back in one native call per microtask turn: the tokens of the
 * successes as a `Uint32Array`, the failures as objects, and the tokens started since the last
 * report (the native side counts `taskTimeout` from there). The report is queued as a microtask
 * behind the outcomes already settling, so handlers that finish together report together
 * without waiting for another turn of the event loop; starts alone wait for the end of the turn
 * (or the close message, which reports them before it returns).
 *
 * An abort ends an attempt on the native side: a running handler's `task.signal` is aborted (see
 * `abortError`), its slot stays taken until the handler settles (a function cannot be stopped),
 * and its outcome is not reported (the native side has settled the attempt); a waiting task
 * never starts and reports nothing. Aborts of tokens that are neither running nor waiting, and
 * malformed ones, are ignored.
 *
 * A closed dispatcher drops the tasks still waiting, ignores later batches and never starts
 * another task; handlers already running still report, and aborts still reach their signals
 * (a worker's shutdown comes after its close).
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
  const slots = new Slots(native)
  register(slots)
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
    if (typeof task === 'object' && task !== null) {
      // Two calls: one `Object.defineProperties(task, { signal, progress })` costs more than both.
      try {
        Object.defineProperty(task, 'signal', SIGNAL)
        Object.defineProperty(task, 'progress', PROGRESS)
      } catch {
        // A task that cannot take them (the queue's decode froze it): its handler has neither.
      }
    }
    running++
    const slot = slots.take(token, task)
    queueStarts()
    started.push(token)
    runHandler(handler, task).then(
      (outcome) => finish(token, outcome, task, slot),
      // runHandler never rejects; should it, the slot is still freed.
      (err) => finish(token, thrownFailure(err), task, slot),
    )
  }
  /**
   * @param {number} token
   * @param {Outcome} outcome
   * @param {unknown} task
   * @param {number} slot
   */
  const finish = (token, outcome, task, slot) => {
    running--
    // A progress value still waiting goes now, before the outcome (reported in a microtask).
    if (slots.progress[slot] !== undefined) slots.endProgress(slot, true)
    // An aborted attempt's outcome is not reported: the native side settled the attempt already.
    if (!slots.release(slot)) settle(token, outcome, task)
    startWaiting()
  }
  const startWaiting = () => {
    while (running < limit && waiting.length > 0 && !closed) {
      const at = waiting.shift()
      const token = waiting.tokens[at]
      const task = waiting.tasks[at]
      waiting.tasks[at] = undefined
      if (task !== DROPPED) start(token, task)
    }
    waiting.compact()
  }
  /**
   * Ends the attempts of `pairs` (`[token, reason]` each), as described above. Anything else in
   * the message is ignored.
   * @param {unknown} pairs
   */
  const abort = (pairs) => {
    if (!Array.isArray(pairs)) return
    for (let i = 0; i < pairs.length; i++) {
      const pair = pairs[i]
      if (!Array.isArray(pair) || typeof pair[0] !== 'number') continue
      const token = pair[0]
      // The bookkeeping comes first: the signal's listeners run inside abortSignal, and the
      // dispatcher is consistent whatever they do.
      const ended = slots.end(token)
      if (ended !== undefined) {
        const { task } = ended
        if (typeof task === 'object' && task !== null) abortSignal(task, abortError(pair[1]))
      } else if (!closed) {
        waiting.drop(token)
      }
    }
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
      const parsed = JSON.parse(batch)
      if (typeof parsed === 'object' && parsed !== null && Object.hasOwn(parsed, 'abort')) {
        abort(parsed.abort)
        return
      }
      if (closed) return
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
    /**
     * For tests: how many handlers run, how many tasks wait (dropped ones included until their
     * turn), the waiting list's capacity, and the handlers' slots: how many there are (the most
     * handlers that ran at once), `live` (a handler runs and its attempt goes on) and `aborted`
     * (the native side ended the attempt; the handler has not settled yet).
     */
    get stats() {
      return { running, waiting: waiting.length, capacity: waiting.capacity, closed, ...slots.counts }
    },
  }
}

module.exports = { dispatcher, runHandler, NO_STRING_FORM, ABORT_REASONS, PROGRESS_INTERVAL, MAX_PROGRESS_BYTES }
