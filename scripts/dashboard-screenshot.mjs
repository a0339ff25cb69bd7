// Takes docs/dashboard.png, the README's picture of the dashboard, from a realistic state: a
// nats-server of its own (from .tools, as `node scripts/setup.mjs` installs it), three queues (one
// busy with a producer and two workers, one paused with a backlog, one with dead letters), the
// dashboard on a free port and Debian's headless Chromium (PROTOQUEUE_CHROMIUM to use another).
// Usage: node scripts/dashboard-screenshot.mjs [out.png]
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { chromium } from 'playwright-core'
import { Protoqueue } from 'protoqueue'
import { dashboard } from 'protoqueue/dashboard'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const out = process.argv[2] ?? join(root, 'docs', 'dashboard.png')
const browserPath = process.env.PROTOQUEUE_CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p))
if (!browserPath) throw new Error('no Chromium: apt-get install -y chromium, or set PROTOQUEUE_CHROMIUM')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const port = await new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address()
    s.close(() => resolve(port))
  })
})
const store = mkdtempSync(join(tmpdir(), 'pq-shot-'))
const nats = spawn(join(root, '.tools', 'nats-server', 'bin', 'nats-server'), ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store], { stdio: 'ignore' })
const url = `nats://127.0.0.1:${port}`
const open = async (streamName, subject, options) => {
  for (let i = 0; ; i++) {
    const queue = new Protoqueue({ url, streamName, subject, options })
    try {
      return await queue.connect()
    } catch (err) {
      if (i > 50) throw err
      await sleep(100)
    }
  }
}
const queues = []
try {
  // orders: a steady producer, two workers a little slower than it at times.
  const orders = await open('ORDERS', 'orders.created', { batchSize: 4 })
  queues.push(orders)
  const workers = []
  for (let w = 0; w < 2; w++) {
    const worker = await open('ORDERS', 'orders.created', { batchSize: 4 })
    await worker.process(async (task) => {
      await sleep(15 + Math.random() * 25)
      if (task.data.n % 97 === 13) return { success: false, retry: false, error: `payment provider refused order ${task.data.n}: card_declined` }
      return { success: true }
    })
    workers.push(worker)
  }
  let n = 0
  let producing = true
  const producer = (async () => {
    while (producing) {
      const burst = 20 + Math.round(30 * Math.abs(Math.sin(n / 400)))
      await orders.enqueueBatch(Array.from({ length: burst }, () => ({ data: { n: n++, customer: `c-${n % 50}` } })))
      await sleep(250)
    }
  })()
  // emails: paused with a backlog.
  const emails = await open('EMAILS', 'emails.send')
  queues.push(emails)
  await emails.enqueueBatch(Array.from({ length: 1240 }, (_, i) => ({ data: { to: `user${i}@example.com` } })))
  await emails.pause()
  // reports: some dead letters.
  const reports = await open('REPORTS', 'reports.render')
  queues.push(reports)
  const failing = await open('REPORTS', 'reports.render')
  await failing.process(async (task) => ({ success: false, retry: false, error: task.data.kind === 'pdf' ? 'TimeoutError: renderer did not answer within 30000 ms' : `TypeError: Cannot read properties of undefined (reading 'rows') at renderTable (report.js:88)` }))
  for (let i = 0; i < 6; i++) await reports.enqueue({ data: { report: `monthly-${i}`, kind: i % 2 ? 'pdf' : 'csv' }, id: `report-2026-11-${i + 1}` })
  await sleep(1000)
  await failing.disconnect()
  await reports.enqueueBatch(Array.from({ length: 8 }, (_, i) => ({ data: { report: `weekly-${i}` } })))

  const board = await dashboard({ connection: { url }, port: 0, interval: 500 })
  const browser = await chromium.launch({ executablePath: browserPath, headless: true, args: ['--no-sandbox'] })
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 }, deviceScaleFactor: 1 })
  await page.goto(board.url)
  await page.locator('tr[data-queue="REPORTS"]').click()
  await sleep(30_000)
  await page.screenshot({ path: out, fullPage: true })
  console.log(`wrote ${out}`)
  await browser.close()
  producing = false
  await producer
  await board.close()
  for (const worker of workers) await worker.disconnect()
} finally {
  for (const queue of queues) await queue.disconnect().catch(() => {})
  nats.kill()
  rmSync(store, { recursive: true, force: true })
}
