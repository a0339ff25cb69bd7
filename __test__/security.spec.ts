// Credentials and TLS through the public API, against nats-server processes that require them:
// the right credentials work end to end, wrong ones reject at once with ERR_PQ_AUTH, TLS
// mismatches with ERR_PQ_TLS, mistakes with ERR_PQ_INVALID_CONFIG before any connection is
// opened, and no secret reaches the logs of a `verbose: true` process.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, connect as tcpConnect, type Server } from 'node:net'
import { after, before, describe, test } from 'node:test'

import { createUser } from '@nats-io/nkeys'
import { Protoqueue, type AuthOptions, type ProtoqueueConfig, type TlsOptions } from 'protoqueue'

import { Pki } from './helpers/certs'
import { Child, fixture } from './helpers/child'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { deferred, rejectsWithCode, within } from './helpers/wait'

/** A refusal must come long before the connect timeout these tests set. */
const CONNECT_TIMEOUT = 20_000
const PROMPTLY = 4_000

const PASSWORD = `pw-${process.pid}-${Date.now()}`
const TOKEN = `tok-${process.pid}-${Date.now()}`
const NKEY_USER = createUser()
const NKEY_SEED = new TextDecoder().decode(NKEY_USER.getSeed())

let pki: Pki
let users: NatsServer // user/password and NKey
let tokens: NatsServer
let tlsOnly: NatsServer
before(async () => {
  pki = new Pki()
  ;[users, tokens, tlsOnly] = await Promise.all([
    NatsServer.startWithConfig(
      `authorization { users: [ { user: ada, password: ${JSON.stringify(PASSWORD)} }, { nkey: ${NKEY_USER.getPublicKey()} } ] }`,
    ),
    NatsServer.startWithConfig(`authorization { token: ${JSON.stringify(TOKEN)} }`),
    NatsServer.startWithConfig(pki.serverTls()),
  ])
})
after(async () => {
  await Promise.all([users, tokens, tlsOnly].map((server) => server?.stop()))
  pki?.remove()
})

const tlsUrl = (server: NatsServer) => `tls://127.0.0.1:${server.port}`

function queueWith(security: { auth?: AuthOptions; tls?: boolean | TlsOptions } = {}) {
  return new Protoqueue<{ n: number }>({ ...uniqueQueue('sec'), ...security, options: { connectTimeout: CONNECT_TIMEOUT } })
}

/** Connects, enqueues a task, has it processed, disconnects. */
async function assertWorks(queue: Protoqueue<{ n: number }>, url: string) {
  await queue.connect(url)
  const id = await queue.enqueue({ data: { n: 1 } })
  const handled = deferred<string>()
  await queue.process(async (task) => {
    handled.resolve(task.id)
    return { success: true }
  })
  assert.equal(await within('the task is processed', handled.promise), id)
  await queue.disconnect()
}

/** Expects connect() to reject with `code` well before the connect timeout. */
async function assertRefused(queue: Protoqueue<{ n: number }>, url: string, code: string) {
  const started = Date.now()
  const err = await rejectsWithCode(queue.connect(url), code)
  const waited = Date.now() - started
  assert.ok(waited < PROMPTLY, `rejected after ${waited} ms`)
  return err
}

describe('credentials', () => {
  test('user and password work from config.auth and from the URL', async () => {
    await assertWorks(queueWith({ auth: { user: 'ada', pass: PASSWORD } }), users.url)
    await assertWorks(queueWith(), `nats://ada:${encodeURIComponent(PASSWORD)}@127.0.0.1:${users.port}`)
  })

  test('a token works from config.auth and from the URL', async () => {
    await assertWorks(queueWith({ auth: { token: TOKEN } }), tokens.url)
    await assertWorks(queueWith(), `nats://${TOKEN}@127.0.0.1:${tokens.port}`)
  })

  test('an NKey seed works', async () => {
    await assertWorks(queueWith({ auth: { nkeySeed: NKEY_SEED } }), users.url)
  })

  test('wrong or missing credentials reject at once with ERR_PQ_AUTH', async () => {
    const stranger = new TextDecoder().decode(createUser().getSeed())
    const wrong: Array<[AuthOptions | undefined, string]> = [
      [{ user: 'ada', pass: 'wrong' }, users.url],
      [{ user: 'eve', pass: PASSWORD }, users.url],
      [{ nkeySeed: stranger }, users.url],
      [undefined, users.url],
      [undefined, `nats://ada:wrong@127.0.0.1:${users.port}`],
      [{ token: 'wrong' }, tokens.url],
      [undefined, tokens.url],
    ]
    for (const [auth, url] of wrong) {
      const err = await assertRefused(queueWith({ auth }), url, 'ERR_PQ_AUTH')
      assert.equal(err.name, 'ProtoqueueError')
      assert.ok(!err.message.includes(PASSWORD) && !err.message.includes('wrong@'), err.message)
    }
  })
})

