#!/usr/bin/env node
// Many queues in one process: how many connections the server sees and the process's memory.
// `node bench/connections.mjs [--queues 50]` connects that many queues (each its own stream) to a
// fresh nats-server, then starts a worker on each and runs one task through it, and prints the
// server's connection count and the RSS at each step as one JSON line.
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { startNatsServer } from './lib/nats-server.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const { Protoqueue } = createRequire(import.meta.url)(join(root, 'index.js'))
const at = process.argv.indexOf('--queues')
const count = at > 0 ? Number(process.argv[at + 1]) : 50
const mb = () => Math.round(process.memoryUsage().rss / 1e5) / 10
const settle = () => new Promise((resolve) => setTimeout(resolve, 500))

const server = await startNatsServer(root)
try {
  await settle()
  const before = mb()
  const queues = Array.from({ length: count }, (_, i) => new Protoqueue({ streamName: `conn_${i}`, subject: `conn.${i}` }))
  const started = performance.now()
  for (const queue of queues) await queue.connect(server.url)
  const connectMs = Math.round(performance.now() - started)
  await settle()
  const connected = { connections: await server.connections(), rssMb: mb() }
  let done = 0
  await Promise.all(
    queues.map((queue) =>
      queue.process(async () => {
        done++
        return { success: true }
      }),
    ),
  )
  await Promise.all(queues.map((queue) => queue.enqueue({ data: 1 })))
  while (done < count) await new Promise((resolve) => setTimeout(resolve, 20))
  await settle()
  const working = { connections: await server.connections(), rssMb: mb() }
  await Promise.all(queues.map((queue) => queue.disconnect()))
  await settle()
  const after = { connections: await server.connections(), rssMb: mb() }
  console.log(JSON.stringify({ queues: count, rssBeforeMb: before, connectMs, connected, working, after }))
} finally {
  await server.stop()
}
