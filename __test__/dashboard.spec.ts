// The web dashboard (`protoqueue/dashboard`, `protoqueue dashboard`) against a real nats-server:
// in a real headless Chromium (Debian's `chromium` via playwright-core) the page shows the
// numbers `getStats()` gives, they change while a worker runs, and its requeue and pause/resume
// buttons act on the server; it stays usable 420 px wide, has an icon, chart legends with values,
// says which letters a requeue would dead-letter again, and lists a queue's recurring tasks and live workers
// (their records' text as text); over plain HTTP, the token, CSRF and bad-request rules; the task
// browser (tasks by state, paged; a task found by any id; its page; cancel behind the token), over
// HTTP and in Chromium; from the command line, its usage errors and a clean stop.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'

import { jetstream, jetstreamManager, RetentionPolicy } from '@nats-io/jetstream'
import { connect as natsConnect } from '@nats-io/transport-node'
import type { Browser, Locator, Page } from 'playwright-core'
import { listQueues, Protoqueue, type ProtoqueueConfig, type WorkerInfo } from 'protoqueue'
import { dashboard, type Dashboard } from 'protoqueue/dashboard'

import { launchBrowser } from './helpers/browser'
import { freePort, NatsServer, uniqueQueue } from './helpers/nats'
import { eventually } from './helpers/wait'

const BIN = join(__dirname, '..', 'bin', 'protoqueue.js')
const TOKEN = 'dashboard-test-token-0123456789'

let server: NatsServer
let dir: string
before(async () => {
  server = await NatsServer.start()
  dir = mkdtempSync(join(tmpdir(), 'pq-dash-'))
})
after(async () => {
  await server?.stop()
  rmSync(dir, { recursive: true, force: true })
})

/** A queue with `n` waiting tasks and `letters` dead letters (tasks rejected by a worker). */
async function queueWith(n: number, letters: number, options: ProtoqueueConfig['options'] = {}) {
  const names = uniqueQueue('dash')
  const queue = new Protoqueue({ url: server.url, ...names, options: { batchSize: 1, ...options } })
  await queue.connect()
  if (letters > 0) {
    const rejects = new Protoqueue({ url: server.url, ...names })
    await rejects.connect()
    await rejects.process(async (task) => ({ success: false, retry: false, error: `card declined for ${JSON.stringify(task.data)}` }))
    for (let i = 0; i < letters; i++) {
      // One at a time: letters are then stored in order.
      await queue.enqueue({ data: { letter: i }, id: `letter-${names.streamName}-${i}` })
      await eventually('the letter', async () => (await queue.getStats()).deadLettered === i + 1)
    }
    await rejects.disconnect()
  }
  if (n > 0) await queue.enqueueBatch(Array.from({ length: n }, (_, i) => ({ data: { n: i } })))
  return { queue, names }
}

describe('the page in Chromium', () => {
  let browser: Browser
  let board: Dashboard
  before(async () => {
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
    await board?.close()
  })

  test('shows the stats, updates while a worker runs, requeues a letter, pauses and resumes', async () => {
    const { queue, names } = await queueWith(25, 3)
    board = await dashboard({ connection: { url: server.url }, port: 0, interval: 200 })
    const page = await browser.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    await page.goto(board.url)
    const row = `tr[data-queue="${names.streamName}"]`
    const cell = (field: string) => page.locator(`${row} td[data-field="${field}"]`).innerText()

    // The right numbers: those of getStats().
    const stats = await queue.getStats()
    assert.equal(stats.pending, 25)
    await page.waitForSelector(row)
    await eventually('the pending count', async () => (await cell('pending')) === '25', 30_000)
    assert.equal(await cell('deadLettered'), '3')
    assert.equal(await cell('subject'), names.subject)
    assert.equal(await cell('state'), 'running')

    // Dead letters with their errors.
    await page.waitForSelector('#letters tbody tr[data-sequence]')
    assert.equal(await page.locator('#letters tbody tr').count(), 3)
    assert.match(await page.locator('#letters tbody tr').first().innerText(), /card declined for \{"letter":0\}/)
    // A chart per queue (uPlot is installed here).
    await page.waitForSelector(`.chart[data-queue="${names.streamName}"] canvas`)

    // They update while a worker runs: pending falls to 0, completions show a rate.
    const worker = new Protoqueue({ url: server.url, ...names, options: { batchSize: 1 } })
    await worker.connect()
    let handled = 0
    await worker.process(async () => {
      handled++
      await new Promise((r) => setTimeout(r, 20))
      return { success: true }
    })
    let sawRate = false
    await eventually(
      'pending 0 on the page',
      async () => {
        const completed = Number((await cell('completed')).replace(/,/g, ''))
        if (completed > 0) sawRate = true
        return (await cell('pending')) === '0' && (await cell('inFlight')) === '0'
      },
      30_000,
    )
    assert.equal(handled, 25)
    assert.ok(sawRate, 'completed/s was above 0 while the worker ran')
    await worker.disconnect()

    // The requeue button requeues: the letter leaves the dead-letter stream, its task is back.
    const first = page.locator('#letters tbody tr').first()
    const taskId = await first.getAttribute('data-task-id')
    assert.ok(taskId)
    await first.locator('button[data-action="requeue"]').click()
    await eventually('the letter requeued on the server', async () => {
      const s = await queue.getStats()
      return s.deadLettered === 2 && s.pending === 1
    }, 30_000)
    const left = await queue.getDeadLetters(10)
    assert.ok(!left.some((letter) => letter.task?.id === taskId))
    await eventually('the page shows 2 letters', async () => (await cell('deadLettered')) === '2' && (await page.locator('#letters tbody tr').count()) === 2, 30_000)

    // Pause, then resume, from the page: the server's consumer says so.
    await page.locator(`${row} button[data-action="pause"]`).click()
    await eventually('paused on the server', async () => (await queue.getStats()).paused, 30_000)
    await eventually('paused on the page', async () => (await cell('state')) === 'paused', 30_000)
    await page.locator(`${row} button[data-action="resume"]`).click()
    await eventually('resumed on the server', async () => !(await queue.getStats()).paused, 30_000)
    await eventually('running on the page', async () => (await cell('state')) === 'running', 30_000)

    assert.deepEqual(errors, [])
    await page.close()
    await queue.disconnect()
  })
})

