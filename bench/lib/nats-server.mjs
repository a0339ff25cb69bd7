// The benchmark's own nats-server: JetStream with file storage in a temp dir, loopback only, a
// free port, from the pinned install in .tools/ (scripts/setup.mjs) or NATS_SERVER_BIN. Its
// HTTP monitoring port tells how many messages crossed the wire, which explains much of a
// system's cost (pull requests, ack confirmations).
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const READY_TIMEOUT_MS = 15_000

export function natsServerBin(root) {
  const bin = process.env.NATS_SERVER_BIN ?? join(root, '.tools', 'nats-server', 'bin', 'nats-server')
  if (!existsSync(bin)) throw new Error(`nats-server not found at ${bin}: run \`node scripts/setup.mjs\``)
  return bin
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer().once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
}

/** Starts nats-server; resolves to { url, pid, version, traffic(), stop() } once it reports ready. */
export async function startNatsServer(root) {
  const bin = natsServerBin(root)
  const version = execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim()
  const port = await freePort()
  const monitorPort = await freePort()
  const storeDir = mkdtempSync(join(tmpdir(), 'pq-bench-'))
  const args = ['-js', '-a', '127.0.0.1', '-p', String(port), '-m', String(monitorPort), '-sd', storeDir]
  const child = spawn(bin, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  await new Promise((resolve, reject) => {
    let log = ''
    const timer = setTimeout(() => reject(new Error(`nats-server not ready within ${READY_TIMEOUT_MS} ms:\n${log}`)), READY_TIMEOUT_MS)
    const onData = (chunk) => {
      log += chunk
      if (!log.includes('Server is ready')) return
      clearTimeout(timer)
      child.stderr.off('data', onData)
      child.stderr.resume() // keep draining so the server never blocks on a full pipe
      resolve()
    }
    child.stderr.on('data', onData)
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`nats-server exited (${code}):\n${log}`))
    })
  })
  return {
    url: `nats://127.0.0.1:${port}`,
    pid: child.pid,
    version,
    /** Client connections the server has now (its /connz). */
    async connections() {
      return (await (await fetch(`http://127.0.0.1:${monitorPort}/connz`)).json()).num_connections
    },
    /** Messages and bytes received from and sent to clients so far. */
    async traffic() {
      const varz = await (await fetch(`http://127.0.0.1:${monitorPort}/varz`)).json()
      return { inMsgs: varz.in_msgs, outMsgs: varz.out_msgs, inBytes: varz.in_bytes, outBytes: varz.out_bytes }
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      }
      rmSync(storeDir, { recursive: true, force: true })
    },
  }
}
