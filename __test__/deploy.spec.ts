// The deployment recipes in deploy/: what can be checked without Docker or Kubernetes. The files
// parse; the images are pinned (nats at the version the project tests, scripts/setup.mjs); every
// file, command and flag they name exists in this repository; Prometheus scrapes the services
// Compose runs; the Grafana dashboard queries only the metric names `metrics()` exposes; the grace
// periods cover the drain. And the example worker drains on SIGTERM against a real nats-server:
// every task handled and acknowledged once, exit code 0.
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { describe, test } from 'node:test'

import yaml from 'js-yaml'
import { Protoqueue } from 'protoqueue'

import { atLeast as versionsAtLeast, versionOf } from '../scripts/prerequisites.mjs'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually, within } from './helpers/wait'

const ROOT = join(__dirname, '..')
const DEPLOY = join(ROOT, 'deploy')
const read = (path: string) => readFileSync(join(DEPLOY, path), 'utf8')
const NATS_VERSION = /NATS_SERVER_VERSION = '([^']+)'/.exec(readFileSync(join(ROOT, 'scripts', 'setup.mjs'), 'utf8'))![1]

/** The metric names `queue.metrics()` exposes (histograms add `_bucket`, `_sum`, `_count`). */
const COUNTERS = ['protoqueue_tasks_enqueued_total', 'protoqueue_tasks_completed_total', 'protoqueue_task_attempts_failed_total', 'protoqueue_tasks_retried_total', 'protoqueue_tasks_dead_lettered_total']
const HISTOGRAMS = ['protoqueue_handler_duration_seconds', 'protoqueue_task_wait_seconds']
const GAUGES = ['protoqueue_tasks_pending', 'protoqueue_tasks_in_flight', 'protoqueue_tasks_delayed', 'protoqueue_dead_letters', 'protoqueue_consumers']
const METRICS = new Set([...COUNTERS, ...HISTOGRAMS, ...GAUGES])

/** The worker's drain bound: shutdownTimeout + the connection's close (queue.rs CLOSE_TIMEOUT). */
const CLOSE_TIMEOUT_S = 2
/** The least margin a grace period must leave beyond the drain bound. */
const MARGIN_S = 5

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = any

// Compose files use YAML 1.1 merge keys (`<<: *app`), as Docker Compose reads them.
const compose: Doc = yaml.load(read('docker-compose.yml'), { schema: yaml.YAML11_SCHEMA })
const dockerfile = read('Dockerfile')

/** The `COPY` sources of the final stage that land in WORKDIR (`/app`). */
function copiedIntoApp(): string[] {
  const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
  return finalStage
    .split('\n')
    .filter((line) => /^COPY (?!--from)/.test(line))
    .flatMap((line) => line.replace(/^COPY /, '').split(/\s+/).slice(0, -1))
}

function envOf(service: Doc): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, String(v)]))
}

function seconds(duration: string): number {
  const match = /^(\d+)(s|m)$/.exec(duration)
  assert.ok(match, `a duration like 45s: ${duration}`)
  return Number(match[1]) * (match[2] === 'm' ? 60 : 1)
}

