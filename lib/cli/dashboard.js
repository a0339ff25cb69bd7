// @ts-check
'use strict'
// `protoqueue dashboard`: serves the web dashboard (dashboard/ in the package) until Ctrl-C or
// SIGTERM. It connects to the server, not to one queue: no --stream or --subject.

const { dashboard, isLoopback } = require('../../dashboard/index.js')

const { connectionConfig, readSecret } = require('./config.js')
const { usage } = require('./exit.js')
const { escapeControl } = require('./format.js')

/**
 * @param {{ options: Record<string, any>, io: import('./main.js').MainIo, stopped?: Promise<unknown> }} context
 *   `stopped` resolves when the dashboard should stop (default: SIGINT or SIGTERM)
 */
async function runDashboard({ options, io, stopped }) {
  const connection = connectionConfig(options, io.env)
  /** @type {string | undefined} */
  let token
  if (options.authTokenFile !== undefined) token = readSecret(options.authTokenFile, '--auth-token-file')
  else if (io.env.PROTOQUEUE_DASHBOARD_TOKEN) token = io.env.PROTOQUEUE_DASHBOARD_TOKEN
  if (token !== undefined && token.length < 16) throw usage('the dashboard token must have at least 16 characters')
  if (token === undefined && !isLoopback(options.host)) {
    throw usage(`--host ${options.host} is not a loopback address: give a token for the actions that change a queue (--auth-token-file <file> or PROTOQUEUE_DASHBOARD_TOKEN), or bind to 127.0.0.1`)
  }
  const board = await dashboard({ connection, host: options.host, port: options.port, interval: options.interval, token })
  io.stdout.write(`Protoqueue dashboard on ${escapeControl(board.url)} (Ctrl-C to stop)\n`)
  await (stopped ?? signalled())
  await board.close()
}

/** Resolves on the first SIGINT or SIGTERM. */
function signalled() {
  return new Promise((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      resolve(undefined)
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
}

module.exports = { runDashboard }
