'use strict'
// Protoqueue's JavaScript layer. The queue itself is Rust (`native.js` loads the addon); this file
// only turns values into JSON text and back, wraps the user's handler so every outcome reaches
// Rust as a well-formed result, and gives errors their `code` (napi-rs cannot set one on errors
// of async methods, so the native side sends "<code>: <message>").

const { AsyncLocalStorage } = require('node:async_hooks')

const { NativeQueue } = require('./native.js')

/**
 * The queue whose handler the current code runs in: `disconnect()` called by a handler cannot
 * wait for that handler, so it has to know.
 */
const handlerOf = new AsyncLocalStorage()

const CODED_MESSAGE = /^(ERR_PQ_[A-Z_]+): ([\s\S]*)$/

/** An error raised by Protoqueue; `code` is stable, `message` is for people. */
class ProtoqueueError extends Error {
  constructor(code, message, options) {
    super(message, options)
    this.name = 'ProtoqueueError'
    this.code = code
  }
}

/** Turns a native error into a `ProtoqueueError` with its code; other values pass through. */
function withCode(err) {
  const match = err && typeof err.message === 'string' ? CODED_MESSAGE.exec(err.message) : null
  return match ? new ProtoqueueError(match[1], match[2]) : err
}

async function native(call) {
  try {
    return await call()
  } catch (err) {
    throw withCode(err)
  }
}

function describe(value) {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object' ? 'an object' : `${typeof value} ${String(value)}`
}

function isPlainObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** JSON text of `value`, or ERR_PQ_SERIALIZE naming what could not be serialized. */
function toJson(value, what) {
  let text
  try {
    text = JSON.stringify(value)
  } catch (err) {
    throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} is not JSON-serializable: ${err.message}`, {
      cause: err,
    })
  }
  if (text === undefined) {
    throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} is not JSON-serializable (got ${describe(value)})`)
  }
  return text
}

/** Checks one `{ data, metadata? }` and encodes it as the native side expects. */
function encodeTask(task, what) {
  if (!isPlainObject(task)) {
    throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what} must be an object like { data, metadata? }, got ${describe(task)}`)
  }
  if (task.data === undefined) {
    throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.data is required`)
  }
  const input = { data: toJson(task.data, `${what}.data`) }
  if (task.metadata !== undefined && task.metadata !== null) {
    if (!isPlainObject(task.metadata)) {
      throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.metadata must be an object, got ${describe(task.metadata)}`)
    }
    input.metadata = toJson(task.metadata, `${what}.metadata`)
  }
  return input
}

/** The task the user's handler receives. */
function decodeTask(native) {
  const metadata = native.metadata ? JSON.parse(native.metadata) : {}
  return {
    id: native.id,
    data: JSON.parse(native.data),
    metadata: { ...metadata, timestamp: native.timestamp },
    attempt: native.attempt,
    maxAttempts: native.maxAttempts,
  }
}

function failure(error, details) {
  return details === undefined ? { success: false, error } : { success: false, error, details }
}

/** Details of a thrown value, for the dead letter. */
function thrownDetails(err) {
  if (err instanceof Error) {
    return JSON.stringify({ name: err.name, stack: err.stack })
  }
  return undefined
}

/** Checks a handler's result; anything that is not `{ success: boolean, ... }` is a failure. */
function normalizeResult(result) {
  if (!isPlainObject(result) || typeof result.success !== 'boolean') {
    return failure(`handler returned ${describe(result)}; expected { success: boolean, error?, details? }`)
  }
  if (result.success) return { success: true }
  const normalized = { success: false }
  if (result.error !== undefined && result.error !== null) normalized.error = String(result.error)
  if (result.details !== undefined && result.details !== null) {
    try {
      normalized.details = JSON.stringify(result.details)
    } catch (err) {
      normalized.details = JSON.stringify({ unserializable: String(err.message) })
    }
  }
  if (typeof result.retry === 'boolean') normalized.retry = result.retry
  return normalized
}

/** Runs the user's handler on one task: a throw, a rejection or a malformed result become failures. */
async function runHandler(handler, task) {
  try {
    return normalizeResult(await handler(task))
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    return failure(message, thrownDetails(err))
  }
}

/**
 * The function the native worker hands tasks to, in batches: one call into JavaScript per batch,
 * with the tasks as one JSON text already shaped like `TaskData` (one `JSON.parse` instead of
 * per-field native calls). At most `limit` (`batchSize`) handlers run at once; the other tasks
 * (prefetched by the worker) wait here, in order, and the next starts as soon as a handler
 * finishes, without a round trip through the native side. Outcomes go back in one native call:
 * the tokens of the successes as a `Uint32Array`, the failures as objects. The report is queued as
 * a microtask behind the outcomes already settling, so handlers that finish together report
 * together without waiting for another turn of the event loop.
 */
function dispatcher(handler, nativeQueue) {
  let limit = 1
  let running = 0
  // Waiting tasks as [token, task] pairs; `next` is the first not started.
  let waiting = []
  let next = 0
  let succeeded = []
  let failed = []
  const report = () => {
    const tokens = new Uint32Array(succeeded)
    const failures = failed
    succeeded = []
    failed = []
    nativeQueue.complete(tokens, failures)
  }
  const settle = (token, outcome) => {
    if (succeeded.length + failed.length === 0) queueMicrotask(report)
    if (outcome.success) {
      succeeded.push(token)
    } else {
      outcome.token = token
      failed.push(outcome)
    }
  }
  const start = (token, task) => {
    running++
    runHandler(handler, task).then((outcome) => {
      running--
      settle(token, outcome)
      startWaiting()
    })
  }
  const startWaiting = () => {
    while (running < limit && next < waiting.length) {
      const [token, task] = waiting[next]
      waiting[next++] = undefined
      start(token, task)
    }
    if (next === waiting.length) {
      waiting = []
      next = 0
    }
  }
  return {
    dispatch(batch) {
      const parsed = JSON.parse(batch)
      const { tokens, tasks } = parsed
      limit = parsed.limit
      for (let i = 0; i < tasks.length; i++) waiting.push([tokens[i], tasks[i]])
      startWaiting()
    },
    /** The worker stopped: tasks still waiting never start (the server redelivers them). */
    close() {
      waiting = []
      next = 0
    },
  }
}

/** NaN and Infinity would cross to Rust as null (absent): reject them here. */
function rejectNonFiniteOptions(config) {
  const options = isPlainObject(config) && isPlainObject(config.options) ? config.options : {}
  for (const [key, value] of Object.entries(options)) {
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: options.${key} must be a finite integer, got ${value}`)
    }
  }
}