describe('deploy/: Docker Compose', () => {
  test('a three-node JetStream cluster on the pinned nats-server version', () => {
    const nodes = ['nats-1', 'nats-2', 'nats-3']
    for (const name of nodes) {
      const node = compose.services[name]
      assert.ok(node, name)
      assert.equal(node.image, `nats:${NATS_VERSION}-alpine`)
      const args: string[] = node.command
      assert.ok(args.includes('--jetstream'))
      assert.equal(args[args.indexOf('--name') + 1], name)
      assert.equal(args[args.indexOf('--cluster_name') + 1], 'protoqueue')
      const routes = args[args.indexOf('--routes') + 1].split(',')
      assert.deepEqual(routes.sort(), nodes.filter((n) => n !== name).map((n) => `nats://${n}:6222`))
    }
  })

  test('a producer, two workers and a dashboard from the image deploy/Dockerfile builds, running files it copies', () => {
    const copied = copiedIntoApp()
    for (const source of copied) assert.ok(existsSync(join(ROOT, source)), `COPY ${source}`)
    assert.match(dockerfile, /node scripts\/package\.mjs/)
    assert.ok(existsSync(join(ROOT, 'scripts', 'package.mjs')))
    assert.ok(existsSync(join(DEPLOY, 'Dockerfile.dockerignore')))
    const inApp = new Set(copied.map((source) => source.split('/').pop()))
    const cmd = JSON.parse(/^CMD (.*)$/m.exec(dockerfile)![1])
    assert.deepEqual(cmd.slice(0, 1), ['node'])
    assert.ok(inApp.has(cmd[1]), cmd[1])

    for (const name of ['producer', 'worker-1', 'worker-2', 'dashboard']) {
      const service = compose.services[name]
      assert.ok(service, name)
      assert.equal(service.build.context, '..')
      assert.ok(existsSync(join(DEPLOY, service.build.context, service.build.dockerfile)))
      const [program, file] = service.command
      if (program === 'node') {
        assert.ok(inApp.has(file), `${name} runs ${file}, which the image has`)
      } else {
        // The package's own command line, with flags it has.
        assert.equal(program, 'node_modules/.bin/protoqueue')
        assert.equal(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).bin.protoqueue, 'bin/protoqueue.js')
        const help = spawnSync(process.execPath, [join(ROOT, 'bin', 'protoqueue.js'), file, '--help'], { encoding: 'utf8' })
        assert.equal(help.status, 0, help.stderr)
        for (const flag of service.command.filter((arg: string) => arg.startsWith('--'))) assert.ok(help.stdout.includes(flag), `${file} ${flag}`)
        assert.ok(envOf(service).PROTOQUEUE_DASHBOARD_TOKEN, 'bound to 0.0.0.0, the dashboard gets a token')
      }
    }
    assert.equal(compose.services['producer'].command[1], 'producer.mjs')
    assert.equal(compose.services['worker-1'].command[1], 'worker.mjs')
    assert.equal(compose.services['worker-2'].command[1], 'worker.mjs')
  })

  test("the Rust it builds with is at least every locked crate's minimum, which Cargo.toml states", () => {
    // Each package of Cargo.lock (this project's and its dependencies', every platform) says the
    // oldest Rust it builds with; the newest of those is the project's real minimum.
    const metadata = spawnSync('cargo', ['metadata', '--format-version', '1', '--locked'], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
    assert.equal(metadata.status, 0, metadata.stderr)
    const atLeast = (a: string, b: string) => versionsAtLeast(versionOf(a) ?? [], versionOf(b) ?? [])
    const packages: Array<{ name: string; version: string; rust_version: string | null }> = JSON.parse(metadata.stdout).packages
    const stated = /^rust-version = "([^"]+)"$/m.exec(readFileSync(join(ROOT, 'Cargo.toml'), 'utf8'))![1]
    const pinned = /^ARG RUST_VERSION=(\S+)$/m.exec(dockerfile)![1]
    for (const pkg of packages) {
      if (pkg.rust_version) assert.ok(atLeast(stated, pkg.rust_version), `${pkg.name} ${pkg.version} needs Rust ${pkg.rust_version}; Cargo.toml says ${stated}`)
    }
    assert.ok(atLeast(pinned, stated), `deploy/Dockerfile builds with Rust ${pinned}, below Cargo.toml's ${stated}`)
    assert.match(dockerfile, new RegExp(`MSRV ${stated.replace('.', '\\.')}\\b`), 'the Dockerfile names the minimum it meets')
  })

  test('workers get a stop grace period that covers the drain', () => {
    for (const name of ['worker-1', 'worker-2']) {
      const service = compose.services[name]
      const drain = Number(envOf(service).SHUTDOWN_TIMEOUT_MS) / 1000
      assert.ok(drain > 0)
      assert.ok(seconds(service.stop_grace_period) >= drain + CLOSE_TIMEOUT_S + MARGIN_S, `${name}: ${service.stop_grace_period} for a ${drain} s drain`)
    }
  })

  test('every image is pinned, every mounted file exists', () => {
    for (const [name, service] of Object.entries<Doc>(compose.services)) {
      assert.match(service.image, /^[\w./-]+:[\w.-]+$/, name)
      assert.doesNotMatch(service.image, /:latest$/, name)
      for (const volume of service.volumes ?? []) {
        const [source] = String(volume).split(':')
        if (source.startsWith('.')) assert.ok(existsSync(join(DEPLOY, source)), `${name} mounts ${source}`)
        else assert.ok(source in (compose.volumes ?? {}), `${name}: named volume ${source}`)
      }
    }
  })

  test('Prometheus scrapes the producer and both workers on their metrics port', () => {
    const prometheus: Doc = yaml.load(read('prometheus/prometheus.yml'))
    const targets: string[] = prometheus.scrape_configs.flatMap((job: Doc) => job.static_configs.flatMap((c: Doc) => c.targets))
    const expected = ['producer', 'worker-1', 'worker-2'].map((name) => `${name}:${envOf(compose.services[name]).METRICS_PORT}`)
    assert.deepEqual(targets.sort(), expected.sort())
    assert.ok(prometheus.scrape_configs.every((job: Doc) => job.metrics_path === '/metrics'))
  })

  test('Grafana: the provisioned data source and dashboard, whose queries use only the metrics() names', () => {
    const datasources: Doc = yaml.load(read('grafana/provisioning/datasources/prometheus.yml'))
    const providers: Doc = yaml.load(read('grafana/provisioning/dashboards/protoqueue.yml'))
    const uid = datasources.datasources[0].uid
    assert.equal(datasources.datasources[0].url, 'http://prometheus:9090')
    const mounts: string[] = compose.services.grafana.volumes
    assert.ok(mounts.includes(`./grafana/dashboards:${providers.providers[0].options.path}:ro`))

    const dashboard: Doc = JSON.parse(read('grafana/dashboards/protoqueue.json'))
    const exprs: string[] = dashboard.panels.flatMap((panel: Doc) => {
      assert.equal(panel.datasource.uid, uid, panel.title)
      return panel.targets.map((target: Doc) => target.expr)
    })
    exprs.push(dashboard.templating.list[0].query.query)
    const used = new Set<string>()
    for (const expr of exprs) {
      const names = expr.match(/\bprotoqueue_[a-z_]+/g) ?? []
      assert.ok(names.length > 0, `queries a Protoqueue metric: ${expr}`)
      for (const name of names) {
        const histogram = /^(.*)_(bucket|sum|count)$/.exec(name)
        const base = histogram && HISTOGRAMS.includes(histogram[1]) ? histogram[1] : name
        assert.ok(METRICS.has(base), `${name} (in ${expr}) is not a metric metrics() exposes`)
        used.add(base)
      }
      // Only the labels every series has, and the dead-letter reason.
      for (const [, labels] of expr.matchAll(/by \(([^)]*)\)/g)) {
        for (const label of labels.split(',').map((l) => l.trim())) assert.ok(['queue', 'le', 'reason'].includes(label), `label ${label} in ${expr}`)
      }
    }
    assert.deepEqual([...METRICS].filter((name) => !used.has(name)), [], 'every metric has a panel')
  })
})

