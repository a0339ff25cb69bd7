// Credentials written into URLs never reach an error message, whatever the password holds
// (',', '@', '/', ':'): from the constructor (config.url) or from connect(url).
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { Protoqueue } from 'protoqueue'

import { uniqueQueue } from './helpers/nats'

const SECRET = 'hunter'
/** Unreachable on purpose (port 1): connect() fails fast with a short connectTimeout. */
const URLS = [
  `nats://alice:${SECRET},2@127.0.0.1:1`,
  `nats://alice:4222,${SECRET}@127.0.0.1:1`,
  `nats://alice:${SECRET}/2@127.0.0.1:1`,
  `nats://alice:${SECRET}@2@127.0.0.1:1`,
  `nats://alice:${SECRET}?x@127.0.0.1:1`,
  `${SECRET},x@127.0.0.1:1`,
  `nats://127.0.0.1:1,nats://alice:${SECRET}@127.0.0.1:1`,
  `nats://alice:${SECRET}@127.0.0.1:1`,
]

/** The error thrown by `run`, which must be one. */
async function errorOf(run: () => Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await run()
  } catch (err) {
    return err as Error & { code?: string }
  }
  assert.fail('expected an error')
}

function assertHidden(err: Error & { code?: string }, url: string) {
  assert.ok(['ERR_PQ_INVALID_CONFIG', 'ERR_PQ_CONNECT'].includes(err.code ?? ''), `${url}: ${err.code}`)
  for (const text of [err.message, String(err), err.stack ?? '', JSON.stringify(err)]) {
    assert.ok(!text.includes(SECRET), `${url} shows its password: ${text}`)
  }
}

describe('passwords in URLs are never shown', () => {
  const options = { connectTimeout: 1_000 }

  test('config.url, then connect()', async () => {
    for (const url of URLS) {
      const err = await errorOf(async () => {
        const queue = new Protoqueue({ ...uniqueQueue('url'), url, options })
        await queue.connect()
      })
      assertHidden(err, url)
    }
  })

  test('connect(url)', async () => {
    for (const url of URLS) {
      const queue = new Protoqueue({ ...uniqueQueue('url'), options })
      assertHidden(await errorOf(() => queue.connect(url)), url)
    }
  })
})
