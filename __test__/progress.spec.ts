// `task.progress(value)` (lib/dispatcher.js) against a fake native side: what it takes, how often
// it reports, and when it stops; and the `progress` and `cancelled` events (lib/events.js) their
// listeners get from the native side's rows. No NATS here. Throttling runs on node:test's mocked clock
// (`setTimeout` and `Date`); `setImmediate` and microtasks stay real, so `turn()` still works.
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, mock, test } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import { dispatcher, MAX_PROGRESS_BYTES, PROGRESS_INTERVAL, type NativeFailure } from '../lib/dispatcher.js'
import { ProtoqueueError } from '../lib/errors.js'
import { addEventMethods, attachEvents } from '../lib/events.js'

/** What the native side was told, in order. */
type Call = { progress: [id: string, json: string] } | { complete: { succeeded: number[]; failed: number[] } }

/** The native side: records every call, progress and outcomes in one list. */
class FakeNative {
  calls: Call[] = []
  complete(succeeded: Uint32Array, failed: NativeFailure[]) {
    if (succeeded.length > 0 || failed.length > 0) this.calls.push({ complete: { succeeded: [...succeeded], failed: failed.map((f) => f.token) } })
  }
  progress(id: string, json: string) {
    this.calls.push({ progress: [id, json] })
  }
  /** The progress reported, as `[id, json]`. */
  get reports() {
    return this.calls.flatMap((call) => ('progress' in call ? [call.progress] : []))
  }
}

interface Task {
  id: string
  data: unknown
  metadata: Record<string, unknown>
  readonly signal: AbortSignal
  progress(value: unknown): void
}

function batch(tokens: number[], limit = 10) {
  return JSON.stringify({ limit, tokens, tasks: tokens.map((token) => ({ id: `t${token}`, data: token, metadata: {} })) })
}

/** Lets every pending promise, microtask and immediate run. */
const turn = () => new Promise((resolve) => setImmediate(resolve))

/** A handler whose calls settle when the test says so. */
function controlled() {
  const calls: Array<{ task: Task; resolve: (result: unknown) => void; reject: (err: unknown) => void }> = []
  const handler = (task: Task) => new Promise((resolve, reject) => calls.push({ task, resolve, reject }))
  return { calls, handler }
}

/** One running task on a fresh dispatcher. */
function running(native: object = new FakeNative()) {
  const { calls, handler } = controlled()
  const tasks = dispatcher(handler, native as FakeNative)
  tasks.dispatch(batch([1]))
  return { tasks, task: calls[0].task, settle: () => calls[0].resolve({ success: true }), calls }
}

const invalid = (err: unknown) => err instanceof ProtoqueueError && err.code === 'ERR_PQ_INVALID_PROGRESS'

beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }))
afterEach(() => mock.timers.reset())

