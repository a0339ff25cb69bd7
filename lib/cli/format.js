// @ts-check
'use strict'
// Output of the command line: plain tables for people, JSON for scripts (bytes as base64).

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
 * `text` on one line, cut to `max` characters (an ellipsis marks the cut).
 * @param {string} text
 * @param {number} max
 */
function truncate(text, max) {
  const oneLine = text.replace(/\s+/g, ' ').trim()
  return oneLine.length <= max ? oneLine : `${oneLine.slice(0, max - 1)}…`
}

/** @param {number} ms */
const isoTime = (ms) => (Number.isFinite(ms) && ms > 0 ? new Date(ms).toISOString() : '-')

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
    letter.task?.id ?? '-',
    letter.reason,
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
    ['reason', letter.reason],
    ['attempts', String(letter.attempts)],
    ['failed at', isoTime(letter.failedAt)],
    ['error', letter.error.replace(/\n/g, '\n  ')],
  ]
  const task = letter.task
  if (task) {
    fields.splice(1, 0, ['task id', task.id])
    fields.push(['content type', task.contentType || '-'])
    fields.push(['enqueued at', isoTime(task.metadata.timestamp ?? 0)])
  }
  const blocks = [pairs(fields)]
  if (letter.details !== undefined) blocks.push(`details:\n${JSON.stringify(letter.details, null, 2)}`)
  if (letter.rawDetails) blocks.push(`details (not JSON): ${bytesText(letter.rawDetails)}`)
  if (task) {
    if (task.dataFormat === 'json') blocks.push(`data:\n${JSON.stringify(task.data, null, 2)}`)
    else if (task.dataFormat === 'raw') blocks.push(`data (${task.contentType || 'no content type'}, not JSON): ${bytesText(task.data)}`)
    else blocks.push('data: dropped (the task was too large to dead-letter whole)')
    blocks.push(`metadata:\n${JSON.stringify(task.metadata, null, 2)}`)
    if (task.rawMetadata) blocks.push(`metadata (not a JSON object): ${bytesText(task.rawMetadata)}`)
  }
  if (letter.raw) blocks.push(`original message (not a task): ${bytesText(letter.raw)}`)
  return blocks.join('\n\n')
}

/**
 * `protoqueue stats` for people.
 * @param {import('protoqueue').QueueStats} stats
 * @param {{ streamName: string, subject: string }} names
 */
function statsText(stats, names) {
  return pairs([
    ['stream', names.streamName],
    ['subject', names.subject],
    ['paused', stats.paused ? 'yes' : 'no'],
    ['messages', String(stats.messages)],
    ['pending', String(stats.pending)],
    ['in flight', String(stats.inFlight)],
    ['redelivered', String(stats.redelivered)],
    ['dead letters', String(stats.deadLettered)],
    ['consumers', String(stats.consumer_count)],
    ['bytes', String(stats.bytes)],
    ['first sequence', String(stats.firstSequence)],
    ['last sequence', String(stats.lastSequence)],
  ])
}

module.exports = { table, pairs, truncate, isoTime, jsonSafe, json, letterTable, letterDetails, statsText }
