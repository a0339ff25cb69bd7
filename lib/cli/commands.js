// @ts-check
'use strict'
// What each command does, over the public `Protoqueue` API.

const { createInterface } = require('node:readline')

const { messageOf } = require('../describe.js')
const { CliError, EXIT, fromLibrary, usage } = require('./exit.js')
const { escapeControl, escapeLines, json, letterDetails, letterTable, queueTable, scheduleTable, statsText, taskDetails, taskTable, workerTable } = require('./format.js')
const { epochMs } = require('./program.js')
const { progressReporter } = require('./progress.js')

/**
 * The streams a command works with.
 * @typedef {object} Io
 * @property {NodeJS.ReadableStream & { isTTY?: boolean }} stdin
 * @property {{ write: (text: string) => unknown, isTTY?: boolean }} stdout
 * @property {{ write: (text: string) => unknown, isTTY?: boolean, columns?: number }} stderr
 */

/**
 * What a command gets.
 * @typedef {object} Context
 * @property {import('protoqueue').Protoqueue} queue connected
 * @property {string[]} args
 * @property {Record<string, any>} options
 * @property {{ streamName: string, subject: string }} names
 * @property {Io} io
 */

/**
 * `count` and `noun`, plural unless one: "1 dead letter", "3 dead letters".
 * @param {number} count
 * @param {string} noun
 */
const counted = (count, noun) => `${count} ${noun}${count === 1 ? '' : 's'}`

/**
 * Prints `human` for people or `value` as JSON (with `--json`). `human` escapes what it takes
 * from the queue or the command line (format.js `escapeControl`).
 * @param {{ options: Record<string, any>, io: Io }} context
 * @param {unknown} value
 * @param {() => string} human
 */
function print(context, value, human) {
  context.io.stdout.write(`${context.options.json ? json(value) : human()}\n`)
}

/** @param {Context} context */
async function stats(context) {
  const result = await context.queue.getStats()
  print(context, result, () => statsText(result, context.names))
}

/**
 * The workers running now, in any process: those that wrote their record within the last 20 s
 * (`getWorkers()`), unlike `consumers`, which outlive their workers.
 * @param {Context} context
 */
async function workers(context) {
  const listed = await context.queue.getWorkers()
  print(context, listed, () => (listed.length === 0 ? `No workers running on queue ${escapeControl(context.names.streamName)}.` : workerTable(listed)))
}

/** @param {Context} context */
async function dlqList(context) {
  const letters = await context.queue.getDeadLetters(context.options.limit)
  print(context, letters, () => (letters.length === 0 ? 'No dead letters.' : letterTable(letters)))
}

/** @param {Context} context */
async function dlqShow(context) {
  const [wanted] = context.args
  const bySequence = /^\d+$/.test(wanted)
  let letter
  if (bySequence) {
    const sequence = Number(wanted)
    letter = Number.isSafeInteger(sequence) && sequence >= 1 ? await context.queue.getDeadLetter(sequence) : undefined
  } else {
    // Letters are stored by sequence only: the core walks them once and keeps the first of
    // this task's (the oldest), not every letter.
    letter = (await context.queue.getDeadLetters(1, { ids: [wanted] }))[0]
  }
  if (!letter) throw new CliError(EXIT.FAILED, `no dead letter with ${bySequence ? 'sequence' : 'task id'} ${wanted}`)
  print(context, letter, () => letterDetails(letter))
}

/**
 * The dead-letter filter the flags describe.
 * @param {Record<string, any>} options
 * @returns {import('protoqueue').DeadLetterFilter}
 */
function letterFilter(options) {
  /** @type {import('protoqueue').DeadLetterFilter} */
  const filter = {}
  if (options.id) filter.ids = options.id
  if (options.reason) filter.reason = options.reason
  if (options.limit) filter.limit = options.limit
  return filter
}

/**
 * The letters a filter picks, in words.
 * @param {import('protoqueue').DeadLetterFilter} filter
 * @param {number} stored
 */
function describeFilter(filter, stored) {
  const parts = []
  if (filter.reason) parts.push(`with reason ${filter.reason}`)
  if (filter.ids) parts.push(`of task ${filter.ids.join(', ')}`)
  const which = parts.length === 0 ? `all ${stored} dead letters` : `the dead letters ${parts.join(' and ')} (of ${stored} stored)`
  return filter.limit ? `${which}, at most ${filter.limit}` : which
}

/**
 * Asks `question` on the terminal unless `--yes`; refuses (usage error) when there is no terminal
 * to ask on. Resolves to whether to go on.
 * @param {Context} context
 * @param {string} question
 */
