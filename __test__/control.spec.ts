// Dead letters you can act on and control over a running queue, against a real nats-server:
// processDLQ, requeueDeadLetters, purgeDeadLetters, purge, pause and resume — from this process and
// across worker processes.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import { Protoqueue, type DeadLetter } from 'protoqueue'

import { Child, fixture, fixtureEnv } from './helpers/child'
import { NatsServer, uniqueQueue } from './helpers/nats'
import { eventually } from './helpers/wait'

let server: NatsServer
before(async () => {
  server = await NatsServer.start()
})
after(async () => {
  await server.stop()
})

/** A connected queue whose `n` tasks `{ n: i }` were all dead-lettered (reason `rejected`). */
async function withDeadLetters(n: number, names = uniqueQueue()) {
  const queue = new Protoqueue<{ n: number }>({ ...names, options: { retryDelay: 50 } })
  await queue.connect(server.url)
  // The letters must be stored in enqueue order (tests read them back in order): the next task
  // is enqueued once the one before is a dead letter (dead letters of tasks failing together are
  // stored in any order).
  const failing = new Protoqueue(names)
  await failing.connect(server.url)
  await failing.process(async () => ({ success: false, error: 'smtp down', retry: false }))
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    ids.push(await queue.enqueue({ data: { n: i } }))
    await eventually(`task ${i} dead-lettered`, async () => (await queue.getStats()).deadLettered === i + 1, 60_000)
  }
  await failing.disconnect()
  return { queue, ids, names }
}

function controlWorker(names: { streamName: string; subject: string }, extra: Record<string, string> = {}) {
  return Child.run(process.execPath, [fixture('control-worker.mjs')], fixtureEnv(names, server.url, extra))
}