describe('the page in Chromium: narrow screens, icon, legends, undecodable letters, recurring tasks, live workers', () => {
  let browser: Browser
  before(async () => {
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
  })

  /** A dashboard and a page of it (`viewport` as given), closed after `body`; fails on any script error. */
  async function withPage(viewport: { width: number; height: number } | undefined, body: (page: Page, board: Dashboard) => Promise<void>, interval = 200) {
    const board = await dashboard({ connection: { url: server.url }, port: 0, interval })
    const page = await browser.newPage(viewport ? { viewport } : {})
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    try {
      await page.goto(board.url)
      await body(page, board)
      assert.deepEqual(errors, [])
    } finally {
      await page.close()
      await board.close()
    }
  }

  /** Whether `locator`, scrolled into view, lies inside the viewport. */
  async function reachable(page: Page, locator: Locator) {
    await locator.scrollIntoViewIfNeeded()
    const box = await locator.boundingBox()
    const viewport = page.viewportSize()!
    assert.ok(box, 'it has a box')
    return box.x >= 0 && box.y >= 0 && box.x + box.width <= viewport.width && box.y + box.height <= viewport.height
  }

  test('420 px wide: the page does not scroll sideways, the tables scroll inside their section, State and the actions are reachable', async () => {
    const { queue, names } = await queueWith(2, 1)
    try {
      await withPage({ width: 420, height: 800 }, async (page) => {
        const row = `tr[data-queue="${names.streamName}"]`
        await page.waitForSelector(row)
        await eventually('the pending count', async () => (await page.locator(`${row} td[data-field="pending"]`).innerText()) === '2', 30_000)
        await page.waitForSelector('#letters tbody tr[data-sequence]')
        await page.waitForSelector('.chart canvas')
        const widths = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, viewport: window.innerWidth }))
        assert.ok(widths.page <= widths.viewport, `the page is ${widths.page} px wide in a ${widths.viewport} px viewport`)
        const state = page.locator(`${row} td[data-field="state"]`)
        assert.ok(await reachable(page, state), 'the State cell scrolls into view')
        assert.equal(await state.innerText(), 'running')
        const pause = page.locator(`${row} button[data-action="pause"]`)
        assert.ok(await reachable(page, pause), 'the Pause button scrolls into view')
        await pause.click({ trial: true })
        const requeue = page.locator('#letters tbody tr button[data-action="requeue"]').first()
        assert.ok(await reachable(page, requeue), 'a letter\'s Requeue button scrolls into view')
        await requeue.click({ trial: true })
        for (const chart of await page.locator('.chart').all()) {
          const box = (await chart.boundingBox())!
          assert.ok(box.x >= 0 && box.x + box.width <= 420, `a chart fits: ${JSON.stringify(box)}`)
        }
      })
    } finally {
      await queue.disconnect()
    }
  })

  test('an icon: /favicon.svg, linked from the page, and /favicon.ico answer with it (never a 404)', async () => {
    await withPage(undefined, async (page, board) => {
      const base = board.url.replace(/\/$/, '')
      for (const path of ['/favicon.svg', '/favicon.ico']) {
        const response = await fetch(`${base}${path}`)
        assert.equal(response.status, 200, path)
        assert.equal(response.headers.get('content-type'), 'image/svg+xml', path)
        assert.match(await response.text(), /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^]*<\/svg>$/, path)
        assert.equal((await fetch(`${base}${path}`, { method: 'HEAD' })).status, 200, path)
      }
      assert.equal(await page.locator('link[rel="icon"]').getAttribute('href'), '/favicon.svg')
      const failed: string[] = []
      page.on('response', (response) => {
        if (response.status() >= 400) failed.push(`${response.status()} ${response.url()}`)
      })
      await page.reload()
      await page.waitForSelector('#status[data-updated-at]')
      const icon = await page.evaluate(async () => (await fetch('/favicon.ico')).status)
      assert.equal(icon, 200)
      assert.deepEqual(failed, [])
    })
  })

  test('every chart legend names its series and shows their latest rates, also after the cursor leaves the chart', async () => {
    const { queue, names } = await queueWith(3, 0)
    try {
      // A sample a second (the last argument): the page's first overview has none yet, so its charts begin empty.
      await withPage(undefined, async (page) => {
        const chart = `.chart[data-queue="${names.streamName}"]`
        await page.waitForSelector(`${chart} canvas`)
        const legends = () =>
          page.evaluate(() =>
            [...document.querySelectorAll('.chart')].map((card) => ({
              queue: (card as HTMLElement).dataset.queue,
              legends: card.querySelectorAll('.u-legend').length,
              labels: [...card.querySelectorAll('.u-legend .u-series .u-label')].map((node) => node.textContent?.trim()),
              values: [...card.querySelectorAll('.u-legend .u-series .u-value')].map((node) => node.textContent?.trim()),
            })),
          )
        const shown = (all: Awaited<ReturnType<typeof legends>>) =>
          all.length > 0 && all.every((one) => one.legends === 1 && one.values.length === 4 && one.values.every((value) => value !== undefined && /\d/.test(value)))
        const all = await eventually('every legend with its values', async () => {
          const read = await legends()
          return shown(read) ? read : undefined
        }, 30_000)
        assert.ok(all.some((one) => one.queue === names.streamName))
        for (const one of all) assert.deepEqual(one.labels, ['time', 'enqueued/s', 'completed/s', 'dead-lettered/s'], one.queue)
        // The cursor on the chart shows the values under it; leaving it, the latest again.
        const over = page.locator(`${chart} .u-over`)
        const box = (await over.boundingBox())!
        await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2)
        await page.mouse.move(box.x + box.width + 200, box.y - 100)
        await new Promise((resolve) => setTimeout(resolve, 2_500))
        assert.ok(shown(await legends()), JSON.stringify(await legends()))
      }, 1000)
    } finally {
      await queue.disconnect()
    }
  })

  test('an invalidData letter: requeueing it asks, saying it is dead-lettered again (and it is); "Requeue all" says how many would fail again; an invalidEnvelope letter offers no requeue', async () => {
    const names = uniqueQueue('undecodable')
    const queue = new Protoqueue({ url: server.url, ...names })
    await queue.connect()
    // A producer of another content type: a JSON worker cannot decode its data (invalidData).
    const foreign = new Protoqueue({ url: server.url, ...names, serializer: { contentType: 'application/x-other', encode: () => Uint8Array.of(1, 2, 3), decode: () => '' } })
    await foreign.connect()
    const worker = new Protoqueue({ url: server.url, ...names })
    await worker.connect()
    await worker.process(async () => ({ success: false, retry: false, error: 'refused' }))
    const nc = await natsConnect({ servers: server.url })
    try {
      await queue.enqueue({ data: { fine: true }, id: 'decodes' })
      await eventually('letter 1', async () => (await queue.getStats()).deadLettered === 1)
      await foreign.enqueue({ data: 'anything', id: 'undecodable' })
      await eventually('letter 2', async () => (await queue.getStats()).deadLettered === 2)
      // Not a task envelope at all (invalidEnvelope).
      nc.publish(names.subject, new TextEncoder().encode('not a protoqueue task'))
      await eventually('letter 3', async () => (await queue.getStats()).deadLettered === 3)
      const reasons = (await queue.getDeadLetters(10)).map((letter) => letter.reason)
      assert.deepEqual(reasons, ['rejected', 'invalidData', 'invalidEnvelope'])

      await withPage(undefined, async (page) => {
        await page.locator(`tr[data-queue="${names.streamName}"] td[data-field="name"]`).click()
        await eventually('the letters of the queue', async () => (await page.locator('#letters-queue').innerText()) === names.streamName && (await page.locator('#letters tbody tr').count()) === 3, 30_000)
        const rows = page.locator('#letters tbody tr')
        const dialogs: string[] = []
        let answer = false
        page.on('dialog', async (dialog) => {
          dialogs.push(dialog.message())
          await (answer ? dialog.accept() : dialog.dismiss())
        })

        // The letter whose data does not decode says so, and its requeue asks first.
        const undecodable = page.locator('#letters tbody tr[data-task-id="undecodable"]')
        assert.match(await undecodable.locator('td').nth(2).innerText(), /invalidData[^]*does not decode: requeueing dead-letters it again/)
        const requeue = undecodable.locator('button[data-action="requeue"]')
        assert.match((await requeue.getAttribute('title')) ?? '', /does not decode: requeueing dead-letters it again/)
        await requeue.click()
        await eventually('the question', () => dialogs.length === 1)
        assert.match(dialogs[0], /task undecodable[^]*invalidData: its data does not decode: requeueing dead-letters it again/)
        assert.equal((await queue.getStats()).deadLettered, 3, 'declined: nothing requeued')

        // The letter that is no task: purge only.
        const envelope = rows.filter({ hasText: 'invalidEnvelope' })
        assert.equal(await envelope.locator('button[data-action="requeue"]').count(), 0)
        assert.equal(await envelope.locator('button[data-action="purge"]').count(), 1)
        // An ordinary letter: no question, and no note.
        assert.equal(await page.locator('#letters tbody tr[data-task-id="decodes"] .reason-note').count(), 0)

        // "Requeue all" says, before and when asked, how many of the letters shown would not come back as they are.
        const note = page.locator('#letters-note')
        assert.ok(await note.isVisible())
        assert.match(await note.innerText(), /^Of the 3 letters shown, 1 would fail again: its data does not decode \(invalidData\), requeueing dead-letters it again; 1 is not a task or lost its data: requeue leaves it alone\.$/)
        await page.locator('#requeue-all').click()
        await eventually('the question', () => dialogs.length === 2)
        assert.match(dialogs[1], /^Requeue every dead letter of \S+\?\n\nOf the 3 letters shown, 1 would fail again/)
        assert.equal((await queue.getStats()).deadLettered, 3, 'declined: nothing requeued')

        // Requeued anyway: the worker cannot decode it, and it is a dead letter again.
        const [before] = await queue.getDeadLetters(10, { ids: ['undecodable'] })
        answer = true
        await requeue.click()
        await eventually('dead-lettered again', async () => {
          const [again] = await queue.getDeadLetters(10, { ids: ['undecodable'] })
          return again !== undefined && again.sequence > before.sequence && again.reason === 'invalidData'
        }, 30_000)
        assert.equal(dialogs.length, 3)
        await eventually('the page shows the new letter', async () => {
          const sequence = await page.locator('#letters tbody tr[data-task-id="undecodable"]').getAttribute('data-sequence').catch(() => null)
          return sequence !== null && Number(sequence) > before.sequence
        }, 30_000)

        // The letter that is no task can be purged (asked first).
        await envelope.locator('button[data-action="purge"]').click()
        await eventually('the invalidEnvelope letter purged', async () => !(await queue.getDeadLetters(10)).some((letter) => letter.reason === 'invalidEnvelope'), 30_000)
        assert.match(dialogs[3], /^Remove this dead letter at sequence \d+ \(not a task\)\?$/)
        assert.equal((await queue.getStats()).deadLettered, 2)
      })
    } finally {
      await nc.close()
      await worker.disconnect()
      await foreign.disconnect()
      await queue.disconnect()
    }
  })

  test('a queue\'s delayed tasks and recurring tasks: counted in the table, listed with their name, interval or cron and time zone', async () => {
    const names = uniqueQueue('recurring')
    const queue = new Protoqueue({ url: server.url, ...names, options: { schedules: true } })
    await queue.connect()
    const plain = await queueWith(0, 0, { schedules: false })
    try {
      await queue.schedule('hourly', { every: 3_600_000 }, { data: { report: 'hourly' } })
      await queue.schedule('weekdays', { cron: '0 30 9 * * MON-FRI', timeZone: 'Europe/Paris' }, { data: { report: 'morning' }, name: 'morning-report' })
      await queue.enqueue({ data: { later: true }, delay: 600_000 })
      const stats = await queue.getStats()
      assert.equal(stats.delayed, 1)
      assert.equal(stats.recurring, 2)

      await withPage(undefined, async (page, board) => {
        const base = board.url.replace(/\/$/, '')
        const listed = await (await fetch(`${base}/api/queues/${names.streamName}/schedules`)).json()
        assert.deepEqual(listed.schedules.map((s: { name: string; every?: number; cron?: string; timeZone?: string }) => [s.name, s.every, s.cron, s.timeZone]), [
          ['hourly', 3_600_000, undefined, undefined],
          ['weekdays', undefined, '0 30 9 * * MON-FRI', 'Europe/Paris'],
        ])
        assert.deepEqual(await (await fetch(`${base}/api/queues/${plain.names.streamName}/schedules`)).json(), { queue: plain.names.streamName, enabled: false, schedules: [] })

        const row = `tr[data-queue="${names.streamName}"]`
        const cell = (field: string) => page.locator(`${row} td[data-field="${field}"]`).innerText()
        await page.waitForSelector(row)
        await eventually('the counts', async () => (await cell('delayed')) === '1' && (await cell('recurring')) === '2', 30_000)
        await page.locator(`${row} td[data-field="name"]`).click()
        await page.waitForSelector('#schedules tbody tr[data-schedule="weekdays"]')
        assert.ok(await page.locator('#schedules-section').isVisible())
        assert.equal(await page.locator('#schedules-queue').innerText(), names.streamName)
        const cells = (name: string) => page.locator(`#schedules tbody tr[data-schedule="${name}"] td`).allInnerTexts()
        assert.deepEqual(await cells('hourly'), ['hourly', 'every 1 h', '–', '–', '–', '{"report":"hourly"}'])
        assert.deepEqual(await cells('weekdays'), ['weekdays', 'cron 0 30 9 * * MON-FRI', 'Europe/Paris', '–', 'morning-report', '{"report":"morning"}'])

        // A queue without options.schedules: no such section.
        await page.locator(`tr[data-queue="${plain.names.streamName}"] td[data-field="name"]`).click()
        await eventually('the section hidden', async () => (await page.locator('#letters-queue').innerText()) === plain.names.streamName && !(await page.locator('#schedules-section').isVisible()), 30_000)
      })
    } finally {
      await queue.disconnect()
      await plain.queue.disconnect()
    }
  })
  test('a queue\'s live workers: counted in the table, listed (API and page) with host, pid, kind, since, in flight of batch size, completed, failed, last seen, also 420 px wide; a record\'s text shown as text; a stopped worker leaves at once', async () => {
    const { queue, names } = await queueWith(0, 0)
    const worker = new Protoqueue<{ n: number }>({ url: server.url, ...names, options: { batchSize: 4 } })
    await worker.connect()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    await worker.process(async () => {
      await gate
      return { success: true }
    })
    const nc = await natsConnect({ servers: server.url })
    try {
      await worker.enqueueBatch([1, 2, 3].map((n) => ({ data: { n } })))
      // Its record says what its handlers run as of its next beat (every 5 s).
      await eventually('a record with 3 tasks in flight', async () => (await worker.getWorkers())[0]?.inFlight === 3, 15_000)
      const [info] = await worker.getWorkers()
      // A record another client wrote: markup in its text must stay text.
      const hostile: WorkerInfo = {
        id: 'b0b0b0b0b0b0',
        host: '<img src=x onerror="window.pwned=1">',
        pid: 4242,
        kind: 'deadLetters',
        subjects: [`${names.subject}.<b>eu</b>`],
        startedAt: Date.now(),
        seenAt: Date.now(),
        batchSize: 2,
        inFlight: 1,
        completed: 5,
        failed: 1,
        version: '<i>9.9.9</i>',
      }
      await jetstream(nc).publish(`protoqueue.workers.${names.streamName}.${hostile.id}`, JSON.stringify(hostile))

      await withPage(undefined, async (page, board) => {
        const base = board.url.replace(/\/$/, '')
        const listed = await (await fetch(`${base}/api/queues/${names.streamName}/workers`)).json()
        assert.equal(listed.queue, names.streamName)
        assert.deepEqual(listed.workers.map((w: WorkerInfo) => w.pid), [process.pid, 4242], 'oldest first')
        // As getWorkers() gives them (seenAt moves with every beat).
        assert.deepEqual({ ...listed.workers[0], seenAt: 0 }, { ...info, seenAt: 0 })
        assert.deepEqual(listed.workers[1], hostile)

        const row = `tr[data-queue="${names.streamName}"]`
        await page.waitForSelector(row)
        await eventually('2 workers counted', async () => (await page.locator(`${row} td[data-field="workers"]`).innerText()) === '2', 30_000)
        assert.equal(await page.locator(`${row} td[data-field="consumers"]`).innerText(), '1')
        await page.locator(`${row} td[data-field="name"]`).click()
        const mine = `#workers tbody tr[data-worker="${info.id}"]`
        await page.waitForSelector(mine)
        assert.ok(await page.locator('#workers-section').isVisible())
        assert.equal(await page.locator('#workers-queue').innerText(), names.streamName)
        assert.equal(await page.locator('#workers-count').innerText(), '(2 running)')
        const cells = (id: string) => page.locator(`#workers tbody tr[data-worker="${id}"] td`).allInnerTexts()
        const localTime = (ms: number) => page.evaluate((t) => new Date(t).toLocaleString(), ms)
        const shown = await cells(info.id)
        assert.deepEqual(shown.slice(0, 8), [info.id, hostname(), String(process.pid), 'tasks', await localTime(info.startedAt), '3 / 4', '0', '0'])
        assert.notEqual(shown[8], '–', 'last seen')
        assert.equal(shown[9], info.version)

        // The record's text, as text: no element made of it, no script run.
        const other = await cells(hostile.id)
        assert.deepEqual(other, [hostile.id, hostile.host, '4242', `dead letters\n${hostile.subjects![0]}`, await localTime(hostile.startedAt), '1 / 2', '5', '1', await localTime(hostile.seenAt), hostile.version])
        assert.equal(await page.locator('#workers img, #workers b, #workers i').count(), 0)
        assert.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined)

        // Stopped: gone from the list at once, and from the count.
        release()
        await worker.disconnect()
        await eventually('the stopped worker gone from the page', async () => (await page.locator(mine).count()) === 0 && (await page.locator(`${row} td[data-field="workers"]`).innerText()) === '1', 30_000)
        assert.equal(await page.locator(`#workers tbody tr[data-worker="${hostile.id}"]`).count(), 1, 'the other record stays until it expires')
      })

      // 420 px wide: the page does not scroll sideways; the workers table scrolls inside its section.
      await withPage({ width: 420, height: 800 }, async (page) => {
        const row = `tr[data-queue="${names.streamName}"]`
        await page.waitForSelector(row)
        await page.locator(`${row} td[data-field="name"]`).click()
        const record = `#workers tbody tr[data-worker="${hostile.id}"]`
        await page.waitForSelector(record)
        const widths = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, viewport: window.innerWidth }))
        assert.ok(widths.page <= widths.viewport, `the page is ${widths.page} px wide in a ${widths.viewport} px viewport`)
        for (const field of ['host', 'inFlight', 'seen', 'version']) {
          assert.ok(await reachable(page, page.locator(`${record} td[data-field="${field}"]`)), `the ${field} cell scrolls into view`)
        }
        const workers = page.locator(`${row} td[data-field="workers"]`)
        assert.ok(await reachable(page, workers), 'the Workers cell of the queue scrolls into view')
        assert.equal(await workers.innerText(), '1')
      })
    } finally {
      release()
      await nc.close()
      await worker.disconnect()
      await queue.disconnect()
    }
  })
})

