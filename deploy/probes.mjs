// The HTTP side of the example processes: /metrics for Prometheus (the queue's `metrics()`),
// /healthz (the process is alive) and /readyz (it is connected and not shutting down).
import { createServer } from 'node:http'

const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8'

/**
 * The queue's metrics in the Prometheus text format. `metrics()` arrived in a later version of
 * protoqueue than some installs have: without it, an empty exposition that says so.
 */
async function metricsOf(queue) {
  if (typeof queue.metrics !== 'function') return '# protoqueue: queue.metrics() is not available in this version of protoqueue\n'
  return queue.metrics()
}

/**
 * Serves the probes on `port` (0: any free one); resolves to the server once it listens.
 * @param {{ queue: { metrics?: () => Promise<string> }, port: number, ready: () => boolean, log: (line: string) => void }} options
 */
export async function serveProbes({ queue, port, ready, log }) {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end()
    } else if (path === '/metrics') {
      metricsOf(queue).then(
        (text) => res.writeHead(200, { 'Content-Type': PROMETHEUS_TEXT }).end(text),
        (err) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`# metrics failed: ${err?.code ?? 'error'}\n`),
      )
    } else if (path === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n')
    } else if (path === '/readyz') {
      const ok = ready()
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'text/plain' }).end(ok ? 'ready\n' : 'not ready\n')
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n')
    }
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '0.0.0.0', resolve)
  })
  log(`probes listening on :${server.address().port} (/metrics, /healthz, /readyz)`)
  return server
}

/** An integer from the environment variable `name`, or `fallback`. */
export function intEnv(name, fallback) {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(text)}`)
  return n
}

/** One log line: a timestamp, the process's role and the message. */
export const logger = (role) => (line) => process.stdout.write(`${new Date().toISOString()} ${role} ${line}\n`)