describe('what task.progress takes', () => {
  const accepted: Array<[string, unknown, string]> = [
    ['zero', 0, '0'],
    ['minus zero', -0, '0'],
    ['a negative number', -12.5, '-12.5'],
    ['a percentage', 42, '42'],
    ['the largest number', Number.MAX_VALUE, JSON.stringify(Number.MAX_VALUE)],
    ['an empty object', {}, '{}'],
    ['an object', { done: 3, total: 10, step: 'upload' }, '{"done":3,"total":10,"step":"upload"}'],
    ['an empty array', [], '[]'],
    ['an array', [1, 'two', { three: 3 }], '[1,"two",{"three":3}]'],
    ['an object whose toJSON gives an object', { toJSON: () => ({ a: 1 }) }, '{"a":1}'],
    ['an object with undefined and function fields', { a: undefined, f: () => 1, b: 2 }, '{"b":2}'],
    ['an object of exactly 64 KiB', { s: 'x'.repeat(MAX_PROGRESS_BYTES - 8) }, `{"s":"${'x'.repeat(MAX_PROGRESS_BYTES - 8)}"}`],
  ]
  for (const [what, value, json] of accepted) {
    test(`${what}: reported as ${json.length > 20 ? `${json.length} bytes of JSON` : json}`, () => {
      const native = new FakeNative()
      const { task } = running(native)
      assert.equal(task.progress(value), undefined)
      assert.deepStrictEqual(native.reports, [['t1', json]])
    })
  }

  const cycle: Record<string, unknown> = { a: 1 }
  cycle.self = cycle
  const rejected: Array<[string, unknown]> = [
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['-Infinity', -Infinity],
    ['a string', '50%'],
    ['an empty string', ''],
    ['true', true],
    ['false', false],
    ['null', null],
    ['undefined', undefined],
    ['a function', () => 1],
    ['a function with toJSON', Object.assign(() => 1, { toJSON: () => ({}) })],
    ['a symbol', Symbol('progress')],
    ['a BigInt', 10n],
    ['a Number object', new Number(5)],
    ['a Date (its JSON is a string)', new Date(0)],
    ['an object whose toJSON gives a number', { toJSON: () => 5 }],
    ['an object whose toJSON gives undefined', { toJSON: () => undefined }],
    ['an object with a cycle', cycle],
    ['an object holding a BigInt', { n: 1n }],
    ['an object whose toJSON throws', { toJSON: () => { throw new Error('no') } }],
    ['an object whose getter throws', Object.defineProperty({}, 'x', { enumerable: true, get: () => { throw new Error('no') } })],
    ['a revoked Proxy', (() => { const { proxy, revoke } = Proxy.revocable({}, {}); revoke(); return proxy })()],
    ['an object one byte over 64 KiB', { s: 'x'.repeat(MAX_PROGRESS_BYTES - 7) }],
    ['an object over 64 KiB in UTF-8 bytes, not in characters', { s: 'é'.repeat(MAX_PROGRESS_BYTES / 2) }],
  ]
  for (const [what, value] of rejected) {
    test(`${what}: ERR_PQ_INVALID_PROGRESS, nothing reported`, () => {
      const native = new FakeNative()
      const { task } = running(native)
      assert.throws(() => task.progress(value), invalid)
      assert.deepStrictEqual(native.reports, [])
      // The task goes on reporting.
      task.progress(1)
      assert.deepStrictEqual(native.reports, [['t1', '1']])
    })
  }

  test('the message says what was given and what is taken', () => {
    const { task } = running()
    assert.throws(() => task.progress('50%'), (err: Error) => /string 50%/.test(err.message) && /finite number/.test(err.message) && /64 KiB/.test(err.message))
    assert.throws(() => task.progress(cycle), (err: Error) => /cannot be written as JSON/.test(err.message))
    assert.throws(() => task.progress({ s: 'x'.repeat(MAX_PROGRESS_BYTES) }), (err: Error) => new RegExp(`${MAX_PROGRESS_BYTES + 8} bytes`).test(err.message))
  })

  test('a handler that does not catch it fails as for any throw', async () => {
    const native = new FakeNative()
    dispatcher((task: Task) => {
      task.progress(NaN)
      return { success: true }
    }, native).dispatch(batch([1]))
    await turn()
    assert.deepStrictEqual(native.calls, [{ complete: { succeeded: [], failed: [1] } }])
  })

  test('a native side without progress(): values are checked, nothing is reported', async () => {
    const { task, settle } = running({ complete() {} })
    task.progress(1)
    task.progress({ a: 1 })
    assert.throws(() => task.progress(NaN), invalid)
    settle()
    await turn()
  })

  test('a native side whose progress() throws: swallowed, the task completes', async () => {
    const native = new FakeNative()
    native.progress = () => {
      throw new Error('native side gone')
    }
    const { task, settle } = running(native)
    task.progress(1)
    task.progress(2)
    settle()
    await turn()
    assert.deepStrictEqual(native.calls, [{ complete: { succeeded: [1], failed: [] } }])
  })
})

