// @ts-check
'use strict'
// Events of a `Protoqueue` object: `completed`, `failed`, `deadLettered`, `cancelled` (what
// happened to each attempt, decided by the native worker), `progress` (what a running handler
// reported with `task.progress(value)`) and `error` (connection trouble). With `options.events:
// 'queue'` the native side records the first five from every worker of the queue, not only its own.
//
// The queue object has the listener methods of an EventEmitter (`on`, `once`, `off`, ...), kept
// on an emitter of its own. After every change the native side is told which events have
// listeners, and records only those: a queue nobody listens to pays nothing per task. Recorded
// events wait natively; the first one wakes this side (one call into JavaScript), which takes
// everything waiting as one JSON text of rows (arrays parse about twice as fast as objects), so a
// busy worker crosses once per batch of events.
//
// Listeners cannot hurt the worker: each is called on its own, a throw (or a rejected promise
// from an async listener) is reported as a process warning, and the other listeners and events
// still run. Unlike a bare EventEmitter, an `error` with no listener is not thrown: nothing is
// recorded for it, and the trouble is only logged (as every connection problem is).

const { EventEmitter } = require('node:events')

const { messageOf } = require('./describe.js')

/** The events the native side records, by their bit in its mask. */
const EVENT_BITS = /** @type {const} */ ({ completed: 1, failed: 2, deadLettered: 4, error: 8, progress: 16, cancelled: 32 })

/** The event names by their bit, the first field of a row. */
const NAMES = /** @type {Record<number, keyof typeof EVENT_BITS>} */ ({ 1: 'completed', 2: 'failed', 4: 'deadLettered', 8: 'error', 16: 'progress', 32: 'cancelled' })

/**
 * The listener's object for one row (`Event::write_row` in src/observe/events.rs), or `undefined`
 * for a row this version does not know.
 * @param {any[]} row
 * @param {EventOptions['makeError']} makeError
 * @returns {unknown}
 */
function fromRow(row, makeError) {
  switch (row[0]) {
    case 1:
      return { type: 'completed', id: row[1], attempt: row[2], maxAttempts: row[3], sequence: row[4], durationMs: row[5], waitMs: row[6], sinceEnqueueMs: row[7] }
    case 2: {
      /** @type {Record<string, unknown>} */
      const event = {
        type: 'failed',
        id: row[1],
        attempt: row[2],
        maxAttempts: row[3],
        sequence: row[4],
        durationMs: row[5],
        waitMs: row[6],
        sinceEnqueueMs: row[7],
        error: row[8],
        willRetry: row[9],
      }
      if (row[10] !== null) event.retryDelayMs = row[10]
      return event
    }
    case 4: {
      /** @type {Record<string, unknown>} */
      const event = { type: 'deadLettered', attempt: row[2], maxAttempts: row[3], sequence: row[4], reason: row[5], error: row[6] }
      if (row[1] !== null) event.id = row[1]
      return event
    }
    case 8:
      return makeError(row[1], row[2])
    case 16:
      // The progress is JSON inside the rows: parsed with them.
      return { type: 'progress', id: row[1], progress: row[2] }
    case 32:
      return { type: 'cancelled', id: row[1], attempt: row[2], maxAttempts: row[3], sequence: row[4] }
    default:
      return undefined
  }
}

/**
 * What the native queue offers for events.
 * @typedef {object} NativeEvents
 * @property {(wake: () => void) => void} listen sets the function called when events wait
 * @property {(mask: number) => void} setEvents which events to record
 * @property {() => string} takeEvents the events waiting, as a JSON array of rows
 */

/**
 * How events reach listeners.
 * @typedef {object} EventOptions
 * @property {(code: string, message: string) => Error} makeError builds the `error` event's Error
 * @property {(message: string) => void} [warn] where a throwing listener is reported
 */

/**
 * The event state of one queue object.
 * @typedef {object} State
 * @property {EventEmitter} emitter
 * @property {NativeEvents} native
 * @property {number} mask
 * @property {boolean} listening
 * @property {EventOptions} options
 */

/** @type {WeakMap<object, State>} */
const states = new WeakMap()

/**
 * Gives `queue` its events, delivered from `native`.
 * @param {object} queue
 * @param {NativeEvents} native
 * @param {EventOptions} options
 */
function attachEvents(queue, native, options) {
  const emitter = new EventEmitter()
  // Many listeners on a queue are normal (one per feature); no leak warning.
  emitter.setMaxListeners(0)
  states.set(queue, { emitter, native, mask: 0, listening: false, options })
}

