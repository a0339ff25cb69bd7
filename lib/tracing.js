// @ts-check
'use strict'
// OpenTelemetry tracing, when the application has `@opentelemetry/api` (an optional peer
// dependency, loaded on first use). `enqueue` and `enqueueBatch` run in a PRODUCER span
// (`send <subject>`) whose W3C trace context travels in the task envelope; each attempt of a
// handler runs in a CONSUMER span (`process <subject>`) that is a child of that context and links
// to it, following OpenTelemetry's messaging semantic conventions. Without the package every
// function here returns at its first line; without a registered tracer provider, after one check.
//
// Nothing here may break a task or an enqueue: a malformed or foreign trace context is ignored,
// and a tracer that throws is logged once and left alone.

/** @typedef {import('@opentelemetry/api').Span} Span */
/** @typedef {import('@opentelemetry/api').Tracer} Tracer */
const { messageOf } = require('./describe.js')

/** @typedef {typeof import('@opentelemetry/api')} Api */

/**
 * What a queue says about itself in its spans.
 * @typedef {object} Destination
 * @property {string} subject the queue's subject (`messaging.destination.name`)
 * @property {string} stream the queue's stream
 */

const TRACER_NAME = 'protoqueue'
const SYSTEM = 'nats'
/** A W3C `traceparent`: version 00 (or a later one with more fields), trace id, span id, flags. */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/

/** @type {Api | null | undefined} undefined: not looked for yet; null: not installed. */
let api
/** @type {Tracer | undefined} */
let tracer
/**
 * The API's no-op tracer provider: what the global one delegates to until one is registered.
 * @type {import('@opentelemetry/api').TracerProvider | undefined}
 */
let noopProvider
let warned = false

/**
 * `@opentelemetry/api`, or null when the application does not have it.
 * @returns {Api | null}
 */
function otel() {
  if (api === undefined) {
    try {
      api = require('@opentelemetry/api')
      noopProvider = new api.ProxyTracerProvider().getDelegate()
    } catch {
      api = null
    }
  }
  return api ?? null
}

/**
 * Whether a tracer provider is registered (else nothing is traced, at the cost of this check).
 * @param {Api} a
 */
function isTracing(a) {
  const provider = a.trace.getTracerProvider()
  const delegate = provider instanceof a.ProxyTracerProvider ? provider.getDelegate() : provider
  return delegate !== noopProvider
}

/** @returns {Tracer} */
function getTracer() {
  if (tracer === undefined) {
    const a = /** @type {Api} */ (api)
    let version
    try {
      version = require('../package.json').version
    } catch {
      version = undefined
    }
    tracer = a.trace.getTracer(TRACER_NAME, version)
  }
  return tracer
}

/** @param {unknown} err */
function warnOnce(err) {
  if (warned) return
  warned = true
  console.warn(`protoqueue: tracing failed and is skipped (${messageOf(err)})`)
}

/**
 * Starts the PRODUCER span of an enqueue of `count` tasks (`enqueueBatch` when `batch`) and
 * writes its trace context into each native input (`traceparent`, `tracestate`). Returns the
 * span to end with {@link settleSend}, or null when there is nothing to trace.
 * @param {Destination} destination
 * @param {Array<{ traceparent?: string, tracestate?: string }>} inputs
 * @param {boolean} batch
 * @returns {Span | null}
 */
function startSend(destination, inputs, batch) {
  const a = api === undefined ? otel() : api
  if (a === null) return null
  try {
    if (!isTracing(a)) return null
    /** @type {Record<string, string | number>} */
    const attributes = {
      'messaging.system': SYSTEM,
      'messaging.destination.name': destination.subject,
      'messaging.operation.type': 'send',
      'messaging.operation.name': batch ? 'enqueueBatch' : 'enqueue',
    }
    if (batch) attributes['messaging.batch.message_count'] = inputs.length
    const span = getTracer().startSpan(`send ${destination.subject}`, { kind: a.SpanKind.PRODUCER, attributes })
    const context = span.spanContext()
    if (!a.trace.isSpanContextValid(context)) {
      span.end()
      return null
    }
    const traceparent = `00-${context.traceId}-${context.spanId}-${(context.traceFlags & 0xff).toString(16).padStart(2, '0')}`
    const tracestate = context.traceState?.serialize() || undefined
    for (const input of inputs) {
      input.traceparent = traceparent
      if (tracestate !== undefined) input.tracestate = tracestate
    }
    return span
  } catch (err) {
    warnOnce(err)
    return null
  }
}

/**
 * Ends a PRODUCER span with the enqueue's outcome; resolves or rejects as `enqueued` does.
 * @template T
 * @param {Span} span
 * @param {Promise<T>} enqueued
 * @returns {Promise<T>}
 */
function settleSend(span, enqueued) {
  return enqueued.then(
    (result) => {
      try {
        if (typeof result === 'string') span.setAttribute('messaging.message.id', result)
        span.end()
      } catch (err) {
        warnOnce(err)
      }
      return result
    },
    (err) => {
      failed(span, err, true)
      throw err
    },
  )
}

/**
 * Wraps `run` (which calls the user's handler with a task) so each attempt runs in a CONSUMER
 * span. Returns `run` itself when `@opentelemetry/api` is not installed.
 * @template R
 * @param {Destination & { consumer: string }} destination
 * @param {(task: any) => R} run
 * @returns {(task: any) => R}
 */
