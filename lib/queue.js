// @ts-check
'use strict'
// The `Protoqueue` class: each method checks its arguments, converts them for the native queue
// (`native.js`, the Rust core), and converts what comes back. It wraps the user's handler so that
// every outcome reaches the native side as a well-formed result (lib/dispatcher.js).

const { AsyncLocalStorage } = require('node:async_hooks')

const nativeModule = require('../native.js')
const { checkedString, wellFormed } = require('./checks.js')
const { coalesce } = require('./coalesce.js')
const { decodeDeadLetter, decodeSchedule } = require('./decode.js')
const { describe, messageOf } = require('./describe.js')
const { dispatcher, runHandler } = require('./dispatcher.js')
const { ProtoqueueError, native, withCode } = require('./errors.js')
const { addEventMethods, attachEvents } = require('./events.js')
const { MAX_DEAD_LETTERS, backoffFunction, codecConfig, forceOption, letterFilter, plainConfig, processOptions, progressOption } = require('./options.js')
const serializers = require('./serializers.js')
const { outcomeOf, taskInfo, taskQuery, waitTimeout } = require('./task-info.js')
const { compactInput, encodeTask, enqueueAnswers, enqueueError, namesOf } = require('./tasks.js')
const { moduleOf, startThreads, threadCount } = require('./threads.js')
const tracing = require('./tracing.js')

/**
 * The queue whose handler the current code runs in: `disconnect()` called by a handler cannot
 * wait for that handler, so it has to know.
 */
const handlerOf = new AsyncLocalStorage()

/**
 * A task queue on NATS JetStream. See docs/ for the guides and index.d.ts for the types.
 */
class Protoqueue {
  /** @type {import('../native').NativeQueue} */
  #native
  /**
   * Where its spans say tasks go (`lib/tracing.js`).
   * @type {import('./tracing.js').Destination & { consumer: string }}
   */
  #destination
  /**
   * The running worker's dispatcher (or its handler threads), closed on disconnect.
   * @type {{ close(): void } | undefined}
   */
  #dispatcher

  /**
   * `options.backoff` when it is a function: the dispatcher asks it for each retry's delay.
   * @type {import('../index').BackoffFunction | undefined}
   */
  #backoff

  /**
   * The queue's serializer (`serializer` / `schema`); `undefined`: JSON.
   * @type {import('./serializers.js').Codec | undefined}
   */
  #codec

  /** `options.results` or `keepCompleted` is set: the worker hands its handlers' results to the native side. */
  #keepsResults = false