/**
 * The state of `queue`; a TypeError for a `this` that is no queue.
 * @param {unknown} queue
 * @returns {State}
 */
function stateOf(queue) {
  const state = states.get(/** @type {object} */ (queue))
  if (!state) throw new TypeError('not a Protoqueue object')
  return state
}

/**
 * Tells the native side which events have listeners now, first handing it the wake-up function.
 * @param {object} queue
 * @param {State} state
 */
function sync(queue, state) {
  let mask = 0
  for (const [name, bit] of Object.entries(EVENT_BITS)) {
    if (state.emitter.listenerCount(name) > 0) mask |= bit
  }
  if (mask === state.mask) return
  if (mask !== 0 && !state.listening) {
    // The native side keeps this function: it must not keep the queue (or the native object)
    // alive, or neither could ever be collected.
    const ref = new WeakRef(queue)
    state.native.listen(() => {
      const target = ref.deref()
      if (target) deliver(target)
    })
    state.listening = true
  }
  state.native.setEvents(mask)
  state.mask = mask
}

/**
 * Takes the waiting events and calls their listeners.
 * @param {object} queue
 */
function deliver(queue) {
  const state = states.get(queue)
  if (!state) return
  let rows
  try {
    rows = JSON.parse(state.native.takeEvents())
  } catch {
    return
  }
  for (const row of rows) {
    const name = NAMES[row[0]]
    const payload = fromRow(row, state.options.makeError)
    if (name !== undefined && payload !== undefined) emitSafely(queue, state, name, payload)
  }
  // `once` listeners removed themselves: record fewer events from now on.
  sync(queue, state)
}

/**
 * Calls each listener of `name` on its own: one that throws or rejects is reported and the
 * others still run.
 * @param {object} queue
 * @param {State} state
 * @param {string} name
 * @param {unknown} payload
 */
function emitSafely(queue, state, name, payload) {
  // `rawListeners`: calling a `once` wrapper removes it, as `emit` would.
  const listeners = state.emitter.rawListeners(name)
  if (listeners.length === 0) return
  for (const listener of listeners) {
    try {
      const result = Reflect.apply(listener, queue, [payload])
      if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
        result.then(undefined, (/** @type {unknown} */ err) => report(state, name, err))
      }
    } catch (err) {
      report(state, name, err)
    }
  }
}

/**
 * @param {State} state
 * @param {string} name
 * @param {unknown} err
 */
function report(state, name, err) {
  const message = `protoqueue: a '${name}' listener threw (${messageOf(err)}); the worker goes on`
  try {
    if (state.options.warn) state.options.warn(message)
    else process.emitWarning(message, { code: 'PROTOQUEUE_LISTENER_THREW' })
  } catch {
    // Reporting must not throw either.
  }
}

/**
 * Adds the listener methods of an EventEmitter to `Class` (whose instances went through
 * `attachEvents`). Each returns the queue, as EventEmitter's do.
 * @param {{ prototype: any }} Class
 */
function addEventMethods(Class) {
  /** @type {Array<'on' | 'addListener' | 'once' | 'prependListener' | 'prependOnceListener' | 'off' | 'removeListener'>} */
  const changing = ['on', 'addListener', 'once', 'prependListener', 'prependOnceListener', 'off', 'removeListener']
  for (const method of changing) {
    Object.defineProperty(Class.prototype, method, {
      configurable: true,
      writable: true,
      /**
       * @param {string | symbol} name
       * @param {(...args: any[]) => void} listener
       */
      value(name, listener) {
        const state = stateOf(this)
        state.emitter[method](name, listener)
        sync(this, state)
        return this
      },
    })
  }
  const methods = {
    /** @param {string | symbol} [name] */
    removeAllListeners(name) {
      const state = stateOf(this)
      if (name === undefined) state.emitter.removeAllListeners()
      else state.emitter.removeAllListeners(name)
      sync(this, state)
      return this
    },
    /** @param {string | symbol} name */
    listenerCount(name) {
      return stateOf(this).emitter.listenerCount(name)
    },
    /** @param {string | symbol} name */
    listeners(name) {
      return stateOf(this).emitter.listeners(name)
    },
    /** @param {string | symbol} name */
    rawListeners(name) {
      return stateOf(this).emitter.rawListeners(name)
    },
    eventNames() {
      return stateOf(this).emitter.eventNames()
    },
  }
  for (const [method, value] of Object.entries(methods)) {
    Object.defineProperty(Class.prototype, method, { configurable: true, writable: true, value })
  }
}

module.exports = { attachEvents, addEventMethods, EVENT_BITS }