function traceProcessing(destination, run) {
  const a = otel()
  if (a === null) {
    // A traced producer's context is not the handler's business.
    return (task) => {
      if (task?.trace !== undefined) delete task.trace
      return run(task)
    }
  }
  const name = `process ${destination.subject}`
  return (task) => {
    const trace = task?.trace
    if (trace !== undefined) delete task.trace
    let span
    let context
    try {
      span = isTracing(a) ? startProcess(a, destination, name, task, trace) : undefined
      context = span === undefined ? undefined : a.trace.setSpan(a.ROOT_CONTEXT, span)
    } catch (err) {
      warnOnce(err)
      span = undefined
    }
    if (span === undefined) return run(task)
    const consumer = span
    let result
    try {
      result = a.context.with(/** @type {import('@opentelemetry/api').Context} */ (context), run, undefined, task)
    } catch (err) {
      failed(consumer, err, false)
      throw err
    }
    observe(consumer, result)
    return result
  }
}

/**
 * Starts the CONSUMER span of one attempt, a child of the producer's context and linked to it
 * when the task carries a valid one.
 * @param {Api} a
 * @param {Destination & { consumer: string }} destination
 * @param {string} name
 * @param {any} task
 * @param {unknown} trace
 * @returns {Span}
 */
function startProcess(a, destination, name, task, trace) {
  const parent = remoteContext(a, trace)
  /** @type {Record<string, string | number>} */
  const attributes = {
    'messaging.system': SYSTEM,
    'messaging.destination.name': destination.subject,
    'messaging.consumer.group.name': destination.consumer,
    'messaging.operation.type': 'process',
    'messaging.operation.name': 'process',
    'messaging.message.id': String(task?.id),
    'protoqueue.attempt': Number(task?.attempt),
    'protoqueue.max_attempts': Number(task?.maxAttempts),
  }
  const base = parent === undefined ? a.ROOT_CONTEXT : a.trace.setSpanContext(a.ROOT_CONTEXT, parent)
  return getTracer().startSpan(name, { kind: a.SpanKind.CONSUMER, attributes, links: parent === undefined ? [] : [{ context: parent }] }, base)
}

/**
 * The producer's span context from a task's `trace`, or undefined when it has none or it is not
 * a valid W3C trace context.
 * @param {Api} a
 * @param {unknown} trace
 * @returns {import('@opentelemetry/api').SpanContext | undefined}
 */
function remoteContext(a, trace) {
  if (typeof trace !== 'object' || trace === null) return undefined
  const { traceparent, tracestate } = /** @type {{ traceparent?: unknown, tracestate?: unknown }} */ (trace)
  if (typeof traceparent !== 'string') return undefined
  const match = TRACEPARENT.exec(traceparent)
  if (match === null || match[1] === 'ff' || (match[1] === '00' && match[5] !== undefined)) return undefined
  const context = {
    traceId: match[2],
    spanId: match[3],
    traceFlags: parseInt(match[4], 16),
    isRemote: true,
    traceState: typeof tracestate === 'string' && tracestate !== '' ? a.createTraceState(tracestate) : undefined,
  }
  return a.trace.isSpanContextValid(context) ? context : undefined
}

/**
 * Ends a CONSUMER span when the handler's result settles: a rejection, or a result that is not
 * `{ success: true }`, sets the error status.
 * @param {Span} span
 * @param {unknown} result
 */
function observe(span, result) {
  /** @param {unknown} value */
  const done = (value) => {
    let success
    try {
      success = typeof value === 'object' && value !== null ? /** @type {any} */ (value).success : undefined
    } catch {
      success = undefined
    }
    if (success === true) {
      try {
        span.end()
      } catch (err) {
        warnOnce(err)
      }
      return
    }
    let message = 'handler did not return { success: true }'
    try {
      const error = /** @type {any} */ (value)?.error
      if (typeof error === 'string') message = error
    } catch {
      // A getter that throws: the default message.
    }
    endWithError(span, message, 'TaskFailed')
  }
  let thenable = false
  try {
    thenable = typeof result === 'object' && result !== null && typeof (/** @type {any} */ (result).then) === 'function'
  } catch {
    thenable = false
  }
  if (!thenable) return done(result)
  // Observe the same promise the dispatcher awaits (a rejection is still handled there).
  Promise.resolve(result).then(done, (err) => failed(span, err, false))
}

/**
 * Records `err` on `span`, sets the error status and ends it.
 * @param {Span} span
 * @param {unknown} err
 * @param {boolean} isError whether the span's operation (not a handler) failed
 */
function failed(span, err, isError) {
  let message = 'handler threw'
  let type = 'Error'
  try {
    if (err instanceof Error) {
      span.recordException(err)
      message = String(err.message)
      type = err.name || (err.constructor?.name ?? 'Error')
    } else {
      message = typeof err === 'string' ? err : String(err)
      span.recordException(message)
    }
  } catch {
    // A value with no string form: the default message.
  }
  if (isError && typeof (/** @type {any} */ (err)?.code) === 'string') type = /** @type {any} */ (err).code
  endWithError(span, message, type)
}

/**
 * @param {Span} span
 * @param {string} message
 * @param {string} type the `error.type` attribute
 */
function endWithError(span, message, type) {
  try {
    const a = /** @type {Api} */ (api)
    span.setAttribute('error.type', type)
    span.setStatus({ code: a.SpanStatusCode.ERROR, message })
    span.end()
  } catch (err) {
    warnOnce(err)
  }
}

module.exports = { startSend, settleSend, traceProcessing }