describe('dead letters you can act on', () => {
  test('processDLQ: success removes a letter, a failure offers it again after retryDelay', async () => {
    const { queue, ids } = await withDeadLetters(3)
    const offers: Array<{ id?: string; at: number }> = []
    await queue.processDLQ(async (letter: DeadLetter<{ n: number }>) => {
      offers.push({ id: letter.task?.id, at: Date.now() })
      assert.equal(letter.reason, 'rejected')
      assert.equal(letter.error, 'smtp down')
      if (letter.task?.dataFormat === 'json' && letter.task.data.n === 1 && offers.filter((o) => o.id === letter.task?.id).length === 1) {
        throw new Error('not yet')
      }
      return { success: true }
    }, { retryDelay: 300 })
    await eventually('every letter removed', async () => (await queue.getStats()).deadLettered === 0)
    const second = offers.filter((o) => o.id === ids[1])
    assert.equal(second.length, 2, 'the failed letter was offered again')
    assert.ok(second[1].at - second[0].at >= 280, `offered again after ${second[1].at - second[0].at} ms`)
    assert.equal(offers.length, 4)
    await assert.rejects(queue.processDLQ(async () => ({ success: true })), { code: 'ERR_PQ_ALREADY_PROCESSING' })
    await queue.disconnect()
  })

  test('a dead-letter handler that never settles is bounded by taskTimeout, and its letter offered again', async () => {
    const { queue } = await withDeadLetters(1)
    let offers = 0
    await queue.processDLQ(async () => {
      offers++
      if (offers === 1) await new Promise(() => {})
      return { success: true }
    }, { taskTimeout: 300, retryDelay: 0 })
    await eventually('the letter removed on its second offer', async () => (await queue.getStats()).deadLettered === 0)
    assert.equal(offers, 2)
    await queue.disconnect()
  })

  test('a dead-letter worker killed with SIGKILL mid-letter loses nothing: the letter is offered again', async () => {
    const { queue, ids, names } = await withDeadLetters(1)
    const doomed = controlWorker(names, { MODE: 'letters', HANG: '1', ACK_WAIT: '1000' })
    await doomed.waitForLines(/^letter /)
    await doomed.kill('SIGKILL')
    assert.equal((await queue.getStats()).deadLettered, 1, 'still stored')
    const next = controlWorker(names, { MODE: 'letters', ACK_WAIT: '1000' })
    const [line] = await next.waitForLines(/^letter /)
    assert.equal(line, `letter ${ids[0]}`)
    await eventually('the letter removed', async () => (await queue.getStats()).deadLettered === 0)
    await next.kill('SIGTERM')
    await queue.disconnect()
  })

  test('requeueDeadLetters: a task requeued seconds after its enqueue runs again, with its id', async () => {
    const { queue, ids } = await withDeadLetters(3)
    assert.equal(await queue.requeueDeadLetters({ ids: [ids[2]] }), 1)
    const handled: Array<{ id: string; attempt?: number }> = []
    await queue.process(async (task) => {
      handled.push({ id: task.id, attempt: task.attempt })
      return { success: true }
    })
    await eventually('the requeued task', () => handled.length === 1)
    assert.deepStrictEqual(handled, [{ id: ids[2], attempt: 1 }])
    assert.equal(await queue.requeueDeadLetters({ reason: 'rejected', limit: 1 }), 1)
    await eventually('the second requeued task', () => handled.length === 2)
    assert.equal(handled[1].id, ids[0], 'the oldest first')
    assert.equal(await queue.purgeDeadLetters({ reason: 'retriesExhausted' }), 0)
    assert.equal(await queue.purgeDeadLetters(), 1)
    assert.equal((await queue.getStats()).deadLettered, 0)
    await queue.disconnect()
  })

  test('a filter key left undefined is refused, not read as every letter; sequences name one letter of a task that failed twice', async () => {
    const names = uniqueQueue()
    const { queue } = await withDeadLetters(2, names)
    for (const filter of [{ reason: undefined }, { ids: undefined }, { limit: null }, { sequences: undefined }]) {
      await assert.rejects(queue.purgeDeadLetters(filter as never), { code: 'ERR_PQ_INVALID_CONFIG' })
      await assert.rejects(queue.requeueDeadLetters(filter as never), { code: 'ERR_PQ_INVALID_CONFIG' })
    }
    assert.equal((await queue.getStats()).deadLettered, 2, 'nothing removed')

    // The same own id dead-lettered twice: two letters; a row of the dashboard names one.
    const failing = new Protoqueue(names)
    await failing.connect(server.url)
    await failing.process(async () => ({ success: false, error: 'smtp down', retry: false }))
    await queue.enqueue({ id: 'twice', data: { n: 7 } })
    await eventually('the first letter of twice', async () => (await queue.getStats()).deadLettered === 3)
    await queue.enqueue({ id: 'twice', data: { n: 8 } })
    await eventually('the second letter of twice', async () => (await queue.getStats()).deadLettered === 4)
    await failing.disconnect()
    const twice = (await queue.getDeadLetters(10)).filter((letter) => letter.task?.id === 'twice')
    assert.equal(twice.length, 2)
    assert.equal(await queue.purgeDeadLetters({ sequences: [twice[0].sequence] }), 1)
    const left = (await queue.getDeadLetters(10)).filter((letter) => letter.task?.id === 'twice')
    assert.deepStrictEqual(left.map((letter) => letter.sequence), [twice[1].sequence])
    assert.equal(await queue.requeueDeadLetters({ sequences: [twice[1].sequence, 999_999] }), 1)
    assert.equal((await queue.getStats()).messages, 1)
    await assert.rejects(queue.purgeDeadLetters({ sequences: [0] }), { code: 'ERR_PQ_INVALID_CONFIG' })
    await queue.disconnect()
  })

  test('two requeueDeadLetters calls at once make one copy of each task', async () => {
    const { queue, names } = await withDeadLetters(50)
    const other = new Protoqueue(names)
    await other.connect(server.url)
    const [a, b] = await Promise.all([queue.requeueDeadLetters(), other.requeueDeadLetters()])
    assert.equal(a + b, 50)
    const stats = await queue.getStats()
    assert.deepStrictEqual([stats.messages, stats.deadLettered], [50, 0])
    await other.disconnect()
    await queue.disconnect()
  })

  test('getDeadLetter(sequence) reads one letter as getDeadLetters does; none there is undefined; a bad sequence rejects', async () => {
    const { queue } = await withDeadLetters(3)
    const letters = await queue.getDeadLetters()
    assert.deepStrictEqual(await queue.getDeadLetter(letters[1].sequence), letters[1])
    await queue.purgeDeadLetters({ ids: [letters[1].task!.id] })
    assert.equal(await queue.getDeadLetter(letters[1].sequence), undefined, 'removed')
    assert.equal(await queue.getDeadLetter(letters[2].sequence + 1000), undefined, 'never stored')
    for (const bad of [0, -1, 1.5, '1', 2 ** 60]) {
      // @ts-expect-error deliberately wrong
      await assert.rejects(queue.getDeadLetter(bad), { code: 'ERR_PQ_INVALID_CONFIG' }, String(bad))
    }
    await queue.disconnect()
  })

  test('onProgress reports a requeue and a purge as they go, ending with every letter looked at; a throwing callback does not stop the call', async () => {
    const { queue } = await withDeadLetters(300)
    const reports: Array<{ seen: number; total: number; done: number }> = []
    assert.equal(await queue.requeueDeadLetters({ limit: 200 }, { onProgress: (p) => reports.push(p) }), 200)
    await eventually('a report', () => reports.length > 0)
    assert.ok(reports.every((p) => p.total === 300 && p.done <= p.seen && p.seen <= p.total), JSON.stringify(reports))
    for (let i = 1; i < reports.length; i++) assert.ok(reports[i].done >= reports[i - 1].done, 'done only grows')
    let calls = 0
    const thrower = () => {
      calls++
      throw new Error('a broken progress bar')
    }
    assert.equal(await queue.purgeDeadLetters({ reason: 'rejected' }, { onProgress: thrower }), 100)
    assert.ok(calls <= 1, `called ${calls} times after throwing`)
    for (const options of [5, { onProgress: 'x' }, { progress: () => {} }]) {
      // @ts-expect-error deliberately wrong
      await assert.rejects(queue.purgeDeadLetters({}, options), { code: 'ERR_PQ_INVALID_CONFIG' }, JSON.stringify(options))
    }
    assert.equal((await queue.getStats()).deadLettered, 0)
    await queue.disconnect()
  })

  test('purge() removes the waiting tasks, not those in flight', async () => {
    const queue = new Protoqueue({ ...uniqueQueue(), options: { batchSize: 2, prefetch: 0 } })
    await queue.connect(server.url)
    await queue.enqueueBatch(Array.from({ length: 10 }, (_, n) => ({ data: { n } })))
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let started = 0
    await queue.process(async () => {
      started++
      await gate
      return { success: true }
    })
    await eventually('two tasks running', () => started === 2)
    assert.equal(await queue.purge(), 8)
    release()
    await eventually('the queue empty', async () => (await queue.getStats()).messages === 0)
    assert.equal(started, 2)
    await queue.disconnect()
  })

  test('bad filters and calls before connect() reject with codes', async () => {
    const queue = new Protoqueue(uniqueQueue())
    for (const call of [() => queue.requeueDeadLetters(), () => queue.purgeDeadLetters(), () => queue.purge(), () => queue.pause(), () => queue.resume()]) {
      await assert.rejects(call(), { code: 'ERR_PQ_NOT_CONNECTED' })
    }
    await assert.rejects(queue.processDLQ(async () => ({ success: true })), { code: 'ERR_PQ_NOT_CONNECTED' })
    await queue.connect(server.url)
    const bad: unknown[] = [5, 'all', [], { id: ['x'] }, { ids: 'x' }, { ids: [1] }, { reason: 'nope' }, { reason: 5 }, { limit: 0 }, { limit: 1.5 }, { limit: 2 ** 60 }]
    for (const filter of bad) {
      // @ts-expect-error deliberately wrong
      await assert.rejects(queue.requeueDeadLetters(filter), { code: 'ERR_PQ_INVALID_CONFIG' }, JSON.stringify(filter))
    }
    // @ts-expect-error deliberately wrong
    await assert.rejects(queue.processDLQ('handler'), { code: 'ERR_PQ_INVALID_HANDLER' })
    await assert.rejects(queue.processDLQ(async () => ({ success: true }), { batchSize: 0 }), { code: 'ERR_PQ_INVALID_CONFIG' })
    // @ts-expect-error deliberately wrong
    await assert.rejects(queue.processDLQ(async () => ({ success: true }), { ackWait: 5 }), { code: 'ERR_PQ_INVALID_CONFIG' })
    await queue.disconnect()
  })
})