describe('deploy/: Kubernetes', () => {
  const docs: Doc[] = yaml.loadAll(read('kubernetes/worker.yaml'))
  const deployment = docs.find((doc) => doc.kind === 'Deployment')
  const container = deployment.spec.template.spec.containers[0]
  const env = Object.fromEntries(container.env.map((e: Doc) => [e.name, e.value]))

  test('NATS from the official chart: JetStream on file storage, 3 replicas, the pinned version', () => {
    const values: Doc = yaml.load(read('kubernetes/nats-values.yaml'))
    assert.equal(values.config.cluster.enabled, true)
    assert.equal(values.config.cluster.replicas, 3)
    assert.equal(values.config.jetstream.enabled, true)
    assert.equal(values.config.jetstream.fileStore.enabled, true)
    assert.equal(values.config.jetstream.fileStore.pvc.enabled, true)
    assert.equal(values.container.image.tag, `${NATS_VERSION}-alpine`)
    assert.equal(env.PROTOQUEUE_REPLICAS, '3')
    assert.equal(env.NATS_URL, 'nats://nats:4222')
  })

  test('the worker Deployment: grace period over the drain, probes and metrics port the worker serves', () => {
    const spec = deployment.spec.template.spec
    const drain = Number(env.SHUTDOWN_TIMEOUT_MS) / 1000
    assert.ok(spec.terminationGracePeriodSeconds >= drain + CLOSE_TIMEOUT_S + MARGIN_S, `${spec.terminationGracePeriodSeconds} s for a ${drain} s drain`)
    // The worker's own last resort (worker.mjs: shutdownTimeout + 10 s) comes before the SIGKILL.
    assert.match(read('worker.mjs'), /shutdownTimeout \+ 10_000/)
    assert.ok(drain + 10 < spec.terminationGracePeriodSeconds)
    assert.deepEqual(container.command, ['node', 'worker.mjs'])
    assert.ok(copiedIntoApp().includes('deploy/worker.mjs'))
    const port = container.ports.find((p: Doc) => p.name === 'metrics').containerPort
    assert.equal(String(port), env.METRICS_PORT)
    const annotations = deployment.spec.template.metadata.annotations
    assert.equal(annotations['prometheus.io/scrape'], 'true')
    assert.equal(annotations['prometheus.io/port'], String(port))
    assert.equal(annotations['prometheus.io/path'], '/metrics')
    for (const probe of ['readinessProbe', 'livenessProbe']) {
      assert.ok(['/readyz', '/healthz'].includes(container[probe].httpGet.path), probe)
      assert.equal(container[probe].httpGet.port, 'metrics')
    }
    assert.ok(docs.some((doc) => doc.kind === 'Service' && doc.spec.ports[0].targetPort === 'metrics'))
  })
})

