// @ts-check
'use strict'
// The user's configuration and the options of the queue's calls, checked and made plain for the
// native side, which takes only values JSON can hold: what it cannot take (the serializer, a
// backoff function, a progress callback) is set apart here.

const { isPlainObject, wellFormed } = require('./checks.js')
const { describe, messageOf } = require('./describe.js')
const { ProtoqueueError } = require('./errors.js')
const serializers = require('./serializers.js')

/**
 * `process(handler, { subjects, threads })`: the part of the queue's subject tree a worker takes
 * (checked in the native core), and how many threads run its handler (checked by `lib/threads.js`).
 * @param {unknown} options
 * @returns {{ subjects: string[] | undefined, threads: unknown }}
 */
function processOptions(options) {
  if (options === undefined || options === null) return { subjects: undefined, threads: undefined }
  if (!isPlainObject(options)) throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `process options must be an object like { subjects: ['tasks.email.eu'] }, got ${describe(options)}`)
  for (const key in options) {
    if (key !== 'subjects' && key !== 'threads') throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `process options.${key} is not an option (known: subjects, threads)`)
  }
  return { subjects: processSubjects(options.subjects), threads: options.threads ?? undefined }
}

/**
 * `process()`'s `options.subjects`, checked.
 * @param {unknown} subjects
 * @returns {string[] | undefined}
 */
function processSubjects(subjects) {
  if (subjects === undefined || subjects === null) return undefined
  if (!Array.isArray(subjects) || !subjects.every((s) => typeof s === 'string')) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `process options.subjects must be an array of subjects, got ${describe(subjects)}`)
  }
  return subjects.map((subject, i) => wellFormed(subject, `process options.subjects[${i}]`, 'ERR_PQ_INVALID_CONFIG'))
}



/**
 * `options.backoff` when it is a function, with a copy of the configuration without it (the
 * native side takes only plain values); `undefined` otherwise.
 * @param {any} config
 * @returns {{ fn: import('../index').BackoffFunction, config: any } | undefined}
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
 * @param {unknown} config
 * @returns {{ codec: import('./serializers.js').Codec | undefined, config: Record<string, any> } | undefined}
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
    if (err instanceof ProtoqueueError) throw err
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `invalid configuration: serializer could not be read: ${messageOf(err)}`, { cause: err })
  }
  const { serializer: _s, schema: _m, ...rest } = config
  return { codec, config: rest }
}

/**
 * A plain copy of the configuration holding only what JSON can (strings, finite numbers,
 * booleans, null, arrays, objects), or ERR_PQ_INVALID_CONFIG naming what else it holds: the
 * native side then never meets a Symbol, a function, a cycle or a throwing getter.
 * @param {unknown} config
 * @returns {any}
 */
function plainConfig(config) {
  const seen = new Set()
  /**
   * @param {any} value
   * @param {string} path
   * @returns {any}
   */
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
        /** @type {any} */
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



/** The most dead letters one `getDeadLetters()` call reads. */
const MAX_DEAD_LETTERS = 10_000_000

/**
 * Checks a dead-letter filter (`{ ids?, reason?, limit? }`, all optional) and copies it, or
 * throws ERR_PQ_INVALID_CONFIG saying what is wrong.
 * @param {unknown} filter
 * @param {string} method
 * @returns {import('../native').NativeLetterFilter}
 */
function letterFilter(filter, method) {
  /**
   * @param {string} what
   * @returns {never}
   */
  const fail = (what) => {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${method}(filter): ${what}`)
  }
  if (filter === undefined || filter === null) return {}
  // A key set to undefined is a variable that was not set, not "every letter": refused, so a bug
  // never widens a purge to the whole dead-letter stream.
  if (typeof filter === 'object') {
    let entries
    try {
      entries = Object.entries(filter)
    } catch (err) {
      fail(`filter could not be read: ${messageOf(err)}`)
    }
    for (const [key, value] of entries) {
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
 * @param {unknown} options
 * @param {string} method
 * @returns {((progress: import('../native').NativeProgress) => void) | undefined}
 */
function progressOption(options, method) {
  const checked = optionsOf(options, `${method}(filter, options)`, ['onProgress'])
  if (checked === undefined) return undefined
  const { onProgress } = checked
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
 * Whether `destroy(options)` is forced: `options` is nothing or `{ force?: boolean }`.
 * @param {unknown} options
 * @returns {boolean}
 */
function forceOption(options) {
  const checked = optionsOf(options, 'destroy(options)', ['force'])
  if (checked === undefined) return false
  if (checked.force !== undefined && typeof checked.force !== 'boolean') {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `destroy(options): options.force must be a boolean, got ${describe(checked.force)}`)
  }
  return checked.force === true
}

/**
 * The options object a call takes: `undefined` for nothing (`undefined` or `null`), else an object
 * with no key but `known` (`ERR_PQ_INVALID_CONFIG` naming `call` otherwise).
 * @param {unknown} options
 * @param {string} call e.g. `destroy(options)`
 * @param {string[]} known
 * @returns {Record<string, any> | undefined}
 */
function optionsOf(options, call, known) {
  if (options === undefined || options === null) return undefined
  if (!isPlainObject(options)) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${call}: options must be an object like { ${known.map((key) => `${key}?`).join(', ')} }, got ${describe(options)}`)
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${call}: unknown key ${JSON.stringify(key)} (known: ${known.join(', ')})`)
  }
  return options
}

module.exports = { backoffFunction, codecConfig, plainConfig, processOptions, letterFilter, progressOption, forceOption, optionsOf, MAX_DEAD_LETTERS }