async function confirmed(context, question) {
  if (context.options.yes) return true
  const { stdin, stderr } = context.io
  if (!stdin.isTTY || !stderr.isTTY) {
    throw usage(`${question.replace(/\?$/, '')}: not on a terminal, so add --yes to confirm`)
  }
  stderr.write(`${escapeControl(question)} [y/N] `)
  const lines = createInterface({ input: stdin })
  const answer = await new Promise((resolve) => {
    lines.once('line', resolve)
    lines.once('close', () => resolve(''))
  })
  lines.close()
  return /^y(es)?$/i.test(String(answer).trim())
}

/**
 * `dlq requeue` and `dlq purge`.
 * @param {Context} context
 * @param {'requeue' | 'purge'} action
 */
async function dlqAct(context, action) {
  const filter = letterFilter(context.options)
  const stored = (await context.queue.getStats()).deadLettered
  const verb = action === 'requeue' ? 'Requeue the tasks of' : 'Remove'
  if (!(await confirmed(context, `${verb} ${describeFilter(filter, stored)} on queue ${context.names.streamName}?`))) {
    throw new CliError(EXIT.FAILED, 'declined: nothing done')
  }
  const done = action === 'requeue' ? 'requeued' : 'removed'
  const progress = progressReporter(context.io.stderr, done)
  let count
  try {
    const options = { onProgress: progress.update }
    count = action === 'requeue' ? await context.queue.requeueDeadLetters(filter, options) : await context.queue.purgeDeadLetters(filter, options)
  } finally {
    progress.finish()
  }
  print(context, { [done]: count }, () => (action === 'requeue' ? `Requeued ${counted(count, 'task')}.` : `Removed ${counted(count, 'dead letter')}.`))
}

/**
 * The queue's Prometheus metrics, as `metrics()` gives them to the library: the server's gauges
 * are live; the counters and histograms count what a process did, so they are 0 here.
 * @param {Context} context
 */
async function metrics(context) {
  if (context.options.json) {
    print(context, await context.queue.getMetricFamilies(), () => '')
  } else {
    context.io.stdout.write(await context.queue.metrics())
  }
}

/** @param {Context} context */
async function pause(context) {
  await context.queue.pause()
  print(context, { paused: true }, () => `Paused queue ${escapeControl(context.names.streamName)}.`)
}

/** @param {Context} context */
async function resume(context) {
  await context.queue.resume()
  print(context, { paused: false }, () => `Resumed queue ${escapeControl(context.names.streamName)}.`)
}

/** @param {Context} context */
async function purge(context) {
  const { pending } = await context.queue.getStats()
  if (!(await confirmed(context, `Remove the ${pending} tasks waiting in queue ${context.names.streamName}?`))) {
    throw new CliError(EXIT.FAILED, 'declined: nothing done')
  }
  const count = await context.queue.purge()
  print(context, { purged: count }, () => `Removed ${counted(count, 'waiting task')}.`)
}

/** The fields of a task that JSON can hold, as `--envelope` takes them: `data` first. */
const ENVELOPE_FIELDS = ['data', 'metadata', 'id', 'name', 'priority', 'delay', 'runAt', 'subject', 'maxRetries', 'backoff']

/**
 * The task fields `enqueue`'s flags set (`--id`, `--name`, `--priority`, `--delay`, `--run-at`,
 * `--task-subject`), for every task it enqueues.
 * @param {Record<string, any>} options
 * @returns {Omit<import('protoqueue').EnqueueTask, 'data'>}
 */
function flagFields(options) {
  /** @type {Omit<import('protoqueue').EnqueueTask, 'data'>} */
  const fields = {}
  if (options.id !== undefined) fields.id = options.id
  if (options.name !== undefined) fields.name = options.name
  if (options.priority !== undefined) fields.priority = options.priority
  if (options.delay !== undefined) fields.delay = options.delay
  if (options.runAt !== undefined) fields.runAt = options.runAt
  if (options.taskSubject !== undefined) fields.subject = options.taskSubject
  return fields
}

/**
 * The task one JSON text describes: its data, or with `--envelope` a task object (the fields of
 * `ENVELOPE_FIELDS`, `runAt` also as an ISO 8601 time), with `fields` (the flags') under it: its
 * own fields win, and its own `delay` or `runAt` replaces both of the flags'. Bad input (not JSON,
 * no `data`, an unknown key, a `runAt` text that is no time) is a usage error naming `where`; bad
 * values are left to the library, which says which (`ERR_PQ_INVALID_TASK`).
 * @param {string} text
 * @param {boolean} envelope
 * @param {string} where
 * @param {Omit<import('protoqueue').EnqueueTask, 'data'>} [fields]
 * @returns {import('protoqueue').EnqueueTask}
 */
