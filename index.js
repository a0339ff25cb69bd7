'use strict'
// Protoqueue's JavaScript layer. The queue itself is Rust (`native.js` loads the addon); this file
// only turns values into JSON text and back, wraps the user's handler so every outcome reaches
// Rust as a well-formed result, and gives errors their `code` (napi-rs cannot set one on errors
// of async methods, so the native side sends "<code>: <message>").

const { AsyncLocalStorage } = require('node:async_hooks')

const { NativeQueue, listQueues: nativeListQueues } = require('./native.js')
const { coalesce } = require('./lib/coalesce.js')
const { describe, messageOf } = require('./lib/describe.js')
const { dispatcher, runHandler } = require('./lib/dispatcher.js')
const tracing = require('./lib/tracing.js')
const { addEventMethods, attachEvents } = require('./lib/events.js')
const { registerMetrics } = require('./lib/prometheus.js')
const serializers = require('./lib/serializers.js')
const { describeLoneSurrogate, isWellFormed } = require('./lib/unicode.js')

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

/**
 * Turns a native error into a `ProtoqueueError` with its code; an error without one (which the
 * native side should never raise) gets `fallback`.
 */
function withCode(err, fallback) {
  if (err instanceof ProtoqueueError) return err
  const message = messageOf(err)
  const match = CODED_MESSAGE.exec(message)
  return match ? new ProtoqueueError(match[1], match[2]) : new ProtoqueueError(fallback, message, { cause: err })
}

async function native(call, fallback = 'ERR_PQ_NATS') {
  try {
    return await call()
  } catch (err) {
    throw withCode(err, fallback)
  }
}

function isPlainObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * Whether `root` holds a function or a symbol where `JSON.stringify` would silently drop it (or
 * turn it into `null`). Objects with a `toJSON` method are taken as they serialize themselves.
 * Iterative: no depth `JSON.stringify` accepted can overflow the stack here.
 */
function holdsUnserializable(root) {
  if (typeof root !== 'object' || root === null) return false
  const stack = [root]
  while (stack.length > 0) {
    const value = stack.pop()
    if (typeof value.toJSON === 'function') continue
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const item = value[i]
        const type = typeof item
        if (type === 'object') {
          if (item !== null) stack.push(item)
        } else if (type === 'function' || type === 'symbol') {
          return true
        }
      }
    } else {
      const keys = Object.keys(value)
      for (let i = 0; i < keys.length; i++) {
        const item = value[keys[i]]
        const type = typeof item
        if (type === 'object') {
          if (item !== null) stack.push(item)
        } else if (type === 'function' || type === 'symbol') {
          return true
        }
      }
    }
  }
  return false
}

