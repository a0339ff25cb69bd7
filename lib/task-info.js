// @ts-check
'use strict'
// What `getTask()` and `waitFor()` give back: the native side's task (its result as JSON text)
// as a `TaskInfo`, and a finished task as `waitFor`'s answer — its result, or a
// `ProtoqueueError` saying why it failed.

const { decodeLetterTask } = require('./decode.js')
const { describe } = require('./describe.js')
const { ProtoqueueError } = require('./errors.js')
const { optionsOf } = require('./options.js')

/** How long `waitFor` waits when its options do not say, in ms. */
const DEFAULT_WAIT_TIMEOUT = 30_000
/** The longest wait `waitFor` takes, in ms (about 24.8 days: a timer's limit). */
const MAX_WAIT_TIMEOUT = 2 ** 31 - 1

/**
 * @typedef {import('../native').NativeTaskInfo} NativeTaskInfo
 * @typedef {import('../index').TaskInfo} TaskInfo
 */

/**
 * A native task as `TaskInfo`: absent fields left out, the result parsed, the stored task
 * decoded as a dead letter's is (with the queue's serializer, `codec`).
 * @param {NativeTaskInfo} task
 * @param {import('./serializers.js').Codec | undefined} [codec]
 * @returns {TaskInfo}
 */
function taskInfo(task, codec) {
  /** @type {Record<string, unknown>} */
  const info = { id: task.id, state: task.state, attempts: task.attempts }
  for (const key of /** @type {const} */ (['enqueuedAt', 'startedAt', 'finishedAt', 'runAt', 'priority', 'resultError', 'error', 'reason'])) {
    const value = task[key]
    if (value !== undefined && value !== null) info[key] = value
  }
  if (typeof task.result === 'string') info.result = JSON.parse(task.result)
  if (typeof task.progress === 'string') info.progress = JSON.parse(task.progress)
  if (task.failures.length > 0) info.failures = task.failures
  if (task.task) {
    const { attempt, maxAttempts, ...stored } = decodeLetterTask(task.task, codec)
    info.task = stored
  }
  return /** @type {TaskInfo} */ (/** @type {unknown} */ (info))
}

/**
 * `waitFor`'s answer for a task that ended: its result when it completed; `ERR_PQ_TASK_CANCELLED`
 * (carrying `attempts` and the task) when it was cancelled; otherwise `ERR_PQ_TASK_FAILED`
 * carrying `reason`, `error`, `attempts` and the task.
 * @param {TaskInfo} task
 * @returns {unknown}
 */
function outcomeOf(task) {
  if (task.state === 'completed') return task.result
  if (task.state === 'cancelled') {
    const error = new ProtoqueueError('ERR_PQ_TASK_CANCELLED', `task ${JSON.stringify(task.id)} was cancelled (cancel()) after ${task.attempts} attempt${task.attempts === 1 ? '' : 's'}`)
    Object.assign(error, { attempts: task.attempts, task })
    throw error
  }
  const error = new ProtoqueueError('ERR_PQ_TASK_FAILED', `task ${JSON.stringify(task.id)} failed for good after ${task.attempts} attempt${task.attempts === 1 ? '' : 's'} (${task.reason ?? 'unknown reason'}): ${task.error ?? 'no error given'}`)
  Object.assign(error, { reason: task.reason, error: task.error, attempts: task.attempts, task })
  throw error
}

/**
 * The `timeout` of `waitFor(id, options)` / `enqueueAndWait(task, options)` in ms.
 * @param {unknown} options
 * @param {string} call
 * @returns {number}
 */
function waitTimeout(options, call) {
  const checked = optionsOf(options, call, ['timeout'])
  const timeout = checked?.timeout ?? DEFAULT_WAIT_TIMEOUT
  if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 0 || timeout > MAX_WAIT_TIMEOUT) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${call}: options.timeout must be a whole number of ms from 0 to ${MAX_WAIT_TIMEOUT}, got ${describe(timeout)}`)
  }
  return timeout
}

/** The states `getTasks` lists. */
const LISTED_STATES = ['waiting', 'delayed', 'running', 'retrying', 'completed', 'failed', 'deadLettered', 'cancelled']
/** How many tasks a page holds when `getTasks` is not told, and at most. */
const DEFAULT_PAGE = 100
const MAX_PAGE = 1_000

/**
 * The `{ state, limit, cursor }` of `getTasks(query)`, checked.
 * @param {unknown} query
 * @returns {{ state: string, limit: number, cursor: string | undefined }}
 */
function taskQuery(query) {
  const call = 'getTasks(query)'
  const checked = optionsOf(query, call, ['state', 'limit', 'cursor'])
  const state = checked?.state
  if (typeof state !== 'string' || !LISTED_STATES.includes(state)) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${call}: query.state must be one of ${LISTED_STATES.map((s) => `'${s}'`).join(', ')}, got ${describe(state)}`)
  }
  const limit = checked?.limit ?? DEFAULT_PAGE
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${call}: query.limit must be a whole number from 1 to ${MAX_PAGE}, got ${describe(limit)}`)
  }
  const cursor = checked?.cursor ?? undefined
  if (cursor !== undefined && (typeof cursor !== 'string' || cursor === '')) {
    throw new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `${call}: query.cursor must be the cursor of a page getTasks gave, got ${describe(cursor)}`)
  }
  return { state, limit, cursor }
}

module.exports = { DEFAULT_WAIT_TIMEOUT, outcomeOf, taskInfo, taskQuery, waitTimeout }