describe('the HTTP API', () => {
  test('bound to a non-loopback address: refuses to start without a token, then requires it for every state change', async () => {
    await assert.rejects(dashboard({ connection: { url: server.url }, host: '0.0.0.0', port: 0 }), { code: 'ERR_PQ_INVALID_CONFIG' })
    await assert.rejects(dashboard({ connection: { url: server.url }, host: '0.0.0.0', port: 0, token: 'short' }), { code: 'ERR_PQ_INVALID_CONFIG' })
    const { queue, names } = await queueWith(0, 1)
    const board = await dashboard({ connection: { url: server.url }, host: '0.0.0.0', port: 0, token: TOKEN })
    try {
      const base = `http://127.0.0.1:${board.port}`
      const page = await (await fetch(`${base}/`)).text()
      assert.ok(!page.includes(TOKEN), 'the page never carries a token of the user\'s')
      const overview = await (await fetch(`${base}/api/overview`)).json()
      assert.equal(overview.tokenRequired, true)
      const post = (path: string, headers: Record<string, string>, body = '{}') =>
        fetch(`${base}/api/queues/${names.streamName}/${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
      for (const headers of [{}, { 'x-protoqueue-token': 'wrong-token-wrong-token' }] as Record<string, string>[]) {
        const refused = await post('pause', headers)
        assert.equal(refused.status, 401)
        assert.equal((await refused.json()).error.code, 'ERR_PQ_UNAUTHORIZED')
      }
      assert.equal((await queue.getStats()).paused, false)
      const paused = await post('pause', { 'x-protoqueue-token': TOKEN })
      assert.equal(paused.status, 200)
      assert.equal((await queue.getStats()).paused, true)
      assert.equal((await post('resume', { 'x-protoqueue-token': TOKEN })).status, 200)
      assert.equal((await queue.getStats()).paused, false)
      const requeued = await post('dead-letters/requeue', { 'x-protoqueue-token': TOKEN }, JSON.stringify({ all: true }))
      assert.deepEqual(await requeued.json(), { requeued: 1 })
    } finally {
      await board.close()
      await queue.disconnect()
    }
  })

  test('on loopback: the per-run token from the page, Host and Origin checks, JSON bodies only, clear 400/404s', async () => {
    const { queue, names } = await queueWith(0, 2)
    const board = await dashboard({ connection: { url: server.url }, port: 0 })
    try {
      const base = `http://127.0.0.1:${board.port}`
      const page = await (await fetch(`${base}/`)).text()
      const token = JSON.parse(/<script type="application\/json" id="pq-config">(.*?)<\/script>/.exec(page)![1]).token as string
      assert.ok(token.length >= 16)
      const post = (path: string, headers: Record<string, string>, body = '{}') =>
        fetch(`${base}/api/queues/${encodeURIComponent(names.streamName)}/${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
      assert.equal((await post('pause', {})).status, 401)
      // A page of another site (its Origin), even with the token: refused.
      assert.equal((await post('pause', { 'x-protoqueue-token': token, origin: 'http://evil.example' })).status, 403)
      // DNS rebinding: a name that is not a loopback address in Host.
      const rebound = await new Promise<number | undefined>((resolve, reject) =>
        request(`${base}/api/overview`, { headers: { host: 'evil.example' } }, (res) => {
          res.resume()
          resolve(res.statusCode)
        })
          .on('error', reject)
          .end(),
      )
      assert.equal(rebound, 403)
      // A form post (no JSON): refused.
      assert.equal((await post('pause', { 'x-protoqueue-token': token, 'content-type': 'application/x-www-form-urlencoded' }, 'a=1')).status, 415)
      // No CORS: never an Access-Control-Allow-Origin.
      const preflight = await fetch(`${base}/api/queues/${names.streamName}/pause`, { method: 'OPTIONS', headers: { origin: 'http://evil.example' } })
      assert.equal(preflight.headers.get('access-control-allow-origin'), null)
      assert.equal((await queue.getStats()).paused, false)
      // Which letters must be said.
      const vague = await post('dead-letters/purge', { 'x-protoqueue-token': token })
      assert.equal(vague.status, 400)
      assert.equal((await vague.json()).error.code, 'ERR_PQ_BAD_REQUEST')
      assert.equal((await post('dead-letters/purge', { 'x-protoqueue-token': token }, '[1')).status, 400)
      const letters = await (await fetch(`${base}/api/queues/${names.streamName}/dead-letters?limit=10`)).json()
      assert.equal(letters.letters.length, 2)
      const purged = await post('dead-letters/purge', { 'x-protoqueue-token': token }, JSON.stringify({ ids: [letters.letters[0].taskId] }))
      assert.deepEqual(await purged.json(), { purged: 1 })
      assert.equal((await queue.getStats()).deadLettered, 1)

      // A stream that is not a Protoqueue queue: 404 with a code, and the dashboard goes on.
      const nc = await natsConnect({ servers: server.url })
      const jsm = await jetstreamManager(nc)
      const foreign = `FOREIGN_${process.pid}`
      await jsm.streams.add({ name: foreign, subjects: [`foreign.${process.pid}`] })
      await nc.close()
      for (const path of [`/api/queues/${foreign}`, `/api/queues/${foreign}/dead-letters`, `/api/queues/${foreign}/workers`, '/api/queues/NO_SUCH_STREAM', '/api/queues/NO_SUCH_STREAM/workers']) {
        const response = await fetch(`${base}${path}`)
        assert.equal(response.status, 404, path)
        assert.equal((await response.json()).error.code, 'ERR_PQ_NOT_A_QUEUE')
      }
      const foreignPause = await fetch(`${base}/api/queues/${foreign}/pause`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-protoqueue-token': token }, body: '{}' })
      assert.equal(foreignPause.status, 404)
      for (const path of ['/api/queues/a.b', '/api/queues/%E0%A4%A', `/api/queues/${names.streamName}/dead-letters?limit=0`]) {
        const response = await fetch(`${base}${path}`)
        assert.equal(response.status, 400, path)
        assert.equal((await response.json()).error.code, 'ERR_PQ_BAD_REQUEST')
      }
      const overview = await (await fetch(`${base}/api/overview`)).json()
      assert.ok(!overview.queues.some((q: { name: string }) => q.name === foreign))
      assert.ok(overview.queues.some((q: { name: string }) => q.name === names.streamName))
    } finally {
      await board.close()
      await queue.disconnect()
    }
  })

  test('a path that is not one starting with a single / is refused (//evil.example/api/... named another host), and so is an Origin that is not the Host', async () => {
    const { queue, names } = await queueWith(0, 0)
    const board = await dashboard({ connection: { url: server.url }, port: 0, token: TOKEN })
    try {
      const host = `127.0.0.1:${board.port}`
      /** One request as written, path and headers untouched by a URL parser. */
      const raw = (method: string, path: string, headers: Record<string, string> = {}) =>
        new Promise<{ status?: number; code?: string }>((resolve, reject) => {
          const req = request({ host: '127.0.0.1', port: board.port, method, path, headers: { host, ...headers } }, (res) => {
            let body = ''
            res.setEncoding('utf8')
            res.on('data', (chunk) => (body += chunk))
            res.on('end', () => resolve({ status: res.statusCode, code: body.startsWith('{') ? JSON.parse(body).error?.code : undefined }))
          })
          req.on('error', reject)
          req.end(method === 'POST' ? '{}' : undefined)
        })
      const action = { 'content-type': 'application/json', 'x-protoqueue-token': TOKEN }
      const evil = { ...action, origin: 'http://evil.example' }
      const pause = `/api/queues/${names.streamName}/pause`
      // Each of these once read as a URL whose host is evil.example, the Origin's: the check passed.
      for (const path of [`//evil.example${pause}`, `/\\evil.example${pause}`, `http://evil.example${pause}`]) {
        const refused = await raw('POST', path, evil)
        assert.deepEqual(refused, { status: 400, code: 'ERR_PQ_BAD_REQUEST' }, path)
      }
      for (const path of ['//evil.example/api/overview', '//evil.example/', '*']) {
        assert.deepEqual(await raw('GET', path), { status: 400, code: 'ERR_PQ_BAD_REQUEST' }, path)
      }
      assert.equal((await queue.getStats()).paused, false)
      // A well-formed path from another site: refused, for a read too.
      assert.deepEqual(await raw('POST', pause, evil), { status: 403, code: 'ERR_PQ_FORBIDDEN' })
      assert.deepEqual(await raw('GET', '/api/overview', { origin: 'http://evil.example' }), { status: 403, code: 'ERR_PQ_FORBIDDEN' })
      assert.deepEqual(await raw('GET', '/api/overview', { origin: `http://127.0.0.1:${board.port + 1}` }), { status: 403, code: 'ERR_PQ_FORBIDDEN' })
      // From the dashboard's own page: done.
      assert.equal((await raw('GET', '/api/overview', { origin: `http://${host}` })).status, 200)
      assert.equal((await raw('POST', pause, { ...action, origin: `http://${host}` })).status, 200)
      assert.equal((await queue.getStats()).paused, true)
    } finally {
      await board.close()
      await queue.disconnect()
    }
  })

  test('odd streams on the server: an older version\'s queue is listed, a half-made one shows its error, nothing crashes', async () => {
    const nc = await natsConnect({ servers: server.url })
    const jsm = await jetstreamManager(nc)
    const old = `OLD_${process.pid}`
    // As an older version made a queue: no metadata, a WorkQueue stream and its dead-letter stream.
    await jsm.streams.add({ name: old, subjects: [`old.${process.pid}`], retention: RetentionPolicy.Workqueue })
    await jsm.streams.add({ name: `${old}_DLQ`, subjects: [`protoqueue.dlq.${old}`] })
    // Marked as a queue, but its dead-letter stream is missing.
    const half = `HALF_${process.pid}`
    await jsm.streams.add({ name: half, subjects: [`half.${process.pid}`], retention: RetentionPolicy.Workqueue, metadata: { protoqueue: 'tasks', 'protoqueue.subject': `half.${process.pid}` } })
    await nc.close()
    const listing = await listQueues({ url: server.url })
    assert.equal(listing.queues.find((q) => q.streamName === old)?.foundBy, 'deadLetterStream')
    assert.equal(listing.queues.find((q) => q.streamName === old)?.subject, `old.${process.pid}`)
    assert.equal(listing.queues.find((q) => q.streamName === half)?.deadLetterStream, undefined)
    const board = await dashboard({ connection: { url: server.url }, port: 0 })
    try {
      const base = board.url.replace(/\/$/, '')
      const overview = await (await fetch(`${base}/api/overview`)).json()
      const oldRow = overview.queues.find((q: { name: string }) => q.name === old)
      assert.equal(oldRow.stats.pending, 0)
      const halfRow = overview.queues.find((q: { name: string }) => q.name === half)
      assert.match(halfRow.error, /^ERR_PQ_INVALID_CONFIG: /)
      const letters = await fetch(`${base}/api/queues/${half}/dead-letters`)
      assert.equal(letters.status, 400)
      assert.equal((await letters.json()).error.code, 'ERR_PQ_INVALID_CONFIG')
      assert.equal((await fetch(`${base}/api/overview`)).status, 200, 'still serving')
    } finally {
      await board.close()
    }
  })

  test('sampling a queue over a large subject tree costs what sampling a small one does: no listing of its subjects every second', async () => {
    // A server of its own: the dashboard samples every queue on it.
    const own = await NatsServer.start()
    const names = uniqueQueue('tree')
    const queue = new Protoqueue({ url: own.url, streamName: names.streamName, subject: `${names.subject}.>`, options: { schedules: true } })
    await queue.connect()
    const routed = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ data: {}, subject: `${names.subject}.part${from + i}` }))
    await queue.enqueueBatch(routed(0, 5))
    const watcher = await natsConnect({ servers: own.url })
    let samples = 0
    let replyBytes = 0
    const dlqInfo = `$JS.API.STREAM.INFO.${names.streamName}_DLQ`
    // One dead-letter stream info per sample of the queue (getStats).
    watcher.subscribe('$JS.API.>', {
      callback: (_err, msg) => {
        if (msg.subject === dlqInfo) samples++
      },
    })
    watcher.subscribe('_INBOX.>', {
      callback: (_err, msg) => {
        replyBytes += msg.data.length
      },
    })
    await watcher.flush()
    const board = await dashboard({ connection: { url: own.url }, port: 0, interval: 100 })
    /** Reply bytes per sample over the next `n` samples. */
    const perSample = async (n: number) => {
      await watcher.flush()
      const [fromSamples, fromBytes] = [samples, replyBytes]
      await eventually(`${n} samples`, () => samples - fromSamples >= n, 30_000)
      await watcher.flush()
      return (replyBytes - fromBytes) / (samples - fromSamples)
    }
    try {
      const small = await perSample(10)
      for (let from = 5; from < 1_505; from += 500) await queue.enqueueBatch(routed(from, 500))
      await eventually('the dashboard counts the tasks', async () => {
        const overview = await (await fetch(`${board.url}api/overview`)).json()
        return overview.queues[0]?.stats?.messages === 1_505
      })
      const large = await perSample(10)
      // Listing 1,500 subjects adds ~30 KB to every sample.
      assert.ok(large < small * 1.5 + 2_000, `${Math.round(small)} reply bytes per sample with 5 subjects, ${Math.round(large)} with 1,505`)
    } finally {
      await board.close()
      await watcher.close()
      await queue.disconnect()
      await own.stop()
    }
  })

  test('credentials in the URL are never shown', async () => {
    const secured = await NatsServer.startWithConfig('authorization { user: dash, password: "pa55-w0rd-secret" }\njetstream {}')
    try {
      const url = `nats://dash:pa55-w0rd-secret@127.0.0.1:${secured.port}`
      const listing = await listQueues({ url })
      assert.ok(!listing.server.includes('pa55-w0rd-secret'))
      const board = await dashboard({ connection: { url }, port: 0 })
      try {
        for (const path of ['/', '/api/overview']) {
          const text = await (await fetch(`${board.url.replace(/\/$/, '')}${path}`)).text()
          assert.ok(!text.includes('pa55-w0rd-secret'), path)
        }
      } finally {
        await board.close()
      }
      // No server: the connection's error, masked.
      const closed = `nats://dash:pa55-w0rd-secret@127.0.0.1:${await freePort()}`
      const err = await dashboard({ connection: { url: closed, options: { connectTimeout: 300 } }, port: 0 }).catch((e) => e)
      assert.equal(err.code, 'ERR_PQ_CONNECT')
      assert.ok(!String(err.message).includes('pa55-w0rd-secret'))
    } finally {
      await secured.stop()
    }
  })
})

