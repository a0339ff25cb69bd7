// @ts-check
'use strict'
// The queue configuration the command line's connection flags and environment describe, as the
// library's `ProtoqueueConfig`. Secrets come from files or the environment, never from flags
// (flags show in `ps` and shell history); nothing here prints them.

const { readFileSync } = require('node:fs')

const { usage } = require('./exit.js')

/**
 * The connection flags, as parsed.
 * @typedef {object} ConnectionFlags
 * @property {string} [server] NATS URL(s), else `NATS_URL`; credentials in it are refused (`NATS_URL` may hold them)
 * @property {string} [stream] else `PROTOQUEUE_STREAM`
 * @property {string} [subject] else `PROTOQUEUE_SUBJECT`
 * @property {string} [creds] `.creds` file, else `NATS_CREDS`
 * @property {string} [user] else `NATS_USER`
 * @property {string} [passwordFile] file holding the password, else `NATS_PASSWORD`
 * @property {string} [password] refused: secrets do not go in flags
 * @property {string} [token] refused: secrets do not go in flags
 * @property {string} [tokenFile] file holding the token, else `NATS_TOKEN`
 * @property {string} [nkey] file holding the NKey seed, else `NATS_NKEY_SEED`
 * @property {boolean} [tls] require TLS
 * @property {string} [tlsCa] else `NATS_CA`
 * @property {string} [tlsCert] else `NATS_CERT`
 * @property {string} [tlsKey] else `NATS_KEY`
 * @property {boolean} [tlsHandshakeFirst]
 * @property {number} [connectTimeout] ms
 */

/**
 * A secret read from `file`: its content without the trailing newline. Errors name the file,
 * never its content.
 * @param {string} file
 * @param {string} flag
 */
function readSecret(file, flag) {
  let text
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    const reason = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : 'unreadable'
    throw usage(`${flag} ${file}: cannot read the file (${reason})`)
  }
  const secret = text.replace(/\r?\n$/, '')
  if (!secret) throw usage(`${flag} ${file}: the file is empty`)
  return secret
}

/**
 * Refuses secrets given as flags: `--password`, `--token`, and credentials in `--server`'s URL
 * (`nats://user:pass@host`, or `nats://token@host`, which NATS reads as a token). The messages
 * name where the secret goes instead, never the URL.
 * @param {ConnectionFlags} flags
 */
function refuseSecretFlags(flags) {
  const why = '(flags show in `ps` and shell history)'
  if (flags.password !== undefined) throw usage(`--password is not taken ${why}: use --password-file <file> or NATS_PASSWORD`)
  if (flags.token !== undefined) throw usage(`--token is not taken ${why}: use --token-file <file> or NATS_TOKEN`)
  // A host never holds an `@`: one means user info. Read as the library reads a list, it runs
  // from the first URL's scheme to the last `@` (a password may hold an unencoded `,` or `/`).
  const at = flags.server?.lastIndexOf('@') ?? -1
  if (flags.server === undefined || at === -1) return
  const userInfo = flags.server.slice(0, at).replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')
  if (userInfo.includes(':')) {
    throw usage(`--server: a URL with a password is not taken ${why}: give --user <name> (or NATS_USER) with --password-file <file> or NATS_PASSWORD, or the whole URL in NATS_URL`)
  }
  throw usage(`--server: a URL with a token (nats://<token>@host) is not taken ${why}: use --token-file <file> or NATS_TOKEN, or the whole URL in NATS_URL`)
}

/**
 * `ProtoqueueConfig` from the flags and the environment. A flag wins over its variable; any
 * credential flag turns the credential variables off (so a `NATS_TOKEN` in the shell never
 * clashes with `--creds`).
 * @param {ConnectionFlags} flags
 * @param {NodeJS.ProcessEnv} env
 * @returns {import('protoqueue').ProtoqueueConfig}
 */
function queueConfig(flags, env) {
  refuseSecretFlags(flags)
  const streamName = flags.stream ?? env.PROTOQUEUE_STREAM
  const subject = flags.subject ?? env.PROTOQUEUE_SUBJECT
  if (!streamName) throw usage('which queue? Give --stream <name> (or set PROTOQUEUE_STREAM)')
  // An operator's tool: never create a queue because of a typo, and take the dead-letter
  // stream's retention as the queue's owner made it. Without a subject, the queue's own (from
  // its stream on the server: `withSubjectFromServer`).
  return { streamName, subject: subject ?? '', createStreams: false, ...connectionConfig(flags, env) }
}