function taskOf(text, envelope, where, fields = {}) {
  let value
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw usage(`${where} is not JSON (${messageOf(err)})`)
  }
  if (!envelope) return { ...fields, data: value }
  const shape = `{ ${ENVELOPE_FIELDS.map((field, i) => (i === 0 ? '"data"' : `"${field}"?`)).join(', ')} }`
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !('data' in value)) {
    throw usage(`${where}: with --envelope each task is an object with "data": ${shape}`)
  }
  const unknown = Object.keys(value).filter((key) => !ENVELOPE_FIELDS.includes(key))
  if (unknown.length > 0) throw usage(`${where}: ${unknown[0]} is not a task field (a task is ${shape})`)
  /** @type {Record<string, any>} */
  const own = { ...value }
  if (typeof own.runAt === 'string') {
    const ms = epochMs(own.runAt)
    if (ms === undefined) throw usage(`${where}: runAt ${JSON.stringify(own.runAt)} is not an ISO 8601 time or ms since the epoch`)
    own.runAt = ms
  }
  const task = { ...fields, ...own }
  // One time per task: the task's own, else the flags'.
  if ('delay' in own || 'runAt' in own) {
    if (!('delay' in own)) delete task.delay
    if (!('runAt' in own)) delete task.runAt
  }
  return /** @type {import('protoqueue').EnqueueTask} */ (task)
}

/** @param {Context} context */
async function enqueue(context) {
  const [source] = context.args
  const { envelope = false, quiet = false, batchSize } = context.options
  const fields = flagFields(context.options)
  const { stdout } = context.io
  /** @type {string[]} */
  const ids = []
  const sent = async (/** @type {import('protoqueue').EnqueueTask[]} */ tasks, /** @type {number} */ firstLine) => {
    let stored
    try {
      stored = await context.queue.enqueueBatch(tasks)
    } catch (err) {
      const failure = fromLibrary(err)
      const before = ids.length > 0 ? ` (${ids.length} tasks before line ${firstLine} were enqueued)` : ''
      throw new CliError(failure.exitCode, `${failure.message}${before}`, failure.code)
    }
    ids.push(...stored)
    if (!quiet && !context.options.json) stdout.write(`${stored.map(escapeControl).join('\n')}\n`)
  }
  if (source !== '-') {
    await sent([taskOf(source, envelope, 'the argument', fields)], 1)
  } else {
    if (context.io.stdin.isTTY) throw usage('enqueue -: reads tasks from stdin, one JSON value a line; stdin is a terminal')
    /** @type {import('protoqueue').EnqueueTask[]} */
    let batch = []
    let lineNumber = 0
    let firstLine = 1
    const lines = createInterface({ input: context.io.stdin, crlfDelay: Infinity })
    try {
      for await (const line of lines) {
        lineNumber++
        if (line.trim() === '') continue
        try {
          if (batch.length === 0) firstLine = lineNumber
          batch.push(taskOf(line, envelope, `line ${lineNumber}`, fields))
        } catch (err) {
          if (!(err instanceof CliError)) throw err
          // The lines before it go out first, as the docs promise: a bad line stops what follows it only.
          if (batch.length > 0) await sent(batch, firstLine)
          if (ids.length === 0) throw err
          throw new CliError(err.exitCode, `${err.message} (${counted(ids.length, 'task')} before it ${ids.length === 1 ? 'was' : 'were'} enqueued)`)
        }
        if (batch.length >= batchSize) {
          await sent(batch, firstLine)
          batch = []
        }
      }
    } finally {
      lines.close()
    }
    if (batch.length > 0) await sent(batch, firstLine)
  }
  if (context.options.json) stdout.write(`${json(quiet ? { count: ids.length } : { count: ids.length, ids })}\n`)
  else if (quiet) stdout.write(`${ids.length}\n`)
}

/** @param {Context} context */
async function schedules(context) {
  const listed = await context.queue.getSchedules()
  print(context, listed, () => (listed.length === 0 ? 'No recurring tasks.' : scheduleTable(listed)))
}

/** @param {Context} context */
async function unschedule(context) {
  const [name] = context.args
  if (!(await context.queue.unschedule(name))) {
    throw new CliError(EXIT.FAILED, `no recurring task named ${name} on queue ${context.names.streamName}`)
  }
  print(context, { name, unscheduled: true }, () => `Removed recurring task ${escapeControl(name)}.`)
}

/** @param {Context} context */
async function cancel(context) {
  const [id] = context.args
  if (!(await context.queue.cancel(id))) {
    throw new CliError(EXIT.FAILED, `task ${id} of queue ${context.names.streamName} was not cancelled: it ended first, or nothing is known of it (a waiting task with a generated id is still cancelled when a worker takes it)`)
  }
  print(context, { id, cancelled: true }, () => `Cancelled task ${escapeControl(id)}.`)
}