/** Task ids a URL must carry intact: a path's and a query's separators, dot segments, unicode, `+`, `%`, `#`. */
const ODD_IDS = ['order/42', 'what?x=1&y=2', '../..', '.', 'ünï-ç😀', 'a+b', '100%', '#frag', 'semi;colon']

/** A handler by `data.kind`: `ok` completes with `data.result`, `fail` is dead-lettered at once, `retry` fails (the next try far off), `block` reports its steps and runs until cancelled. */
type Kind = { kind: 'ok'; result?: unknown } | { kind: 'fail' } | { kind: 'retry' } | { kind: 'block' }

/** A queue whose workers keep completed, failed and cancelled tasks, and its worker; `step()` lets a running `block` task report its next step. */
async function browsedQueue() {
  const names = uniqueQueue('browse')
  const queue = new Protoqueue<Kind>({ url: server.url, ...names, options: { batchSize: 4, keepCompleted: true, keepFailed: true, retryDelay: 600_000 } })
  await queue.connect()
  let steps = 0
  let stepped = () => {}
  const aborted: string[] = []
  await queue.process(async (task) => {
    const data = task.data
    if (data.kind === 'fail') return { success: false, retry: false, error: `refused ${task.id}` }
    if (data.kind === 'retry') return { success: false, error: `not yet: ${task.id}` }
    if (data.kind === 'block') {
      task.progress({ step: 1 })
      const signal = task.signal
      await new Promise<void>((resolve) => {
        stepped = () => task.progress({ step: 2 })
        if (steps > 0) stepped()
        signal.addEventListener('abort', () => resolve(), { once: true })
      })
      aborted.push(task.id)
      return { success: true }
    }
    return { success: true, result: data.result }
  })
  return {
    queue,
    names,
    aborted,
    step() {
      steps++
      stepped()
    },
  }
}