describe('throttling', () => {
  test('the first value goes at once; later ones at most every 100 ms, the newest of each interval', () => {
    const native = new FakeNative()
    const { task } = running(native)
    task.progress(1)
    assert.deepStrictEqual(native.reports, [['t1', '1']], 'at once')
    mock.timers.tick(10)
    task.progress(2)
    mock.timers.tick(10)
    task.progress(3)
    mock.timers.tick(79)
    assert.equal(native.reports.length, 1, 'nothing before the interval is up')
    mock.timers.tick(1)
    assert.deepStrictEqual(native.reports, [['t1', '1'], ['t1', '3']], 'the newest, 100 ms after the first report')
    mock.timers.tick(50)
    task.progress(4)
    mock.timers.tick(49)
    assert.equal(native.reports.length, 2)
    mock.timers.tick(1)
    assert.deepStrictEqual(native.reports.at(-1), ['t1', '4'], '100 ms after the last report, not after the call')
    mock.timers.tick(PROGRESS_INTERVAL * 5)
    assert.equal(native.reports.length, 3, 'nothing more without new values')
    task.progress(5)
    assert.deepStrictEqual(native.reports.at(-1), ['t1', '5'], 'at once again after a quiet interval')
  })

  test('each task has its own interval; the value reported is the one given (later changes to the object do not count)', () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    dispatcher(handler, native).dispatch(batch([1, 2]))
    const state = { done: 1 }
    calls[0].task.progress(state)
    calls[1].task.progress(10)
    state.done = 2
    calls[0].task.progress(state)
    state.done = 3
    mock.timers.tick(PROGRESS_INTERVAL)
    assert.deepStrictEqual(native.reports, [['t1', '{"done":1}'], ['t2', '10'], ['t1', '{"done":2}']])
  })

  test('a clock that goes back does not hold reports back for longer than an interval', () => {
    const native = new FakeNative()
    const { task } = running(native)
    task.progress(1)
    mock.timers.setTime(Date.now() - 60_000)
    task.progress(2)
    assert.deepStrictEqual(native.reports, [['t1', '1'], ['t1', '2']])
  })

  test('100,000 calls in one second: about ten reports, the last value included, and no memory kept per call', async () => {
    setFlagsFromString('--expose-gc')
    const gc: () => void = runInNewContext('gc')
    const native = new FakeNative()
    const { task, settle } = running(native)
    const { progress } = task
    const CALLS = 100_000
    const note = 'x'.repeat(200)
    gc()
    const before = process.memoryUsage().heapUsed
    for (let i = 1; i <= CALLS; i++) {
      progress({ done: i, total: CALLS, note })
      if (i % 100 === 0) mock.timers.tick(1)
    }
    gc()
    const grown = process.memoryUsage().heapUsed - before
    // Kept, the values' texts alone would take ~25 MB.
    assert.ok(grown < 2_000_000, `heap grew ${grown} bytes`)
    assert.ok(native.reports.length <= 11, `${native.reports.length} reports`)
    assert.ok(native.reports.length >= 9, `${native.reports.length} reports`)
    settle()
    await turn()
    const last = native.reports.at(-1)!
    assert.equal(JSON.parse(last[1]).done, CALLS, 'the newest value is reported at the end')
  })
})

describe('the end of the attempt', () => {
  test('a value still waiting is reported when the handler settles, before its outcome; the timer goes with it', async () => {
    const native = new FakeNative()
    const { task, settle } = running(native)
    task.progress(1)
    task.progress(2)
    settle()
    await turn()
    assert.deepStrictEqual(native.calls, [{ progress: ['t1', '1'] }, { progress: ['t1', '2'] }, { complete: { succeeded: [1], failed: [] } }])
    mock.timers.tick(PROGRESS_INTERVAL * 10)
    assert.equal(native.calls.length, 3, 'no timer left')
  })

  test('also when the handler fails or throws', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    dispatcher(handler, native).dispatch(batch([1, 2]))
    for (const call of calls) {
      call.task.progress(1)
      call.task.progress(2)
    }
    calls[0].resolve({ success: false, error: 'no' })
    calls[1].reject(new Error('boom'))
    await turn()
    assert.deepStrictEqual(native.calls, [
      { progress: ['t1', '1'] },
      { progress: ['t2', '1'] },
      { progress: ['t1', '2'] },
      { progress: ['t2', '2'] },
      { complete: { succeeded: [], failed: [1, 2] } },
    ])
  })

  test('after the handler settled, calls are ignored, whatever their value, and the task does not come back to life', async () => {
    const native = new FakeNative()
    const { task, settle } = running(native)
    const { progress } = task
    progress(1)
    settle()
    await turn()
    progress(2)
    progress(NaN)
    task.progress('not even checked')
    mock.timers.tick(PROGRESS_INTERVAL * 2)
    assert.deepStrictEqual(native.reports, [['t1', '1']])
  })

  test('a task whose progress is first read after its handler settled: ignored too', async () => {
    const native = new FakeNative()
    const { task, settle } = running(native)
    settle()
    await turn()
    task.progress(1)
    task.progress(NaN)
    assert.deepStrictEqual(native.reports, [])
  })

  for (const reason of ['timeout', 'cancelled', 'shutdown']) {
    test(`after an abort (${reason}): a waiting value is dropped and later calls are ignored, also from an abort listener`, async () => {
      const native = new FakeNative()
      const { task, calls, tasks } = running(native)
      task.progress(1)
      task.progress(2)
      let fromListener: unknown = 'not called'
      task.signal.addEventListener('abort', () => {
        fromListener = task.progress(3)
      })
      tasks.dispatch(JSON.stringify({ abort: [[1, reason]] }))
      assert.equal(fromListener, undefined)
      task.progress(4)
      task.progress(NaN)
      mock.timers.tick(PROGRESS_INTERVAL * 2)
      calls[0].resolve({ success: true })
      await turn()
      assert.deepStrictEqual(native.calls, [{ progress: ['t1', '1'] }])
    })
  }

  test('a task whose progress is first read after an abort: ignored', async () => {
    const native = new FakeNative()
    const { task, tasks } = running(native)
    tasks.dispatch(JSON.stringify({ abort: [[1, 'timeout']] }))
    task.progress(1)
    assert.deepStrictEqual(native.reports, [])
  })

  test('handlers still running after close() still report', async () => {
    const native = new FakeNative()
    const { task, tasks, settle } = running(native)
    tasks.close()
    task.progress(1)
    settle()
    await turn()
    assert.deepStrictEqual(native.calls, [{ progress: ['t1', '1'] }, { complete: { succeeded: [1], failed: [] } }])
  })
})