  /**
   * @param {unknown} config
   */
  constructor(config) {
    const codec = codecConfig(config)
    if (codec) {
      this.#codec = codec.codec
      config = codec.config
    }
    const backoff = backoffFunction(config)
    if (backoff) {
      this.#backoff = backoff.fn
      config = backoff.config
    }
    const plain = plainConfig(config)
    try {
      this.#native = new nativeModule.NativeQueue(plain === undefined ? null : plain)
      if (this.#codec) this.#native.useSerializer(this.#codec.contentType)
      this.#native.answerEnqueuesWith(enqueueAnswers(this.#enqueues.answer))
    } catch (err) {
      throw withCode(err, 'ERR_PQ_INVALID_CONFIG')
    }
    this.#destination = { subject: plain.subject, stream: plain.streamName, consumer: 'protoqueue-workers' }
    this.#keepsResults = [plain.options?.results, plain.options?.keepCompleted].some((kept) => kept !== undefined && kept !== null && kept !== false)
    attachEvents(this, this.#native, { makeError: (code, message) => new ProtoqueueError(code, message) })
  }

  /**
   * Creates a queue and connects it, as the original Protoqueue did; resolves to the connected
   * queue. A failed connect leaves nothing open.
   * @param {unknown} config
   */
  static async create(config) {
    const queue = new this(config)
    try {
      await queue.connect()
    } catch (err) {
      await queue.disconnect().catch(() => {})
      throw err
    }
    return queue
  }

  /**
   * Connects to NATS (the URL argument, else config.url, else NATS_URL, else localhost).
   * @param {unknown} [url]
   */
  async connect(url) {
    if (url !== undefined && url !== null && typeof url !== 'string') {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `connect(url) takes a string, got ${describe(url)}`)
    }
    if (typeof url === 'string') wellFormed(url, 'connect(url)', 'ERR_PQ_INVALID_CONFIG')
    await native(() => this.#native.connect(url ?? undefined), 'ERR_PQ_CONNECT')
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

  /**
   * Enqueues one task; resolves to its id once JetStream has stored it.
   * @param {unknown} task
   * @returns {Promise<string>}
   */
  enqueue(task) {
    // Not `async`, and no `native()` wrapper: many callers at once pay per task for every promise
    // here (W5 in bench/README.md); #enqueues' errors already carry their codes.
    let input
    try {
      input = encodeTask(task, 'task', this.#codec)
    } catch (err) {
      return Promise.reject(err)
    }
    const span = tracing.startSend(this.#destination, [input], false)
    if (span === null) return this.#enqueues.call(input)
    return tracing.settleSend(span, this.#enqueues.call(input))
  }

  /** Single enqueues of one event-loop turn cross into the native side together. */
  #enqueues = coalesce(
    (inputs, call) => {
      try {
        this.#native.enqueueEach(call, inputs.map(compactInput), namesOf(inputs))
      } catch (err) {
        throw withCode(err, 'ERR_PQ_NATS')
      }
    },
    enqueueError,
  )

  /**
   * Enqueues many tasks at once; resolves to their ids, in order, once all are stored.
   * @param {unknown} tasks
   * @returns {Promise<string[]>}
   */
  async enqueueBatch(tasks) {
    let inputs
    try {
      if (!Array.isArray(tasks)) {
        throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `enqueueBatch takes an array of tasks, got ${describe(tasks)}`)
      }
      const length = tasks.length
      inputs = new Array(length)
      // Indexed, not `map`: a hole in a sparse array is a missing task, not a skipped one.
      const codec = this.#codec
      for (let i = 0; i < length; i++) inputs[i] = encodeTask(tasks[i], `tasks[${i}]`, codec)
    } catch (err) {
      if (err instanceof ProtoqueueError) throw err
      throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `enqueueBatch could not read its tasks: ${messageOf(err)}`, { cause: err })
    }
    if (inputs.length === 0) return []
    const names = namesOf(inputs)
    const span = tracing.startSend(this.#destination, inputs, true)
    const sent = native(() => this.#native.enqueueBatch(inputs.map(compactInput), names))
    return span === null ? sent : tracing.settleSend(span, sent)
  }

  /** Decodes a task's data with the queue's serializer before its handler runs; none for JSON. */
  get #decode() {
    const codec = this.#codec
    return codec === undefined ? undefined : (/** @type {any} */ task) => serializers.decodeTask(codec, task)
  }

  /**
   * Starts processing tasks with `handler` (a function, or a handler module's URL whose handler
   * runs on worker threads); resolves once the worker runs.
   * @param {unknown} handler
   * @param {unknown} [options]
   */
  async process(handler, options) {
    const module = moduleOf(handler)
    if (typeof handler !== 'function' && module === undefined) {
      throw new ProtoqueueError('ERR_PQ_INVALID_HANDLER', `process(handler) takes a function, or the URL of a handler module to run on worker threads, got ${describe(handler)}`)
    }
    const { subjects, threads } = processOptions(options)
    if (module === undefined && threads !== undefined) {
      throw new ProtoqueueError('ERR_PQ_INVALID_HANDLER', "process options.threads runs the handler on worker threads, where a function cannot go: give process() the handler module's URL, e.g. new URL('./handler.js', import.meta.url)")
    }
    // Outcomes are reported with the run's id: a late one from an earlier run settles nothing.
    const nativeQueue = this.#native
    const run = nativeQueue.reserveRun()
    if (module !== undefined) {
      await this.#processOnThreads(run, module, threadCount(threads, nativeQueue.batchSize), subjects)
      return this
    }
    const traced = tracing.traceProcessing(this.#destination, (task) => handlerOf.run(this, /** @type {(task: any) => unknown} */ (handler), task))
    const tasks = dispatcher(traced, {
      complete: (succeeded, failed, started, returned) => nativeQueue.complete(run, succeeded, failed, started, returned),
      progress: (id, json) => nativeQueue.progress(id, json),
    }, { backoff: this.#backoff, decode: this.#decode, keepResults: this.#keepsResults })
    await native(() => nativeQueue.process(run, tasks.dispatch, subjects))
    this.#dispatcher = tasks
    return this
  }

  /**
   * Starts worker run `run` with `count` threads running the handler of `module`.
   * @param {number} run
   * @param {string} module
   * @param {number} count
   * @param {string[] | undefined} subjects
   */
  async #processOnThreads(run, module, count, subjects) {
    const nativeQueue = this.#native
    const pool = await startThreads({
      openPool: (run, threads) => nativeQueue.openPool(run, threads),
      closePool: (pool) => nativeQueue.closePool(pool),
      threadDetach: (pool, thread) => nativeModule.threadDetach(pool, thread),
    }, run, count, {
      module,
      keepResults: this.#keepsResults,
      needsBackoff: this.#backoff !== undefined,
      needsCodec: this.#codec !== undefined,
      destination: this.#destination,
    })
    try {
      await native(() => nativeQueue.processPool(run, pool.number, subjects))
    } catch (err) {
      pool.close()
      throw err
    }
    this.#dispatcher = pool
  }

  /**
   * The queue's metrics in the Prometheus text format: this object's counters and histograms,
   * and the server's gauges read now (ERR_PQ_TIMEOUT when the server does not answer in 5 s).
   */
  async metrics() {
    return native(() => this.#native.metrics())
  }

  /** The same metrics as objects, in the shape of prom-client's `getMetricsAsJSON()`. */
  async getMetricFamilies() {
    return JSON.parse(await native(() => this.#native.metricFamilies()))
  }

  /** Reads queue statistics from the server. */
  async getStats() {
    const s = await native(() => this.#native.stats())
    return {
      messages: s.messages,
      bytes: s.bytes,
      firstSequence: s.firstSequence,
      lastSequence: s.lastSequence,
      consumers: s.consumerCount,
      consumer_count: s.consumerCount,
      pending: s.pending,
      inFlight: s.inFlight,
      redelivered: s.redelivered,
      deadLettered: s.deadLettered,
      paused: s.paused,
      delayed: s.delayed,
      recurring: s.recurring,
      ...(s.pendingByPriority.length > 0 ? { pendingByPriority: s.pendingByPriority } : {}),
      workers: s.workers,
      completed: s.completed,
      failed: s.failed,
      cancelled: s.cancelled,
    }
  }

  /**
   * Task `id` as the server knows it, from any process; `undefined` when nothing has it.
   * @param {unknown} id
   */
  async getTask(id) {
    const checked = checkedString(id, 'getTask(id)', 'ERR_PQ_INVALID_TASK')
    const task = await native(() => this.#native.task(checked))
    return task === null || task === undefined ? undefined : taskInfo(task, this.#codec)
  }

  /**
   * The tasks of one state, newest first, a page at a time.
   * @param {unknown} query `{ state, limit?, cursor? }`
   */
  async getTasks(query) {
    const { state, limit, cursor } = taskQuery(query)
    const page = await native(() => this.#native.tasks(state, limit, cursor))
    return { tasks: page.tasks.map((task) => taskInfo(task, this.#codec)), ...(page.cursor ? { cursor: page.cursor } : {}) }
  }

  /**
   * Waits for task `id` to end (`options.results`): resolves with its result, rejects with
   * `ERR_PQ_TASK_FAILED` (it failed for good) or `ERR_PQ_TIMEOUT`.
   * @param {unknown} id
   * @param {unknown} [options] `{ timeout }` in ms (default 30 s)
   */
  async waitFor(id, options) {
    const checked = checkedString(id, 'waitFor(id)', 'ERR_PQ_INVALID_TASK')
    const timeout = waitTimeout(options, 'waitFor(id, options)')
    const task = await native(() => this.#native.waitFor(checked, timeout))
    return outcomeOf(taskInfo(task, this.#codec))
  }

  /**
   * Enqueues `task` and waits for it to end, as `waitFor` does.
   * @param {unknown} task
   * @param {unknown} [options] `{ timeout }` in ms (default 30 s), counted from the enqueue
   */
  async enqueueAndWait(task, options) {
    const timeout = waitTimeout(options, 'enqueueAndWait(task, options)')
    const started = Date.now()
    const id = await this.enqueue(task)
    return this.waitFor(id, { timeout: Math.max(0, timeout - (Date.now() - started)) })
  }

  /** The workers running now, in any process, oldest first. */
  async getWorkers() {
    const workers = await native(() => this.#native.workers())
    return workers.map(({ subjects, ...worker }) => ({ ...worker, ...(subjects ? { subjects } : {}) }))
  }

  /**
   * Cancels task `id` wherever it is — delayed, waiting, waiting for a retry or running, from any
   * process; `true` when it will not complete (index.d.ts says when `false` is said).
   * @param {unknown} id
   */
  async cancel(id) {
    const checked = checkedString(id, 'cancel(id)', 'ERR_PQ_INVALID_TASK')
    return native(() => this.#native.cancel(checked))
  }

  /**
   * Creates or replaces the recurring task `name`: `spec` is `{ cron }` (6 fields, seconds first,
   * with an optional `timeZone`) or `{ every }` (ms). One task per tick, however many processes
   * schedule the same name.
   * @param {unknown} name
   * @param {unknown} spec
   * @param {unknown} task
   */
  async schedule(name, spec, task) {
    const checkedName = checkedString(name, 'schedule(name)', 'ERR_PQ_INVALID_CONFIG')
    const plainSpec = plainConfig(spec)
    const input = encodeTask(task, 'task', this.#codec)
    await native(() => this.#native.schedule(checkedName, plainSpec ?? null, input, input.name))
  }

  /**
   * Removes the recurring task `name`; resolves to whether it existed.
   * @param {unknown} name
   */
  async unschedule(name) {
    const checked = checkedString(name, 'unschedule(name)', 'ERR_PQ_INVALID_CONFIG')
    return native(() => this.#native.unschedule(checked))
  }

  /** The recurring tasks of the queue, by name. */
  async getSchedules() {
    const listed = await native(() => this.#native.schedules())
    return listed.map((schedule) => decodeSchedule(schedule, this.#codec))
  }

  /**
   * Reads (without removing) up to `limit` dead letters, oldest first; with `filter`, only those
   * it picks (one pass over the stored letters, keeping only the matches). A letter whose
   * content is not JSON carries it raw; it never fails the call.
   * @param {unknown} [limit]
   * @param {unknown} [filter]
   */
  async getDeadLetters(limit = 100, filter = undefined) {
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_DEAD_LETTERS) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `getDeadLetters(limit) takes an integer from 1 to ${MAX_DEAD_LETTERS}, got ${describe(limit)}`)
    }
    const checked = filter === undefined ? undefined : letterFilter(filter, 'getDeadLetters')
    if (checked?.limit !== undefined) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', 'getDeadLetters(limit, filter): filter.limit is not taken here; give the limit as the first argument')
    }
    const letters = await native(() => this.#native.deadLetters(limit, checked))
    return letters.map((letter) => decodeDeadLetter(letter, this.#codec))
  }

  /**
   * Reads (without removing) the dead letter at `sequence`; `undefined` when there is none.
   * @param {unknown} sequence
   */
  async getDeadLetter(sequence) {
    if (typeof sequence !== 'number' || !Number.isSafeInteger(sequence) || sequence < 1) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `getDeadLetter(sequence) takes an integer >= 1, got ${describe(sequence)}`)
    }
    const letter = await native(() => this.#native.deadLetter(sequence))
    return letter ? decodeDeadLetter(letter, this.#codec) : undefined
  }

  /**
   * Starts a dead-letter worker; `{ success: true }` from `handler` removes the letter.
   * @param {unknown} handler
   * @param {unknown} [options]
   */
  async processDLQ(handler, options) {
    if (typeof handler !== 'function') {
      throw new ProtoqueueError('ERR_PQ_INVALID_HANDLER', `processDLQ(handler) takes a function, got ${describe(handler)}`)
    }
    const settings = options === undefined ? null : plainConfig(options)
    const letters = (/** @type {import('../native').NativeDeadLetter} */ letter) => handlerOf.run(this, runHandler, /** @type {(letter: any) => unknown} */ (handler), decodeDeadLetter(letter, this.#codec))
    await native(() => this.#native.processDeadLetters(letters, settings))
    return this
  }

  /**
   * Requeues the tasks of the dead letters `filter` picks; resolves to how many.
   * @param {unknown} [filter]
   * @param {unknown} [options]
   */
  async requeueDeadLetters(filter, options) {
    const checked = letterFilter(filter, 'requeueDeadLetters')
    const progress = progressOption(options, 'requeueDeadLetters')
    return native(() => this.#native.requeueDeadLetters(checked, progress))
  }

  /**
   * Removes the dead letters `filter` picks; resolves to how many.
   * @param {unknown} [filter]
   * @param {unknown} [options]
   */
  async purgeDeadLetters(filter, options) {
    const checked = letterFilter(filter, 'purgeDeadLetters')
    const progress = progressOption(options, 'purgeDeadLetters')
    return native(() => this.#native.purgeDeadLetters(checked, progress))
  }

  /** Removes the tasks waiting in the queue (not those in flight); resolves to how many. */
  async purge() {
    return native(() => this.#native.purge())
  }

  /** Pauses every worker of the queue, in every process, until `resume()`. */
  async pause() {
    await native(() => this.#native.pause())
  }

  /** Resumes the queue's workers. */
  async resume() {
    await native(() => this.#native.resume())
  }

  /**
   * Deletes the queue (tasks, delayed and recurring tasks, dead letters, own-id index), then
   * disconnects; resolves to the names of the streams deleted. Unless `{ force: true }`, rejects
   * with `ERR_PQ_QUEUE_IN_USE` (nothing deleted) while this object or any process runs a worker.
   * @param {unknown} [options]
   * @returns {Promise<string[]>}
   */
  async destroy(options) {
    const force = forceOption(options)
    const deleted = await native(() => this.#native.destroy(force))
    // The native side disconnected: what the dispatcher held is settled.
    this.#dispatcher?.close()
    this.#dispatcher = undefined
    return deleted
  }
}

addEventMethods(Protoqueue)

module.exports = { Protoqueue }