describe('the task browser: the HTTP API', () => {
  test('lists every state (newest first, with getStats()\'s counts), finds a task by any id, 404 for an unknown one, cancels with the token only', async () => {
    const { queue, names } = await browsedQueue()
    const board = await dashboard({ connection: { url: server.url }, port: 0, token: TOKEN })
    const base = board.url.replace(/\/$/, '')
    const api = `${base}/api/queues/${encodeURIComponent(names.streamName)}`
    try {
      for (const [i, id] of ODD_IDS.entries()) await queue.enqueue({ id, data: { kind: 'ok', result: { i, id } } })
      await queue.enqueue({ id: 'broken/1', data: { kind: 'fail' } })
      await queue.enqueue({ id: 'again?1', data: { kind: 'retry' } })
      await queue.enqueue({ id: 'busy/ü', data: { kind: 'block' } })
      await queue.enqueue({ id: 'later/1', data: { kind: 'ok' }, delay: 600_000 })
      await eventually('every task where it stays', async () => {
        const stats = await queue.getStats()
        return stats.completed === ODD_IDS.length && stats.failed === 1 && (await queue.getTask('again?1'))?.state === 'retrying' && (await queue.getTask('busy/ü'))?.state === 'running'
      }, 30_000)

      const list = async (state: string, extra = '') => {
        const response = await fetch(`${api}/tasks?state=${state}${extra}`)
        assert.equal(response.status, 200, state)
        return response.json() as Promise<{ queue: string; state: string; total?: number; tasks: Array<Record<string, unknown>>; cursor?: string }>
      }
      const ids = (page: { tasks: Array<Record<string, unknown>> }) => page.tasks.map((task) => task.id)
      // `total`: getStats()'s count as the dashboard last sampled it.
      const completed = await eventually('the count sampled', async () => {
        const page = await list('completed')
        return page.total === ODD_IDS.length && page
      }, 30_000)
      assert.equal(completed.queue, names.streamName)
      assert.deepEqual(ids(completed), (await queue.getTasks({ state: 'completed', limit: 50 })).tasks.map((task) => task.id), 'newest first, as getTasks lists them')
      assert.deepEqual([...ids(completed)].sort(), [...ODD_IDS].sort())
      // A row's result is the start of its JSON text.
      const row = completed.tasks.find((task) => task.id === 'order/42')!
      assert.equal(row.result, JSON.stringify({ i: 0, id: 'order/42' }))
      assert.equal(row.attempts, 1)
      assert.ok(typeof row.finishedAt === 'number' && typeof row.enqueuedAt === 'number')
      const failed = await list('failed')
      assert.equal(failed.total, 1)
      assert.deepEqual(failed.tasks.map((task) => [task.id, task.state, task.reason, task.error]), [['broken/1', 'deadLettered', 'rejected', 'refused broken/1']])
      const retrying = await list('retrying')
      assert.deepEqual(retrying.tasks.map((task) => [task.id, task.error, typeof task.runAt]), [['again?1', 'not yet: again?1', 'number']])
      assert.equal(retrying.total, undefined, 'getStats() does not count retrying tasks')
      const running = await list('running')
      assert.deepEqual(running.tasks.map((task) => [task.id, task.progress]), [['busy/ü', '{"step":1}']])
      const delayed = await list('delayed')
      assert.deepEqual(ids(delayed), ['later/1'])
      assert.equal(delayed.total, 1)
      assert.deepEqual(ids(await list('waiting')), [])
      const cancelled = await list('cancelled')
      assert.deepEqual([cancelled.total, ids(cancelled)], [0, []])

      // Found by any id, percent-encoded in the query: the task as getTask gives it.
      for (const [i, id] of ODD_IDS.entries()) {
        const response = await fetch(`${api}/task?id=${encodeURIComponent(id)}`)
        assert.equal(response.status, 200, id)
        const found = await response.json()
        assert.equal(found.queue, names.streamName)
        const { task: stored, ...info } = (await queue.getTask(id))!
        const { task: shown, ...rest } = found.task
        assert.deepEqual(rest, info, id)
        assert.equal(found.task.state, 'completed')
        assert.deepEqual(found.task.result, { i, id })
        // The task kept with its record (keepCompleted), its data as indented JSON text.
        assert.deepEqual(JSON.parse(shown.data), stored?.data, id)
        assert.equal(shown.dataFormat, 'json')
        assert.equal(found.letter, undefined)
      }
      // A dead-lettered task comes with its newest letter: the task's data and metadata as enqueued.
      const dead = await (await fetch(`${api}/task?id=${encodeURIComponent('broken/1')}`)).json()
      assert.equal(dead.task.state, 'deadLettered')
      assert.equal(dead.letters, 1)
      assert.deepEqual(JSON.parse(dead.letter.task.data), { kind: 'fail' })
      assert.equal(typeof JSON.parse(dead.letter.task.metadata).timestamp, 'number')
      assert.deepEqual([dead.letter.reason, dead.letter.error, dead.letter.attempts], ['rejected', 'refused broken/1', 1])
      const busy = await (await fetch(`${api}/task?id=${encodeURIComponent('busy/ü')}`)).json()
      assert.deepEqual([busy.task.state, busy.task.progress], ['running', { step: 1 }])

      // Unknown: 404. No id, an id that cannot be one, a state, limit or cursor out of range: 400.
      for (const id of ['no-such-task', 'order/43', 'ünï']) {
        const response = await fetch(`${api}/task?id=${encodeURIComponent(id)}`)
        assert.equal(response.status, 404, id)
        assert.equal((await response.json()).error.code, 'ERR_PQ_TASK_NOT_FOUND')
      }
      for (const [path, code] of [
        ['/task', 'ERR_PQ_BAD_REQUEST'],
        ['/task?id=', 'ERR_PQ_BAD_REQUEST'],
        [`/task?id=${encodeURIComponent('two words')}`, 'ERR_PQ_INVALID_TASK'],
        [`/task?id=${'x'.repeat(257)}`, 'ERR_PQ_INVALID_TASK'],
        ['/tasks', 'ERR_PQ_BAD_REQUEST'],
        ['/tasks?state=deadLettered', 'ERR_PQ_BAD_REQUEST'],
        ['/tasks?state=done', 'ERR_PQ_BAD_REQUEST'],
        ['/tasks?state=completed&limit=0', 'ERR_PQ_BAD_REQUEST'],
        ['/tasks?state=completed&limit=1001', 'ERR_PQ_BAD_REQUEST'],
        ['/tasks?state=completed&cursor=', 'ERR_PQ_BAD_REQUEST'],
        ['/tasks?state=completed&cursor=not-a-cursor', 'ERR_PQ_INVALID_CONFIG'],
        ['/dead-letters?cursor=1', 'ERR_PQ_BAD_REQUEST'],
      ] as const) {
        const response = await fetch(`${api}${path}`)
        assert.equal(response.status, 400, path)
        assert.equal((await response.json()).error.code, code, path)
      }
      const foreign = await fetch(`${base}/api/queues/NO_SUCH_STREAM/task?id=x`)
      assert.equal(foreign.status, 404)
      assert.equal((await foreign.json()).error.code, 'ERR_PQ_NOT_A_QUEUE')

      // Cancel: a state change, so the token; then the task's record says cancelled.
      const cancel = (headers: Record<string, string>, body: string) => fetch(`${api}/tasks/cancel`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
      for (const headers of [{}, { 'x-protoqueue-token': 'wrong-token-wrong-token' }] as Record<string, string>[]) {
        const refused = await cancel(headers, JSON.stringify({ id: 'busy/ü' }))
        assert.equal(refused.status, 401)
        assert.equal((await refused.json()).error.code, 'ERR_PQ_UNAUTHORIZED')
      }
      assert.equal((await queue.getTask('busy/ü'))?.state, 'running')
      for (const body of ['{}', JSON.stringify({ id: '' }), JSON.stringify({ id: 7 })]) {
        const vague = await cancel({ 'x-protoqueue-token': TOKEN }, body)
        assert.equal(vague.status, 400, body)
        assert.equal((await vague.json()).error.code, 'ERR_PQ_BAD_REQUEST')
      }
      const done = await cancel({ 'x-protoqueue-token': TOKEN }, JSON.stringify({ id: 'busy/ü' }))
      assert.equal(done.status, 200)
      assert.deepEqual(await done.json(), { cancelled: true })
      await eventually('cancelled, and listed so', async () => ids(await list('cancelled')).includes('busy/ü'), 30_000)
      assert.equal((await (await fetch(`${api}/task?id=${encodeURIComponent('busy/ü')}`)).json()).task.state, 'cancelled')
      // A delayed task is removed: nothing is known of it afterwards.
      assert.deepEqual(await (await cancel({ 'x-protoqueue-token': TOKEN }, JSON.stringify({ id: 'later/1' }))).json(), { cancelled: true })
      assert.equal((await fetch(`${api}/task?id=${encodeURIComponent('later/1')}`)).status, 404)
      assert.deepEqual(ids(await list('delayed')), [])
    } finally {
      await board.close()
      await queue.disconnect()
    }
  })

  test('paging joins up: every page from the cursor of the one before, nothing twice or left out, no cursor on the last; dead letters too, oldest first, also when a letter shown is removed', async () => {
    const { queue, names } = await queueWith(0, 5)
    const board = await dashboard({ connection: { url: server.url }, port: 0 })
    const api = `${board.url.replace(/\/$/, '')}/api/queues/${encodeURIComponent(names.streamName)}`
    try {
      // One at a time: stored in this order, so listed newest first in the reverse one.
      const waiting = Array.from({ length: 7 }, (_, i) => `page/${i}?ü`)
      for (const id of waiting) await queue.enqueue({ id, data: { n: id } })
      const seen: string[] = []
      const cursors: string[] = []
      let cursor: string | undefined
      do {
        const page = await (await fetch(`${api}/tasks?state=waiting&limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)).json()
        assert.ok(page.tasks.length <= 3)
        seen.push(...page.tasks.map((task: { id: string; state: string }) => (assert.equal(task.state, 'waiting'), task.id)))
        cursor = page.cursor
        if (cursor) cursors.push(cursor)
      } while (cursor)
      assert.deepEqual(seen, [...waiting].reverse())
      assert.equal(cursors.length, 2)

      // Dead letters: oldest first, 2 a page; a letter shown is purged before the next page is read.
      const letters = async (after?: string) => (await fetch(`${api}/dead-letters?limit=2${after ? `&cursor=${encodeURIComponent(after)}` : ''}`)).json()
      const first = await letters()
      assert.equal(first.total, 5)
      const taskIds = (page: { letters: Array<{ taskId: string }> }) => page.letters.map((letter) => letter.taskId)
      const letterId = (i: number) => `letter-${names.streamName}-${i}`
      assert.deepEqual(taskIds(first), [letterId(0), letterId(1)])
      assert.equal(await queue.purgeDeadLetters({ ids: [letterId(0)] }), 1)
      const second = await letters(first.cursor)
      assert.deepEqual(taskIds(second), [letterId(2), letterId(3)])
      const third = await letters(second.cursor)
      assert.deepEqual(taskIds(third), [letterId(4)])
      assert.equal(third.cursor, undefined)
    } finally {
      await board.close()
      await queue.disconnect()
    }
  })
})

describe('the task browser in Chromium', () => {
  let browser: Browser
  before(async () => {
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
  })

  test('a task\'s page from the list: its result (text, not markup) and timeline, a dead letter\'s data and metadata; search by id; a running task\'s progress read again; cancel needs the token the dashboard requires', async () => {
    const { queue, names, aborted, step } = await browsedQueue()
    // On loopback with a token of the user's: the page does not carry it, and asks for it.
    const board = await dashboard({ connection: { url: server.url }, port: 0, token: TOKEN, interval: 200 })
    const page = await browser.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    const dialogs: string[] = []
    page.on('dialog', async (dialog) => {
      dialogs.push(dialog.message())
      await dialog.accept()
    })
    try {
      const done = 'order/42?x=ü#1'
      const hostile = '<img src=x onerror="window.pwned=1">'
      await queue.enqueue({ id: done, data: { kind: 'ok', result: { total: 42, note: hostile } } })
      await queue.enqueue({ id: 'refused/1', data: { kind: 'fail' }, metadata: { tenant: hostile } })
      await eventually('completed and failed', async () => {
        const stats = await queue.getStats()
        return stats.completed === 1 && stats.failed === 1
      }, 30_000)

      await page.goto(board.url)
      assert.ok(await page.locator('#token-form').isVisible(), 'the page asks for the token')
      const row = `tr[data-queue="${names.streamName}"]`
      await page.locator(`${row} td[data-field="name"]`).click()
      await eventually('the tasks of the queue', async () => (await page.locator('#tasks-queue').innerText()) === names.streamName, 30_000)
      const completedTab = page.locator('#task-tabs button[data-tab="completed"]')
      await eventually('the completed count', async () => (await completedTab.locator('.count').innerText()) === '1', 30_000)
      await completedTab.click()
      const listed = page.locator(`#tasks tbody tr[data-task-id="${done}"]`)
      await listed.waitFor()
      assert.match(await listed.innerText(), /result \{"total":42,"note":"<img src=x onerror=\\"window.pwned=1\\">"\}/)

      // Its page: from the row's link.
      await listed.locator('a').click()
      await page.locator('#task-page').waitFor()
      assert.equal(new URL(page.url()).hash, `#/queues/${encodeURIComponent(names.streamName)}/tasks/${encodeURIComponent(done)}`)
      assert.equal(await page.locator('#task-id').innerText(), done)
      await eventually('its state', async () => (await page.locator('#task-state').innerText()) === 'completed', 30_000)
      const result = await page.locator('#task-body [data-block="result"] pre').innerText()
      assert.deepEqual(JSON.parse(result), { total: 42, note: hostile })
      assert.equal(await page.locator('#task-body img').count(), 0)
      assert.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined)
      assert.deepEqual(await page.locator('#task-timeline li').evaluateAll((items) => items.map((item) => (item as HTMLElement).dataset.step)), ['enqueued', 'started', 'finished'])
      // The task kept with its record (keepCompleted): its data, as text.
      assert.deepEqual(JSON.parse(await page.locator('#task-body [data-block="data"] pre').innerText()), { kind: 'ok', result: { total: 42, note: hostile } })
      assert.equal(await page.locator('#task-cancel').isVisible(), false, 'a completed task cannot be cancelled')
      assert.ok(!(await page.locator('#tasks-section').isVisible()), 'the page shows the task alone')

      // Back: the list again. A dead letter's task: its data and metadata, from its letter.
      await page.locator('#task-back').click()
      await page.locator('#tasks-section').waitFor()
      await page.locator('#task-tabs button[data-tab="letters"]').click()
      await page.locator('#tasks tbody tr[data-task-id="refused/1"] a').click()
      await eventually('its letter', async () => (await page.locator('#task-state').innerText()) === 'deadLettered' && (await page.locator('#task-body [data-block="dead letter"]').count()) === 1, 30_000)
      assert.deepEqual(JSON.parse(await page.locator('#task-body [data-block="data"] pre').innerText()), { kind: 'fail' })
      assert.equal(JSON.parse(await page.locator('#task-body [data-block="metadata"] pre').innerText()).tenant, hostile)
      assert.equal(await page.locator('#task-body dd[data-field="error"]').innerText(), 'refused refused/1')
      assert.equal(await page.locator('#task-body img').count(), 0)
      await page.goBack()
      await page.locator('#tasks-section').waitFor()

      // An unknown id searched: said so.
      await page.locator('#task-search-id').fill('no/such?task')
      await page.locator('#task-search button[type="submit"]').click()
      await eventually('not found', async () => /^No task "no\/such\?task" in /.test(await page.locator('#task-search-said').innerText()), 30_000)

      // A running task, found by its id: its progress read again while it runs.
      const busy = 'busy/ü&#2'
      await queue.enqueue({ id: busy, data: { kind: 'block' } })
      await eventually('running', async () => (await queue.getTask(busy))?.state === 'running', 30_000)
      await page.locator('#task-search-id').fill(busy)
      await page.locator('#task-search button[type="submit"]').click()
      await eventually('its page', async () => (await page.locator('#task-id').innerText()) === busy && (await page.locator('#task-state').innerText()) === 'running', 30_000)
      const progress = () => page.locator('#task-body [data-block="progress"] pre').innerText().then(JSON.parse, () => undefined)
      await eventually('step 1', async () => (await progress())?.step === 1, 30_000)
      step()
      await eventually('step 2, read again', async () => (await progress())?.step === 2, 30_000)

      // Cancel: asked first; without the token, and with a wrong one, nothing is done.
      const cancel = page.locator('#task-cancel')
      assert.ok(await cancel.isVisible())
      await cancel.click()
      await eventually('asked for the token', async () => (await page.locator('#error').innerText()).includes('Enter the dashboard token'), 30_000)
      assert.match(dialogs[0], /^Cancel task busy\/ü&#2 of /)
      await page.locator('#token').fill('wrong-token-wrong-token')
      await cancel.click()
      await eventually('refused', async () => (await page.locator('#error').innerText()).includes('ERR_PQ_UNAUTHORIZED'), 30_000)
      assert.equal((await queue.getTask(busy))?.state, 'running')
      assert.deepEqual(aborted, [])
      await page.locator('#token').fill(TOKEN)
      await cancel.click()
      await eventually('done', async () => /cancel done \(cancelled: true\)/.test(await page.locator('#notice').innerText()), 30_000)
      await eventually('cancelled on the page', async () => (await page.locator('#task-state').innerText()) === 'cancelled', 30_000)
      assert.equal(await cancel.isVisible(), false)
      assert.deepEqual(aborted, [busy])
      assert.equal(dialogs.length, 3)
      assert.deepEqual(errors, [])
    } finally {
      await page.close()
      await board.close()
      await queue.disconnect()
    }
  })
})

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function cli(args: string[], env: Record<string, string> = {}, untilLine?: RegExp): Promise<Run & { url?: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let url: string | undefined
    child.stdout.on('data', (chunk) => {
      stdout += chunk
      const found = untilLine?.exec(stdout)
      if (found && !url) {
        url = found[1]
        // Running: check it answers, then stop it as a service manager would.
        fetch(`${url}api/overview`)
          .then((r) => r.json())
          .then((overview) => {
            stdout += `\nOVERVIEW ${JSON.stringify(overview)}\n`
            child.kill('SIGTERM')
          }, reject)
      }
    })
    child.stderr.on('data', (chunk) => (stderr += chunk))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr, url }))
  })
}