/**
 * `task <id>`: the task as `getTask()` finds it, in any state.
 * @param {Context} context
 */
async function task(context) {
  const [id] = context.args
  const info = await context.queue.getTask(id)
  if (!info) {
    throw new CliError(
      EXIT.FAILED,
      `no task ${id} on queue ${context.names.streamName}: never enqueued, or it ended and no record of it is kept (completed and cancelled tasks are kept only when the workers have options.results, keepCompleted or keepFailed; dead-lettered ones also while their letter is stored)`,
    )
  }
  print(context, info, () => taskDetails(info))
}

/** The states whose tasks are the records the workers keep, and the option that keeps them (else `results`). */
const KEPT_BY = /** @type {Record<string, string>} */ ({ completed: 'keepCompleted', failed: 'keepFailed', deadLettered: 'keepFailed', cancelled: 'keepFailed' })

/**
 * `tasks --state <state>`: a page of that state's tasks as `getTasks()` gives it, newest first,
 * and the `--cursor` of the next one when more may follow. A cursor no page gave is the
 * library's `ERR_PQ_INVALID_CONFIG`: a usage error.
 * @param {Context} context
 */
async function tasks(context) {
  const { state, limit, cursor } = context.options
  /** @type {import('protoqueue').TaskQuery} */
  const query = { state, limit }
  if (cursor !== undefined) query.cursor = cursor
  const page = await context.queue.getTasks(query)
  print(context, page, () => {
    const lines = []
    if (page.tasks.length > 0) lines.push(taskTable(state, page.tasks))
    else if (cursor !== undefined) lines.push(`No more ${state} tasks.`)
    else if (KEPT_BY[state]) {
      lines.push(`No ${state} tasks kept on queue ${escapeControl(context.names.streamName)} (its workers keep them with options.${KEPT_BY[state]} or options.results).`)
    } else lines.push(`No ${state} tasks on queue ${escapeControl(context.names.streamName)}.`)
    if (page.cursor !== undefined) lines.push(`More may follow: add --cursor ${escapeControl(page.cursor)} for the next page.`)
    return lines.join('\n')
  })
}

/**
 * `wait <id>`: the task's result once it ended (main.js opens the queue with `options.results`,
 * which `waitFor` needs). A failure for good (`ERR_PQ_TASK_FAILED`) and a timeout
 * (`ERR_PQ_TIMEOUT`) are the library's errors, exit 1.
 * @param {Context} context
 */
async function wait(context) {
  const [id] = context.args
  // A queue whose workers never kept results has no history: the library says so (ERR_PQ_INVALID_CONFIG).
  const result = await context.queue.waitFor(id, { timeout: context.options.timeout })
  print(context, { id, result }, () => (result === undefined ? `Task ${escapeControl(id)} completed with no result.` : escapeLines(JSON.stringify(result, null, 2))))
}

/**
 * `queues`: every Protoqueue queue on the server, as `listQueues()` found them (main.js lists
 * them: the command has no queue of its own to connect).
 * @param {{ options: Record<string, any>, io: Io }} context
 * @param {{ server: string, queues: import('protoqueue').QueueInfo[] }} listing
 */
function queues(context, listing) {
  print(context, listing, () => (listing.queues.length === 0 ? `No Protoqueue queues on ${escapeControl(listing.server)}.` : queueTable(listing.queues)))
}

/**
 * `delete`: the queue and everything it holds, after a confirmation that says what goes.
 * @param {Context} context
 */
async function destroy(context) {
  const stats = await context.queue.getStats()
  const holds = `${stats.messages} tasks, ${stats.delayed} delayed, ${stats.recurring} recurring, ${stats.deadLettered} dead letters`
  if (!(await confirmed(context, `Delete queue ${context.names.streamName} and everything it holds (${holds})?`))) {
    throw new CliError(EXIT.FAILED, 'declined: nothing done')
  }
  const deleted = await context.queue.destroy({ force: context.options.force === true })
  print(context, { deleted }, () => `Deleted queue ${escapeControl(context.names.streamName)} (streams ${deleted.map(escapeControl).join(', ')}).`)
}

/** The commands that work on a connected queue, by name. */
const COMMANDS = {
  stats,
  workers,
  'dlq list': dlqList,
  'dlq show': dlqShow,
  'dlq requeue': (/** @type {Context} */ context) => dlqAct(context, 'requeue'),
  'dlq purge': (/** @type {Context} */ context) => dlqAct(context, 'purge'),
  pause,
  resume,
  purge,
  enqueue,
  metrics,
  schedules,
  unschedule,
  cancel,
  task,
  tasks,
  wait,
  delete: destroy,
}

module.exports = { COMMANDS, queues, taskOf, flagFields, letterFilter, describeFilter, confirmed }
