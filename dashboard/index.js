// @ts-check
'use strict'
// The web dashboard: an HTTP server (node:http, no framework) that serves the page in public/ and
// a small JSON API over the library's own operations: `listQueues`, `getStats` (sampled by
// sampler.js, which derives the throughput), `getDeadLetters`, `requeueDeadLetters`,
// `purgeDeadLetters`, `pause`, `resume`, `getSchedules`, `getWorkers`, and the task browser's
// `getTasks`, `getTask` and `cancel`.
//
// Safety:
// - Binds to 127.0.0.1 by default. Bound to any other address it refuses to start without a
//   token, and every state change must carry it.
// - State changes are POSTs with an `application/json` body and the `X-Protoqueue-Token` header:
//   a cross-site form cannot send either, and no CORS header is ever sent, so a browser refuses
//   a cross-site request that could. On 127.0.0.1 without a token of the user's, the server makes
//   one per run and puts it in the page it serves; the `Host` header must then name a loopback
//   address (no DNS rebinding).
// - A request's `Origin`, when sent, must name the `Host` it was sent to (the page's own). The
//   request target is never read as a URL, whose host would come from it (`//evil.example/api/...`,
//   `/\evil.example/...`, `http://evil.example/...`): a target that does not start with a single
//   `/` is refused.
// - Nothing shown holds a credential: the server's URL comes masked from the core.

const { createHash, randomBytes, timingSafeEqual } = require('node:crypto')
const { readFileSync } = require('node:fs')
const http = require('node:http')
const { join } = require('node:path')

const protoqueue = require('protoqueue')

/** An error with the library's `code`, as its own errors are (`ProtoqueueError`). */
const ProtoqueueError = /** @type {new (code: string, message: string, options?: ErrorOptions) => Error & { code: string }} */ (
  /** @type {unknown} */ (protoqueue.ProtoqueueError)
)

const { Sampler, describeError } = require('./sampler.js')

const TOKEN_HEADER = 'x-protoqueue-token'
const MAX_BODY = 64 * 1024
/** Dead letters one page shows at most. */
const MAX_LETTERS = 1_000
/** The most dead letters `getDeadLetters` reads in one call: how deep the letters can be paged. */
const MAX_LETTERS_READ = 10_000_000
/** Characters of a letter's data shown. */
const PREVIEW = 400
/** Characters of a task's data, metadata or details shown on its page. */
const DETAIL = 64 * 1024
/** The states of `getTasks` the task browser lists (dead letters are listed by their own endpoint). */
const TASK_STATES = ['waiting', 'delayed', 'running', 'retrying', 'completed', 'failed', 'cancelled']
/** Tasks one page lists when the request does not say, and at most (`getTasks`' own bounds). */
const DEFAULT_TASKS = 50
const MAX_TASKS = 1_000
/** JetStream stream names: no whitespace, `.`, `*`, `>`, path separators. */
const STREAM_NAME = /^[^\s.*>/\\]{1,255}$/

const PUBLIC = join(__dirname, 'public')

/** The page's icon (browsers ask for one with every page): served at /favicon.svg and /favicon.ico. */
const FAVICON =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#111827"/>' +
  '<rect x="6" y="7" width="20" height="4.5" rx="1.5" fill="#60a5fa"/><rect x="6" y="13.75" width="15" height="4.5" rx="1.5" fill="#93c5fd"/>' +
  '<rect x="6" y="20.5" width="10" height="4.5" rx="1.5" fill="#dbeafe"/></svg>'

/**
 * The charting library (uPlot, an optional dependency): its script and stylesheet, or
 * `undefined` when it is not installed (the page then shows numbers without charts).
 * @returns {{ js: string, css: string } | undefined}
 */
function chartLibrary() {
  try {
    return {
      js: require.resolve('uplot/dist/uPlot.iife.min.js'),
      css: require.resolve('uplot/dist/uPlot.min.css'),
    }
  } catch {
    return undefined
  }
}

/** @param {string} message */
const invalid = (message) => new ProtoqueueError('ERR_PQ_INVALID_CONFIG', `dashboard: ${message}`)

/**
 * Whether `host` is a loopback address (or `localhost`).
 * @param {string} host
 */
function isLoopback(host) {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase()
  return bare === 'localhost' || bare === '::1' || /^127(\.\d{1,3}){3}$/.test(bare)
}