/** The example worker as a child process, with its output lines. */
class Worker {
  readonly child: ChildProcess
  readonly lines: string[] = []
  readonly exited: Promise<number | null>

  constructor(env: Record<string, string>) {
    this.child = spawn(process.execPath, [join(DEPLOY, 'worker.mjs')], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    createInterface({ input: this.child.stdout! }).on('line', (line) => this.lines.push(line))
    let stderr = ''
    this.child.stderr!.on('data', (chunk) => (stderr += chunk))
    this.exited = new Promise((resolve) =>
      this.child.on('close', (code) => {
        if (code !== 0) process.stderr.write(`worker stderr:\n${stderr}\n`)
        resolve(code)
      }),
    )
  }

  /** Task ids of the lines `<word> <id>`. */
  ids(word: 'start' | 'done'): string[] {
    return this.lines.map((line) => new RegExp(` worker ${word} (\\S+)$`).exec(line)?.[1]).filter((id): id is string => id !== undefined)
  }

  async port(): Promise<number> {
    const line = await eventually('the probes to listen', () => this.lines.find((l) => l.includes('probes listening on :')))
    return Number(/:(\d+) /.exec(line)![1])
  }
}

describe('deploy/worker.mjs against a real nats-server', () => {
  test('SIGTERM mid-work: the tasks in flight finish, every task is acknowledged once, exit 0', async () => {
    const server = await NatsServer.start()
    const names = uniqueQueue('deploy')
    const queue = new Protoqueue({ url: server.url, ...names })
    try {
      await queue.connect()
      const total = 30
      const ids = await queue.enqueueBatch(Array.from({ length: total }, (_, i) => ({ data: { i } })))
      const shutdownMs = 10_000
      const env = { NATS_URL: server.url, PROTOQUEUE_STREAM: names.streamName, PROTOQUEUE_SUBJECT: names.subject, METRICS_PORT: '0', SHUTDOWN_TIMEOUT_MS: String(shutdownMs), CONCURRENCY: '4', WORK_MS: '300' }

      const first = new Worker(env)
      const port = await first.port()
      const base = `http://127.0.0.1:${port}`
      await eventually('ready', async () => (await fetch(`${base}/readyz`)).status === 200)
      assert.equal((await fetch(`${base}/healthz`)).status, 200)
      const metrics = await fetch(`${base}/metrics`)
      assert.equal(metrics.status, 200)
      assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain/)
      await eventually('tasks in flight', () => first.ids('start').length >= 2 && first.ids('done').length < total)
      first.child.kill('SIGTERM')
      const code = await within('the drain (shutdownTimeout + 10 s)', first.exited, shutdownMs + 10_000)
      assert.equal(code, 0)
      // Nothing abandoned mid-handler: every task started was finished.
      assert.deepEqual(first.ids('done').sort(), first.ids('start').sort())
      assert.ok(first.ids('done').length < total, 'stopped mid-work')
      assert.ok(first.lines.some((line) => line.endsWith('worker stopped')))

      // A second worker takes the rest; none of the first one's tasks comes back.
      const second = new Worker({ ...env, WORK_MS: '1' })
      await second.port()
      await eventually('the rest handled', async () => (await queue.getStats()).messages === 0, 30_000)
      second.child.kill('SIGTERM')
      assert.equal(await within('the second drain', second.exited, shutdownMs + 10_000), 0)

      const done = [...first.ids('done'), ...second.ids('done')]
      assert.equal(done.length, total, 'each task handled exactly once')
      assert.deepEqual([...new Set(done)].sort(), [...ids].sort())
      const stats = await queue.getStats()
      assert.equal(stats.messages, 0)
      assert.equal(stats.inFlight, 0)
      assert.equal(stats.deadLettered, 0)
    } finally {
      await queue.disconnect()
      await server.stop()
    }
  })
})
