// @ts-check
'use strict'
// Output of the command line: plain tables for people, JSON for scripts (bytes as base64).
// Text for people shows control characters escaped (`escapeControl`): errors, ids, data and
// metadata come from handlers and producers, and must not drive the operator's terminal.

/**
 * What a terminal could act on: C0 (newlines and tabs included), DEL, C1, and the Unicode
 * characters that reorder or break what is shown (bidi marks, embeddings, overrides and
 * isolates; line and paragraph separators).
 */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g

/** The short escapes JSON uses, for the common ones. */
const SHORT_ESCAPES = /** @type {Record<string, string>} */ ({ '\b': '\\b', '\t': '\\t', '\n': '\\n', '\f': '\\f', '\r': '\\r' })

/**
 * `text` with every control character written as JSON writes escapes (`\n`, `\u001b`,
 * `\u202e`), for any text printed for people: the same form as in the JSON blocks of `dlq show`.
 * JSON output does not use it: JSON is exact.
 * @param {string} text
 */
const escapeControl = (text) => text.replace(CONTROL, (c) => SHORT_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)

/**
 * `escapeControl` line by line, for text whose line breaks are the command line's own layout
 * (pretty-printed JSON, where strings hold no raw line break, and stays valid JSON; command-line
 * errors; stack traces).
 * @param {string} text
 */
const escapeLines = (text) => text.split('\n').map(escapeControl).join('\n')

/**
 * `rows` as a table with a header line, columns padded to their widest cell.
 * @param {string[]} header
 * @param {string[][]} rows
 */
function table(header, rows) {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => row[i].length)))
  const line = (/** @type {string[]} */ cells) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

/**
 * Two columns: names and values.
 * @param {Array<[string, string]>} pairs
 */
function pairs(pairs) {
  const width = Math.max(...pairs.map(([name]) => name.length))
  return pairs.map(([name, value]) => `${name.padEnd(width)}  ${value}`).join('\n')
}

/**
 * `text` on one line, cut to `max` characters (an ellipsis marks the cut), control characters
 * escaped (the escapes may make it longer).
 * @param {string} text
 * @param {number} max
 */
function truncate(text, max) {
  const oneLine = text.replace(/\s+/g, ' ').trim()
  return escapeControl(oneLine.length <= max ? oneLine : `${oneLine.slice(0, max - 1)}…`)
}

/**
 * `ms` since the epoch as an ISO 8601 time; `-` for none (0) and for what no date can be (a
 * record another client wrote may hold any number).
 * @param {number} ms
 */
const isoTime = (ms) => {
  const date = new Date(ms)
  return Number.isFinite(ms) && ms > 0 && !Number.isNaN(date.getTime()) ? date.toISOString() : '-'
}

/**
 * A copy of `value` that JSON can hold as it should read: bytes become `{ base64 }`.
 * @param {unknown} value
 * @returns {unknown}
 */
function jsonSafe(value) {
  if (value instanceof Uint8Array) return { base64: Buffer.from(value).toString('base64') }
  if (Array.isArray(value)) return value.map(jsonSafe)
  if (typeof value === 'object' && value !== null) {
    /** @type {Record<string, unknown>} */
    const copy = {}
    for (const [key, item] of Object.entries(value)) if (item !== undefined) copy[key] = jsonSafe(item)
    return copy
  }
  return value
}

/** @param {unknown} value */
const json = (value) => JSON.stringify(jsonSafe(value), null, 2)

/**
 * The `dlq list` table.
 * @param {import('protoqueue').DeadLetter[]} letters
 */
function letterTable(letters) {
  const rows = letters.map((letter) => [
    String(letter.sequence),
    escapeControl(letter.task?.id ?? '-'),
    escapeControl(letter.reason),
    String(letter.attempts),
    isoTime(letter.failedAt),
    truncate(letter.error, 60),
  ])
  return table(['SEQ', 'TASK ID', 'REASON', 'ATTEMPTS', 'FAILED AT', 'ERROR'], rows)
}

/**
 * Bytes as people read them: their length and base64.
 * @param {Uint8Array} bytes
 */
const bytesText = (bytes) => `${bytes.length} bytes, base64: ${Buffer.from(bytes).toString('base64')}`

/**
 * One dead letter in full, for `dlq show`.
 * @param {import('protoqueue').DeadLetter} letter
 */