/** The path of the first function or symbol in `value` (only called once one was found). */
function unserializablePath(value, path, depth = 0) {
  const type = typeof value
  if (type === 'function' || type === 'symbol') return path
  if (type !== 'object' || value === null || depth > 1000 || typeof value.toJSON === 'function') return undefined
  const entries = Array.isArray(value) ? value.map((item, i) => [`${path}[${i}]`, item]) : Object.keys(value).map((key) => [`${path}${/^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`}`, value[key]])
  for (const [at, item] of entries) {
    const found = unserializablePath(item, at, depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}

/** A task input as `enqueueEach` takes it: its JSON text alone when it has nothing but data. */
function compactInput(input) {
  if (typeof input.data !== 'string') return input
  for (const key in input) if (key !== 'data') return input
  return input.data
}

/**
 * The function the native side answers `enqueueEach` calls with: it hands each answer to
 * `answer` (lib/coalesce.js) as one `{ value, error }` per task. It holds nothing but `answer`.
 */
function enqueueAnswers(answer) {
  return ({ call, ids, failures, error }) => {
    if (typeof error === 'string') return answer(call, undefined, error)
    const results = ids.split('\n').map((id) => ({ value: id }))
    if (failures) for (const { index, error } of failures) results[index] = { error }
    answer(call, results)
  }
}

/** An error text of the native side (`"<code>: <message>"`) as an error with its code. */
function enqueueError(text) {
  return withCode(new Error(text), 'ERR_PQ_NATS')
}

/** JSON text of `value`, or ERR_PQ_SERIALIZE naming what could not be serialized. */
function toJson(value, what) {
  let text
  try {
    text = JSON.stringify(value)
  } catch (err) {
    throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} is not JSON-serializable: ${messageOf(err)}`, {
      cause: err,
    })
  }
  if (text === undefined) {
    throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${what} is not JSON-serializable (got ${describe(value)})`)
  }
  if (holdsUnserializable(value)) {
    let path
    try {
      path = unserializablePath(value, what)
    } catch {
      // Reading it again threw: name the whole value.
    }
    throw new ProtoqueueError('ERR_PQ_SERIALIZE', `${path ?? what} is a function or a symbol, which JSON cannot hold`)
  }
  return text
}

/**
 * Checks one `{ data, metadata? }` and encodes it as the native side expects: its data as JSON
 * text, or as `codec` (the queue's serializer, if any) encodes it.
 */
function encodeTask(task, what, codec) {
  try {
    return encodeCheckedTask(task, what, codec)
  } catch (err) {
    if (err instanceof ProtoqueueError) throw err
    if (err instanceof serializers.CodedError) throw new ProtoqueueError(err.code, err.message, { cause: err.cause })
    // A getter or Proxy trap of the task threw.
    throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what} could not be read: ${messageOf(err)}`, { cause: err })
  }
}

function encodeCheckedTask(task, what, codec) {
  if (!isPlainObject(task)) {
    throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what} must be an object like { data, metadata? }, got ${describe(task)}`)
  }
  for (const key in task) {
    if (!TASK_KEYS.has(key)) {
      throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.${key} is not a task field (a task is { data, metadata?, ${[...OPTIONAL_TASK_KEYS].join('?, ')}? })`)
    }
  }
  const data = task.data
  if (data === undefined) {
    throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.data is required`)
  }
  const input = { data: codec === undefined ? toJson(data, `${what}.data`) : codec.encode(data, `${what}.data`) }
  const metadata = task.metadata
  if (metadata !== undefined && metadata !== null) {
    if (!isPlainObject(metadata)) {
      throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.metadata must be an object, got ${describe(metadata)}`)
    }
    const text = toJson(metadata, `${what}.metadata`)
    // `{`: its JSON form is an object (a Date, a boxed string or a `toJSON` may make it anything).
    if (text.charCodeAt(0) !== 123) {
      throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.metadata must serialize to a JSON object, got ${text.slice(0, 40)}`)
    }
    input.metadata = text
  }
  const { delay, runAt } = task
  if (delay !== undefined && delay !== null) {
    if (typeof delay !== 'number') {
      throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.delay must be a number of milliseconds, got ${describe(delay)}`)
    }
    input.delay = delay
  }
  if (runAt !== undefined && runAt !== null) {
    // The native side checks the range (and refuses delay and runAt together).
    if (runAt instanceof Date) input.runAt = runAt.getTime()
    else if (typeof runAt === 'number') input.runAt = runAt
    else throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.runAt must be a Date or ms since the epoch, got ${describe(runAt)}`)
  }
  retryFields(task, input, what)
  const name = task.name
  if (name !== undefined && name !== null) {
    // The native side checks its form. It reads `name` from the `names` argument beside the
    // tasks (see namesOf), not from the input, so unnamed tasks cost nothing more to convert.
    if (typeof name !== 'string') throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.name must be a string, got ${describe(name)}`)
    input.name = wellFormed(name, `${what}.name`, 'ERR_PQ_INVALID_TASK')
  }
  routeFields(task, input, what)
  return input
}