/**
 * `config` with its subject filled in from the server when none was given: the queue's stream
 * says which subject (or subject tree) it holds, and its priorities and schedules follow from it
 * once connected.
 * @param {import('protoqueue').ProtoqueueConfig} config
 * @param {typeof import('protoqueue').listQueues} listQueues
 * @returns {Promise<import('protoqueue').ProtoqueueConfig>}
 */
async function withSubjectFromServer(config, listQueues) {
  if (config.subject) return config
  const { streamName, subject: _none, createStreams: _create, ...connection } = config
  const { queues } = await listQueues(connection)
  const found = queues.find((queue) => queue.streamName === streamName)
  if (!found) {
    throw usage(`no queue with stream ${JSON.stringify(streamName)} on the server (see protoqueue queues, or give --subject)`)
  }
  return { ...config, subject: found.subject }
}

/**
 * Where and how to connect (`url`, `auth`, `tls`, `options.connectTimeout`) from the flags and
 * the environment, as `queueConfig` reads them, without a queue: for commands over every queue
 * (`dashboard`).
 * @param {ConnectionFlags} flags
 * @param {NodeJS.ProcessEnv} env
 * @returns {Omit<import('protoqueue').ProtoqueueConfig, 'streamName' | 'subject'>}
 */
function connectionConfig(flags, env) {
  refuseSecretFlags(flags)
  /** @type {import('protoqueue').AuthOptions} */
  const auth = {}
  const byFlag = flags.creds !== undefined || flags.user !== undefined || flags.passwordFile !== undefined || flags.tokenFile !== undefined || flags.nkey !== undefined
  if (byFlag) {
    if (flags.creds !== undefined) auth.credsFile = flags.creds
    if (flags.user !== undefined) auth.user = flags.user
    if (flags.passwordFile !== undefined) auth.pass = readSecret(flags.passwordFile, '--password-file')
    else if (flags.user !== undefined && env.NATS_PASSWORD) auth.pass = env.NATS_PASSWORD
    if (flags.tokenFile !== undefined) auth.token = readSecret(flags.tokenFile, '--token-file')
    if (flags.nkey !== undefined) auth.nkeySeed = readSecret(flags.nkey, '--nkey')
  } else {
    if (env.NATS_CREDS) auth.credsFile = env.NATS_CREDS
    if (env.NATS_USER) auth.user = env.NATS_USER
    if (env.NATS_PASSWORD) auth.pass = env.NATS_PASSWORD
    if (env.NATS_TOKEN) auth.token = env.NATS_TOKEN
    if (env.NATS_NKEY_SEED) auth.nkeySeed = env.NATS_NKEY_SEED
  }
  if (auth.user !== undefined && auth.pass === undefined) {
    throw usage('--user needs a password: --password-file <file> or NATS_PASSWORD')
  }
  if (auth.pass !== undefined && auth.user === undefined) {
    throw usage('a password needs a user: --user <name> or NATS_USER')
  }

  /** @type {import('protoqueue').TlsOptions} */
  const tls = {}
  const caFile = flags.tlsCa ?? env.NATS_CA
  const certFile = flags.tlsCert ?? env.NATS_CERT
  const keyFile = flags.tlsKey ?? env.NATS_KEY
  if (caFile) tls.caFile = caFile
  if (certFile) tls.certFile = certFile
  if (keyFile) tls.keyFile = keyFile
  if (flags.tlsHandshakeFirst) tls.handshakeFirst = true
  const wantsTls = flags.tls === true || Object.keys(tls).length > 0

  /** @type {Omit<import('protoqueue').ProtoqueueConfig, 'streamName' | 'subject'>} */
  const config = {}
  if (flags.server !== undefined) config.url = flags.server
  if (Object.keys(auth).length > 0) config.auth = auth
  if (wantsTls) config.tls = Object.keys(tls).length > 0 ? tls : true
  if (flags.connectTimeout !== undefined) config.options = { connectTimeout: flags.connectTimeout }
  return config
}

module.exports = { queueConfig, withSubjectFromServer, connectionConfig, readSecret }
