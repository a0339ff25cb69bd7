// The dashboard page: polls the server's JSON API and renders it. Text from the server (queue
// names, errors, task data) only ever goes into `textContent`, never into HTML.
'use strict'
;(() => {
  const config = JSON.parse(document.getElementById('pq-config').textContent)
  const $ = (id) => document.getElementById(id)
  const TOKEN_KEY = 'protoqueue-dashboard-token'
  const state = { selected: undefined, lettersOf: undefined, lettersSeen: undefined, charts: new Map(), busy: false }

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
        for (const field of ['name', 'subject', 'pending', 'inFlight', 'delayed', 'deadLettered', 'consumers', 'enqueued', 'completed', 'state', 'actions']) {
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
      cell('deadLettered').textContent = stats ? number.format(stats.deadLettered) : '–'
      cell('consumers').textContent = stats ? number.format(stats.consumer_count) : '–'
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
        const width = Math.max(380, card.clientWidth - 16)
        const plot = new window.uPlot(
          {
            width,
            height: 200,
            scales: { y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] } },
            axes: [{}, { label: 'tasks/s', size: 60 }],
            series: [
              {},
              { label: 'enqueued/s', stroke: '#2563eb', width: 2 },
              { label: 'completed/s', stroke: '#16a34a', width: 2 },
              { label: 'dead-lettered/s', stroke: '#dc2626', width: 1.5 },
            ],
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

  async function renderLetters(overview) {
    const queue = overview.queues.find((q) => q.name === state.selected) ?? overview.queues[0]
    $('letters-section').hidden = !queue
    if (!queue) return
    state.selected = queue.name
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
    const body = $('letters').tBodies[0]
    body.replaceChildren(
      ...read.letters.map((letter) => {
        const row = el('tr')
        row.dataset.sequence = String(letter.sequence)
        if (letter.taskId) row.dataset.taskId = letter.taskId
        row.append(
          el('td', letter.sequence, 'num'),
          el('td', letter.taskId ?? '–'),
          el('td', letter.reason),
          el('td', letter.attempts, 'num'),
          el('td', letter.failedAt ? new Date(letter.failedAt).toLocaleString() : '–'),
          el('td', letter.error, 'error-text'),
          el('td', letter.data ?? '', 'data'),
        )
        const actions = el('td')
        if (letter.taskId) {
          const wrap = el('div', undefined, 'actions')
          const requeue = button('Requeue', 'requeue')
          requeue.addEventListener('click', () => act(queue.name, 'dead-letters/requeue', { sequences: [letter.sequence] }))
          const purge = button('Purge', 'purge', 'danger')
          purge.addEventListener('click', () => act(queue.name, 'dead-letters/purge', { sequences: [letter.sequence] }, `Remove this dead letter of task ${letter.taskId}?`))
          wrap.append(requeue, purge)
          actions.append(wrap)
        }
        row.append(actions)
        return row
      }),
    )
  }

  $('requeue-all').addEventListener('click', () => state.selected && act(state.selected, 'dead-letters/requeue', { all: true }, `Requeue every dead letter of ${state.selected}?`))
  $('purge-all').addEventListener('click', () => state.selected && act(state.selected, 'dead-letters/purge', { all: true }, `Remove every dead letter of ${state.selected}?`))

  async function refresh() {
    try {
      const overview = await api('/api/overview')
      $('server').textContent = overview.server
      $('status').textContent = `updated ${new Date().toLocaleTimeString()}`
      $('status').dataset.updatedAt = String(Date.now())
      if (overview.error) notice(`Cannot read the queues: ${overview.error}`, true)
      renderQueues(overview)
      renderCharts(overview)
      await renderLetters(overview)
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