/**
 * Checks the options; throws ERR_PQ_INVALID_CONFIG naming what is wrong.
 * @param {import('./index').DashboardOptions} options
 */
function settings(options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw invalid('options must be an object')
  const known = ['connection', 'host', 'port', 'token', 'interval', 'history']
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw invalid(`unknown option ${JSON.stringify(key)} (known: ${known.join(', ')})`)
  }
  const { connection = {}, host = '127.0.0.1', port = 3000, token, interval = 1000, history = 300 } = options
  if (connection === null || typeof connection !== 'object' || Array.isArray(connection)) throw invalid('connection must be an object like { url?, auth?, tls? }')
  if (typeof host !== 'string' || host.length === 0) throw invalid('host must be a non-empty string')
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalid(`port must be an integer from 0 to 65535, got ${String(port)}`)
  if (!Number.isInteger(interval) || interval < 100 || interval > 60_000) throw invalid('interval must be an integer from 100 to 60000 (ms)')
  if (!Number.isInteger(history) || history < 2 || history > 100_000) throw invalid('history must be an integer from 2 to 100000 (samples)')
  if (token !== undefined && (typeof token !== 'string' || token.length < 16)) {
    throw invalid('token must be a string of at least 16 characters')
  }
  const local = isLoopback(host)
  if (!local && token === undefined) {
    throw invalid(`bound to ${host}, which is not a loopback address, the dashboard needs a token for the actions that change a queue (options.token; the command line reads --auth-token-file or PROTOQUEUE_DASHBOARD_TOKEN)`)
  }
  return { connection, host, port, interval, history, local, userToken: token, token: token ?? randomBytes(24).toString('base64url') }
}

/**
 * Constant-time comparison of two tokens (of any lengths).
 * @param {unknown} given
 * @param {string} expected
 */
function sameToken(given, expected) {
  const digest = (/** @type {string} */ text) => createHash('sha256').update(text).digest()
  return typeof given === 'string' && timingSafeEqual(digest(given), digest(expected))
}

class HttpError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/**
 * The path and query of a request target. Only the origin form with one leading `/` is taken, and
 * it is split by hand: a URL parser reads `//host/...`, `/\host/...` and `http://host/...` as naming
 * a host, and that host must never stand in for the `Host` header.
 * @param {string | undefined} target
 */
function requestTarget(target) {
  if (target === undefined || !/^\/(?![/\\])/.test(target)) {
    throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', 'the request path must start with a single /')
  }
  const withoutFragment = target.replace(/#.*$/s, '')
  const mark = withoutFragment.indexOf('?')
  return mark === -1
    ? { path: withoutFragment, query: new URLSearchParams() }
    : { path: withoutFragment.slice(0, mark), query: new URLSearchParams(withoutFragment.slice(mark + 1)) }
}

/**
 * `host[:port]` as a URL writes it (lower case, no default port) from a `Host` header, or
 * `undefined` when the header is not a host (nor `host:port`).
 * @param {string} header
 */
function hostOf(header) {
  if (!/^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:\d{1,5})?$/i.test(header)) return undefined
  try {
    return new URL(`http://${header}`).host
  } catch {
    return undefined
  }
}

/**
 * Whether an `Origin` header names `host` (the request's, from `hostOf`), over http or https.
 * @param {string} origin
 * @param {string | undefined} host
 */
function sameOrigin(origin, host) {
  try {
    const url = new URL(origin)
    return (url.protocol === 'http:' || url.protocol === 'https:') && host !== undefined && url.host === host
  } catch {
    return false
  }
}

/**
 * The integer query parameter `name`, from 1 to `max`; `fallback` when absent; else a 400.
 * @param {URLSearchParams} query
 * @param {string} name
 * @param {number} fallback
 * @param {number} max
 */
function integerParameter(query, name, fallback, max) {
  const text = query.get(name)
  if (text === null) return fallback
  const value = Number(text)
  if (!/^\d+$/.test(text) || value < 1 || value > max) throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', `${name} must be an integer from 1 to ${max}`)
  return value
}

/**
 * Where a page of dead letters starts: after `sequence`, the last letter of the pages before,
 * which showed `shown` letters (`<shown>.<sequence>`; the first page: none).
 * @param {string | null} cursor
 */