/** `process(handler, { subjects })`: the part of the queue's subject tree a worker takes (checked in the native core). */
function processSubjects(options) {
  if (options === undefined || options === null) return undefined
  if (!isPlainObject(options)) throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `process options must be an object like { subjects: ['tasks.email.eu'] }, got ${describe(options)}`)
  for (const key in options) {
    if (key !== 'subjects') throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `process options.${key} is not an option (known: subjects)`)
  }
  const subjects = options.subjects
  if (subjects === undefined || subjects === null) return undefined
  if (!Array.isArray(subjects) || !subjects.every((s) => typeof s === 'string')) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `process options.subjects must be an array of subjects, got ${describe(subjects)}`)
  }
  return subjects.map((subject, i) => wellFormed(subject, `process options.subjects[${i}]`, 'ERR_PQ_INVALID_CONFIG'))
}

/** Copies `priority` (its range and the queue's options are checked in the native core). */
function routeFields(task, input, what) {
  const priority = task.priority
  if (priority !== undefined && priority !== null) {
    if (typeof priority !== 'number') throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.priority must be an integer from 1 (most urgent) to 10, got ${describe(priority)}`)
    input.priority = priority
  }
  const subject = task.subject
  if (subject !== undefined && subject !== null) {
    if (typeof subject !== 'string') throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.subject must be a subject of the queue's tree, got ${describe(subject)}`)
    input.subject = wellFormed(subject, `${what}.subject`, 'ERR_PQ_INVALID_TASK')
  }
}

/** The names of encoded tasks, in order, for the native side; `undefined` when none has one. */
function namesOf(inputs) {
  for (let i = 0; i < inputs.length; i++) {
    if (inputs[i].name !== undefined) return inputs.map((input) => input.name)
  }
  return undefined
}

/**
 * A recurring schedule as `getSchedules()` returns it: its data decoded by `codec` when it is of
 * the queue's serializer (raw bytes when it does not decode or is of another content type).
 */
function decodeSchedule(native, codec) {
  const spec = native.cron !== undefined && native.cron !== null ? { cron: native.cron } : { every: native.every }
  if (native.timeZone) spec.timeZone = native.timeZone
  const metadata = parseJson(native.metadata)
  const schedule = {
    name: native.name,
    spec,
    data: parseJson(native.data)?.value,
    metadata: metadata !== undefined && isPlainObject(metadata.value) ? metadata.value : undefined,
    nextRun: native.nextRun ?? undefined,
  }
  if (native.rawData) {
    const task = { contentType: native.contentType }
    schedule.data = serializers.decodes(codec, native.contentType) && decodedInto(task, codec, native.rawData) ? task.data : native.rawData
  }
  if (native.taskName) schedule.taskName = native.taskName
  return schedule
}

/** Checks a schedule name or task id is a string (the native side checks its form). */
function checkedString(value, what, code) {
  if (typeof value !== 'string') throw new ProtoqueueError(code, `${what} must be a string, got ${describe(value)}`)
  return wellFormed(value, what, code)
}

/**
 * `text`, or `code` when it holds a lone UTF-16 surrogate: the native side would get U+FFFD in
 * its place, so the server would see another string than the caller gave (lib/unicode.js).
 */
function wellFormed(text, what, code) {
  if (isWellFormed(text)) return text
  throw new ProtoqueueError(code, `${what} holds ${describeLoneSurrogate(text)}; it would reach the server changed`)
}


/** The task keys for ids and retries (checked in the native core; only types here). */
const RETRY_KEYS = new Set(['id', 'maxRetries', 'backoff'])
/** Every key a task may have besides `data`. */
const OPTIONAL_TASK_KEYS = new Set(['metadata', 'name', 'delay', 'runAt', 'priority', 'subject', ...RETRY_KEYS])
const TASK_KEYS = new Set(['data', ...OPTIONAL_TASK_KEYS])

