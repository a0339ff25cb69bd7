// @ts-check
'use strict'
// Progress of long operations, on stderr: a bar redrawn in place on a terminal; elsewhere (a log,
// a pipe) a plain line every few seconds, never control characters.

/** How often a plain progress line is written when stderr is not a terminal. */
const PLAIN_INTERVAL_MS = 5000
const BAR_WIDTH = 30

/**
 * @typedef {object} Progress
 * @property {number} seen letters looked at
 * @property {number} total letters stored when the operation began
 * @property {number} done letters acted on
 */

/**
 * A progress reporter for an operation named `label` ("requeued", "purged").
 * @param {{ isTTY?: boolean, write: (text: string) => unknown, columns?: number }} stream
 * @param {string} label
 * @param {{ now?: () => number, intervalMs?: number }} [options]
 */
function progressReporter(stream, label, options = {}) {
  const now = options.now ?? Date.now
  const interval = options.intervalMs ?? PLAIN_INTERVAL_MS
  const tty = stream.isTTY === true
  let lastPlain = now()
  let drawn = false
  return {
    /** @param {Progress} progress */
    update(progress) {
      const { seen, total, done } = progress
      const counts = `${seen}/${total} looked at, ${done} ${label}`
      if (tty) {
        const share = total > 0 ? Math.min(1, seen / total) : 1
        const filled = Math.round(share * BAR_WIDTH)
        const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${Math.floor(share * 100)}% ${counts}`
        stream.write(`\r\x1b[2K${bar}`)
        drawn = true
      } else if (now() - lastPlain >= interval) {
        lastPlain = now()
        stream.write(`progress: ${counts}\n`)
      }
    },
    /** Clears the bar (on a terminal), before the result is printed. */
    finish() {
      if (tty && drawn) stream.write('\r\x1b[2K')
      drawn = false
    },
  }
}

module.exports = { progressReporter, PLAIN_INTERVAL_MS }