function letterCursor(cursor) {
  if (cursor === null) return { shown: 0, sequence: 0 }
  const parts = /^(\d{1,8})\.(\d{1,16})$/.exec(cursor)
  if (!parts) throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', 'cursor must be the cursor of the page before')
  return { shown: Number(parts[1]), sequence: Number(parts[2]) }
}

/**
 * How many tasks of `state` `getStats()` counts, where it counts them: delayed tasks and the
 * records kept of completed, failed and cancelled ones (not waiting, running or retrying).
 * @param {import('protoqueue').QueueStats | undefined} stats
 * @param {string} state
 */
function countOf(stats, state) {
  if (stats === undefined) return undefined
  if (state === 'delayed') return stats.delayed
  if (state === 'completed') return stats.completed
  if (state === 'failed') return stats.failed
  if (state === 'cancelled') return stats.cancelled
  return undefined
}

/**
 * The HTTP status of a library error.
 * @param {string} code
 */
function statusOf(code) {
  if (code === 'ERR_PQ_INVALID_CONFIG' || code === 'ERR_PQ_INVALID_TASK') return 400
  if (code === 'ERR_PQ_CONNECT' || code === 'ERR_PQ_TIMEOUT' || code === 'ERR_PQ_NATS' || code === 'ERR_PQ_AUTH' || code === 'ERR_PQ_TLS') return 502
  return 500
}

/**
 * At most `max` (`PREVIEW`) characters of `text`.
 * @param {string | undefined} text
 * @param {number} [max]
 */
const shortened = (text, max = PREVIEW) => (text !== undefined && text.length > max ? `${text.slice(0, max)}…` : text)

/**
 * A JSON value as text (`undefined` for none), at most `max` characters; `pretty` indents it.
 * @param {unknown} value
 * @param {number} [max]
 * @param {boolean} [pretty]
 */
const jsonText = (value, max = PREVIEW, pretty = false) => (value === undefined ? undefined : shortened(JSON.stringify(value, null, pretty ? 2 : undefined), max))

/**
 * A dead letter as the page shows it: no raw bytes, data as a short JSON preview, and what a
 * requeue does with it: `ok`; `failsAgain` for an `invalidData` letter (its data or metadata does
 * not decode: its task is dead-lettered again on its first delivery, unless its workers now take
 * it); `leftAlone` for a letter that is no task (`invalidEnvelope`) or whose data was dropped
 * (`requeueDeadLetters` skips them).
 * @param {import('protoqueue').DeadLetter} letter
 */
function letterView(letter) {
  let preview
  const task = letter.task
  if (task?.dataFormat === 'json') preview = JSON.stringify(task.data)
  else if (task?.dataFormat === 'raw') preview = `(${task.data.length} bytes, not JSON)`
  else if (task?.dataFormat === 'dropped') preview = '(data dropped: too large to keep)'
  else preview = '(not a Protoqueue task)'
  const requeue = task === undefined || task.dataFormat === 'dropped' ? 'leftAlone' : letter.reason === 'invalidData' ? 'failsAgain' : 'ok'
  return {
    sequence: letter.sequence,
    taskId: task?.id,
    reason: letter.reason,
    error: letter.error,
    attempts: letter.attempts,
    failedAt: letter.failedAt,
    data: shortened(preview),
    requeue,
  }
}

/**
 * A task of a list as the page shows it: what `getTasks` gives, its `error` shortened and its
 * `result` and `progress` as the start of their JSON text (the task's page has them whole).
 * @param {import('protoqueue').TaskInfo} task
 */
function taskRow(task) {
  // The stored task (its data) is on the task's page, not in the list.
  const listed = { ...task }
  delete listed.task
  return {
    ...listed,
    error: shortened(task.error),
    result: jsonText(task.result),
    progress: jsonText(task.progress),
  }
}

/**
 * A dead letter as a task's page shows it: the task as enqueued — its data and metadata as
 * indented JSON text (at most `DETAIL` characters), name, subject, priority, most attempts,
 * content type — and why it failed.
 * @param {import('protoqueue').DeadLetter} letter
 */
