// @ts-check
'use strict'
// The `protoqueue` command line: parses the arguments, connects, runs one command, disconnects,
// and says how it went with its exit code (see exit.js). Errors go to stderr with their
// `ERR_PQ_*` code; the library's messages already mask credentials in URLs.

const { Protoqueue, listQueues } = require('protoqueue')

const { COMMANDS, queues } = require('./commands.js')
const { runDashboard } = require('./dashboard.js')
const { connectionConfig, queueConfig, withSubjectFromServer } = require('./config.js')
const { CliError, EXIT, fromLibrary } = require('./exit.js')
const { escapeControl } = require('./format.js')
const { parseCommandLine } = require('./program.js')

/**
 * @typedef {import('./commands.js').Io & { env: NodeJS.ProcessEnv }} MainIo
 */

/**
 * Runs the command line `argv` (without `node` and the script); resolves to the exit code.
 * @param {string[]} argv
 * @param {MainIo} io
 * @param {string} version
 * @returns {Promise<number>}
 */
async function main(argv, io, version) {
  const parsed = parseCommandLine(argv, { writeOut: (text) => io.stdout.write(text), writeErr: (text) => io.stderr.write(text) }, version)
  if ('exit' in parsed) return parsed.exit
  const { command, args, options } = parsed.run
  try {
    if (command === 'dashboard') {
      // Over every queue of the server: no queue of its own to connect.
      await runDashboard({ options, io }).catch((err) => {
        throw fromLibrary(err, { connecting: true })
      })
      return EXIT.OK
    }
    if (command === 'queues') {
      // Every queue of the server, as the dashboard lists them: no queue of its own either.
      const connection = connectionConfig(options, io.env)
      const listing = await listQueues(connection).catch((err) => {
        throw fromLibrary(err, { connecting: true })
      })
      queues({ options, io }, listing)
      return EXIT.OK
    }
    const run = COMMANDS[/** @type {keyof typeof COMMANDS} */ (command)]
    let config = queueConfig(options, io.env)
    let queue
    try {
      config = await withSubjectFromServer(config, listQueues)
      // `waitFor` reads task records only on an object with `options.results`; its ttl only
      // governs writing them, which the command line never does.
      if (command === 'wait') config = { ...config, options: { ...config.options, results: { ttl: 1000 } } }
      queue = new Protoqueue(config)
      await queue.connect()
    } catch (err) {
      await queue?.disconnect().catch(() => {})
      throw fromLibrary(err, { connecting: true })
    }
    try {
      await run({ queue, args, options, names: { streamName: config.streamName, subject: config.subject }, io })
    } catch (err) {
      throw fromLibrary(err)
    } finally {
      await queue.disconnect().catch(() => {})
    }
    return EXIT.OK
  } catch (err) {
    const failure = fromLibrary(err)
    report(io, failure, options.json === true)
    return failure.exitCode
  }
}

/**
 * Writes `failure` to stderr: one line for people (control characters escaped: a message can
 * quote a letter's id or the server), a JSON object with `--json`.
 * @param {MainIo} io
 * @param {CliError} failure
 * @param {boolean} asJson
 */
function report(io, failure, asJson) {
  if (asJson) {
    const error = { code: failure.reportedCode, message: failure.message, exitCode: failure.exitCode }
    io.stderr.write(`${JSON.stringify({ error })}\n`)
  } else {
    io.stderr.write(`protoqueue: ${escapeControl(`${failure.code ? `${failure.code}: ` : ''}${failure.message}`)}\n`)
  }
}

module.exports = { main }
