// @ts-check
'use strict'
// The dashboard's view of the server: which queues there are (the core's `listQueues`), each
// one's statistics (the core's `getStats`, one call per queue per sample) and the throughput
// derived from successive samples. Nothing here counts tasks itself.

const { Protoqueue, listQueues } = require('protoqueue')

/** Samples kept per queue for the charts (at one a second: five minutes). */
const DEFAULT_HISTORY = 300
/** How often the list of queues is read again, at least. */
const LIST_EVERY_MS = 5_000

/**
 * One sample of a queue.
 * @typedef {object} Sample
 * @property {number} t ms since the epoch
 * @property {number} enqueued tasks stored per second since the sample before
 * @property {number} completed tasks that left the stream per second, minus new dead letters
 * @property {number} deadLettered new dead letters per second
 */

/**
 * A queue as the sampler follows it.
 * @typedef {object} Followed
 * @property {import('protoqueue').QueueInfo} info
 * @property {import('protoqueue').Protoqueue | undefined} queue connected, once it is
 * @property {Promise<import('protoqueue').Protoqueue> | undefined} [connecting] while it connects
 * @property {import('protoqueue').QueueStats | undefined} stats the latest
 * @property {string | undefined} error the latest failure, `code: message`
 * @property {{ t: number, stats: import('protoqueue').QueueStats } | undefined} last
 * @property {Sample[]} samples
 */

/**
 * The throughput between two snapshots `seconds` apart. Everything a task stream ever stored
 * moves `lastSequence`; what left it (acked, dead-lettered or purged) is what was stored less
 * what it holds more; completions are what left less the new dead letters. Letters requeued or
 * purged make the dead-letter count fall: that is never a negative number of new letters.
 * @param {import('protoqueue').QueueStats} before
 * @param {import('protoqueue').QueueStats} now
 * @param {number} seconds
 * @returns {Omit<Sample, 't'>}
 */
function throughput(before, now, seconds) {
  const held = (/** @type {import('protoqueue').QueueStats} */ s) => s.messages + s.delayed + s.recurring
  const stored = Math.max(0, now.lastSequence - before.lastSequence)
  const left = Math.max(0, stored - (held(now) - held(before)))
  const newLetters = Math.max(0, now.deadLettered - before.deadLettered)
  const perSecond = (/** @type {number} */ n) => (seconds > 0 ? n / seconds : 0)
  return {
    enqueued: perSecond(stored),
    completed: perSecond(Math.max(0, left - newLetters)),
    deadLettered: perSecond(newLetters),
  }
}

/**
 * `err` as `code: message`, for the page.
 * @param {unknown} err
 */
function describeError(err) {
  if (err && typeof err === 'object' && 'code' in err && 'message' in err) return `${err.code}: ${err.message}`
  return String(err)
}

class Sampler {
  /**
   * @param {Partial<import('protoqueue').ProtoqueueConfig>} connection where and how to connect
   * @param {{ interval: number, history?: number }} options
   */
  constructor(connection, options) {
    this.connection = connection
    this.interval = options.interval
    this.history = options.history ?? DEFAULT_HISTORY
    /** @type {Map<string, Followed>} */
    this.queues = new Map()
    /** The server's URL, credentials masked, once listed. */
    this.server = ''
    /** The latest failure to list the queues, and its error. */
    /** @type {string | undefined} */
    this.error = undefined
    /** @type {unknown} */
    this.listError = undefined
    this.listedAt = 0
    /** @type {Promise<void> | undefined} */
    this.listing = undefined
    /** @type {NodeJS.Timeout | undefined} */
    this.timer = undefined
    this.closed = false
    /** @type {Promise<void>} */
    this.running = Promise.resolve()
  }

  /** Takes a first sample, then one every `interval` ms until `close()`. */
  async start() {
    await this.sample()
    const loop = () => {
      if (this.closed) return
      this.running = this.sample().finally(() => {
        if (!this.closed) this.timer = setTimeout(loop, this.interval)
      })
    }
    this.timer = setTimeout(loop, this.interval)
  }

  /** Reads the list of queues again (at most one listing at a time). */
  refreshList() {
    this.listing ??= this.list().finally(() => {
      this.listing = undefined
    })
    return this.listing
  }

  async list() {
    try {
      const listing = await listQueues(this.connection)
      this.server = listing.server
      this.error = undefined
      this.listError = undefined
      this.listedAt = Date.now()
      const seen = new Set()
      for (const info of listing.queues) {
        seen.add(info.streamName)
        const followed = this.queues.get(info.streamName)
        if (followed) followed.info = info
        else this.queues.set(info.streamName, { info, queue: undefined, stats: undefined, error: undefined, last: undefined, samples: [] })
      }
      for (const [name, followed] of this.queues) {
        if (!seen.has(name)) {
          this.queues.delete(name)
          await followed.queue?.disconnect().catch(() => {})
        }
      }
    } catch (err) {
      this.error = describeError(err)
      this.listError = err
    }
  }

  /** One sample of every queue. */
  async sample() {
    if (Date.now() - this.listedAt >= LIST_EVERY_MS || this.queues.size === 0) await this.refreshList()
    await Promise.all([...this.queues.values()].map((followed) => this.sampleOne(followed)))
  }

  /** @param {Followed} followed */
  async sampleOne(followed) {
    try {
      const queue = await this.queueOf(followed)
      const stats = await queue.getStats()
      const t = Date.now()
      if (followed.last) {
        const rates = throughput(followed.last.stats, stats, (t - followed.last.t) / 1000)
        followed.samples.push({ t, ...rates })
        if (followed.samples.length > this.history) followed.samples.splice(0, followed.samples.length - this.history)
      }
      followed.last = { t, stats }
      followed.stats = stats
      followed.error = undefined
    } catch (err) {
      followed.error = describeError(err)
    }
  }

  /**
   * The connected `Protoqueue` of a queue: opened on the existing streams only
   * (`createStreams: false`), with the queue's own subject.
   * @param {Followed} followed
   */
  queueOf(followed) {
    if (followed.queue) return Promise.resolve(followed.queue)
    // One connection per queue, however many requests ask for it at once.
    followed.connecting ??= this.open(followed).finally(() => {
      followed.connecting = undefined
    })
    return followed.connecting
  }

  /** @param {Followed} followed */
  async open(followed) {
    const { streamName, subject, schedules } = followed.info
    const queue = await Protoqueue.create({
      ...this.connection,
      streamName,
      subject,
      createStreams: false,
      options: { ...this.connection.options, schedules },
    })
    if (this.closed || this.queues.get(streamName) !== followed) {
      await queue.disconnect().catch(() => {})
      throw new Error('the dashboard stopped following this queue')
    }
    followed.queue = queue
    return queue
  }

  /**
   * The queue named `name`, reading the list again when it is not known (it may be new); or
   * `undefined` when the server has no such queue.
   * @param {string} name
   */
  async find(name) {
    if (!this.queues.has(name) && Date.now() - this.listedAt >= 1000) await this.refreshList()
    return this.queues.get(name)
  }

  /** Stops sampling and closes every connection. */
  async close() {
    this.closed = true
    clearTimeout(this.timer)
    await this.running.catch(() => {})
    await Promise.all([...this.queues.values()].map((followed) => followed.queue?.disconnect().catch(() => {})))
    this.queues.clear()
  }
}

module.exports = { Sampler, throughput, describeError }