/** Copies `id`, `maxRetries` and `backoff` (a plain object: a function cannot travel with a task). */
function retryFields(task, input, what) {
  const { id, maxRetries, backoff } = task
  if (id !== undefined && id !== null) {
    if (typeof id !== 'string') throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.id must be a string, got ${describe(id)}`)
    input.id = wellFormed(id, `${what}.id`, 'ERR_PQ_INVALID_TASK')
  }
  if (maxRetries !== undefined && maxRetries !== null) {
    if (typeof maxRetries !== 'number') throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.maxRetries must be a number, got ${describe(maxRetries)}`)
    input.maxRetries = maxRetries
  }
  if (backoff !== undefined && backoff !== null) {
    if (!isPlainObject(backoff)) throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what}.backoff must be an object like { type: 'exponential', delay: 1000 }, got ${describe(backoff)}`)
    input.backoff = JSON.parse(toJson(backoff, `${what}.backoff`))
  }
}

/** Parses JSON text, or `undefined` when it is absent or does not parse. */
function parseJson(text) {
  if (typeof text !== 'string') return undefined
  try {
    return { value: JSON.parse(text) }
  } catch {
    return undefined
  }
}

/** The metadata a task's handler sees: the user's, with `timestamp` kept when it is a number. */
function withTimestamp(metadata, enqueuedAt) {
  const timestamp = metadata.timestamp
  return typeof timestamp === 'number' && Number.isFinite(timestamp) ? metadata : { ...metadata, timestamp: enqueuedAt }
}

/**
 * A dead letter's task: data as JSON when it is JSON, decoded when it is of the content type of
 * the queue's serializer (`codec`) and decodes, else raw bytes, or marked dropped.
 */
function decodeLetterTask(native, codec) {
  const metadata = parseJson(native.metadata)
  const isObject = metadata !== undefined && isPlainObject(metadata.value)
  const task = {
    id: native.id,
    data: undefined,
    metadata: withTimestamp(isObject ? metadata.value : {}, native.timestamp),
    attempt: native.attempt,
    maxAttempts: native.maxAttempts,
    contentType: native.contentType,
    dataFormat: 'json',
  }
  if (native.name) task.name = native.name
  if (!isObject && (native.metadata !== undefined && native.metadata !== null || native.rawMetadata)) {
    task.rawMetadata = native.rawMetadata ?? Buffer.from(native.metadata, 'utf8')
  }
  const data = parseJson(native.data)
  if (native.dataDropped) {
    task.dataFormat = 'dropped'
    task.dataDropped = true
  } else if (data !== undefined) {
    task.data = data.value
  } else if (native.rawData && serializers.decodes(codec, native.contentType) && decodedInto(task, codec, native.rawData)) {
    task.dataFormat = 'decoded'
  } else {
    task.dataFormat = 'raw'
    task.data = native.rawData ?? Buffer.from(native.data ?? '', 'utf8')
  }
  return task
}

/** Sets `task.data` to `bytes` decoded by `codec`; `false` when they do not decode. */
function decodedInto(task, codec, bytes) {
  try {
    task.data = codec.decode(bytes, task.contentType)
    return true
  } catch {
    return false
  }
}

function decodeDeadLetter(letter, codec) {
  const details = parseJson(letter.details)
  const decoded = {
    task: letter.task ? decodeLetterTask(letter.task, codec) : undefined,
    raw: letter.raw ?? undefined,
    reason: letter.reason,
    error: letter.error,
    details: details?.value,
    attempts: letter.attempts,
    failedAt: letter.failedAt,
    sequence: letter.streamSequence,
  }
  if (details === undefined && (letter.rawDetails || typeof letter.details === 'string')) {
    decoded.rawDetails = letter.rawDetails ?? Buffer.from(letter.details, 'utf8')
  }
  return decoded
}

/** The most dead letters one `getDeadLetters()` call reads. */
const MAX_DEAD_LETTERS = 10_000_000

/**
 * `options.backoff` when it is a function, with a copy of the configuration without it (the
 * native side takes only plain values); `undefined` otherwise.
 */
function backoffFunction(config) {
  try {
    const options = config?.options
    const fn = options?.backoff
    if (typeof fn !== 'function') return undefined
    if (options.retryDelay !== undefined && options.retryDelay !== null) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', 'invalid configuration: give options.retryDelay or options.backoff, not both')
    }
    const { backoff: _, ...rest } = options
    return { fn, config: { ...config, options: rest } }
  } catch (err) {
    if (err instanceof ProtoqueueError) throw err
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: it could not be read: ${messageOf(err)}`, { cause: err })
  }
}

