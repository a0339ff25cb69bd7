// @ts-check
'use strict'
// Tasks on their way to the native side: each `{ data, metadata?, ... }` checked and encoded as
// the native side takes it (data as JSON text, or as the queue's serializer encodes it), and the
// answers of the native side's `enqueueEach` handed back to each caller (lib/coalesce.js).

const { isPlainObject, wellFormed } = require('./checks.js')
const { describe, keyPath, messageOf } = require('./describe.js')
const { ProtoqueueError, withCode } = require('./errors.js')

/**
 * A task as the native side takes it; `name` is read from the `names` beside the tasks.
 * @typedef {import('../native').NativeTaskInput & { name?: string }} TaskInput
 */

/**
 * Whether `root` holds a function or a symbol where `JSON.stringify` would silently drop it (or
 * turn it into `null`). Objects with a `toJSON` method are taken as they serialize themselves.
 * Iterative: no depth `JSON.stringify` accepted can overflow the stack here.
 * @param {unknown} root
 * @returns {boolean}
 */
function holdsUnserializable(root) {
  if (typeof root !== 'object' || root === null) return false
  /** @type {any[]} */
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

/**
 * The path of the first function or symbol in `value` (only called once one was found).
 * @param {any} value
 * @param {string} path
 * @param {number} [depth]
 * @returns {string | undefined}
 */
function unserializablePath(value, path, depth = 0) {
  const type = typeof value
  if (type === 'function' || type === 'symbol') return path
  if (type !== 'object' || value === null || depth > 1000 || typeof value.toJSON === 'function') return undefined
  const entries = Array.isArray(value) ? value.map((item, i) => [`${path}[${i}]`, item]) : Object.keys(value).map((key) => [`${path}${keyPath(key)}`, value[key]])
  for (const [at, item] of entries) {
    const found = unserializablePath(item, at, depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * A task input as `enqueueEach` takes it: its JSON text alone when it has nothing but data.
 * @param {TaskInput} input
 * @returns {TaskInput | string}
 */
function compactInput(input) {
  if (typeof input.data !== 'string') return input
  for (const key in input) if (key !== 'data') return input
  return input.data
}


/**
 * The function the native side answers `enqueueEach` calls with: it hands each answer to
 * `answer` (lib/coalesce.js) as one `{ value, error }` per task. It holds nothing but `answer`.
 * @param {import('./coalesce.js').Coalesced<TaskInput, string>['answer']} answer
 * @returns {(answer: import('../native').NativeEnqueued) => void}
 */
function enqueueAnswers(answer) {
  return ({ call, ids, failures, error }) => {
    if (typeof error === 'string') return answer(call, undefined, error)
    /** @type {import('./coalesce.js').ItemResult<string>[]} */
    const results = ids.split('\n').map((id) => ({ value: id }))
    if (failures) for (const { index, error } of failures) results[index] = { error }
    answer(call, results)
  }
}

/**
 * An error text of the native side (`"<code>: <message>"`) as an error with its code.
 * @param {string} text
 * @returns {ProtoqueueError}
 */
function enqueueError(text) {
  return withCode(new Error(text), 'ERR_PQ_NATS')
}


/**
 * JSON text of `value`, or ERR_PQ_SERIALIZE naming what could not be serialized.
 * @param {unknown} value
 * @param {string} what
 * @returns {string}
 */
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
 * @param {unknown} task
 * @param {string} what
 * @param {import('./serializers.js').Codec | undefined} codec
 * @returns {TaskInput}
 */
function encodeTask(task, what, codec) {
  try {
    return encodeCheckedTask(task, what, codec)
  } catch (err) {
    if (err instanceof ProtoqueueError) throw err
    // A getter or Proxy trap of the task threw.
    throw new ProtoqueueError('ERR_PQ_INVALID_TASK', `${what} could not be read: ${messageOf(err)}`, { cause: err })
  }
}

/**
 * @param {unknown} task
 * @param {string} what
 * @param {import('./serializers.js').Codec | undefined} codec
 * @returns {TaskInput}
 */
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
  /** @type {TaskInput} */
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

/**
 * Copies `priority` (its range and the queue's options are checked in the native core).
 * @param {Record<string, any>} task
 * @param {TaskInput} input
 * @param {string} what
 */
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

/**
 * The names of encoded tasks, in order, for the native side; `undefined` when none has one.
 * @param {TaskInput[]} inputs
 * @returns {Array<string | undefined> | undefined}
 */
function namesOf(inputs) {
  for (let i = 0; i < inputs.length; i++) {
    if (inputs[i].name !== undefined) return inputs.map((input) => input.name)
  }
  return undefined
}


/** The task keys for ids and retries (checked in the native core; only types here). */
const RETRY_KEYS = new Set(['id', 'maxRetries', 'backoff'])
/** Every key a task may have besides `data`. */
const OPTIONAL_TASK_KEYS = new Set(['metadata', 'name', 'delay', 'runAt', 'priority', 'subject', ...RETRY_KEYS])
const TASK_KEYS = new Set(['data', ...OPTIONAL_TASK_KEYS])

/**
 * Copies `id`, `maxRetries` and `backoff` (a plain object: a function cannot travel with a task).
 * @param {Record<string, any>} task
 * @param {TaskInput} input
 * @param {string} what
 */
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

module.exports = { encodeTask, namesOf, compactInput, enqueueAnswers, enqueueError }