/**
 * A task queue on NATS JetStream. See README.md for the guide and index.d.ts for the types.
 */
class Protoqueue {
  #native
  /** The running worker's dispatcher, closed on disconnect. */
  #dispatcher

  constructor(config) {
    rejectNonFiniteOptions(config)
    try {
      this.#native = new NativeQueue(config === undefined ? null : config)
    } catch (err) {
      throw withCode(err)
    }
  }

  /** Connects to NATS (the URL argument, else config.url, else NATS_URL, else localhost). */
  async connect(url) {
    if (url !== undefined && url !== null && typeof url !== 'string') {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `connect(url) takes a string, got ${describe(url)}`)
    }
    await native(() => this.#native.connect(url ?? undefined))
    return this
  }

  /**
   * Stops the worker (in-flight tasks settle first) and closes the connection. Called by one of
   * this queue's handlers, it resolves once the worker takes no more tasks; the handlers still
   * running (the caller too) finish, their tasks are settled, and then the connection closes.
   */
  async disconnect() {
    const inHandler = handlerOf.getStore() === this
    try {
      await native(() => this.#native.disconnect(inHandler))
    } finally {
      // A handler's disconnect returns before the worker is done: its tasks still run.
      if (!inHandler) this.#dispatcher?.close()
      this.#dispatcher = undefined
    }
  }

  /** Enqueues one task; resolves to its id once JetStream has stored it. */
  async enqueue(task) {
    const input = encodeTask(task, 'task')
    return native(() => this.#native.enqueue(input))
  }

  /** Enqueues many tasks at once; resolves to their ids, in order, once all are stored. */
  async enqueueBatch(tasks) {
    if (!Array.isArray(tasks)) {
      throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `enqueueBatch takes an array of tasks, got ${describe(tasks)}`)
    }
    const inputs = tasks.map((task, i) => encodeTask(task, `tasks[${i}]`))
    if (inputs.length === 0) return []
    return native(() => this.#native.enqueueBatch(inputs))
  }

  /** Starts processing tasks with `handler`; resolves once the worker runs. */
  async process(handler) {
    if (typeof handler !== 'function') {
      throw new ProtoqueueError('ERR_PQ_INVALID_HANDLER', `process(handler) takes a function, got ${describe(handler)}`)
    }
    // Outcomes are reported with the run's id: a late one from an earlier run settles nothing.
    const nativeQueue = this.#native
    const run = nativeQueue.reserveRun()
    const tasks = dispatcher((task) => handlerOf.run(this, handler, task), {
      complete: (succeeded, failed) => nativeQueue.complete(run, succeeded, failed),
    })
    await native(() => nativeQueue.process(run, tasks.dispatch))
    this.#dispatcher = tasks
    return this
  }

  /** Reads queue statistics from the server. */
  async getStats() {
    const s = await native(() => this.#native.stats())
    return {
      messages: s.messages,
      bytes: s.bytes,
      firstSequence: s.firstSequence,
      lastSequence: s.lastSequence,
      consumer_count: s.consumerCount,
      pending: s.pending,
      inFlight: s.inFlight,
      redelivered: s.redelivered,
      deadLettered: s.deadLettered,
    }
  }

  /** Reads (without removing) up to `limit` dead letters, oldest first. */
  async getDeadLetters(limit = 100) {
    if (!Number.isInteger(limit) || limit < 1) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `getDeadLetters(limit) takes an integer >= 1, got ${describe(limit)}`)
    }
    const letters = await native(() => this.#native.deadLetters(limit))
    return letters.map((letter) => ({
      task: letter.task ? decodeTask(letter.task) : undefined,
      raw: letter.raw ?? undefined,
      reason: letter.reason,
      error: letter.error,
      details: letter.details ? JSON.parse(letter.details) : undefined,
      attempts: letter.attempts,
      failedAt: letter.failedAt,
      sequence: letter.streamSequence,
    }))
  }
}

module.exports.Protoqueue = Protoqueue
module.exports.ProtoqueueError = ProtoqueueError