describe('the task stays as it was', () => {
  test('not enumerable: JSON, keys, spread and deep equality unchanged; one getter for all tasks; the same function on every read', async () => {
    const native = new FakeNative()
    const seen: Task[] = []
    const tasks = dispatcher((task: Task) => {
      seen.push(task)
      assert.equal(typeof task.progress, 'function')
      assert.equal(task.progress, task.progress)
      return { success: true }
    }, native)
    tasks.dispatch(batch([1, 2]))
    const other: Task[] = []
    dispatcher((task: Task) => {
      other.push(task)
      return { success: true }
    }, new FakeNative()).dispatch(batch([3]))
    await turn()
    for (const [i, task] of seen.entries()) {
      const plain = { id: `t${i + 1}`, data: i + 1, metadata: {} }
      assert.deepStrictEqual(task, plain)
      assert.deepStrictEqual(Object.keys(task), ['id', 'data', 'metadata'])
      assert.equal(JSON.stringify(task), JSON.stringify(plain))
      assert.deepStrictEqual({ ...task }, plain)
      assert.equal('progress' in task, true)
      assert.equal(Object.getOwnPropertyDescriptor(task, 'progress')!.enumerable, false)
    }
    const getters = [...seen, ...other].map((task) => Object.getOwnPropertyDescriptor(task, 'progress')!.get)
    assert.equal(new Set(getters).size, 1)
  })

  test('tasks that reported progress leave nothing behind once settled', async () => {
    setFlagsFromString('--expose-gc')
    const gc: () => void = runInNewContext('gc')
    const native = new FakeNative()
    const refs: Array<WeakRef<Task>> = []
    const tasks = dispatcher((task: Task) => {
      refs.push(new WeakRef(task))
      task.progress(1)
      task.progress({ waiting: true })
      return new Promise((resolve) => setImmediate(() => resolve({ success: true })))
    }, native)
    for (let from = 0; from < 2_000; from += 100) {
      tasks.dispatch(batch(Array.from({ length: 100 }, (_, i) => from + i), 10))
      for (let i = 0; i < 30; i++) await turn()
    }
    assert.equal(tasks.stats.running, 0)
    assert.equal(native.reports.length, 4_000)
    gc()
    await turn()
    gc()
    assert.equal(refs.filter((ref) => ref.deref() !== undefined).length, 0, 'every task was collected')
  })
})

describe('the progress and cancelled events', () => {
  class Queue {}
  addEventMethods(Queue)
  type WithEvents = Queue & { on(name: string, listener: (event: any) => void): WithEvents; off(name: string, listener: (event: any) => void): WithEvents }

  function setUp() {
    const native = {
      masks: [] as number[],
      waiting: [] as unknown[][],
      wake: undefined as (() => void) | undefined,
      listen(wake: () => void) {
        this.wake = wake
      },
      setEvents(mask: number) {
        this.masks.push(mask)
      },
      takeEvents() {
        const text = JSON.stringify(this.waiting)
        this.waiting = []
        return text
      },
    }
    const queue = new Queue() as WithEvents
    attachEvents(queue, native, { makeError: (code: string, message: string) => Object.assign(new Error(message), { code }) })
    return { queue, native }
  }

  test('their listeners set bits 16 and 32 of the mask', () => {
    const { queue, native } = setUp()
    const progress = () => {}
    const cancelled = () => {}
    queue.on('progress', progress).on('cancelled', cancelled).on('completed', () => {})
    queue.off('progress', progress).off('cancelled', cancelled)
    assert.deepStrictEqual(native.masks, [16, 48, 49, 33, 1])
  })

  test('rows become events: progress parsed with the rows, cancelled with its attempt', () => {
    const { queue, native } = setUp()
    const got: unknown[] = []
    queue.on('progress', (e) => got.push(e)).on('cancelled', (e) => got.push(e))
    native.waiting.push([16, 'a', 42], [16, 'b', { done: 1, of: [2] }], [32, 'c', 2, 4, 17], [1, 'd', 1, 4, 18, 1, 2, 3])
    native.wake!()
    assert.deepStrictEqual(got, [
      { type: 'progress', id: 'a', progress: 42 },
      { type: 'progress', id: 'b', progress: { done: 1, of: [2] } },
      { type: 'cancelled', id: 'c', attempt: 2, maxAttempts: 4, sequence: 17 },
    ])
  })
})