describe('pause and resume', () => {
  test('pause() in one process stops the workers of two others within a second, resume() restarts them, and a restarted worker stays paused', async () => {
    const names = uniqueQueue()
    const operator = new Protoqueue(names)
    await operator.connect(server.url)
    const workers = [controlWorker(names), controlWorker(names)]
    await Promise.all(workers.map((w) => w.waitForLines(/^ready$/)))
    await operator.enqueue({ data: 'before' })
    await eventually('a worker took the first task', () => workers.some((w) => w.lines.some((l) => l.startsWith('task '))))

    await operator.pause()
    assert.equal((await operator.getStats()).paused, true)
    const everyWorker = [...workers]
    const taken = () => everyWorker.reduce((n, w) => n + w.lines.filter((l) => l.startsWith('task ')).length, 0)
    const before = taken()
    await operator.enqueueBatch([{ data: 'during 1' }, { data: 'during 2' }])
    await new Promise((r) => setTimeout(r, 1_000))
    assert.equal(taken(), before, 'no worker took a task while paused')

    // A worker started while paused is paused too.
    await workers[0].kill('SIGKILL')
    workers[0] = controlWorker(names)
    everyWorker.push(workers[0])
    await workers[0].waitForLines(/^ready$/)
    await new Promise((r) => setTimeout(r, 500))
    assert.equal(workers[0].lines.filter((l) => l.startsWith('task ')).length, 0)
    assert.equal((await operator.getStats()).pending, 2)

    await operator.resume()
    assert.equal((await operator.getStats()).paused, false)
    await eventually('both waiting tasks taken', () => taken() === before + 2, 5_000)
    await Promise.all(workers.map((w) => w.kill('SIGTERM')))
    await operator.disconnect()
  })
})