describe('README', () => {
  test('the Dashboard snippet serves the page (on a free port instead of 3000)', async () => {
    const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
    const code = /<!-- snippet: dashboard -->\n```typescript\n([\s\S]*?)```/.exec(readme)![1]
    assert.match(code, /port: 3000/)
    // Inside the package, as readme.spec.ts does: `protoqueue/dashboard` resolves to this checkout.
    const scratch = join(__dirname, '.snippets')
    mkdirSync(scratch, { recursive: true })
    const file = join(scratch, 'dashboard.mts')
    writeFileSync(file, `${code.replace('port: 3000', 'port: 0')}\nawait new Promise((r) => process.once('SIGTERM', r));\nawait board.close();\n`)
    const { queue, names } = await queueWith(2, 0)
    const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: join(__dirname, '..'), env: { ...process.env, NATS_URL: server.url }, stdio: ['ignore', 'pipe', 'pipe'] })
    try {
      let out = ''
      child.stdout.on('data', (chunk) => (out += chunk))
      const url = await eventually('the snippet to print its URL', () => /dashboard on (\S+)/.exec(out)?.[1], 30_000)
      const overview = await (await fetch(`${url}api/overview`)).json()
      const listed = overview.queues.find((q: { name: string }) => q.name === names.streamName)
      assert.equal(listed.stats.pending, 2)
    } finally {
      const closed = new Promise((resolve) => child.on('close', resolve))
      child.kill('SIGTERM')
      assert.equal(await closed, 0)
      await queue.disconnect()
    }
  })
})