describe('TLS', () => {
  test('a tls:// URL with the CA works end to end; config.tls upgrades a nats:// URL too', async () => {
    await assertWorks(queueWith({ tls: { caFile: pki.path('ca.pem') } }), tlsUrl(tlsOnly))
    await assertWorks(queueWith({ tls: { caFile: pki.path('ca.pem') } }), tlsOnly.url)
  })

  test('a plain client against a TLS-only server fails at once with ERR_PQ_TLS', async () => {
    const err = await assertRefused(queueWith(), tlsOnly.url, 'ERR_PQ_TLS')
    assert.match(err.message, /requires TLS/)
    assert.match(err.message, /tls\.caFile/)
    await assertRefused(queueWith({ tls: { caFile: pki.path('other-ca.pem') } }), tlsUrl(tlsOnly), 'ERR_PQ_TLS')
    // `tls: true` trusts the system's CAs only, which do not know the test CA.
    await assertRefused(queueWith({ tls: true }), tlsOnly.url, 'ERR_PQ_TLS')
  })

  test('a TLS client against a plain server fails at once with ERR_PQ_TLS', async () => {
    const err = await assertRefused(queueWith({ tls: { caFile: pki.path('ca.pem') } }), tokens.url, 'ERR_PQ_TLS')
    assert.match(err.message, /TLS/)
  })

  test('mutual TLS: a client certificate works, none is ERR_PQ_TLS', async () => {
    const mtls = await NatsServer.startWithConfig(pki.serverTls('verify: true'))
    try {
      const withCert = { caFile: pki.path('ca.pem'), certFile: pki.path('client.pem'), keyFile: pki.path('client.key') }
      await assertWorks(queueWith({ tls: withCert }), tlsUrl(mtls))
      const err = await assertRefused(queueWith({ tls: { caFile: pki.path('ca.pem') } }), tlsUrl(mtls), 'ERR_PQ_TLS')
      assert.match(err.message, /tls\.certFile/)
    } finally {
      await mtls.stop()
    }
  })
})

