// The dashboard page: polls the server's JSON API and renders it. Text from the server (queue
// names, errors, task data, worker records) only ever goes into `textContent`, never into HTML.
'use strict'
;(() => {
  const config = JSON.parse(document.getElementById('pq-config').textContent)
  const $ = (id) => document.getElementById(id)
  const TOKEN_KEY = 'protoqueue-dashboard-token'
  const state = {
    selected: undefined, lettersSeen: undefined, requeueAllNote: undefined, schedulesSeen: undefined, schedulesAt: 0, workersSeen: undefined, workersAt: 0, charts: new Map(), busy: false,
    overview: undefined,
    // The task browser: the tab shown, and what it lists (`pages` read so far; `request` counts reads, so a late answer is dropped).
    tab: 'waiting',
    tasks: { queue: undefined, tab: undefined, key: undefined, at: 0, pages: 0, cursor: undefined, request: 0 },
    // The task page open (`#/queues/<queue>/tasks/<id>`), and what was last read of it.
    view: undefined,
    task: undefined,
  }

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
      throw Object.assign(new Error(`${error.code}: ${error.message}`), { status: response.status, code: error.code })
    }
    return body
  }
  const queuePath = (queue) => `/api/queues/${encodeURIComponent(queue)}`
  /** The address of a task's page: ids are any string, so both parts are percent-encoded. */
  const taskHref = (queue, id) => `#/queues/${encodeURIComponent(queue)}/tasks/${encodeURIComponent(id)}`
  /** The action's name as a notice says it. */
  const ACTION_NAMES = { 'dead-letters/requeue': 'requeue', 'dead-letters/purge': 'purge', 'tasks/cancel': 'cancel' }

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
      const what = action === 'tasks/cancel' ? `${queue}, task ${body.id}` : queue
      notice(`${what}: ${ACTION_NAMES[action] ?? action} done (${said})`)
      state.lettersSeen = undefined
      state.tasks.key = undefined
      await refresh()
    } catch (err) {
      notice(`${queue}: ${ACTION_NAMES[action] ?? action} failed: ${err.message}`, true)
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

  // The task browser: a queue's tasks by state, a page at a time, and a task's own page.
  const TABS = ['waiting', 'delayed', 'running', 'retrying', 'completed', 'failed', 'cancelled', 'letters']
  /** The states getStats() counts (as the tab's count); the others show how many were listed. */
  const COUNTED = { delayed: 'delayed', completed: 'completed', failed: 'failed', cancelled: 'cancelled', letters: 'deadLettered' }
  /** States a task stays in: its page is read once; the others are read again while it is open. */
  const FINAL = new Set(['completed', 'deadLettered', 'cancelled'])
  /** States `cancel(id)` can still end. */
  const CANCELLABLE = new Set(['waiting', 'delayed', 'running', 'retrying'])
  const KEPT_NOTE = 'Workers record completed tasks with options.keepCompleted (or results), failed and cancelled ones with keepFailed (or results).'
  const EMPTY = {
    waiting: 'No task waits.',
    delayed: 'No delayed task.',
    running: 'No task runs now.',
    retrying: 'No task waits for a retry.',
    completed: `No completed task kept. ${KEPT_NOTE}`,
    failed: `No failed (dead-lettered) task kept: their letters are under Dead letters. ${KEPT_NOTE}`,
    cancelled: `No cancelled task kept. ${KEPT_NOTE}`,
    letters: 'No dead letters.',
  }
  const ORDER = {
    running: 'The tasks the live workers run now, the latest started first.',
    letters: 'The letters on the dead-letter stream, oldest first (the order the library reads them).',
  }
  /** The most characters of a result, progress or error shown on a task's page. */
  const SHOWN = 64 * 1024
  const clipped = (text) => (text.length > SHOWN ? `${text.slice(0, SHOWN)}…` : text)

  /** A tab's count: getStats()'s where it counts the state, else how many were listed (`+`: more to list). */
  function renderTabs(queue) {
    for (const tab of $('task-tabs').querySelectorAll('button[data-tab]')) {
      const name = tab.dataset.tab
      tab.setAttribute('aria-selected', String(name === state.tab))
      tab.classList.toggle('selected', name === state.tab)
      const counted = COUNTED[name]
      const count = tab.querySelector('.count')
      if (counted) {
        const value = queue.stats?.[counted]
        count.textContent = typeof value === 'number' ? number.format(value) : ''
        tab.title = ''
      } else if (state.tasks.queue === queue.name && state.tasks.tab === name) {
        const listed = $('tasks').tBodies[0].rows.length
        count.textContent = `${number.format(listed)}${state.tasks.cursor ? '+' : ''}`
        tab.title = 'listed: getStats() does not count this state'
      } else {
        count.textContent = ''
      }
    }
  }

  /** What makes a tab's first page worth reading again: its count, or the queue's counts for the states it does not count. */
  function tabKey(queue, tab) {
    const stats = queue.stats ?? {}
    if (COUNTED[tab]) return `${stats[COUNTED[tab]]}`
    return `${stats.lastSequence}:${stats.pending}:${stats.inFlight}:${stats.workers}`
  }

  /** A row of the task list: id (its page's link), times, attempts, and its error or result. */
  function taskRow(queue, task) {
    const row = el('tr')
    row.dataset.taskId = task.id
    const idCell = el('td', undefined, 'mono')
    const link = el('a', task.id)
    link.href = taskHref(queue, task.id)
    idCell.append(link)
    let when = localTime(task.finishedAt)
    if (task.finishedAt === undefined && task.runAt !== undefined) when = `${task.state === 'retrying' ? 'not before' : 'due'} ${localTime(task.runAt)}`
    let summary = ''
    if (task.error !== undefined) summary = task.reason ? `${task.reason}: ${task.error}` : task.error
    else if (task.result !== undefined) summary = `result ${task.result}`
    else if (task.resultError !== undefined) summary = `no result: ${task.resultError}`
    else if (task.progress !== undefined) summary = `progress ${task.progress}`
    else if (task.reason !== undefined) summary = task.reason
    row.append(idCell, el('td', localTime(task.enqueuedAt)), el('td', localTime(task.startedAt)), el('td', when), el('td', task.attempts, 'num'), el('td', summary, 'data'))
    return row
  }

  /** A dead letter as a row of the task list: its task's page when it is a task. */
  function letterRow(queue, letter) {
    const row = el('tr')
    row.dataset.sequence = String(letter.sequence)
    const idCell = el('td', undefined, 'mono')
    if (letter.taskId) {
      row.dataset.taskId = letter.taskId
      const link = el('a', letter.taskId)
      link.href = taskHref(queue, letter.taskId)
      idCell.append(link)
    } else {
      idCell.textContent = `(not a task: letter ${letter.sequence})`
    }
    row.append(idCell, el('td', '–'), el('td', '–'), el('td', localTime(letter.failedAt)), el('td', letter.attempts, 'num'), el('td', `${letter.reason}: ${letter.error}`, 'data'))
    return row
  }

  /** Reads the tab's first page (`more`: its next page) and shows it. */
  async function loadTasks(queue, more) {
    const tab = state.tab
    const request = ++state.tasks.request
    const params = new URLSearchParams({ limit: tab === 'letters' ? '100' : '50' })
    if (tab !== 'letters') params.set('state', tab)
    if (more) params.set('cursor', state.tasks.cursor)
    const path = `${queuePath(queue.name)}/${tab === 'letters' ? 'dead-letters' : 'tasks'}?${params}`
    const key = tabKey(queue, tab)
    let read
    try {
      read = await api(path)
    } catch (err) {
      if (request !== state.tasks.request) return
      $('no-tasks').textContent = `Cannot list the tasks: ${err.message}`
      $('no-tasks').hidden = false
      return
    }
    if (request !== state.tasks.request) return
    const rows = (tab === 'letters' ? read.letters : read.tasks).map((item) => (tab === 'letters' ? letterRow(queue.name, item) : taskRow(queue.name, item)))
    const body = $('tasks').tBodies[0]
    if (more) body.append(...rows)
    else body.replaceChildren(...rows)
    Object.assign(state.tasks, { queue: queue.name, tab, key, at: Date.now(), pages: more ? state.tasks.pages + 1 : 1, cursor: read.cursor })
    $('tasks-more').hidden = !read.cursor
    $('no-tasks').textContent = EMPTY[tab]
    $('no-tasks').hidden = body.rows.length > 0
    $('tasks-order').textContent = ORDER[tab] ?? 'Newest first.'
    $('tasks-when').textContent = tab === 'delayed' ? 'Due' : tab === 'retrying' ? 'Not before' : tab === 'letters' ? 'Failed at' : 'Finished'
    renderTabs(queue)
  }

  /**
   * The selected queue's tasks: its first page read again when the queue, the tab or the tab's
   * counts changed (at most every 2 s; every 5 s for a state getStats() does not count), unless
   * more pages were read ("More"): then the list stays as it is until the tab is chosen again.
   */
  async function renderTasks(queue) {
    $('tasks-section').hidden = !queue
    if (!queue) return
    $('tasks-queue').textContent = queue.name
    const listed = state.tasks
    const age = Date.now() - listed.at
    const stale =
      listed.queue !== queue.name ||
      listed.tab !== state.tab ||
      (listed.pages <= 1 && ((listed.key !== tabKey(queue, state.tab) && age >= 2_000) || (!COUNTED[state.tab] && age >= 5_000)))
    if (stale) await loadTasks(queue, false)
    else renderTabs(queue)
  }

  $('task-tabs').addEventListener('click', (event) => {
    const tab = event.target instanceof Element ? event.target.closest('button[data-tab]') : null
    if (!tab || !TABS.includes(tab.dataset.tab)) return
    state.tab = tab.dataset.tab
    // Chosen again: read its first page again.
    state.tasks.tab = undefined
    const queue = state.overview && selectedQueue(state.overview)
    if (queue) renderTasks(queue)
  })
  $('tasks-more').addEventListener('click', () => {
    const queue = state.overview?.queues.find((q) => q.name === state.tasks.queue)
    if (queue && state.tasks.cursor) loadTasks(queue, true)
  })
  $('task-search').addEventListener('submit', async (event) => {
    event.preventDefault()
    const id = $('task-search-id').value
    const said = $('task-search-said')
    said.hidden = true
    if (!id || !state.selected) return
    const queue = state.selected
    try {
      const read = await api(`${queuePath(queue)}/task?id=${encodeURIComponent(id)}`)
      state.task = { queue, id, read, at: Date.now() }
      location.hash = taskHref(queue, id)
    } catch (err) {
      said.textContent = err.status === 404 ? `No task ${JSON.stringify(id)} in ${queue}: never enqueued, or it ended and no record of it is kept.` : err.message
      said.hidden = false
    }
  })

  /** The task page the address names (`#/queues/<queue>/tasks/<id>`), or `undefined`. */
  function viewOf(hash) {
    const parts = /^#\/queues\/([^/]+)\/tasks\/([^/]+)$/.exec(hash)
    if (!parts) return undefined
    try {
      return { queue: decodeURIComponent(parts[1]), id: decodeURIComponent(parts[2]) }
    } catch {
      return undefined
    }
  }

  function showView() {
    const view = viewOf(location.hash)
    state.view = view
    document.body.classList.toggle('task-open', Boolean(view))
    $('task-page').hidden = !view
    if (!view) {
      state.task = undefined
      // Charts made while hidden took the least width: give them their card's.
      for (const chart of state.charts.values()) chart.plot.setSize({ width: chartWidth(chart.card), height: 200 })
      return
    }
    state.selected = view.queue
    if (state.task && (state.task.queue !== view.queue || state.task.id !== view.id)) state.task = undefined
    $('task-id').textContent = view.id
    $('task-queue').textContent = view.queue
    window.scrollTo(0, 0)
    renderTask()
  }
  window.addEventListener('hashchange', showView)

  /** A `<dt>`/`<dd>` pair. */
  const field = (list, name, value, className) => {
    const dt = el('dt', name)
    const dd = el('dd', value, className)
    dd.dataset.field = name.toLowerCase()
    list.append(dt, dd)
  }
  /** A titled block of preformatted text. */
  const block = (name, text, note) => {
    const node = el('div', undefined, 'block')
    node.dataset.block = name.toLowerCase()
    node.append(el('h3', name))
    if (note) node.append(el('p', note, 'hint'))
    if (text !== undefined) node.append(el('pre', clipped(text)))
    return node
  }

  /** When it happened, step by step: enqueued → started → finished, or its due time. */
  function timeline(task) {
    const steps = []
    if (task.enqueuedAt !== undefined) steps.push(['enqueued', 'Enqueued', task.enqueuedAt])
    if (task.startedAt !== undefined) steps.push(['started', task.state === 'running' ? 'Started (this attempt)' : 'Last attempt started', task.startedAt])
    if (task.finishedAt !== undefined) {
      const ended = { completed: 'Completed', deadLettered: 'Dead-lettered', cancelled: 'Cancelled' }[task.state] ?? 'Finished'
      steps.push(['finished', ended, task.finishedAt])
    }
    if (task.runAt !== undefined) steps.push(['runAt', task.state === 'retrying' ? 'Next attempt not before' : task.state === 'delayed' ? 'Due' : 'Runs at', task.runAt])
    const list = el('ol', undefined, 'timeline')
    list.id = 'task-timeline'
    let before
    for (const [name, label, at] of steps) {
      const item = el('li')
      item.dataset.step = name
      item.append(el('span', label, 'step'), el('span', localTime(at), 'at'))
      if (before !== undefined && at >= before) item.append(el('span', `+${duration(at - before)}`, 'since'))
      list.append(item)
      before = at
    }
    if (steps.length === 0) list.append(el('li', 'No times known.', 'hint'))
    return list
  }

  function showTask(view, read) {
    const task = read.task
    $('task-missing').hidden = true
    $('task-state').textContent = task.state
    $('task-state').dataset.state = task.state
    $('task-cancel').hidden = !CANCELLABLE.has(task.state)
    const fields = el('dl', undefined, 'fields')
    field(fields, 'State', task.state)
    field(fields, 'Attempts', number.format(task.attempts))
    if (task.priority !== undefined) field(fields, 'Priority', task.priority)
    if (task.reason !== undefined) field(fields, 'Reason', task.reason)
    if (task.error !== undefined) field(fields, 'Error', clipped(task.error), 'error-text')
    if (task.resultError !== undefined) field(fields, 'No result', task.resultError, 'error-text')
    const letter = read.letter
    // The task as stored: its letter's copy, else the one getTask found (message, schedule or kept record).
    const stored = letter?.task ?? task.task
    if (stored?.name !== undefined) field(fields, 'Name', stored.name)
    if (stored?.subject !== undefined) field(fields, 'Subject', stored.subject, 'mono')
    if (letter?.task?.maxAttempts !== undefined) field(fields, 'Attempts allowed', letter.task.maxAttempts)
    const parts = [fields, el('h3', 'Timeline'), timeline(task)]
    if ('progress' in task) parts.push(block('Progress', JSON.stringify(task.progress, null, 2), task.state === 'running' ? 'Its latest task.progress(value), read again while it runs.' : undefined))
    if ('result' in task) parts.push(block('Result', JSON.stringify(task.result, null, 2)))
    if (task.failures?.length) {
      const lines = task.failures.map((failed) => `#${failed.attempt}, ${localTime(failed.startedAt)} – ${localTime(failed.failedAt)}:\n${failed.error}`)
      parts.push(block('Failed attempts', lines.join('\n\n')))
    }
    if (letter) {
      const of = read.letters > 1 ? ` (the newest of its ${number.format(read.letters)} letters)` : ''
      parts.push(block('Dead letter', `#${letter.sequence}${of}, ${letter.reason}, ${localTime(letter.failedAt)}, after ${letter.attempts} attempt${letter.attempts === 1 ? '' : 's'}:\n${letter.error}`))
      if (letter.details !== undefined) parts.push(block('Details', letter.details))
    }
    if (stored) {
      parts.push(block('Data', stored.data ?? '', stored.contentType !== 'application/json' ? `content type ${stored.contentType}` : undefined))
      parts.push(block('Metadata', stored.metadata ?? '{}'))
    } else {
      parts.push(block('Data', undefined, 'Not kept: the server has this task\'s data only while it waits, runs or is delayed, in its dead letter, or in the record keepCompleted / keepFailed keep.'))
    }
    $('task-body').replaceChildren(...parts)
  }

  /**
   * Reads the open task again unless it ended (its page then stays as it is), and shows what
   * changed (a page drawn again loses the reader's selection).
   */
  async function renderTask() {
    const view = state.view
    if (!view) return
    const known = state.task
    const fresh = known && Date.now() - known.at < 500
    if (known && (known.missing || FINAL.has(known.read?.task.state) || fresh)) {
      if (known.read && !known.shown) {
        showTask(view, known.read)
        known.shown = JSON.stringify(known.read)
      }
      return
    }
    let read
    try {
      read = await api(`${queuePath(view.queue)}/task?id=${encodeURIComponent(view.id)}`)
    } catch (err) {
      if (state.view !== view) return
      if (err.status !== 404) return notice(`Cannot read task ${view.id}: ${err.message}`, true)
      state.task = { queue: view.queue, id: view.id, missing: true, at: Date.now() }
      $('task-state').textContent = ''
      $('task-cancel').hidden = true
      $('task-body').replaceChildren()
      $('task-missing').textContent = `No task ${JSON.stringify(view.id)} in ${view.queue}: never enqueued, or it ended and no record of it is kept.`
      $('task-missing').hidden = false
      return
    }
    if (state.view !== view) return
    const text = JSON.stringify(read)
    state.task = { queue: view.queue, id: view.id, read, at: Date.now(), shown: text }
    if (known?.shown !== text) showTask(view, read)
  }

  $('task-cancel').addEventListener('click', () => {
    const view = state.view
    if (!view) return
    // Read again after the cancel (act refreshes the page), whatever state it was in.
    state.task = undefined
    act(view.queue, 'tasks/cancel', { id: view.id }, `Cancel task ${view.id} of ${view.queue}?`)
  })

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
      state.overview = overview
      const selected = selectedQueue(overview)
      renderQueues(overview)
      renderCharts(overview)
      // A task's page reads only its task.
      if (state.view) return await renderTask()
      await renderWorkers(selected)
      await renderTasks(selected)
      await renderLetters(selected)
      await renderSchedules(selected)
    } catch (err) {
      $('status').textContent = `not updated: ${err.message}`
    }
  }

  showView()
  const loop = async () => {
    if (!state.busy) await refresh()
    setTimeout(loop, config.interval)
  }
  loop()
})()
