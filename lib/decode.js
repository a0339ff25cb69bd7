// @ts-check
'use strict'
// What the native side hands back, as users see it: dead letters and recurring schedules, their
// JSON texts parsed, and data of the queue's serializer decoded (raw bytes when it does not decode).

const { isPlainObject } = require('./checks.js')
const serializers = require('./serializers.js')

/**
 * A recurring schedule as `getSchedules()` returns it: its data decoded by `codec` when it is of
 * the queue's serializer (raw bytes when it does not decode or is of another content type).
 * @param {import('../native').NativeSchedule} native
 * @param {import('./serializers.js').Codec | undefined} codec
 * @returns {import('../index').ScheduledTask}
 */
function decodeSchedule(native, codec) {
  // A cron's time zone; an interval has none (one that another tool stored with a zone runs at
  // its interval all the same).
  /** @type {import('../index').ScheduleSpec} */
  const spec =
    native.cron !== undefined && native.cron !== null
      ? { cron: native.cron, ...(native.timeZone ? { timeZone: native.timeZone } : {}) }
      : { every: /** @type {number} */ (native.every) }
  const metadata = parseJson(native.metadata)
  /** @type {import('../index').ScheduledTask} */
  const schedule = {
    name: native.name,
    spec,
    data: parseJson(native.data)?.value,
    metadata: metadata !== undefined && isPlainObject(metadata.value) ? metadata.value : undefined,
    nextRun: native.nextRun ?? undefined,
  }
  if (native.rawData) {
    /** @type {{ contentType: string, data?: unknown }} */
    const task = { contentType: native.contentType }
    schedule.data = serializers.decodes(codec, native.contentType) && decodedInto(task, /** @type {import('./serializers.js').Codec} */ (codec), native.rawData) ? task.data : native.rawData
  }
  if (native.taskName) schedule.taskName = native.taskName
  return schedule
}


/**
 * Parses JSON text, or `undefined` when it is absent or does not parse.
 * @param {unknown} text
 * @returns {{ value: any } | undefined}
 */
function parseJson(text) {
  if (typeof text !== 'string') return undefined
  try {
    return { value: JSON.parse(text) }
  } catch {
    return undefined
  }
}

/**
 * The metadata a task's handler sees: the user's, with `timestamp` kept when it is a number.
 * @param {Record<string, any>} metadata
 * @param {number} enqueuedAt
 * @returns {Record<string, any>}
 */
function withTimestamp(metadata, enqueuedAt) {
  const timestamp = metadata.timestamp
  return typeof timestamp === 'number' && Number.isFinite(timestamp) ? metadata : { ...metadata, timestamp: enqueuedAt }
}

/**
 * A dead letter's task: data as JSON when it is JSON, decoded when it is of the content type of
 * the queue's serializer (`codec`) and decodes, else raw bytes, or marked dropped.
 * @param {import('../native').NativeTask} native
 * @param {import('./serializers.js').Codec | undefined} codec
 * @returns {import('../index').DeadLetterTask}
 */
function decodeLetterTask(native, codec) {
  const metadata = parseJson(native.metadata)
  const isObject = metadata !== undefined && isPlainObject(metadata.value)
  /** @type {Record<string, any> & { contentType: string }} */
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
    task.rawMetadata = native.rawMetadata ?? Buffer.from(/** @type {string} */ (native.metadata), 'utf8')
  }
  const data = parseJson(native.data)
  if (native.dataDropped) {
    task.dataFormat = 'dropped'
    task.dataDropped = true
  } else if (data !== undefined) {
    task.data = data.value
  } else if (native.rawData && serializers.decodes(codec, native.contentType) && decodedInto(task, /** @type {import('./serializers.js').Codec} */ (codec), native.rawData)) {
    task.dataFormat = 'decoded'
  } else {
    task.dataFormat = 'raw'
    task.data = native.rawData ?? Buffer.from(native.data ?? '', 'utf8')
  }
  return /** @type {import('../index').DeadLetterTask} */ (task)
}

/**
 * Sets `task.data` to `bytes` decoded by `codec`; `false` when they do not decode.
 * @param {{ contentType: string, data?: unknown }} task
 * @param {import('./serializers.js').Codec} codec
 * @param {Buffer} bytes
 * @returns {boolean}
 */
function decodedInto(task, codec, bytes) {
  try {
    task.data = codec.decode(bytes, task.contentType)
    return true
  } catch {
    return false
  }
}

/**
 * @param {import('../native').NativeDeadLetter} letter
 * @param {import('./serializers.js').Codec | undefined} codec
 * @returns {import('../index').DeadLetter}
 */
function decodeDeadLetter(letter, codec) {
  const details = parseJson(letter.details)
  /** @type {import('../index').DeadLetter} */
  const decoded = {
    task: letter.task ? decodeLetterTask(letter.task, codec) : undefined,
    raw: letter.raw ?? undefined,
    reason: /** @type {import('../index').DeadLetterReason} */ (letter.reason),
    error: letter.error,
    details: details?.value,
    attempts: letter.attempts,
    failedAt: letter.failedAt,
    sequence: letter.streamSequence,
  }
  if (details === undefined && (letter.rawDetails || typeof letter.details === 'string')) {
    decoded.rawDetails = letter.rawDetails ?? Buffer.from(/** @type {string} */ (letter.details), 'utf8')
  }
  return decoded
}

module.exports = { decodeDeadLetter, decodeLetterTask, decodeSchedule }
