// @ts-check
'use strict'
// A handler thread (`process(moduleUrl, { threads })`): loads the handler module, runs the
// same dispatcher the main thread runs, and attaches it to its pool in the native worker, which
// hands it tasks directly — the main thread is not on the way. It tells its parent `{ ready }`
// once attached, or `{ failed }` with why it cannot run (the module does not load, exports no
// handler, or lacks what the queue needs and functions cannot carry across threads).
//
// The module exports the handler as its default export or as `handler`; it may also export
// `backoff` (as `options.backoff`) and `serializer` / `schema` (as the queue's): the queue's own
// functions stay on the main thread.

const { parentPort, workerData } = require('node:worker_threads')

const native = require('../native.js')
const { messageOf } = require('./describe.js')
const { dispatcher } = require('./dispatcher.js')
const { codecConfig } = require('./options.js')
const serializers = require('./serializers.js')
const tracing = require('./tracing.js')

/**
 * What the parent gives a thread.
 * @typedef {object} ThreadData
 * @property {number} pool the pool's number in the native worker
 * @property {string} module the handler module's URL
 * @property {boolean} keepResults the queue keeps results: a success's result goes back
 * @property {boolean} needsBackoff the queue has an `options.backoff` function
 * @property {boolean} needsCodec the queue has a `serializer` or `schema`
 * @property {import('./tracing.js').Destination & { consumer: string }} destination where spans say tasks go
 */

/**
 * The handler and what else the module gives, or why it cannot run.
 * @param {ThreadData} data
 * @returns {Promise<{ handler: (task: any) => unknown, backoff?: any, decode?: (task: any) => void } | string>}
 */
async function load(data) {
  let mod
  try {
    mod = await import(data.module)
  } catch (err) {
    return `the handler module ${data.module} could not be loaded: ${messageOf(err)}`
  }
  const handler = typeof mod.default === 'function' ? mod.default : mod.handler
  if (typeof handler !== 'function') {
    return `the handler module ${data.module} exports no handler (a function as its default export or as \`handler\`)`
  }
  const backoff = typeof mod.backoff === 'function' ? mod.backoff : undefined
  if (data.needsBackoff && backoff === undefined) {
    return `the queue's options.backoff is a function, which cannot cross to a thread: export it from ${data.module} as \`backoff\``
  }
  let decode
  if (data.needsCodec) {
    const codec = codecConfig({ serializer: mod.serializer, schema: mod.schema })?.codec
    if (codec === undefined) {
      return `the queue has a serializer or schema, which cannot cross to a thread: export it from ${data.module} as \`serializer\` or \`schema\``
    }
    decode = (/** @type {any} */ task) => serializers.decodeTask(codec, task)
  }
  return { handler, backoff, decode }
}

async function main() {
  const data = /** @type {ThreadData} */ (workerData)
  const loaded = await load(data)
  if (typeof loaded === 'string') {
    parentPort?.postMessage({ failed: loaded })
    return
  }
  const pool = data.pool
  let thread = 0
  const tasks = dispatcher(
    tracing.traceProcessing(data.destination, loaded.handler),
    {
      complete: (succeeded, failed, started, returned) => native.threadComplete(pool, thread, succeeded, failed, started, returned),
      progress: (id, json) => native.threadProgress(pool, id, json),
    },
    { backoff: loaded.backoff, decode: loaded.decode, keepResults: data.keepResults },
  )
  try {
    thread = native.threadAttach(pool, tasks.dispatch)
  } catch (err) {
    parentPort?.postMessage({ failed: `the thread could not join its worker: ${messageOf(err)}` })
    return
  }
  parentPort?.postMessage({ ready: thread })
}

main()
