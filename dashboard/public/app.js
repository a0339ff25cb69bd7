// The dashboard page: polls the server's JSON API and renders it. Text from the server (queue
// names, errors, task data, worker records) only ever goes into `textContent`, never into HTML.
'use strict'
;(() => {
  const config = JSON.parse(document.getElementById('pq-config').textContent)
  const $ = (id) => document.getElementById(id)
  const TOKEN_KEY = 'protoqueue-dashboard-token'
  const state = { selected: undefined, lettersSeen: undefined, requeueAllNote: undefined, schedulesSeen: undefined, schedulesAt: 0, workersSeen: undefined, workersAt: 0, charts: new Map(), busy: false }

  if (!config.token) {
    $('token-form').hidden = false
    $('token').value = sessionStorage.getItem(TOKEN_KEY) ?? ''
    $('token').addEventListener('input', () => sessionStorage.setItem(TOKEN_KEY, $('token').value))
    $('token-form').addEventListener('submit', (event) => event.preventDefault())
  }
  const token = () => config.token ?? $('token').value

  const number = new Intl.NumberFormat()
  const rate = (value) => (value === undefined ? '–' : value < 10 ? value.toFixed(1) : number.format(Math.round(value)))
  const el = (tag, text, className) => {
    const node = document.createElement(tag)
    if (text !== undefined) node.textContent = String(text)
    if (className) node.className = className
    return node
  }
  const button = (label, action, className) => {
    const node = el('button', label, className)
    node.type = 'button'
    node.dataset.action = action
    return node
  }
  /** `ms` as `1 h 30 min`. */
  const duration = (ms) => {
    const parts = []
    let left = ms
    for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['min', 60_000], ['s', 1000], ['ms', 1]]) {
      if (left >= size) {
        const n = Math.floor(left / size)
        parts.push(`${n} ${unit}`)
        left -= n * size
      }
    }
    return parts.join(' ') || '0 ms'
  }
  /** `ms` since the epoch as a local date and time; `–` for what no date can be (any client may write a worker record). */
  const localTime = (ms) => (typeof ms === 'number' && ms > 0 && !Number.isNaN(new Date(ms).getTime()) ? new Date(ms).toLocaleString() : '–')
  /** Letters a requeue would not put back as they are, and why (see the reason's note). */
  const FAILS_AGAIN = 'its data does not decode: requeueing dead-letters it again (unless its workers now take this data)'
  const LEFT_ALONE = 'not a task, or its data was dropped: requeue leaves it alone'
  const requeueNote = (letter) => (letter.requeue === 'failsAgain' ? FAILS_AGAIN : letter.requeue === 'leftAlone' ? LEFT_ALONE : undefined)

  function notice(text, isError) {
    const node = $(isError ? 'error' : 'notice')
    node.textContent = text
    node.hidden = false
    const other = $(isError ? 'notice' : 'error')
    other.hidden = true
  }

  async function api(path, options) {
    const response = await fetch(path, options)
    const body = await response.json().catch(() => ({}))
    if (!response.ok) {
      const error = body.error ?? { code: `HTTP ${response.status}`, message: response.statusText }
      throw new Error(`${error.code}: ${error.message}`)
    }
    return body
  }

  async function act(queue, action, body, confirmText) {
    if (confirmText && !window.confirm(confirmText)) return
    if (!token()) return notice('Enter the dashboard token (top right) to do this.', true)
    state.busy = true
    try {
      const result = await api(`/api/queues/${encodeURIComponent(queue)}/${action}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Protoqueue-Token': token() },
        body: JSON.stringify(body ?? {}),
      })
      const said = Object.entries(result).map(([key, value]) => `${key}: ${value}`).join(', ')
      notice(`${queue}: ${action.replace('dead-letters/', '')} done (${said})`)
      state.lettersSeen = undefined
      await refresh()
    } catch (err) {
      notice(`${queue}: ${action} failed: ${err.message}`, true)
    } finally {
      state.busy = false
    }
  }

  function renderQueues(overview) {
    const body = $('queues').tBodies[0]
    $('no-queues').hidden = overview.queues.length > 0
    const rows = new Map([...body.rows].map((row) => [row.dataset.queue, row]))
    for (const queue of overview.queues) {
      let row = rows.get(queue.name)
      rows.delete(queue.name)
      if (!row) {
        row = document.createElement('tr')
        row.dataset.queue = queue.name
        for (const field of ['name', 'subject', 'pending', 'inFlight', 'delayed', 'recurring', 'deadLettered', 'consumers', 'workers', 'enqueued', 'completed', 'state', 'actions']) {
          const cell = el('td')
          cell.dataset.field = field
          if (!['name', 'subject', 'state', 'actions'].includes(field)) cell.className = 'num'
          row.append(cell)
        }
        row.addEventListener('click', (event) => {
          if (event.target instanceof HTMLButtonElement) return
          state.selected = queue.name
          state.lettersSeen = undefined
          refresh()
        })
        body.append(row)
      }
      const cell = (field) => row.querySelector(`td[data-field="${field}"]`)
      const stats = queue.stats
      const last = queue.samples[queue.samples.length - 1]
      cell('name').textContent = queue.name
      if (queue.error) cell('name').append(el('span', queue.error, 'queue-error'))
      cell('subject').textContent = queue.subject
      cell('pending').textContent = stats ? number.format(stats.pending) : '–'
      cell('inFlight').textContent = stats ? number.format(stats.inFlight) : '–'
      cell('delayed').textContent = stats ? number.format(stats.delayed) : '–'
      cell('recurring').textContent = stats ? number.format(stats.recurring) : '–'
      cell('deadLettered').textContent = stats ? number.format(stats.deadLettered) : '–'
      cell('consumers').textContent = stats ? number.format(stats.consumer_count) : '–'
      // Workers running now (their consumers outlive them: a queue no worker runs still has one).
      cell('workers').textContent = typeof stats?.workers === 'number' ? number.format(stats.workers) : '–'
      cell('enqueued').textContent = rate(last?.enqueued)
      cell('completed').textContent = rate(last?.completed)
      const paused = stats?.paused === true
      const stateCell = cell('state')
      stateCell.textContent = stats ? (paused ? 'paused' : 'running') : '–'
      stateCell.className = stats ? (paused ? 'state-paused' : 'state-running') : ''
      const actions = cell('actions')
      const wanted = paused ? 'resume' : 'pause'
      if (actions.firstChild?.dataset?.action !== wanted) {
        actions.replaceChildren(button(paused ? 'Resume' : 'Pause', wanted))
        actions.firstChild.addEventListener('click', () => act(queue.name, wanted))
      }
      actions.firstChild.disabled = !stats
      row.classList.toggle('selected', queue.name === state.selected)
    }
    for (const row of rows.values()) row.remove()
  }

  /** A chart's width: its card's, however narrow the screen. */
  const chartWidth = (card) => Math.max(160, card.clientWidth - 16)
  /**
   * Without the cursor on a chart (uPlot then shows `--` for every value), its legend shows the
   * latest sample: every series with its name and current rate. Called after uPlot sets the legend
   * (new data, the cursor moved or left); `false`: no hook again.
   */
  const showLatest = (plot) => {
    const last = plot.data[0].length - 1
    if (plot.cursor.idx == null && last >= 0) plot.setLegend({ idx: last }, false)
  }
  let resizing
  window.addEventListener('resize', () => {
    clearTimeout(resizing)
    resizing = setTimeout(() => {
      for (const chart of state.charts.values()) chart.plot.setSize({ width: chartWidth(chart.card), height: 200 })
    }, 100)
  })

  function renderCharts(overview) {
    $('no-charts').hidden = overview.charts
    if (!overview.charts || typeof window.uPlot !== 'function') return
    const container = $('charts')
    const names = new Set(overview.queues.map((queue) => queue.name))
    for (const [name, chart] of state.charts) {
      if (!names.has(name)) {
        chart.plot.destroy()
        chart.card.remove()
        state.charts.delete(name)
      }
    }
    for (const queue of overview.queues) {
      let chart = state.charts.get(queue.name)
      const data = [
        queue.samples.map((s) => s.t / 1000),
        queue.samples.map((s) => s.enqueued),
        queue.samples.map((s) => s.completed),
        queue.samples.map((s) => s.deadLettered),
      ]
      if (!chart) {
        const card = el('div', undefined, 'chart')
        card.dataset.queue = queue.name
        card.append(el('h3', queue.name))
        const target = el('div')
        card.append(target)
        container.append(card)
        const plot = new window.uPlot(
          {
            width: chartWidth(card),
            height: 200,
            scales: { y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] } },
            axes: [{}, { label: 'tasks/s', size: 60 }],
            series: [
              { label: 'time' },
              { label: 'enqueued/s', stroke: '#2563eb', width: 2, value: (_, v) => rate(v ?? undefined) },
              { label: 'completed/s', stroke: '#16a34a', width: 2, value: (_, v) => rate(v ?? undefined) },
              { label: 'dead-lettered/s', stroke: '#dc2626', width: 1.5, value: (_, v) => rate(v ?? undefined) },
            ],
            hooks: { setLegend: [showLatest], setCursor: [showLatest] },
          },
          data,
          target,
        )
        chart = { card, plot }
        state.charts.set(queue.name, chart)
      } else {
        chart.plot.setData(data)
      }
    }
  }

  /** The queue whose workers, dead letters and recurring tasks are shown: the one clicked, else the first. */
  function selectedQueue(overview) {
    const queue = overview.queues.find((q) => q.name === state.selected) ?? overview.queues[0]
    state.selected = queue?.name
    return queue
  }

  async function renderLetters(queue) {
    $('letters-section').hidden = !queue
    if (!queue) return
    const count = queue.stats?.deadLettered
    // Read again only when the queue or its count changed.
    const key = `${queue.name}:${count}`
    if (state.lettersSeen === key) return
    const read = await api(`/api/queues/${encodeURIComponent(queue.name)}/dead-letters?limit=100`)
    state.lettersSeen = key
    $('letters-queue').textContent = queue.name
    $('letters-count').textContent = count === undefined ? '' : `(${number.format(count)}${count > read.letters.length ? `, oldest ${read.letters.length} shown` : ''})`
    $('no-letters').hidden = read.letters.length > 0
    $('requeue-all').disabled = read.letters.length === 0
    $('purge-all').disabled = read.letters.length === 0
    // What "Requeue all" would not put back as it is, among the letters shown.
    const failsAgain = read.letters.filter((letter) => letter.requeue === 'failsAgain').length
    const leftAlone = read.letters.filter((letter) => letter.requeue === 'leftAlone').length
    const said = []
    if (failsAgain > 0) said.push(`${number.format(failsAgain)} would fail again: ${failsAgain === 1 ? 'its data does' : 'their data do'} not decode (invalidData), requeueing dead-letters ${failsAgain === 1 ? 'it' : 'them'} again`)
    if (leftAlone > 0) said.push(`${number.format(leftAlone)} ${leftAlone === 1 ? 'is' : 'are'} not a task or lost ${leftAlone === 1 ? 'its' : 'their'} data: requeue leaves ${leftAlone === 1 ? 'it' : 'them'} alone`)
    state.requeueAllNote = said.length === 0 ? undefined : `Of the ${number.format(read.letters.length)} letters shown, ${said.join('; ')}.`
    $('letters-note').hidden = state.requeueAllNote === undefined
    $('letters-note').textContent = state.requeueAllNote ?? ''
    const body = $('letters').tBodies[0]
    body.replaceChildren(
      ...read.letters.map((letter) => {
        const row = el('tr')
        row.dataset.sequence = String(letter.sequence)
        if (letter.taskId) row.dataset.taskId = letter.taskId
        const note = requeueNote(letter)
        const reason = el('td', letter.reason)
        if (note) reason.append(el('span', note, 'reason-note'))
        row.append(
          el('td', letter.sequence, 'num'),
          el('td', letter.taskId ?? '–'),
          reason,
          el('td', letter.attempts, 'num'),
          el('td', letter.failedAt ? new Date(letter.failedAt).toLocaleString() : '–'),
          el('td', letter.error, 'error-text'),
          el('td', letter.data ?? '', 'data'),
        )
        const actions = el('td')
        const wrap = el('div', undefined, 'actions')
        const what = letter.taskId ? `of task ${letter.taskId}` : `at sequence ${letter.sequence} (not a task)`
        if (letter.requeue !== 'leftAlone') {
          const failsAgain = letter.requeue === 'failsAgain'
          const requeue = button('Requeue', 'requeue', failsAgain ? 'fails-again' : undefined)
          if (failsAgain) requeue.title = `${letter.reason}: ${FAILS_AGAIN}`
          requeue.addEventListener('click', () =>
            act(queue.name, 'dead-letters/requeue', { sequences: [letter.sequence] }, failsAgain ? `Requeue the dead letter ${what}? ${letter.reason}: ${FAILS_AGAIN}.` : undefined),
          )
          wrap.append(requeue)
        }
        const purge = button('Purge', 'purge', 'danger')
        purge.addEventListener('click', () => act(queue.name, 'dead-letters/purge', { sequences: [letter.sequence] }, `Remove this dead letter ${what}?`))
        wrap.append(purge)
        actions.append(wrap)
        row.append(actions)
        return row
      }),
    )
  }

  async function renderSchedules(queue) {
    // Only a queue with options.schedules can have recurring tasks.
    $('schedules-section').hidden = !queue?.schedules
    if (!queue?.schedules) return
    // Read again when the queue or its count changed, and every 15 s (a schedule replaced, its next run).
    const key = `${queue.name}:${queue.stats?.recurring}`
    if (state.schedulesSeen === key && Date.now() - state.schedulesAt < 15_000) return
    state.schedulesSeen = key
    state.schedulesAt = Date.now()
    $('schedules-queue').textContent = queue.name
    let read
    try {
      read = await api(`/api/queues/${encodeURIComponent(queue.name)}/schedules`)
    } catch (err) {
      $('schedules').tBodies[0].replaceChildren()
      $('schedules-count').textContent = ''
      $('no-schedules').textContent = `Cannot read the recurring tasks: ${err.message}`
      $('no-schedules').hidden = false
      return
    }
    $('schedules-count').textContent = `(${number.format(read.schedules.length)})`
    $('no-schedules').textContent = 'No recurring tasks.'
    $('no-schedules').hidden = read.schedules.length > 0
    $('schedules').tBodies[0].replaceChildren(
      ...read.schedules.map((schedule) => {
        const row = el('tr')
        row.dataset.schedule = schedule.name
        const every = typeof schedule.every === 'number'
        const runs = el('td', every ? `every ${duration(schedule.every)}` : `cron ${schedule.cron}`, 'spec')
        if (every) runs.title = `${number.format(schedule.every)} ms`
        row.append(
          el('td', schedule.name),
          runs,
          el('td', every ? '–' : schedule.timeZone ?? 'UTC'),
          el('td', typeof schedule.nextRun === 'number' ? new Date(schedule.nextRun).toLocaleString() : '–'),
          el('td', schedule.taskName ?? '–'),
          el('td', schedule.data ?? '', 'data'),
        )
        return row
      }),
    )
  }

  async function renderWorkers(queue) {
    $('workers-section').hidden = !queue
    if (!queue) return
    // A worker writes its record every 5 s: read again when the queue or its count changed, and every 5 s.
    const key = `${queue.name}:${queue.stats?.workers}`
    if (state.workersSeen === key && Date.now() - state.workersAt < 5_000) return
    state.workersSeen = key
    state.workersAt = Date.now()
    $('workers-queue').textContent = queue.name
    let read
    try {
      read = await api(`/api/queues/${encodeURIComponent(queue.name)}/workers`)
    } catch (err) {
      $('workers').tBodies[0].replaceChildren()
      $('workers-count').textContent = ''
      $('no-workers').textContent = `Cannot read the workers: ${err.message}`
      $('no-workers').hidden = false
      return
    }
    $('workers-count').textContent = `(${number.format(read.workers.length)} running)`
    $('no-workers').textContent = 'No workers running.'
    $('no-workers').hidden = read.workers.length > 0
    $('workers').tBodies[0].replaceChildren(
      ...read.workers.map((worker) => {
        const row = el('tr')
        row.dataset.worker = String(worker.id)
        const cell = (field, text, className) => {
          const node = el('td', text, className)
          node.dataset.field = field
          return node
        }
        const kind = cell('kind', worker.kind === 'deadLetters' ? 'dead letters' : worker.kind)
        if (Array.isArray(worker.subjects)) kind.append(el('span', worker.subjects.join(', '), 'subjects'))
        const inFlight = cell('inFlight', `${number.format(worker.inFlight)} / ${number.format(worker.batchSize)}`, 'num')
        inFlight.title = 'tasks its handlers run / handlers it runs at once (batchSize)'
        row.append(
          cell('id', worker.id, 'mono'),
          cell('host', worker.host),
          cell('pid', worker.pid, 'num'),
          kind,
          cell('since', localTime(worker.startedAt)),
          inFlight,
          cell('completed', number.format(worker.completed), 'num'),
          cell('failed', number.format(worker.failed), 'num'),
          cell('seen', localTime(worker.seenAt)),
          cell('version', worker.version),
        )
        return row
      }),
    )
  }

  $('requeue-all').addEventListener('click', () => {
    if (!state.selected) return
    const note = state.requeueAllNote ? `\n\n${state.requeueAllNote}` : ''
    act(state.selected, 'dead-letters/requeue', { all: true }, `Requeue every dead letter of ${state.selected}?${note}`)
  })
  $('purge-all').addEventListener('click', () => state.selected && act(state.selected, 'dead-letters/purge', { all: true }, `Remove every dead letter of ${state.selected}?`))

  async function refresh() {
    try {
      const overview = await api('/api/overview')
      $('server').textContent = overview.server
      $('status').textContent = `updated ${new Date().toLocaleTimeString()}`
      $('status').dataset.updatedAt = String(Date.now())
      if (overview.error) notice(`Cannot read the queues: ${overview.error}`, true)
      const selected = selectedQueue(overview)
      renderQueues(overview)
      renderCharts(overview)
      await renderWorkers(selected)
      await renderLetters(selected)
      await renderSchedules(selected)
    } catch (err) {
      $('status').textContent = `not updated: ${err.message}`
    }
  }

  const loop = async () => {
    if (!state.busy) await refresh()
    setTimeout(loop, config.interval)
  }
  loop()
})()