function letterDetails(letter) {
  /** @type {Array<[string, string]>} */
  const fields = [
    ['sequence', String(letter.sequence)],
    ['reason', escapeControl(letter.reason)],
    ['attempts', String(letter.attempts)],
    ['failed at', isoTime(letter.failedAt)],
    ['error', escapeControl(letter.error)],
  ]
  const task = letter.task
  if (task) {
    fields.splice(1, 0, ['task id', escapeControl(task.id)])
    fields.push(['content type', escapeControl(task.contentType || '-')])
    fields.push(['enqueued at', isoTime(task.metadata.timestamp ?? 0)])
  }
  const blocks = [pairs(fields)]
  if (letter.details !== undefined) blocks.push(`details:\n${escapeLines(JSON.stringify(letter.details, null, 2))}`)
  if (letter.rawDetails) blocks.push(`details (not JSON): ${bytesText(letter.rawDetails)}`)
  if (task) {
    if (task.dataFormat === 'json') blocks.push(`data:\n${escapeLines(JSON.stringify(task.data, null, 2))}`)
    else if (task.dataFormat === 'raw') blocks.push(`data (${escapeControl(task.contentType || 'no content type')}, not JSON): ${bytesText(task.data)}`)
    else blocks.push('data: dropped (the task was too large to dead-letter whole)')
    blocks.push(`metadata:\n${escapeLines(JSON.stringify(task.metadata, null, 2))}`)
    if (task.rawMetadata) blocks.push(`metadata (not a JSON object): ${bytesText(task.rawMetadata)}`)
  }
  if (letter.raw) blocks.push(`original message (not a task): ${bytesText(letter.raw)}`)
  return blocks.join('\n\n')
}

/**
 * A value on one line as JSON, for `task <id>`: escaped, not cut.
 * @param {unknown} value
 */
const oneLineJson = (value) => escapeControl(JSON.stringify(value) ?? '-')

/**
 * One task as `getTask()` finds it, for `task <id>`: only the fields it has; its result and
 * progress as JSON on one line. Its texts (id, result, progress, errors) come from producers and
 * handlers: escaped. "run at" is when a delayed task is due, or when a retrying one may run again.
 * @param {import('protoqueue').TaskInfo} info
 */
function taskDetails(info) {
  /** @type {Array<[string, string]>} */
  const fields = [
    ['id', escapeControl(info.id)],
    ['state', escapeControl(info.state)],
    ['attempts', String(info.attempts)],
  ]
  if (info.priority !== undefined) fields.push(['priority', String(info.priority)])
  if (info.enqueuedAt !== undefined) fields.push(['enqueued', isoTime(info.enqueuedAt)])
  if (info.startedAt !== undefined) fields.push(['started', isoTime(info.startedAt)])
  if (info.finishedAt !== undefined) fields.push(['finished', isoTime(info.finishedAt)])
  if (info.runAt !== undefined) fields.push(['run at', isoTime(info.runAt)])
  if (info.progress !== undefined) fields.push(['progress', oneLineJson(info.progress)])
  if (info.result !== undefined) fields.push(['result', oneLineJson(info.result)])
  if (info.resultError !== undefined) fields.push(['result error', escapeControl(info.resultError)])
  if (info.error !== undefined) fields.push(['error', escapeControl(info.error)])
  if (info.reason !== undefined) fields.push(['reason', escapeControl(info.reason)])
  for (const failed of info.failures ?? []) fields.push([`attempt ${failed.attempt} failed`, `${isoTime(failed.failedAt)} ${truncate(failed.error, 200)}`])
  if (info.task !== undefined && info.task.dataFormat !== 'dropped') fields.push(['data', info.task.dataFormat === 'raw' ? `(${info.task.data.length} bytes of ${escapeControl(info.task.contentType)})` : oneLineJson(info.task.data)])
  return pairs(fields)
}

/**
 * @typedef {[string, (info: import('protoqueue').TaskInfo) => string]} TaskColumn a header, and a task's cell
 */

/** @type {(ms: number | undefined) => string} */
const timeCell = (ms) => isoTime(ms ?? 0)
/** @type {TaskColumn} */
const FINISHED = ['FINISHED', (info) => timeCell(info.finishedAt)]
/** @type {TaskColumn} */
const RUN_AT = ['RUN AT', (info) => timeCell(info.runAt)]
/** @type {TaskColumn} */
const ERROR = ['ERROR', (info) => (info.error === undefined ? '-' : truncate(info.error, 60))]
/** @type {Array<TaskColumn>} */
const FAILED_COLUMNS = [FINISHED, ['REASON', (info) => escapeControl(info.reason ?? '-')], ERROR]

/**
 * The columns of the `tasks` table after id, state, attempts (and priority) and enqueued: what
 * the tasks of the state listed have (`failed` lists dead-lettered tasks).
 * @type {Record<string, Array<TaskColumn>>}
 */
const TASK_COLUMNS = {
  waiting: [],
  delayed: [RUN_AT],
  running: [
    ['STARTED', (info) => timeCell(info.startedAt)],
    ['PROGRESS', (info) => dataSummary(info.progress, 60)],
  ],
  retrying: [RUN_AT, ERROR],
  completed: [
    FINISHED,
    ['RESULT', (info) => (info.result === undefined && info.resultError !== undefined ? truncate(`(not kept: ${info.resultError})`, 60) : dataSummary(info.result, 60))],
  ],
  failed: FAILED_COLUMNS,
  deadLettered: FAILED_COLUMNS,
  cancelled: [FINISHED],
}

/**
 * The `tasks` table: a page of `getTasks({ state })`, as it gives them (newest first). A
 * priority column when a task has one (a queue with priorities); texts shortened and escaped.
 * @param {string} state the state listed
 * @param {import('protoqueue').TaskInfo[]} tasks
 */
