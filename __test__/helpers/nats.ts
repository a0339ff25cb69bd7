// Real nats-server processes for tests: JetStream on, loopback only, a temp store dir, a free port.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { install as keepLogs, keepLog } from './logs'

const root = join(__dirname, '..', '..')

export function natsServerBin(): string {
  const name = process.platform === 'win32' ? 'nats-server.exe' : 'nats-server'
  const bin = process.env.NATS_SERVER_BIN ?? join(root, '.tools', 'nats-server', 'bin', name)
  if (!existsSync(bin)) throw new Error(`nats-server not found at ${bin}: run \`node scripts/setup.mjs\``)
  return bin
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

export class NatsServer {
  private process?: ChildProcess
  readonly url: string

  private constructor(
    readonly port: number,
    readonly storeDir: string,
    private readonly extraArgs: string[],
  ) {
    this.url = `nats://127.0.0.1:${port}`
  }

  /** Starts a server and resolves once it reports ready (JetStream included). */
  static async start(extraArgs: string[] = []): Promise<NatsServer> {
    const server = new NatsServer(await freePort(), mkdtempSync(join(tmpdir(), 'pq-nats-')), extraArgs)
    await server.launch()
    return server
  }

  /**
   * Starts a server with a configuration file holding `config` (e.g. an `authorization { }` or
   * `tls { }` block); the file lives in the store folder, removed by `stop()`.
   */
  static async startWithConfig(config: string): Promise<NatsServer> {
    const storeDir = mkdtempSync(join(tmpdir(), 'pq-nats-'))
    const file = join(storeDir, 'nats.conf')
    writeFileSync(file, config)
    const server = new NatsServer(await freePort(), storeDir, ['-c', file])
    await server.launch()
    return server
  }

  /** Starts it again on the same port and store, after `kill()`. */
  async launch(): Promise<void> {
    const args = ['-js', '-a', '127.0.0.1', '-p', String(this.port), '-sd', this.storeDir, ...this.extraArgs]
    const source = `nats-server :${this.port}`
    keepLogs()
    for (let attempt = 1; ; attempt++) {
      const child = spawn(natsServerBin(), args, { stdio: ['ignore', 'ignore', 'pipe'] })
      this.process = child
      try {
        await waitForReady(child, source)
        child.stderr?.on('data', (chunk: Buffer) => keepLog(source, chunk.toString()))
        return
      } catch (err) {
        child.kill('SIGKILL')
        if (attempt >= 5) throw err // the port may linger briefly after a kill: try again
        await new Promise((r) => setTimeout(r, 200 * attempt))
      }
    }
  }

  /** kill -9: no clean shutdown, as in a crash. */
  async kill(): Promise<void> {
    const child = this.process
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited
  }

  /** Starts again on the same port and store after `kill()`. */
  async restart(): Promise<void> {
    await this.kill()
    await this.launch()
  }

  async stop(): Promise<void> {
    await this.kill()
    rmSync(this.storeDir, { recursive: true, force: true })
  }
}

/** Resolves once the server says it is ready; what it said so far is kept as `source`'s log. */
function waitForReady(child: ChildProcess, source: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let log = ''
    const timer = setTimeout(() => done(new Error(`nats-server not ready within 15 s:\n${log}`)), 15_000)
    const done = (err?: Error) => {
      clearTimeout(timer)
      child.stderr?.removeListener('data', onData)
      child.removeListener('exit', onExit)
      err ? reject(err) : resolve()
    }
    const onData = (chunk: Buffer) => {
      log += chunk.toString()
      if (log.includes('Server is ready')) {
        keepLog(source, `ready (pid ${child.pid}; its start-up banner left out)`)
        done()
      }
    }
    const onExit = (code: number | null) => done(new Error(`nats-server exited (${code}):\n${log}`))
    child.stderr?.on('data', onData)
    child.once('exit', onExit)
  })
}

/** A JetStream cluster of `size` servers on loopback, routed to each other. */
export class NatsCluster {
  private constructor(readonly nodes: NatsServer[]) {}

  static async start(size = 3): Promise<NatsCluster> {
    const routePorts = new Set<number>()
    while (routePorts.size < size) routePorts.add(await freePort())
    const routes = [...routePorts].map((port) => `nats-route://127.0.0.1:${port}`).join(', ')
    const nodes: NatsServer[] = []
    for (const [i, port] of [...routePorts].entries()) {
      const config = `server_name: n${i + 1}\ncluster {\n  name: pq_test_cluster\n  listen: 127.0.0.1:${port}\n  routes: [${routes}]\n}\n`
      nodes.push(await NatsServer.startWithConfig(config))
    }
    return new NatsCluster(nodes)
  }

  /** Every node's client URL, comma-separated, as a user lists a cluster. */
  get url(): string {
    return this.nodes.map((node) => node.url).join(',')
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.stop()))
  }
}

/** Runs `body` against a server of its own, stopped afterwards. */
export async function withServer<T>(body: (server: NatsServer) => Promise<T>): Promise<T> {
  const server = await NatsServer.start()
  try {
    return await body(server)
  } finally {
    await server.stop()
  }
}

let counter = 0
/** A stream name and subject no other test uses. */
export function uniqueQueue(prefix = 'q'): { streamName: string; subject: string } {
  counter += 1
  const tag = `${prefix}_${process.pid}_${counter}_${Date.now().toString(36)}`
  return { streamName: tag, subject: `tasks.${tag}` }
}
