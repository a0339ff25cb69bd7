// The benchmark's own Redis for the BullMQ runs: Debian's `redis-server` (or REDIS_SERVER_BIN),
// loopback only, a free port, a temp dir, configured as BullMQ's production guide asks of a queue's
// Redis: `maxmemory-policy noeviction` (an evicted key is a lost job) and persistence with the
// append-only file, fsynced every second (`appendonly yes`, `appendfsync everysec`; RDB snapshots
// off, so no fork lands in a timed run). JetStream's file store, which the NATS runs use, also
// writes every message to disk and syncs it periodically, so both sides persist alike.
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { freePort } from './nats-server.mjs'

const READY_TIMEOUT_MS = 15_000
/** What to tell the user when there is no redis-server: the BullMQ column is skipped then. */
export const REDIS_MISSING =
  'redis-server (Redis 7 or newer) not found: install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`) ' +
  'or point REDIS_SERVER_BIN at one; skipping the BullMQ runs'

/** The redis-server to start and its version, or undefined when there is none of version 7+. */
export function findRedisServer() {
  const candidates = [process.env.REDIS_SERVER_BIN, 'redis-server', '/usr/bin/redis-server', '/usr/sbin/redis-server'].filter(Boolean)
  for (const bin of candidates) {
    try {
      const text = execFileSync(bin, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      const version = /v=(\d+)\.(\d+)\.(\d+)/.exec(text)
      if (version && Number(version[1]) >= 7) return { bin, version: `redis-server ${version[1]}.${version[2]}.${version[3]}` }
    } catch {
      // not there: try the next
    }
  }
  return undefined
}

/** One inline command over RESP, for the driver's own bookkeeping (INFO, FLUSHALL). */
function command(port, args) {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    let reply = ''
    socket.on('error', reject)
    socket.on('data', (chunk) => {
      reply += chunk
      // Simple replies end with one CRLF; bulk replies ($len) once the length is there.
      const bulk = /^\$(\d+)\r\n/.exec(reply)
      if (bulk ? reply.length >= bulk[0].length + Number(bulk[1]) + 2 : reply.endsWith('\r\n')) {
        socket.end()
        if (reply.startsWith('-')) reject(new Error(`redis: ${reply.trim()}`))
        else resolve(bulk ? reply.slice(bulk[0].length, bulk[0].length + Number(bulk[1])) : reply.slice(1).trim())
      }
    })
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
  })
}

/** Starts redis-server; resolves to { url, pid, version, traffic(), flush(), stop() } once it answers. */
export async function startRedisServer({ bin, version }) {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'pq-bench-redis-'))
  const args = [
    '--bind', '127.0.0.1', '--port', String(port), '--dir', dir,
    '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '',
    '--maxmemory-policy', 'noeviction', '--protected-mode', 'yes', '--daemonize', 'no',
  ]
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  const keep = (chunk) => {
    log = (log + chunk).slice(-4000)
  }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const deadline = Date.now() + READY_TIMEOUT_MS
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode}):\n${log}`)
    try {
      if ((await command(port, ['PING'])) === 'PONG') break
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`redis-server not ready within ${READY_TIMEOUT_MS} ms:\n${log}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const info = async () => {
    const fields = {}
    for (const line of (await command(port, ['INFO', 'stats'])).split('\r\n')) {
      const [key, value] = line.split(':')
      if (value !== undefined) fields[key] = Number(value)
    }
    return fields
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    pid: child.pid,
    version,
    /** Commands the server ran so far (as "messages in"); replies are not counted. */
    async traffic() {
      const stats = await info()
      return { inMsgs: stats.total_commands_processed, outMsgs: Number.NaN, inBytes: stats.total_net_input_bytes, outBytes: stats.total_net_output_bytes }
    },
    /** Empties the server between runs, as the NATS side deletes every stream. */
    async flush() {
      await command(port, ['FLUSHALL', 'SYNC'])
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM')
        await exited
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