/**
 * The queue's serializer (`config.serializer`, or `config.schema` for Protobuf) with a copy of
 * the configuration without them (the native side takes only plain values); `undefined` when
 * the configuration has neither.
 */
function codecConfig(config) {
  let serializer, schema
  try {
    if (!isPlainObject(config) || (!('serializer' in config) && !('schema' in config))) return undefined
    serializer = config.serializer
    schema = config.schema
  } catch (err) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: it could not be read: ${messageOf(err)}`, { cause: err })
  }
  let codec
  try {
    codec = serializers.codecOf(serializer, schema)
  } catch (err) {
    if (err instanceof serializers.CodedError) throw new ProtoqueueError(err.code, err.message, { cause: err.cause })
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: serializer could not be read: ${messageOf(err)}`, { cause: err })
  }
  const { serializer: _s, schema: _m, ...rest } = config
  return { codec, config: rest }
}

/**
 * A plain copy of the configuration holding only what JSON can (strings, finite numbers,
 * booleans, null, arrays, objects), or ERR_PQ_INVALID_CONFIG naming what else it holds: the
 * native side then never meets a Symbol, a function, a cycle or a throwing getter.
 */
function plainConfig(config) {
  const seen = new Set()
  const copy = (value, path) => {
    switch (typeof value) {
      case 'string':
        return wellFormed(value, `invalid configuration: ${path || 'config'}`, 'ERR_PQ_INVALID_CONFIG')
      case 'boolean':
      case 'undefined':
        return value
      case 'number':
        if (!Number.isFinite(value)) {
          throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: ${path} must be a finite integer, got ${value}`)
        }
        return value
      case 'object': {
        if (value === null) return null
        if (seen.has(value)) {
          throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: ${path} refers back to itself`)
        }
        seen.add(value)
        let result
        if (Array.isArray(value)) {
          result = []
          for (let i = 0; i < value.length; i++) result.push(copy(value[i], `${path}[${i}]`))
        } else {
          result = {}
          for (const key of Object.keys(value)) {
            const item = copy(value[key], path ? `${path}.${key}` : key)
            if (item !== undefined) result[key] = item
          }
        }
        seen.delete(value)
        return result
      }
      default:
        throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: ${path || 'config'} is ${describe(value)}, which a configuration cannot hold`)
    }
  }
  try {
    return copy(config, '')
  } catch (err) {
    if (err instanceof ProtoqueueError) throw err
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: it could not be read: ${messageOf(err)}`, { cause: err })
  }
}

/**
 * A task queue on NATS JetStream. See README.md for the guide and index.d.ts for the types.
 */
class Protoqueue {
  #native
  /** Where its spans say tasks go (`lib/tracing.js`). */
  #destination
  /** The running worker's dispatcher, closed on disconnect. */
  #dispatcher

  /** `options.backoff` when it is a function: the dispatcher asks it for each retry's delay. */
  #backoff

  /** The queue's serializer (`serializer` / `schema`); `undefined`: JSON. */
  #codec

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
      this.#native = new NativeQueue(plain === undefined ? null : plain)
      if (this.#codec) this.#native.useSerializer(this.#codec.contentType)
      this.#native.answerEnqueuesWith(enqueueAnswers(this.#enqueues.answer))
    } catch (err) {
      throw withCode(err, 'ERR_PQ_INVALID_CONFIG')
    }
    this.#destination = { subject: plain.subject, stream: plain.streamName, consumer: 'protoqueue-workers' }
    attachEvents(this, this.#native, { makeError: (code, message) => new ProtoqueueError(code, message) })
  }

  /**
   * Creates a queue and connects it, as the original Protoqueue did; resolves to the connected
   * queue. A failed connect leaves nothing open.
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

  /** Connects to NATS (the URL argument, else config.url, else NATS_URL, else localhost). */
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

  /** Enqueues one task; resolves to its id once JetStream has stored it. */
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