function letterDetail(letter) {
  const task = letter.task
  return {
    sequence: letter.sequence,
    reason: letter.reason,
    error: shortened(letter.error, DETAIL),
    attempts: letter.attempts,
    failedAt: letter.failedAt,
    details: letter.details !== undefined ? jsonText(letter.details, DETAIL, true) : letter.rawDetails ? `(${letter.rawDetails.length} bytes, not JSON)` : undefined,
    task: task && { ...storedDetail(task), maxAttempts: task.maxAttempts },
  }
}

/**
 * A task as stored (a dead letter's, or `getTask`'s `task`) as a task's page shows it: its data
 * and metadata as indented JSON text (at most `DETAIL` characters), name, subject, priority,
 * content type.
 * @param {import('protoqueue').TaskContent} task
 */
function storedDetail(task) {
  let data
  if (task.dataFormat === 'json' || task.dataFormat === 'decoded') data = jsonText(task.data, DETAIL, true)
  else if (task.dataFormat === 'raw') data = `(${task.data.length} bytes of ${task.contentType}, not JSON)`
  else if (task.dataFormat === 'dropped') data = '(data dropped: too large to keep)'
  return {
    name: task.name,
    subject: task.subject,
    priority: task.priority,
    contentType: task.contentType,
    dataFormat: task.dataFormat,
    data,
    metadata: task.rawMetadata ? `(${task.rawMetadata.length} bytes, not a JSON object)` : jsonText(task.metadata, DETAIL, true),
  }
}

/**
 * A recurring task as the page shows it: when it runs (`every` ms, or `cron` and `timeZone`), its
 * next run when the server says, and a short preview of its data.
 * @param {import('protoqueue').ScheduledTask} schedule
 */
function scheduleView(schedule) {
  const { spec, data } = schedule
  return {
    name: schedule.name,
    every: 'every' in spec ? spec.every : undefined,
    cron: 'cron' in spec ? spec.cron : undefined,
    timeZone: 'cron' in spec ? (spec.timeZone ?? 'UTC') : undefined,
    nextRun: schedule.nextRun,
    taskName: schedule.taskName,
    data: shortened(Buffer.isBuffer(data) ? `(${data.length} bytes, not JSON)` : JSON.stringify(data)),
  }
}

/**
 * Starts the dashboard; resolves once it listens and has read the queues once.
 * @param {import('./index').DashboardOptions} [options]
 * @returns {Promise<import('./index').Dashboard>}
 */