describe('configuration mistakes', () => {
  test('wrong auth and tls settings throw ERR_PQ_INVALID_CONFIG from the constructor', () => {
    const bad: unknown[] = [
      { auth: 'ada:secret' },
      { auth: {} },
      { auth: { user: 'ada' } },
      { auth: { pass: 'secret' } },
      { auth: { user: 'ada', pass: '' } },
      { auth: { user: 'ada', pass: 42 } },
      { auth: { token: 'a', user: 'ada', pass: 'b' } },
      { auth: { token: 'a', nkeySeed: NKEY_SEED } },
      { auth: { nkeySeed: NKEY_USER.getPublicKey() } },
      { auth: { nkeySeed: 'not a seed' } },
      { auth: { credsFile: '' } },
      { auth: { credsFile: 7 } },
      { auth: { password: 'secret' } },
      { tls: 'on' },
      { tls: 1 },
      { tls: { caFile: 5 } },
      { tls: { caFile: '' } },
      { tls: { certFile: 'client.pem' } },
      { tls: { keyFile: 'client.key' } },
      { tls: { handshakeFirst: 'yes' } },
      { tls: { ca: 'ca.pem' } },
      { url: 'nats://ada:secret@127.0.0.1:99999' },
    ]
    for (const extra of bad) {
      const config = { ...uniqueQueue(), ...(extra as object) } as ProtoqueueConfig
      assert.throws(
        () => new Protoqueue(config),
        (err: Error & { code?: string }) =>
          err.code === 'ERR_PQ_INVALID_CONFIG' && !err.message.includes('secret') && !err.message.includes(NKEY_SEED),
        `accepted ${JSON.stringify(extra)}`,
      )
    }
  })

  test('mistakes found by connect() are ERR_PQ_INVALID_CONFIG, before any connection is opened', async () => {
    const connections: unknown[] = []
    const listener: Server = createServer((socket) => {
      connections.push(socket)
      socket.destroy()
    })
    listener.listen(0, '127.0.0.1')
    await once(listener, 'listening')
    const address = listener.address()
    const port = typeof address === 'object' && address ? address.port : 0
    const url = `nats://127.0.0.1:${port}`
    try {
      const cases: Array<[ProtoqueueConfig['auth'], ProtoqueueConfig['tls'], string]> = [
        [{ credsFile: pki.path('missing.creds') }, undefined, url],
        [{ credsFile: pki.path('ca.pem') }, undefined, url],
        [undefined, { caFile: pki.path('missing.pem') }, url],
        [undefined, { caFile: pki.path('server.ext') }, url],
        [undefined, { caFile: pki.path('ca.pem'), certFile: pki.path('client.pem'), keyFile: pki.path('client.pem') }, url],
        [{ token: 'abc' }, undefined, `nats://ada:pw@127.0.0.1:${port}`],
      ]
      for (const [auth, tls, target] of cases) {
        await rejectsWithCode(queueWith({ auth, tls }).connect(target), 'ERR_PQ_INVALID_CONFIG')
      }
      // Connections are accepted in order: once this probe arrives, any earlier one has too.
      const probe = tcpConnect(port, '127.0.0.1')
      await within('the probe connection', once(listener, 'connection'))
      probe.destroy()
      assert.equal(connections.length, 1, 'only the probe connected')
    } finally {
      listener.close()
    }
  })
})

describe('logs', () => {
  test('with verbose: true, passwords, tokens and seeds never appear in the logs, on success or failure', async () => {
    const wrongPassword = `wrong-pw-${process.pid}`
    const wrongToken = `wrong-tok-${process.pid}`
    const strangerSeed = new TextDecoder().decode(createUser().getSeed())
    const attempts = [
      { url: users.url, auth: { user: 'ada', pass: PASSWORD } },
      { url: `nats://ada:${PASSWORD}@127.0.0.1:${users.port}` },
      { url: users.url, auth: { nkeySeed: NKEY_SEED } },
      { url: tokens.url, auth: { token: TOKEN } },
      { url: `nats://${TOKEN}@127.0.0.1:${tokens.port}` },
      { url: users.url, auth: { user: 'ada', pass: wrongPassword } },
      { url: `nats://ada:${wrongPassword}@127.0.0.1:${users.port}` },
      { url: users.url, auth: { nkeySeed: strangerSeed } },
      { url: tokens.url, auth: { token: wrongToken } },
      { url: `nats://${wrongToken}@127.0.0.1:${tokens.port}` },
    ]
    const secrets = [PASSWORD, TOKEN, NKEY_SEED, wrongPassword, wrongToken, strangerSeed]
    const names = uniqueQueue('logs')
    // verbose: true alone, then every crate (the NATS client too) at trace level.
    for (const log of [undefined, 'trace']) {
      const env: Record<string, string> = { STREAM: names.streamName, SUBJECT: names.subject, ATTEMPTS: JSON.stringify(attempts) }
      if (log) env.PROTOQUEUE_LOG = log
      const child = Child.run('node', [fixture('secure-connect.mjs')], env)
      const results = await child.waitForLines(/^attempt \d+ /, attempts.length, 60_000)
      await child.exited
      assert.deepStrictEqual(
        results.map((line) => line.split(' ')[2]),
        [...Array(5).fill('ok'), ...Array(5).fill('ERR_PQ_AUTH')],
        results.join('\n'),
      )
      assert.match(child.stderr, /connected to NATS/, 'logs were written')
      assert.match(child.stderr, /authorization violation/i, 'refusals were logged')
      for (const secret of secrets) {
        assert.ok(!child.stderr.includes(secret), `a secret is in the logs (PROTOQUEUE_LOG=${log})`)
        assert.ok(!child.lines.join('\n').includes(secret), 'a secret is in an error message')
      }
    }
  })
})
