// One connection for many queues (README "Connect"): queues of one process with the same URL,
// credentials and TLS settings share one NATS connection, counted by the server itself (its
// monitoring endpoint /connz); each queue keeps its own lifecycle.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type TaskData } from 'protoqueue'

import { NatsServer, freePort, uniqueQueue } from './helpers/nats'
import { eventually, within } from './helpers/wait'

let server: NatsServer
let monitor: number

before(async () => {
  monitor = await freePort()
  server = await NatsServer.start(['-m', String(monitor)])
})
after(async () => {
  await server.stop()
})

/** How many client connections the server has. */
async function connections(port = monitor): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${port}/connz`)
  const body = (await response.json()) as { num_connections: number }
  return body.num_connections
}

async function connectionsBecome(count: number, port = monitor): Promise<void> {
  await eventually(`${count} connections on the server`, async () => ((await connections(port)) === count ? true : undefined))
}

/** A queue processing with a handler that records what it got. */
async function recording(queue: Protoqueue): Promise<TaskData[]> {
  const handled: TaskData[] = []
  await queue.process(async (task) => {
    handled.push(task)
    return { success: true }
  })
  return handled
}

describe('one connection for many queues', () => {
  test('queues with the same settings share one connection; each disconnects on its own; the last closes it', async () => {
    const a = new Protoqueue(uniqueQueue('shared'))
    const b = new Protoqueue(uniqueQueue('shared'))
    await Promise.all([a.connect(server.url), b.connect(server.url)])
    assert.equal(await connections(), 1)

    const handled = await recording(b)
    await a.enqueue({ data: 'from a' })
    await a.disconnect()
    await assert.rejects(a.enqueue({ data: 'after' }), { code: 'ERR_PQ_NOT_CONNECTED' })
    assert.equal(await connections(), 1, 'b still holds the connection')

    // b keeps enqueueing and processing while a is gone.
    await b.enqueueBatch(Array.from({ length: 20 }, (_, n) => ({ data: n })))
    await eventually('b processed 20 tasks', async () => (handled.length === 20 ? true : undefined))

    // a connects again, to the connection b holds.
    await a.connect(server.url)
    assert.equal(await connections(), 1)
    await a.enqueue({ data: 'a again' })

    await b.disconnect()
    assert.equal(await connections(), 1, 'a still holds it')
    await a.disconnect()
    await connectionsBecome(0)

    // After the last disconnect a queue gets a fresh connection.
    await a.connect(server.url)
    assert.equal(await connections(), 1)
    await a.enqueue({ data: 'fresh' })
    await a.disconnect()
    await connectionsBecome(0)
  })

  test('Protoqueue.create and connect with the same URL in config or argument share too', async () => {
    const names = [uniqueQueue('create'), uniqueQueue('create'), uniqueQueue('create')]
    const queues = await Promise.all(names.map((n) => Protoqueue.create({ ...n, url: server.url })))
    try {
      assert.equal(await connections(), 1)
    } finally {
      await Promise.all(queues.map((q) => q.disconnect()))
    }
    await connectionsBecome(0)
  })

  test('both queues recover on the shared connection after a server restart', async () => {
    const a = new Protoqueue(uniqueQueue('restart'))
    const b = new Protoqueue(uniqueQueue('restart'))
    await a.connect(server.url)
    await b.connect(server.url)
    const handledA = await recording(a)
    const handledB = await recording(b)
    await a.enqueue({ data: 'before' })
    await b.enqueue({ data: 'before' })
    await eventually('both processed', async () => (handledA.length === 1 && handledB.length === 1 ? true : undefined))

    await server.restart()
    await within('a enqueues after the restart', a.enqueue({ data: 'after' }), 30_000)
    await within('b enqueues after the restart', b.enqueue({ data: 'after' }), 30_000)
    await eventually('both processed after the restart', async () => (handledA.length === 2 && handledB.length === 2 ? true : undefined), 30_000)
    assert.equal(await connections(), 1)
    await a.disconnect()
    await b.disconnect()
    await connectionsBecome(0)
  })

  test('different credentials never share a connection', async () => {
    const port = await freePort()
    const secured = await NatsServer.startWithConfig(
      [
        `http_port: ${port}`,
        'authorization { users = [ { user: alice, password: alice-secret }, { user: bob, password: bob-secret } ] }',
      ].join('\n'),
    )
    try {
      const alice = new Protoqueue({ ...uniqueQueue('alice'), auth: { user: 'alice', pass: 'alice-secret' } })
      const alice2 = new Protoqueue({ ...uniqueQueue('alice'), url: secured.url.replace('nats://', 'nats://alice:alice-secret@') })
      const bob = new Protoqueue({ ...uniqueQueue('bob'), auth: { user: 'bob', pass: 'bob-secret' } })
      await alice.connect(secured.url)
      await alice2.connect()
      await bob.connect(secured.url)
      assert.equal(await connections(port), 2, 'alice (config or URL) shares; bob has his own')
      await Promise.all([alice.disconnect(), alice2.disconnect(), bob.disconnect()])
      await connectionsBecome(0, port)
    } finally {
      await secured.stop()
    }
  })
})
