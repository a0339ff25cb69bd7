// @ts-check
'use strict'
// The threads of `process(moduleUrl, { threads })`: starts them, waits until each one's
// dispatcher joined the native worker's pool (`lib/thread.js`), replaces one that exits while
// the worker runs (the native side fails the tasks it held at once: they are retried as any
// failure), and ends them when the worker stopped.

const { availableParallelism } = require('node:os')
const { isAbsolute, join } = require('node:path')
const { pathToFileURL } = require('node:url')
const { Worker } = require('node:worker_threads')

const { describe, messageOf } = require('./describe.js')
const { ProtoqueueError } = require('./errors.js')

const ENTRY = join(__dirname, 'thread.js')
/** The most threads one worker takes. */
const MAX_THREADS = 256
/** The first and the longest wait before starting again a thread that could not replace one. */
const RESPAWN_FIRST_MS = 1_000
const RESPAWN_MOST_MS = 30_000

/**
 * The handler module's URL, when `handler` names one: a `URL`, a `file:` URL string or an
 * absolute path; `undefined` for anything else.
 * @param {unknown} handler
 * @returns {string | undefined}
 */
function moduleOf(handler) {
  if (isUrl(handler)) return /** @type {URL} */ (handler).href
  if (typeof handler !== 'string') return undefined
  if (handler.startsWith('file:')) return handler
  return isAbsolute(handler) ? pathToFileURL(handler).href : undefined
}

/**
 * Whether `value` is a `URL`; `false` for one whose prototype cannot be read (a Proxy that throws).
 * @param {unknown} value
 */
function isUrl(value) {
  try {
    return value instanceof URL
  } catch {
    return false
  }
}

/**
 * How many threads `options.threads` asks for: a whole number from 1 to 256, and no more than
 * `batchSize` (the most handlers that run at once: each thread runs one at least); by default,
 * one per core this process may use, up to `batchSize`.
 * @param {unknown} threads
 * @param {number} batchSize
 * @returns {number}
 */
function threadCount(threads, batchSize) {
  if (threads === undefined || threads === null) return Math.min(availableParallelism(), batchSize)
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `process options.threads must be a whole number from 1 to ${MAX_THREADS}, got ${describe(threads)}`)
  }
  if (threads > batchSize) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `process options.threads (${threads}) is more than options.batchSize (${batchSize}), the most handlers that run at once: raise batchSize, or use fewer threads`)
  }
  return threads
}

/**
 * The native side of a pool.
 * @typedef {object} NativePool
 * @property {(run: number, threads: number) => number} openPool opens a pool for worker run `run`
 * @property {(pool: number) => void} closePool closes it: its threads' dispatchers go
 * @property {(pool: number, thread: number) => void} threadDetach a thread exited: the tasks it held fail
 */

/**
 * What each thread needs besides its pool (see `ThreadData` in lib/thread.js).
 * @typedef {Omit<import('./thread.js').ThreadData, 'pool'>} Settings
 */

class ThreadPool {
  /** @type {Set<Worker>} */
  #threads = new Set()
  #stopping = false
  #native
  #settings
  #warn

  /**
   * @param {NativePool} nativePool
   * @param {number} number the pool's number in the native worker
   * @param {Settings} settings
   * @param {(message: string) => void} warn
   */
  constructor(nativePool, number, settings, warn) {
    this.#native = nativePool
    this.number = number
    this.#settings = settings
    this.#warn = warn
  }

  /**
   * Starts one thread; resolves once its dispatcher joined the pool, rejects with why it could
   * not (ERR_PQ_INVALID_HANDLER).
   * @returns {Promise<void>}
   */
  spawn() {
    const worker = new Worker(ENTRY, { workerData: { pool: this.number, ...this.#settings } })
    this.#threads.add(worker)
    /** @type {number | undefined} */
    let joined
    return new Promise((resolve, reject) => {
      const fail = (/** @type {string} */ why) => reject(new ProtoqueueError('ERR_PQ_INVALID_HANDLER', `process(${this.#settings.module}): ${why}`))
      worker.on('message', (/** @type {{ ready?: number, failed?: string }} */ message) => {
        if (message.failed !== undefined) fail(message.failed)
        else if (message.ready !== undefined) {
          joined = message.ready
          resolve()
        }
      })
      worker.on('error', (err) => {
        if (joined === undefined) fail(`its thread failed: ${messageOf(err)}`)
        else this.#warn(`protoqueue: a handler thread failed (${messageOf(err)}); its tasks are retried and a new thread starts`)
      })
      worker.on('exit', (code) => {
        this.#threads.delete(worker)
        if (joined === undefined) return fail(`its thread exited (code ${code}) before it was ready`)
        this.#native.threadDetach(this.number, joined)
        this.#replace(RESPAWN_FIRST_MS)
      })
    })
  }

  /**
   * Starts a thread in place of one that exited; if it cannot start, tries again after `wait`
   * ms, twice as long each time up to RESPAWN_MOST_MS (meanwhile the tasks wait in the pool).
   * @param {number} wait
   */
  #replace(wait) {
    if (this.#stopping) return
    this.spawn().catch((err) => {
      this.#warn(`protoqueue: a handler thread could not be replaced (${messageOf(err)}); trying again in ${wait} ms`)
      setTimeout(() => this.#replace(Math.min(wait * 2, RESPAWN_MOST_MS)), wait).unref()
    })
  }

  /** Ends the threads (the worker stopped: they hold nothing) and closes the pool. */
  close() {
    this.#stopping = true
    for (const worker of this.#threads) worker.terminate()
    this.#threads.clear()
    this.#native.closePool(this.number)
  }
}

/**
 * Starts `count` threads running the handler module for worker run `run`; resolves to the pool
 * once all of them are ready. If one cannot start, the others end and it rejects with why.
 * @param {NativePool} nativePool
 * @param {number} run
 * @param {number} count
 * @param {Settings} settings
 * @param {(message: string) => void} [warn]
 * @returns {Promise<ThreadPool>}
 */
async function startThreads(nativePool, run, count, settings, warn = console.warn) {
  const pool = new ThreadPool(nativePool, nativePool.openPool(run, count), settings, warn)
  try {
    await Promise.all(Array.from({ length: count }, () => pool.spawn()))
  } catch (err) {
    pool.close()
    throw err
  }
  return pool
}

module.exports = { moduleOf, startThreads, threadCount, MAX_THREADS }