async function dashboard(options = {}) {
  const config = settings(options)
  const charts = chartLibrary()
  const sampler = new Sampler(config.connection, { interval: config.interval, history: config.history })
  await sampler.start()
  if (sampler.listError !== undefined) {
    // Nothing to show: say why, as `connect()` would.
    await sampler.close()
    throw sampler.listError
  }
  const page = readFileSync(join(PUBLIC, 'index.html'), 'utf8')
  /** @type {Record<string, { file: string, type: string }>} */
  const assets = {
    '/assets/app.js': { file: join(PUBLIC, 'app.js'), type: 'text/javascript; charset=utf-8' },
    '/assets/style.css': { file: join(PUBLIC, 'style.css'), type: 'text/css; charset=utf-8' },
  }
  if (charts) {
    assets['/assets/uPlot.js'] = { file: charts.js, type: 'text/javascript; charset=utf-8' }
    assets['/assets/uPlot.css'] = { file: charts.css, type: 'text/css; charset=utf-8' }
  }

  /** The page, with what the script needs to know. */
  const pageFor = () =>
    page
      .replace('{{CONFIG}}', JSON.stringify({ interval: config.interval, charts: Boolean(charts), token: config.local && !config.userToken ? config.token : null }).replace(/</g, '\\u003c'))
      .replace('{{CHARTS}}', charts ? '<link rel="stylesheet" href="/assets/uPlot.css"><script src="/assets/uPlot.js" defer></script>' : '')

  const overview = () => ({
    server: sampler.server,
    error: sampler.error,
    interval: config.interval,
    tokenRequired: !(config.local && !config.userToken),
    charts: Boolean(charts),
    queues: [...sampler.queues.values()].map((followed) => ({
      name: followed.info.streamName,
      subject: followed.info.subject,
      foundBy: followed.info.foundBy,
      deadLetterStream: followed.info.deadLetterStream,
      schedules: followed.info.schedules,
      stats: followed.stats,
      error: followed.error,
      samples: followed.samples,
    })),
  })

  /**
   * The queue a request names, or a 400/404.
   * @param {string} raw the path segment
   */
  const queueNamed = async (raw) => {
    let name
    try {
      name = decodeURIComponent(raw)
    } catch {
      throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', 'the queue name in the path is not valid percent-encoding')
    }
    if (!STREAM_NAME.test(name)) throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', `${JSON.stringify(name.slice(0, 80))} is not a valid stream name`)
    const followed = await sampler.find(name)
    if (!followed) throw new HttpError(404, 'ERR_PQ_NOT_A_QUEUE', `stream ${JSON.stringify(name)} is not a Protoqueue queue on this server`)
    return followed
  }

  /** @param {http.IncomingMessage} req */
  const readJson = async (req) => {
    const type = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase()
    if (type !== 'application/json') throw new HttpError(415, 'ERR_PQ_BAD_REQUEST', 'a POST takes an application/json body')
    let size = 0
    const chunks = []
    for await (const chunk of req) {
      size += chunk.length
      if (size > MAX_BODY) throw new HttpError(413, 'ERR_PQ_BAD_REQUEST', `the body is larger than ${MAX_BODY} bytes`)
      chunks.push(chunk)
    }
    const text = Buffer.concat(chunks).toString('utf8')
    if (text.trim() === '') return {}
    let body
    try {
      body = JSON.parse(text)
    } catch {
      throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', 'the body is not JSON')
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', 'the body must be a JSON object')
    return body
  }

  /**
   * Which letters a requeue or purge takes: `{ sequences: [...] }` (one letter each: the page's rows), `{ ids: [...] }` or `{ all: true }`.
   * @param {Record<string, unknown>} body
   * @returns {import('protoqueue').DeadLetterFilter}
   */
  const letterFilter = (body) => {
    if (body.all === true && body.ids === undefined && body.sequences === undefined) return {}
    const { ids, sequences } = body
    if (ids === undefined && Array.isArray(sequences) && sequences.length > 0 && sequences.length <= MAX_LETTERS && sequences.every((n) => Number.isSafeInteger(n) && n >= 1)) {
      return { sequences: /** @type {number[]} */ (sequences) }
    }
    if (sequences === undefined && Array.isArray(ids) && ids.length > 0 && ids.length <= MAX_LETTERS && ids.every((id) => typeof id === 'string' && id.length > 0)) {
      return { ids: /** @type {string[]} */ (ids) }
    }
    throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', `say which letters: { "sequences": [<letter sequence>, ...] } or { "ids": ["<task id>", ...] } (1 to ${MAX_LETTERS}), or { "all": true }`)
  }

  /**
   * The task a cancel names: `{ id: "<task id>" }`.
   * @param {Record<string, unknown>} body
   */
  const taskIdOf = (body) => {
    if (typeof body.id !== 'string' || body.id === '') throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', 'say which task: { "id": "<task id>" }')
    return body.id
  }

  /**
   * The POST actions, by the last path segment(s).
   * @type {Record<string, (queue: import('protoqueue').Protoqueue, body: Record<string, unknown>) => Promise<Record<string, unknown>>>}
   */
  const actions = {
    pause: async (queue) => (await queue.pause(), { paused: true }),
    resume: async (queue) => (await queue.resume(), { paused: false }),
    'dead-letters/requeue': async (queue, body) => ({ requeued: await queue.requeueDeadLetters(letterFilter(body)) }),
    'dead-letters/purge': async (queue, body) => ({ purged: await queue.purgeDeadLetters(letterFilter(body)) }),
    // `true` when the task will not complete; `false` when it ended first or nothing is known of it.
    'tasks/cancel': async (queue, body) => ({ cancelled: await queue.cancel(taskIdOf(body)) }),
  }

  /**
   * Refuses a state change without the token (its Origin was checked with every request's).
   * @param {http.IncomingMessage} req
   */
  const checkStateChange = (req) => {
    if (!sameToken(req.headers[TOKEN_HEADER], config.token)) {
      throw new HttpError(401, 'ERR_PQ_UNAUTHORIZED', `a state change needs the dashboard's token in the ${TOKEN_HEADER} header`)
    }
  }

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  const handle = async (req, res) => {
    const { path, query } = requestTarget(req.url)
    const hostHeader = req.headers.host
    const host = hostHeader === undefined ? undefined : hostOf(hostHeader)
    if (hostHeader !== undefined && host === undefined) throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', 'the Host header is not a host')
    if (config.local && (host === undefined || !isLoopback(new URL(`http://${host}`).hostname))) {
      throw new HttpError(403, 'ERR_PQ_FORBIDDEN', 'this dashboard answers only requests for a loopback address (Host header)')
    }
    // Another site's page (or a sandboxed one: `null`) gets nothing, not only no state change.
    const origin = req.headers.origin
    if (origin !== undefined && !sameOrigin(origin, host)) {
      throw new HttpError(403, 'ERR_PQ_FORBIDDEN', 'a request with an Origin must come from the dashboard\'s own page')
    }
    const method = req.method ?? 'GET'
    if (method === 'GET' || method === 'HEAD') {
      if (path === '/' || path === '/index.html') return send(res, 200, 'text/html; charset=utf-8', pageFor())
      if (path === '/favicon.svg' || path === '/favicon.ico') return send(res, 200, 'image/svg+xml', FAVICON, 'public, max-age=86400')
      const asset = assets[path]
      if (asset) return send(res, 200, asset.type, readFileSync(asset.file), 'public, max-age=300')
      if (path === '/api/overview') return sendJson(res, 200, overview())
      const letters = /^\/api\/queues\/([^/]+)\/dead-letters$/.exec(path)
      if (letters) {
        const followed = await queueNamed(letters[1])
        const limit = integerParameter(query, 'limit', 100, MAX_LETTERS)
        const after = letterCursor(query.get('cursor'))
        const queue = await sampler.queueOf(followed)
        // Oldest first, as `getDeadLetters` reads them: the next page is what follows the last
        // letter shown. Letters are only ever added after it, so of the oldest `shown + limit`
        // stored now, at most `shown` come before it.
        const wanted = Math.min(MAX_LETTERS_READ, after.shown + limit)
        const read = await queue.getDeadLetters(wanted)
        const page = read.filter((letter) => letter.sequence > after.sequence).slice(0, limit)
        const shown = after.shown + page.length
        const more = read.length === wanted && page.length > 0 && shown < MAX_LETTERS_READ
        return sendJson(res, 200, {
          queue: followed.info.streamName,
          total: followed.stats?.deadLettered,
          letters: page.map(letterView),
          cursor: more ? `${shown}.${page[page.length - 1].sequence}` : undefined,
        })
      }
      const tasks = /^\/api\/queues\/([^/]+)\/tasks$/.exec(path)
      if (tasks) {
        const followed = await queueNamed(tasks[1])
        const state = query.get('state')
        if (state === null || !TASK_STATES.includes(state)) {
          throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', `state must be one of ${TASK_STATES.join(', ')} (dead letters: /dead-letters)`)
        }
        const limit = integerParameter(query, 'limit', DEFAULT_TASKS, MAX_TASKS)
        const cursor = query.get('cursor')
        if (cursor === '') throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', 'cursor must be the cursor of the page before')
        const queue = await sampler.queueOf(followed)
        const page = await queue.getTasks({ state: /** @type {import('protoqueue').TaskState} */ (state), limit, cursor: cursor ?? undefined })
        return sendJson(res, 200, {
          queue: followed.info.streamName,
          state,
          total: countOf(followed.stats, state),
          tasks: page.tasks.map(taskRow),
          cursor: page.cursor,
        })
      }
      const task = /^\/api\/queues\/([^/]+)\/task$/.exec(path)
      if (task) {
        const followed = await queueNamed(task[1])
        const id = query.get('id')
        if (id === null || id === '') throw new HttpError(400, 'ERR_PQ_BAD_REQUEST', 'say which task: ?id=<task id>, percent-encoded')
        const queue = await sampler.queueOf(followed)
        const info = await queue.getTask(id)
        if (info === undefined) {
          throw new HttpError(404, 'ERR_PQ_TASK_NOT_FOUND', `no task ${JSON.stringify(shortened(id, 80))} in ${followed.info.streamName} (never enqueued, or it ended and no record of it is kept)`)
        }
        // A dead letter carries the task as enqueued: its data and metadata (the newest letter of the id).
        const letters = info.state === 'deadLettered' ? await queue.getDeadLetters(MAX_LETTERS_READ, { ids: [id] }) : []
        const newest = letters[letters.length - 1]
        const shown = { ...info, task: info.task && storedDetail(info.task) }
        return sendJson(res, 200, { queue: followed.info.streamName, task: shown, letter: newest && letterDetail(newest), letters: letters.length })
      }
      const schedules = /^\/api\/queues\/([^/]+)\/schedules$/.exec(path)
      if (schedules) {
        const followed = await queueNamed(schedules[1])
        // Without options.schedules a queue has none (and getSchedules() would refuse).
        if (!followed.info.schedules) return sendJson(res, 200, { queue: followed.info.streamName, enabled: false, schedules: [] })
        const queue = await sampler.queueOf(followed)
        const read = await queue.getSchedules()
        return sendJson(res, 200, { queue: followed.info.streamName, enabled: true, schedules: read.map(scheduleView) })
      }
      const workers = /^\/api\/queues\/([^/]+)\/workers$/.exec(path)
      if (workers) {
        const followed = await queueNamed(workers[1])
        const queue = await sampler.queueOf(followed)
        // As getWorkers() lists them: the workers that wrote their record in the last 20 s.
        return sendJson(res, 200, { queue: followed.info.streamName, workers: await queue.getWorkers() })
      }
      const one = /^\/api\/queues\/([^/]+)$/.exec(path)
      if (one) {
        const followed = await queueNamed(one[1])
        return sendJson(res, 200, overview().queues.find((queue) => queue.name === followed.info.streamName))
      }
      throw new HttpError(404, 'ERR_PQ_NOT_FOUND', `no page ${path}`)
    }
    if (method === 'POST') {
      const action = /^\/api\/queues\/([^/]+)\/(pause|resume|dead-letters\/requeue|dead-letters\/purge|tasks\/cancel)$/.exec(path)
      if (!action) throw new HttpError(404, 'ERR_PQ_NOT_FOUND', `no action ${path}`)
      checkStateChange(req)
      const body = await readJson(req)
      const followed = await queueNamed(action[1])
      const queue = await sampler.queueOf(followed)
      const result = await actions[action[2]](queue, body)
      // The page shows the effect at once, not a sample later.
      await sampler.sampleOne(followed)
      return sendJson(res, 200, result)
    }
    res.setHeader('Allow', 'GET, HEAD, POST')
    throw new HttpError(405, 'ERR_PQ_BAD_REQUEST', `method ${method} is not allowed`)
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (err instanceof HttpError) return sendJson(res, err.status, { error: { code: err.code, message: err.message } })
      const code = err && typeof err === 'object' && typeof err.code === 'string' && err.code.startsWith('ERR_PQ_') ? err.code : 'ERR_PQ_INTERNAL'
      return sendJson(res, statusOf(code), { error: { code, message: describeError(err).replace(/^ERR_PQ_[A-Z_]+: /, '') } })
    })
  })
  try {
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(config.port, config.host, () => {
        server.off('error', reject)
        resolve(undefined)
      })
    })
  } catch (err) {
    await sampler.close()
    const code = err && typeof err === 'object' && 'code' in err ? String(err.code) : 'unknown'
    throw new ProtoqueueError('ERR_PQ_LISTEN', `dashboard: cannot listen on ${config.host}:${config.port} (${code})`, { cause: err })
  }
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : config.port
  const shownHost = config.host.includes(':') ? `[${config.host}]` : config.host
  let closing
  return {
    url: `http://${shownHost}:${port}/`,
    host: config.host,
    port,
    close() {
      closing ??= (async () => {
        await new Promise((resolve) => {
          server.close(() => resolve(undefined))
          server.closeAllConnections()
        })
        await sampler.close()
      })()
      return closing
    },
  }
}

/**
 * @param {http.ServerResponse} res
 * @param {number} status
 * @param {string} type
 * @param {string | Buffer} body
 * @param {string} [cache]
 */
function send(res, status, type, body, cache = 'no-store') {
  if (res.headersSent) return
  res.writeHead(status, {
    'Content-Type': type,
    'Cache-Control': cache,
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Content-Security-Policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
  })
  res.end(res.req.method === 'HEAD' ? undefined : body)
}

/**
 * @param {http.ServerResponse} res
 * @param {number} status
 * @param {unknown} value
 */
function sendJson(res, status, value) {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value))
}

module.exports = { dashboard, isLoopback, TOKEN_HEADER }
