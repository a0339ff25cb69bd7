// The limits of the configuration: every duration option has a maximum (2^31 - 1 ms), names and
// subjects have maximum lengths. Just inside works against a real nats-server; just outside
// throws ERR_PQ_INVALID_CONFIG from the constructor, before anything is sent.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type ProtoqueueError } from 'protoqueue'

import { NatsServer, uniqueQueue } from './helpers/nats'
import { deferred, within } from './helpers/wait'

/** The largest duration option, in ms (README: Configuration). */
const MAX_DURATION = 2 ** 31 - 1
const MAX_SUBJECT = 1024
const MAX_STREAM_NAME = 251
const DURATIONS = ['ackWait', 'retryDelay', 'enqueueTimeout', 'connectTimeout', 'taskTimeout', 'shutdownTimeout']

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

function assertInvalid(config: unknown, what: string) {
  assert.throws(
    () => new Protoqueue(config as never),
    (err: ProtoqueueError) => err instanceof Error && err.code === 'ERR_PQ_INVALID_CONFIG',
    `accepted ${what}`,
  )
}

/** A stream name and subject of exactly the given lengths, unique to this run. */
function namesOf(streamLength: number, subjectLength: number) {
  const { streamName } = uniqueQueue('lim')
  const subject = `tasks.${streamName}.`
  return {
    streamName: streamName.padEnd(streamLength, 'S'),
    subject: subject.padEnd(subjectLength, 'x'),
  }
}

describe('configuration limits', () => {
  test('each duration option takes at most 2^31 - 1 ms', () => {
    for (const key of DURATIONS) {
      new Protoqueue({ ...uniqueQueue(), options: { [key]: MAX_DURATION } })
      for (const value of [MAX_DURATION + 1, 9.3e12, 1e13, Number.MAX_SAFE_INTEGER]) {
        assertInvalid({ ...uniqueQueue(), options: { [key]: value } }, `${key}: ${value}`)
      }
    }
  })

  test('subjects take at most 1024 bytes, stream names 251', () => {
    new Protoqueue(namesOf(MAX_STREAM_NAME, MAX_SUBJECT))
    assertInvalid(namesOf(MAX_STREAM_NAME, MAX_SUBJECT + 1), 'a subject of 1025 bytes')
    assertInvalid(namesOf(MAX_STREAM_NAME, 5_000), 'a subject of 5000 bytes')
    assertInvalid(namesOf(MAX_STREAM_NAME + 1, 20), 'a stream name of 252 bytes')
  })

  test('a queue at every maximum works against the server', async () => {
    const options = Object.fromEntries(DURATIONS.map((key) => [key, MAX_DURATION]))
    const queue = new Protoqueue<{ n: number }>({
      ...namesOf(MAX_STREAM_NAME, MAX_SUBJECT),
      options: { ...options, maxRetries: 1 },
    })
    await queue.connect(server.url)
    const calls: string[] = []
    const first = deferred()
    await queue.process(async (task) => {
      calls.push(task.id)
      first.resolve()
      return { success: false, error: 'retry much later' }
    })
    const id = await queue.enqueue({ data: { n: 1 } })
    await within('the task is handled', first.promise)
    // The NAK carries the longest retry delay: no redelivery now (an overflowed delay is none).
    await new Promise((resolve) => setTimeout(resolve, 1_500))
    assert.deepEqual(calls, [id])
    const stats = await queue.getStats()
    assert.equal(stats.inFlight, 1, 'the task waits for its retry')
    assert.equal(stats.deadLettered, 0)
    await queue.disconnect()
  })
})