describe('destroy', () => {
  test('destroy() deletes every stream of the queue and disconnects; connect() makes it anew, empty', async () => {
    const { queue, names } = await withDeadLetters(1)
    await queue.enqueue({ data: { n: 1 }, id: 'invoice-1' })
    const deleted = await queue.destroy()
    // A worker ran (it made the letter): its records' stream goes too.
    assert.deepEqual(deleted, [names.streamName, `${names.streamName}_DLQ`, `${names.streamName}_IDS`, `${names.streamName}_WORKERS`, `${names.streamName}_CANCELS`])
    await assert.rejects(queue.getStats(), (err: { code?: string }) => err.code === 'ERR_PQ_NOT_CONNECTED')
    await queue.connect(server.url)
    const stats = await queue.getStats()
    assert.deepEqual([stats.messages, stats.deadLettered], [0, 0])
    assert.deepEqual(await queue.destroy(), [names.streamName, `${names.streamName}_DLQ`])
  })

  test('a queue a worker uses (here or in another process) is refused unless forced', async () => {
    const names = uniqueQueue()
    const worker = controlWorker(names)
    await worker.waitForLines(/^ready$/)
    const operator = new Protoqueue(names)
    await operator.connect(server.url)
    const refused = await eventually('the worker seen', async () => {
      try {
        await operator.destroy()
        return undefined
      } catch (err) {
        return err as { code?: string; message: string }
      }
    })
    assert.equal(refused.code, 'ERR_PQ_QUEUE_IN_USE')
    assert.match(refused.message, /pull requests waiting/)
    assert.equal((await operator.getStats()).messages, 0, 'still connected, nothing deleted')
    await worker.kill('SIGTERM')
    const own = new Protoqueue(names)
    await own.connect(server.url)
    await own.process(async () => ({ success: true }))
    await assert.rejects(own.destroy(), (err: { code?: string; message: string }) => err.code === 'ERR_PQ_QUEUE_IN_USE' && /disconnect\(\) it first/.test(err.message))
    assert.deepEqual(await own.destroy({ force: true }), [names.streamName, `${names.streamName}_DLQ`, `${names.streamName}_WORKERS`, `${names.streamName}_CANCELS`])
    await operator.disconnect()
  })

  test('destroy() refuses options that are not { force?: boolean }', async () => {
    const queue = new Protoqueue(uniqueQueue())
    await queue.connect(server.url)
    for (const bad of [true, 'force', { force: 1 }, { forced: true }, []]) {
      await assert.rejects(queue.destroy(bad as never), (err: { code?: string }) => err.code === 'ERR_PQ_INVALID_CONFIG', String(bad))
    }
    await queue.destroy({ force: false })
  })
})
