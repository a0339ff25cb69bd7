// @ts-check
'use strict'
// What `getTask()` and `waitFor()` give back: the native side's task (its result as JSON text)
// as a `TaskInfo`, and a finished task as `waitFor`'s answer — its result, or a
// `ProtoqueueError` saying why it failed.

const { describe } = require('./describe.js')
const { ProtoqueueError } = require('./errors.js')
const { optionsOf } = require('./options.js')

/** How long `waitFor` waits when its options do not say, in ms. */
const DEFAULT_WAIT_TIMEOUT = 30_000
/** The longest wait `waitFor` takes, in ms (about 24.8 days: a timer's limit). */
const MAX_WAIT_TIMEOUT = 2 ** 31 - 1

/**
 * @typedef {import('../native').NativeTask} NativeTask
 * @typedef {import('../index').TaskInfo} TaskInfo
 */

/**
 * A native task as `TaskInfo`: absent fields left out, the result parsed.
 * @param {NativeTask} task
 * @returns {TaskInfo}
 */
function taskInfo(task) {
  /** @type {Record<string, unknown>} */
  const info = { id: task.id, state: task.state, attempts: task.attempts }
  for (const key of /** @type {const} */ (['enqueuedAt', 'startedAt', 'finishedAt', 'runAt', 'resultError', 'error', 'reason'])) {
    const value = task[key]
    if (value !== undefined && value !== null) info[key] = value
  }
  if (typeof task.result === 'string') info.result = JSON.parse(task.result)
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

module.exports = { DEFAULT_WAIT_TIMEOUT, outcomeOf, taskInfo, waitTimeout }