function taskTable(state, tasks) {
  /** @type {Array<TaskColumn>} */
  const columns = [
    ['ID', (info) => escapeControl(info.id)],
    ['STATE', (info) => escapeControl(info.state)],
    ['ATTEMPTS', (info) => String(info.attempts)],
  ]
  if (tasks.some((info) => info.priority !== undefined)) columns.push(['PRIORITY', (info) => (info.priority === undefined ? '-' : String(info.priority))])
  columns.push(['ENQUEUED', (info) => timeCell(info.enqueuedAt)], ...(TASK_COLUMNS[state] ?? []))
  return table(
    columns.map(([header]) => header),
    tasks.map((info) => columns.map(([, cell]) => cell(info))),
  )
}

/**
 * The `queues` table: every Protoqueue queue on the server.
 * @param {import('protoqueue').QueueInfo[]} queues
 */
function queueTable(queues) {
  const yesNo = (/** @type {boolean} */ on) => (on ? 'yes' : 'no')
  const rows = queues.map((queue) => [
    escapeControl(queue.streamName),
    escapeControl(queue.subject),
    escapeControl(queue.deadLetterStream ?? '-'),
    yesNo(queue.schedules),
    yesNo(queue.priorities),
  ])
  return table(['STREAM', 'SUBJECT', 'DEAD LETTERS', 'SCHEDULES', 'PRIORITIES'], rows)
}

/**
 * A value of a task's data on one line for a table: JSON, or the length of bytes; `-` when it
 * could not be read.
 * @param {unknown} data
 * @param {number} max
 */
function dataSummary(data, max) {
  if (data instanceof Uint8Array) return `(${data.length} bytes)`
  const text = data === undefined ? undefined : JSON.stringify(data)
  return text === undefined ? '-' : truncate(text, max)
}

/**
 * The `schedules` table: a recurring task's name, its cron (with its time zone, UTC unless
 * given) or interval, its next run when the server says, and its data.
 * @param {import('protoqueue').ScheduledTask[]} schedules
 */
function scheduleTable(schedules) {
  const rows = schedules.map((schedule) => {
    const { spec } = schedule
    const when = 'cron' in spec ? `cron ${spec.cron}` : `every ${spec.every} ms`
    const zone = 'cron' in spec ? (spec.timeZone ?? 'UTC') : '-'
    return [escapeControl(schedule.name), escapeControl(when), escapeControl(zone), isoTime(schedule.nextRun ?? 0), dataSummary(schedule.data, 60)]
  })
  return table(['NAME', 'SCHEDULE', 'TIME ZONE', 'NEXT RUN', 'DATA'], rows)
}

/**
 * The `workers` table: the live workers, oldest first, as `getWorkers()` lists them. Their
 * records come from the server (any client that may write there): every text is escaped.
 * @param {import('protoqueue').WorkerInfo[]} workers
 */
function workerTable(workers) {
  const rows = workers.map((worker) => [
    escapeControl(worker.id),
    escapeControl(worker.host),
    String(worker.pid),
    escapeControl(worker.kind),
    isoTime(worker.startedAt),
    String(worker.inFlight),
    String(worker.batchSize),
    String(worker.completed),
    String(worker.failed),
    isoTime(worker.seenAt),
    worker.subjects ? truncate(worker.subjects.join(', '), 60) : '-',
  ])
  return table(['ID', 'HOST', 'PID', 'KIND', 'SINCE', 'IN FLIGHT', 'BATCH', 'COMPLETED', 'FAILED', 'LAST SEEN', 'SUBJECTS'], rows)
}

/**
 * `protoqueue stats` for people.
 * @param {import('protoqueue').QueueStats} stats
 * @param {{ streamName: string, subject: string }} names
 */
function statsText(stats, names) {
  return pairs([
    ['stream', escapeControl(names.streamName)],
    ['subject', escapeControl(names.subject)],
    ['paused', stats.paused ? 'yes' : 'no'],
    ['messages', String(stats.messages)],
    ['pending', String(stats.pending)],
    ['in flight', String(stats.inFlight)],
    ['redelivered', String(stats.redelivered)],
    ['delayed', String(stats.delayed)],
    ['recurring', String(stats.recurring)],
    ['dead letters', String(stats.deadLettered)],
    ['completed (kept)', String(stats.completed)],
    ['failed (kept)', String(stats.failed)],
    ['cancelled (kept)', String(stats.cancelled)],
    ['consumers', String(stats.consumers)],
    ['workers', String(stats.workers)],
    ['bytes', String(stats.bytes)],
    ['first sequence', String(stats.firstSequence)],
    ['last sequence', String(stats.lastSequence)],
  ])
}

module.exports = { escapeControl, escapeLines, table, pairs, truncate, isoTime, jsonSafe, json, letterTable, letterDetails, taskDetails, taskTable, queueTable, scheduleTable, workerTable, statsText }