  /** Enqueues many tasks at once; resolves to their ids, in order, once all are stored. */
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
    return codec === undefined ? undefined : (task) => serializers.decodeTask(codec, task)
  }

  /** Starts processing tasks with `handler`; resolves once the worker runs. */
  async process(handler, options) {
    if (typeof handler !== 'function') {
      throw new ProtoqueueError('ERR_PQ_INVALID_HANDLER', `process(handler) takes a function, got ${describe(handler)}`)
    }
    const subjects = processSubjects(options)
    // Outcomes are reported with the run's id: a late one from an earlier run settles nothing.
    const nativeQueue = this.#native
    const run = nativeQueue.reserveRun()
    const traced = tracing.traceProcessing(this.#destination, (task) => handlerOf.run(this, handler, task))
    const tasks = dispatcher(traced, {
      complete: (succeeded, failed, started) => nativeQueue.complete(run, succeeded, failed, started),
    }, { backoff: this.#backoff, decode: this.#decode })
    await native(() => nativeQueue.process(run, tasks.dispatch, subjects))
    this.#dispatcher = tasks
    return this
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
      consumer_count: s.consumerCount,
      pending: s.pending,
      inFlight: s.inFlight,
      redelivered: s.redelivered,
      deadLettered: s.deadLettered,
      paused: s.paused,
      delayed: s.delayed,
      recurring: s.recurring,
      ...(s.pendingByPriority.length > 0 ? { pendingByPriority: s.pendingByPriority } : {}),
    }
  }

  /**
   * Cancels a delayed task that is not yet due (`options.schedules`); resolves to `false` when
   * there is none (it ran already, was cancelled, or was never delayed).
   */
  async cancel(id) {
    const checked = checkedString(id, 'cancel(id)', 'ERR_PQ_INVALID_TASK')
    return native(() => this.#native.cancel(checked))
  }

  /**
   * Creates or replaces the recurring task `name`: `spec` is `{ cron }` (6 fields, seconds first)
   * or `{ every }` (ms), with an optional `timeZone`. One task per tick, however many processes
   * schedule the same name.
   */
  async schedule(name, spec, task) {
    const checkedName = checkedString(name, 'schedule(name)', 'ERR_PQ_INVALID_CONFIG')
    const plainSpec = plainConfig(spec)
    const input = encodeTask(task, 'task', this.#codec)
    await native(() => this.#native.schedule(checkedName, plainSpec ?? null, input, input.name))
  }

  /** Removes the recurring task `name`; resolves to whether it existed. */
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
   * Reads (without removing) up to `limit` dead letters, oldest first. A letter whose content is
   * not JSON carries it raw; it never fails the call.
   */
  async getDeadLetters(limit = 100) {
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_DEAD_LETTERS) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `getDeadLetters(limit) takes an integer from 1 to ${MAX_DEAD_LETTERS}, got ${describe(limit)}`)
    }
    const letters = await native(() => this.#native.deadLetters(limit))
    return letters.map((letter) => decodeDeadLetter(letter, this.#codec))
  }

  /** Reads (without removing) the dead letter at `sequence`; `undefined` when there is none. */
  async getDeadLetter(sequence) {
    if (!Number.isSafeInteger(sequence) || sequence < 1) {
      throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `getDeadLetter(sequence) takes an integer >= 1, got ${describe(sequence)}`)
    }
    const letter = await native(() => this.#native.deadLetter(sequence))
    return letter ? decodeDeadLetter(letter, this.#codec) : undefined
  }

  /** Starts a dead-letter worker; `{ success: true }` from `handler` removes the letter. */
  async processDLQ(handler, options) {
    if (typeof handler !== 'function') {
      throw new ProtoqueueError('ERR_PQ_INVALID_HANDLER', `processDLQ(handler) takes a function, got ${describe(handler)}`)
    }
    const settings = options === undefined ? null : plainConfig(options)
    const letters = (letter) => handlerOf.run(this, runHandler, handler, decodeDeadLetter(letter, this.#codec))
    await native(() => this.#native.processDeadLetters(letters, settings))
    return this
  }

  /** Requeues the tasks of the dead letters `filter` picks; resolves to how many. */
  async requeueDeadLetters(filter, options) {
    const checked = letterFilter(filter, 'requeueDeadLetters')
    const progress = progressOption(options, 'requeueDeadLetters')
    return native(() => this.#native.requeueDeadLetters(checked, progress))
  }

  /** Removes the dead letters `filter` picks; resolves to how many. */
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
}

/**
 * Checks a dead-letter filter (`{ ids?, reason?, limit? }`, all optional) and copies it, or
 * throws ERR_PQ_INVALID_CONFIG saying what is wrong.
 */
function letterFilter(filter, method) {
  const fail = (what) => {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${method}(filter): ${what}`)
  }
  if (filter === undefined || filter === null) return {}
  // A key set to undefined is a variable that was not set, not "every letter": refused, so a bug
  // never widens a purge to the whole dead-letter stream.
  if (typeof filter === 'object') {
    for (const [key, value] of Object.entries(filter)) {
      if (value === undefined || value === null) fail(`filter.${key} is ${value}; leave the key out to not filter by it`)
    }
  }
  const plain = plainConfig(filter)
  if (!isPlainObject(plain)) fail(`filter must be an object like { ids?, reason?, limit? }, got ${describe(filter)}`)
  for (const key of Object.keys(plain)) {
    if (!['sequences', 'ids', 'reason', 'limit'].includes(key)) fail(`unknown key ${JSON.stringify(key)} (known: sequences, ids, reason, limit)`)
  }
  const { sequences, ids, reason, limit } = plain
  if (sequences !== undefined && (!Array.isArray(sequences) || sequences.some((n) => !Number.isSafeInteger(n) || n < 1))) {
    fail(`filter.sequences must be an array of dead-letter sequences (integers >= 1), got ${describe(sequences)}`)
  }
  if (ids !== undefined && (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string'))) {
    fail(`filter.ids must be an array of task ids (strings), got ${describe(ids)}`)
  }
  if (reason !== undefined && typeof reason !== 'string') fail(`filter.reason must be a string, got ${describe(reason)}`)
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) {
    fail(`filter.limit must be an integer >= 1, got ${describe(limit)}`)
  }
  return plain
}

/**
 * The `onProgress` of a requeue or purge's options, wrapped so that a throw never reaches the
 * native side (where it would end the process): a callback that throws is not called again.
 */
function progressOption(options, method) {
  if (options === undefined || options === null) return undefined
  if (!isPlainObject(options)) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${method}(filter, options): options must be an object like { onProgress? }, got ${describe(options)}`)
  }
  for (const key of Object.keys(options)) {
    if (key !== 'onProgress') throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${method}(filter, options): unknown key ${JSON.stringify(key)} (known: onProgress)`)
  }
  const { onProgress } = options
  if (onProgress === undefined) return undefined
  if (typeof onProgress !== 'function') {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${method}(filter, options): options.onProgress must be a function, got ${describe(onProgress)}`)
  }
  let broken = false
  return (progress) => {
    if (broken) return
    try {
      onProgress({ seen: progress.seen, total: progress.total, done: progress.done })
    } catch {
      broken = true
    }
  }
}

/**
 * Every Protoqueue queue on the server `config` connects to (its `url`, `auth`, `tls`,
 * `options.connectTimeout`; `streamName` and `subject` are not needed), over a connection of its
 * own; with the server's URL, credentials masked.
 */
async function listQueues(config = {}) {
  const plain = plainConfig(config)
  if (!isPlainObject(plain)) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `listQueues(config) takes an object like { url?, auth?, tls? }, got ${describe(config)}`)
  }
  const listing = await native(() => nativeListQueues(plain))
  return {
    server: listing.server,
    queues: listing.queues.map((queue) => ({ ...queue, deadLetterStream: queue.deadLetterStream ?? undefined })),
  }
}

addEventMethods(Protoqueue)

module.exports.Protoqueue = Protoqueue
module.exports.listQueues = listQueues
module.exports.ProtoqueueError = ProtoqueueError
module.exports.registerMetrics = registerMetrics