describe('protoqueue dashboard', () => {
  test('bad input: usage and exit 2', async () => {
    const bad = [
      ['dashboard', '--port', 'abc'],
      ['dashboard', '--port', '70000'],
      ['dashboard', '--bogus'],
      ['dashboard', '--interval', '5'],
      ['dashboard', '--host', '0.0.0.0', '--port', '0', '--server', server.url],
      ['dashboard', '--host', '0.0.0.0', '--auth-token-file', join(dir, 'missing')],
    ]
    for (const args of bad) {
      const run = await cli(args)
      assert.equal(run.code, 2, `${JSON.stringify(args)}: ${run.stderr}`)
      assert.ok(run.stderr.length > 0)
    }
    const help = await cli(['dashboard', '--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /--port/)
    assert.match(help.stdout, /PROTOQUEUE_DASHBOARD_TOKEN/)
  })

  test('serves until SIGTERM, then exits 0; a token from a file or the environment', async () => {
    const { queue, names } = await queueWith(3, 0)
    const tokenFile = join(dir, 'token')
    writeFileSync(tokenFile, `${TOKEN}\n`)
    for (const [args, env] of [
      [['dashboard', '--port', '0', '--server', server.url], {}],
      [['dashboard', '--port', '0', '--host', '0.0.0.0', '--auth-token-file', tokenFile], { NATS_URL: server.url }],
      [['dashboard', '--port', '0', '--host', '0.0.0.0'], { NATS_URL: server.url, PROTOQUEUE_DASHBOARD_TOKEN: TOKEN }],
    ] as const) {
      const run = await cli([...args], env, /(http:\/\/\S+\/)/)
      assert.equal(run.code, 0, run.stderr)
      assert.match(run.stdout, new RegExp(`OVERVIEW .*"name":"${names.streamName}"`))
      assert.ok(!run.stdout.includes(TOKEN) && !run.stderr.includes(TOKEN), 'the token is never printed')
    }
    const unreachable = await cli(['dashboard', '--port', '0', '--server', `nats://127.0.0.1:${await freePort()}`, '--connect-timeout', '300'])
    assert.equal(unreachable.code, 3, unreachable.stderr)
    await queue.disconnect()
  })
})
