// The JavaScript dispatcher (lib/dispatcher.js) against a fake native side: a plain object whose
// `complete(succeeded, failed, started)` records reports, and batches fed by hand. No NATS here.
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, test } from 'node:test'

import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import { ABORT_REASONS, dispatcher, NO_STRING_FORM, type NativeFailure } from '../lib/dispatcher.js'
import { ProtoqueueError } from '../lib/errors.js'

interface Report {
  succeeded: number[]
  failed: NativeFailure[]
  started: number[]
}

/** The native side: records every report. */
class FakeNative {
  reports: Report[] = []
  complete(succeeded: Uint32Array, failed: NativeFailure[], started: Uint32Array) {
    this.reports.push({ succeeded: [...succeeded], failed, started: [...(started ?? [])] })
  }
  get succeeded() {
    return this.reports.flatMap((r) => r.succeeded)
  }
  get failed() {
    return this.reports.flatMap((r) => r.failed)
  }
  get started() {
    return this.reports.flatMap((r) => r.started)
  }
}

function batch(tokens: number[], limit = 2, data: (token: number) => unknown = (token) => token) {
  return JSON.stringify({ limit, tokens, tasks: tokens.map((token) => ({ id: `t${token}`, data: data(token), metadata: {} })) })
}

/** Lets every pending promise, microtask and immediate run. */
const turn = () => new Promise((resolve) => setImmediate(resolve))

/** A task as its handler gets it. */
interface Task {
  id: string
  data: unknown
  metadata: Record<string, unknown>
  readonly signal: AbortSignal
}

/** A handler whose calls settle when the test says so. */
function controlled() {
  const calls: Array<{ data: unknown; task: Task; resolve: (result: unknown) => void }> = []
  const handler = (task: Task) => new Promise((resolve) => calls.push({ data: task.data, task, resolve }))
  return { calls, handler }
}

/** The native side ending attempts: `{"abort": [[token, reason], ...]}`. */
const abort = (...pairs: Array<[number, string]>) => JSON.stringify({ abort: pairs })

/** What an abort's reason must be: a ProtoqueueError with the reason's code and message. */
function assertAbortedWith(signal: AbortSignal, reason: string) {
  const [code, message] = ABORT_REASONS.get(reason)!
  assert.equal(signal.aborted, true)
  assert.ok(signal.reason instanceof ProtoqueueError, 'the reason is a ProtoqueueError')
  assert.equal(signal.reason.code, code)
  assert.equal(signal.reason.message, message)
  assert.throws(() => signal.throwIfAborted(), (err) => err === signal.reason)
}

let unhandled: unknown[] = []
const onUnhandled = (reason: unknown) => unhandled.push(reason)
beforeEach(() => {
  unhandled = []
  process.on('unhandledRejection', onUnhandled)
})
afterEach(() => {
  process.off('unhandledRejection', onUnhandled)
  assert.deepStrictEqual(unhandled, [], 'no unhandled rejection')
})

describe('dispatching', () => {
  test('runs at most `limit` handlers, starts the next when one finishes, and reports starts and outcomes', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1, 2, 3, 4], 2))
    assert.equal(calls.length, 2, 'two started')
    await turn()
    assert.deepStrictEqual(native.started, [1, 2], 'only the started ones are reported started')
    calls[0].resolve({ success: true })
    await turn()
    assert.deepStrictEqual(native.succeeded, [1])
    assert.deepStrictEqual(native.started, [1, 2, 3], 'the next starts at once, reported with the outcome')
    assert.deepStrictEqual(native.reports.at(-1), { succeeded: [1], failed: [], started: [3] }, 'one report for both')
    calls[1].resolve({ success: false, error: 'no', details: { a: 1 }, retry: false })
    calls[2].resolve({ success: true })
    await turn()
    assert.deepStrictEqual(native.failed, [{ success: false, error: 'no', details: '{"a":1}', retry: false, token: 2 }])
    assert.deepStrictEqual(native.started, [1, 2, 3, 4])
    calls[3].resolve({ success: true })
    await turn()
    assert.deepStrictEqual(native.succeeded, [1, 3, 4])
    assert.equal(tasks.stats.running, 0)
  })

  test('a handler that settles within the turn reports its start with its outcome: one native call', async () => {
    const native = new FakeNative()
    const tasks = dispatcher(async () => ({ success: true }), native)
    tasks.dispatch(batch([1, 2, 3], 3))
    await turn()
    assert.deepStrictEqual(native.reports, [{ succeeded: [1, 2, 3], failed: [], started: [1, 2, 3] }])
    await turn()
    assert.equal(native.reports.length, 1, 'no empty report at the end of the turn')
  })

  test('tasks keep their order across batches, and a later batch may raise the limit', async () => {
    const native = new FakeNative()
    const seen: unknown[] = []
    const tasks = dispatcher(async (task: { data: unknown }) => {
      seen.push(task.data)
      return { success: true }
    }, native)
    tasks.dispatch(batch([1, 2, 3], 1))
    tasks.dispatch(batch([4, 5], 3))
    for (let i = 0; i < 10; i++) await turn()
    assert.deepStrictEqual(seen, [1, 2, 3, 4, 5])
    assert.deepStrictEqual(native.succeeded.sort(), [1, 2, 3, 4, 5])
  })

  test('a native side that throws from complete() loses those reports, not the worker', async () => {
    let calls = 0
    const tasks = dispatcher(async () => ({ success: true }), {
      complete() {
        calls++
        throw new Error('native side gone')
      },
    })
    tasks.dispatch(batch([1, 2, 3], 1))
    for (let i = 0; i < 10; i++) await turn()
    assert.ok(calls >= 3)
    assert.equal(tasks.stats.running, 0)
  })
})

describe('odd handler behaviour is an ordinary failure', () => {
  const throwingProxy = () =>
    new Proxy(
      {},
      Object.fromEntries(
        ['get', 'getPrototypeOf', 'has', 'ownKeys', 'getOwnPropertyDescriptor', 'apply', 'set', 'defineProperty'].map((trap) => [
          trap,
          () => {
            throw new Error(`trap ${trap}`)
          },
        ]),
      ),
    )
  const revoked = () => {
    const { proxy, revoke } = Proxy.revocable({}, {})
    revoke()
    return proxy
  }
  const noStringForm = () => ({
    toString() {
      throw new Error('no toString')
    },
    valueOf() {
      throw new Error('no valueOf')
    },
  })
  const cycle = () => {
    const details: Record<string, unknown> = {}
    details.self = details
    return details
  }
  const errorWithThrowingMessage = () => {
    const err = new Error('x')
    Object.defineProperty(err, 'message', {
      get() {
        throw new Error('no message')
      },
    })
    Object.defineProperty(err, 'stack', {
      get() {
        throw new Error('no stack')
      },
    })
    return err
  }
  const cases: Array<[string, () => unknown, (failure: NativeFailure) => void]> = [
    ['throw Object.create(null)', () => { throw Object.create(null) }, (f) => assert.equal(f.error, NO_STRING_FORM)],
    ['throw an object whose toString throws', () => { throw noStringForm() }, (f) => assert.equal(f.error, NO_STRING_FORM)],
    ['throw an Error whose message getter throws', () => { throw errorWithThrowingMessage() }, (f) => assert.equal(typeof f.error, 'string')],
    ['throw a Proxy that throws on every trap', () => { throw throwingProxy() }, (f) => assert.equal(f.error, NO_STRING_FORM)],
    ['throw a revoked Proxy', () => { throw revoked() }, (f) => assert.equal(f.error, NO_STRING_FORM)],
    ['throw a Symbol', () => { throw Symbol('s') }, (f) => assert.equal(f.error, 'Symbol(s)')],
    ['throw undefined', () => { throw undefined }, (f) => assert.equal(f.error, 'undefined')],
    ['reject with Object.create(null)', () => Promise.reject(Object.create(null)), (f) => assert.equal(f.error, NO_STRING_FORM)],
    ['reject with a Proxy that throws on every trap', () => Promise.reject(throwingProxy()), (f) => assert.equal(f.error, NO_STRING_FORM)],
    ['reject with an object whose toString throws', async () => { throw noStringForm() }, (f) => assert.equal(f.error, NO_STRING_FORM)],
    ['return a thenable whose then throws', () => ({ then() { throw Object.create(null) } }), (f) => assert.equal(f.error, NO_STRING_FORM)],
    // Awaiting a value reads its `then`: these throw there, as a rejection.
    ['return a Proxy that throws on every trap', () => throwingProxy(), (f) => assert.equal(f.error, 'trap get')],
    ['resolve to a Proxy that throws on every trap', async () => throwingProxy(), (f) => assert.equal(f.error, 'trap get')],
    ['return a revoked Proxy', () => revoked(), (f) => assert.equal(typeof f.error, 'string')],
    ['return a result whose success getter throws', () => ({ get success() { throw new Error('no') } }), (f) => assert.match(f.error!, /handler returned/)],
    ['return a failure whose error getter throws', () => ({ success: false, get error() { throw new Error('no') } }), (f) => assert.equal(typeof f.error, 'string')],
    ['return a failure whose error has no string form', () => ({ success: false, error: Object.create(null) }), (f) => assert.equal(typeof f.error, 'string')],
    ['return a failure whose details getter throws', () => ({ success: false, error: 'e', get details() { throw new Error('no') } }), (f) => assert.equal(f.error, 'e')],
    ['return details whose toJSON throws', () => ({ success: false, error: 'e', details: { toJSON() { throw Object.create(null) } } }), (f) => assert.equal(typeof JSON.parse(f.details!).unserializable, 'string')],
    ['return details with a cycle', () => ({ success: false, error: 'e', details: cycle() }), (f) => assert.equal(typeof JSON.parse(f.details!).unserializable, 'string')],
    ['return details that are a BigInt', () => ({ success: false, error: 'e', details: 1n }), (f) => assert.equal(typeof JSON.parse(f.details!).unserializable, 'string')],
    ['return a failure whose retry getter throws', () => ({ success: false, error: 'e', get retry() { throw new Error('no') } }), (f) => assert.equal(f.retry, undefined)],
    ['return nothing', () => undefined, (f) => assert.match(f.error!, /handler returned undefined/)],
  ]

  for (const [name, odd, check] of cases) {
    test(`${name}: the attempt fails, its slot is freed and the next task runs`, async () => {
      const native = new FakeNative()
      let healthy = 0
      const tasks = dispatcher((task: { data: unknown }) => {
        if (task.data === 'healthy') {
          healthy++
          return { success: true }
        }
        return odd()
      }, native)
      // batchSize 2: two odd tasks take both slots; the healthy one must still run after them.
      tasks.dispatch(batch([1, 2, 3], 2, (token) => (token === 3 ? 'healthy' : 'odd')))
      for (let i = 0; i < 5; i++) await turn()
      assert.equal(native.failed.length, 2, 'both odd attempts failed')
      for (const failure of native.failed) {
        assert.equal(typeof failure.error, 'string')
        assert.ok(failure.details === undefined || typeof failure.details === 'string')
        assert.ok(failure.retry === undefined || typeof failure.retry === 'boolean')
        check(failure)
      }
      assert.deepStrictEqual(native.failed.map((f) => f.token).sort(), [1, 2])
      assert.deepStrictEqual(native.succeeded, [3])
      assert.equal(healthy, 1)
      assert.equal(tasks.stats.running, 0)
    })
  }

  test('a thrown Error keeps its message, name and stack', async () => {
    const native = new FakeNative()
    const tasks = dispatcher(() => {
      throw new TypeError('boom')
    }, native)
    tasks.dispatch(batch([1]))
    await turn()
    assert.equal(native.failed[0].error, 'boom')
    const details = JSON.parse(native.failed[0].details!)
    assert.equal(details.name, 'TypeError')
    assert.match(details.stack, /boom/)
  })
})

describe('task.signal', () => {
  test('every handler gets one: not enumerable, the same on every read, not aborted, and the task is otherwise unchanged', async () => {
    const native = new FakeNative()
    const seen: Task[] = []
    const tasks = dispatcher((task: Task) => {
      seen.push(task)
      assert.ok(task.signal instanceof AbortSignal)
      assert.equal(task.signal, task.signal, 'the same signal on every read')
      assert.equal(task.signal.aborted, false)
      return { success: true }
    }, native)
    tasks.dispatch(batch([1, 2]))
    await turn()
    assert.deepStrictEqual(native.succeeded, [1, 2])
    for (const [i, task] of seen.entries()) {
      const plain = { id: `t${i + 1}`, data: i + 1, metadata: {} }
      assert.deepStrictEqual(task, plain)
      assert.deepStrictEqual(Object.keys(task), ['id', 'data', 'metadata'])
      assert.equal(JSON.stringify(task), JSON.stringify(plain))
      assert.deepStrictEqual({ ...task }, plain)
      assert.equal('signal' in task, true)
      assert.equal(Object.getOwnPropertyDescriptor(task, 'signal')!.enumerable, false)
      assert.equal(task.signal, task.signal, 'still the same after the handler settled')
    }
    // One getter for every task of every dispatcher: V8 keeps such tasks in one hidden class.
    const other: Task[] = []
    dispatcher((task: Task) => {
      other.push(task)
      return { success: true }
    }, new FakeNative()).dispatch(batch([3]))
    await turn()
    const getters = [...seen, ...other].map((task) => Object.getOwnPropertyDescriptor(task, 'signal')!.get)
    assert.equal(new Set(getters).size, 1)
  })

  for (const reason of ['timeout', 'cancelled', 'shutdown']) {
    test(`an abort (${reason}) of a running handler aborts its signal once; its outcome is not reported and the next task starts when it settles`, async () => {
      const native = new FakeNative()
      const { calls, handler } = controlled()
      const tasks = dispatcher(handler, native)
      tasks.dispatch(batch([1, 2], 1))
      await turn()
      const { signal } = calls[0].task
      let events = 0
      signal.addEventListener('abort', () => events++)
      tasks.dispatch(abort([1, reason]))
      assertAbortedWith(signal, reason)
      assert.equal(events, 1)
      // A second abort of the same attempt changes nothing: the first reason stays.
      tasks.dispatch(abort([1, reason === 'shutdown' ? 'timeout' : 'shutdown']))
      assertAbortedWith(signal, reason)
      assert.equal(events, 1)
      assert.deepStrictEqual(tasks.stats, { running: 1, waiting: 1, capacity: 16, closed: false, slots: 1, live: 0, aborted: 1 })
      calls[0].resolve({ success: true })
      await turn()
      assert.equal(calls.length, 2, 'the next task started')
      await turn() // With no outcome to go with, its start is reported at the end of the turn.
      assert.deepStrictEqual(native.succeeded, [], 'the aborted attempt is not reported')
      assert.deepStrictEqual(native.failed, [])
      assert.deepStrictEqual(native.started, [1, 2])
      assert.equal(calls[1].task.signal.aborted, false, "the next task's signal is its own")
      calls[1].resolve({ success: true })
      await turn()
      assert.deepStrictEqual(native.succeeded, [2])
      assert.deepStrictEqual(tasks.stats, { running: 0, waiting: 0, capacity: 16, closed: false, slots: 1, live: 0, aborted: 0 })
    })
  }

  test('a handler that rejects with its signal\'s reason: not reported either', async () => {
    const native = new FakeNative()
    const tasks = dispatcher(
      (task: Task) => new Promise((_, reject) => task.signal.addEventListener('abort', () => reject(task.signal.reason))),
      native,
    )
    tasks.dispatch(batch([1, 2], 2))
    tasks.dispatch(abort([2, 'cancelled']))
    await turn()
    assert.deepStrictEqual(native.failed, [])
    assert.deepStrictEqual(tasks.stats, { running: 1, waiting: 0, capacity: 16, closed: false, slots: 2, live: 1, aborted: 0 })
  })

  test('an abort before the signal was first read: the first read gives a signal already aborted with that reason', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1]))
    tasks.dispatch(abort([1, 'timeout']))
    const { task } = calls[0]
    assertAbortedWith(task.signal, 'timeout')
    assert.equal(task.signal, task.signal)
    let events = 0
    task.signal.addEventListener('abort', () => events++)
    calls[0].resolve({ success: false, error: 'late' })
    await turn()
    assert.equal(events, 0, 'no event for an abort that happened before')
    assert.deepStrictEqual(native.failed, [])
    assert.deepStrictEqual(native.started, [1])
  })

  test('a handler that ignores its signal keeps its slot until it returns', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1, 2, 3], 1))
    tasks.dispatch(abort([1, 'timeout']))
    for (let i = 0; i < 5; i++) await turn()
    assert.equal(calls.length, 1, 'nothing else started')
    assert.equal(tasks.stats.running, 1)
    assert.deepStrictEqual(native.started, [1])
    calls[0].resolve({ success: false, error: 'finally done' })
    await turn()
    assert.equal(calls.length, 2)
    await turn()
    assert.deepStrictEqual(native.started, [1, 2])
    assert.deepStrictEqual(native.failed, [])
  })

  test('an abort of a waiting task: it never starts and reports nothing, and the next one starts in its turn', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1, 2, 3], 1))
    tasks.dispatch(abort([2, 'cancelled']))
    assert.equal(tasks.stats.waiting, 2, 'it keeps its place (skipped when its turn comes)')
    calls[0].resolve({ success: true })
    await turn()
    assert.deepStrictEqual(calls.map((call) => call.data), [1, 3])
    calls[1].resolve({ success: true })
    await turn()
    assert.deepStrictEqual(native.started, [1, 3])
    assert.deepStrictEqual(native.succeeded, [1, 3])
    assert.deepStrictEqual(native.failed, [])
    assert.deepStrictEqual(tasks.stats, { running: 0, waiting: 0, capacity: 16, closed: false, slots: 1, live: 0, aborted: 0 })
  })

  test('aborts of unknown or settled tokens are ignored', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1, 2], 1))
    calls[0].resolve({ success: true })
    await turn()
    tasks.dispatch(abort([1, 'timeout'], [99, 'cancelled']))
    assert.equal(calls[0].task.signal.aborted, false, 'a settled task stays as it was')
    assert.equal(calls[1].task.signal.aborted, false)
    calls[1].resolve({ success: true })
    await turn()
    assert.deepStrictEqual(native.succeeded, [1, 2])
    assert.deepStrictEqual(tasks.stats, { running: 0, waiting: 0, capacity: 16, closed: false, slots: 1, live: 0, aborted: 0 })
  })

  test('after close(), aborts still reach running handlers (shutdown comes after close)', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1, 2, 3], 2))
    tasks.dispatch('{"close":true}')
    tasks.dispatch(abort([1, 'shutdown'], [3, 'shutdown']))
    assertAbortedWith(calls[0].task.signal, 'shutdown')
    assert.equal(calls[1].task.signal.aborted, false)
    calls[0].resolve({ success: true })
    calls[1].resolve({ success: true })
    await turn()
    assert.equal(calls.length, 2)
    assert.deepStrictEqual(native.succeeded, [2])
    assert.deepStrictEqual(tasks.stats, { running: 0, waiting: 0, capacity: 16, closed: true, slots: 2, live: 0, aborted: 0 })
  })

  test('malformed abort messages are ignored; an unknown reason ends the attempt as a cancel, with its own message', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1, 2, 3, 4], 4))
    const malformed = [
      '{"abort":null}',
      '{"abort":1}',
      '{"abort":"1"}',
      '{"abort":{"0":[1,"timeout"],"length":1}}',
      '{"abort":[1,2]}',
      '{"abort":[[]]}',
      '{"abort":[null]}',
      '{"abort":[["1","timeout"]]}',
      '{"abort":[[null,"timeout"]]}',
      '{"abort":[[[1],"timeout"]]}',
      '{"abort":[[1.5,"timeout"]]}',
      '{"abort":[[-1,"timeout"]]}',
    ]
    for (const message of malformed) assert.doesNotThrow(() => tasks.dispatch(message), message)
    assert.deepStrictEqual(calls.map((call) => call.task.signal.aborted), [false, false, false, false])
    tasks.dispatch('{"abort":[[1],[2,{"why":"x"}],[3,"toString"],[4,"__proto__"]]}')
    for (const { task } of calls) {
      assert.equal(task.signal.aborted, true)
      assert.ok(task.signal.reason instanceof ProtoqueueError)
      assert.equal(task.signal.reason.code, 'ERR_PQ_TASK_CANCELLED')
      assert.notEqual(task.signal.reason.message, ABORT_REASONS.get('cancelled')![1], 'not said to be a cancel()')
    }
    for (const call of calls) call.resolve({ success: true })
    await turn()
    assert.deepStrictEqual(native.succeeded, [])
    assert.deepStrictEqual(native.started, [1, 2, 3, 4])
    assert.equal(tasks.stats.running, 0)
  })

  test('an abort listener that throws: the other attempts in the message are still aborted, and the dispatcher stays consistent', async () => {
    // Node does not let a listener's throw out of abort(): it is reported as an uncaught
    // exception on the next tick. Catch it here so it does not end the test run.
    const caught: unknown[] = []
    process.setUncaughtExceptionCaptureCallback((err) => caught.push(err))
    try {
      const native = new FakeNative()
      const { calls, handler } = controlled()
      const tasks = dispatcher(handler, native)
      tasks.dispatch(batch([1, 2, 3], 2))
      const thrown = new Error('listener threw')
      let later = 0
      calls[0].task.signal.addEventListener('abort', () => {
        throw thrown
      })
      calls[0].task.signal.addEventListener('abort', () => later++)
      assert.doesNotThrow(() => tasks.dispatch(abort([1, 'timeout'], [2, 'cancelled'])))
      assert.equal(later, 1, "the signal's other listeners ran")
      assertAbortedWith(calls[0].task.signal, 'timeout')
      assertAbortedWith(calls[1].task.signal, 'cancelled')
      assert.deepStrictEqual(tasks.stats, { running: 2, waiting: 1, capacity: 16, closed: false, slots: 2, live: 0, aborted: 2 })
      await turn()
      assert.deepStrictEqual(caught, [thrown])
      calls[0].resolve({ success: true })
      await turn()
      assert.equal(calls.length, 3, 'the next task started')
      calls[1].resolve({ success: true })
      calls[2].resolve({ success: true })
      await turn()
      assert.deepStrictEqual(native.succeeded, [3])
      assert.deepStrictEqual(tasks.stats, { running: 0, waiting: 0, capacity: 16, closed: false, slots: 2, live: 0, aborted: 0 })
    } finally {
      process.setUncaughtExceptionCaptureCallback(null)
    }
  })

  test('tasks leave nothing behind once settled, whether their signal was read, aborted or neither', async () => {
    const TOTAL = 20_000
    const LIMIT = 10
    const native = new FakeNative()
    const refs: Array<WeakRef<Task>> = []
    const handler = (task: Task) => {
      const n = task.data as number
      if (n % 1000 === 0) refs.push(new WeakRef(task))
      if (n % 3 === 0) task.signal.addEventListener('abort', () => {})
      // Every seventh is aborted, running (its handler settles on the next turn) or waiting.
      if (n % 7 === 0) return new Promise((resolve) => setImmediate(() => resolve({ success: true })))
      return { success: true }
    }
    const tasks = dispatcher(handler, native)
    for (let from = 0; from < TOTAL; from += 100) {
      const tokens = Array.from({ length: 100 }, (_, i) => from + i)
      tasks.dispatch(batch(tokens, LIMIT))
      tasks.dispatch(abort(...tokens.filter((t) => t % 7 === 0).map((t): [number, string] => [t, 'timeout'])))
      await turn()
      await turn()
    }
    for (let i = 0; i < 5; i++) await turn()
    const all = Array.from({ length: TOTAL }, (_, t) => t)
    assert.deepStrictEqual(native.succeeded.sort((a, b) => a - b), all.filter((t) => t % 7 !== 0), 'aborted attempts are not reported')
    assert.deepStrictEqual(native.failed, [])
    assert.deepStrictEqual(tasks.stats, { running: 0, waiting: 0, capacity: 16, closed: false, slots: LIMIT, live: 0, aborted: 0 })
    // Nothing the dispatcher keeps holds a settled task (nor, then, its signal).
    setFlagsFromString('--expose-gc')
    const gc: () => void = runInNewContext('gc')
    gc()
    await turn()
    gc()
    assert.ok(refs.length >= TOTAL / 1000 - 3, `${refs.length} tasks watched`)
    assert.deepStrictEqual(refs.filter((ref) => ref.deref() !== undefined).length, 0, 'every task was collected')
  })
})

describe('closing', () => {
  test('close() drops the waiting tasks and ignores later batches; running handlers still report', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1, 2, 3], 1))
    tasks.close()
    tasks.dispatch(batch([4, 5], 2))
    calls[0].resolve({ success: true })
    for (let i = 0; i < 5; i++) await turn()
    assert.equal(calls.length, 1, 'nothing started after close')
    assert.deepStrictEqual(native.succeeded, [1])
    assert.deepStrictEqual(native.started, [1])
    assert.deepStrictEqual(tasks.stats, { running: 0, waiting: 0, capacity: 16, closed: true, slots: 1, live: 0, aborted: 0 })
  })

  test('the native close message `{"close":true}` closes it the same way', async () => {
    const native = new FakeNative()
    const { calls, handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1, 2, 3], 1))
    tasks.dispatch('{"close":true}')
    assert.equal(tasks.stats.closed, true)
    tasks.dispatch(batch([4], 2))
    calls[0].resolve({ success: false, error: 'late' })
    for (let i = 0; i < 5; i++) await turn()
    assert.equal(calls.length, 1)
    assert.deepStrictEqual(native.failed.map((f) => f.token), [1])
    assert.deepStrictEqual(native.started, [1])
  })

  test('the starts are reported before the close message returns (the native side then gives back the rest)', () => {
    const native = new FakeNative()
    const { handler } = controlled()
    const tasks = dispatcher(handler, native)
    tasks.dispatch(batch([1, 2, 3], 2))
    assert.deepStrictEqual(native.reports, [], 'starts alone wait for the end of the turn')
    tasks.dispatch('{"close":true}')
    assert.deepStrictEqual(native.started, [1, 2], 'reported synchronously, before the close returned')
  })
})

describe('memory', () => {
  test('10 million tasks through a continuous backlog: the waiting list stays bounded', { timeout: 600_000 }, async () => {
    const TOTAL = Number(process.env.PQ_DISPATCHER_TASKS ?? 10_000_000)
    const LIMIT = 10
    const BACKLOG = 1000
    // Batches by size, so feeding costs little: the dispatcher does not care about token values.
    const batches = new Map<number, string>()
    const batchOf = (size: number) => {
      let text = batches.get(size)
      if (text === undefined) {
        text = JSON.stringify({ limit: LIMIT, tokens: new Array(size).fill(7), tasks: new Array(size).fill({ id: 't', data: 1 }) })
        batches.set(size, text)
      }
      return text
    }
    let fed = 0
    let done = 0
    let maxCapacity = 0
    let maxWaiting = 0
    let finished!: () => void
    const allDone = new Promise<void>((resolve) => (finished = resolve))
    // As the native worker under a backlog: every report of outcomes makes room, and the room is
    // filled again at once, so the waiting list never runs empty. Handlers finish on a later
    // turn of the event loop, as real ones do.
    // eslint-disable-next-line prefer-const
    let tasks: ReturnType<typeof dispatcher>
    const feed = (count: number) => {
      const size = Math.min(count, TOTAL - fed)
      if (size > 0) {
        fed += size
        tasks.dispatch(batchOf(size))
      }
    }
    const native = {
      complete(succeeded: Uint32Array, failed: NativeFailure[]) {
        done += succeeded.length + failed.length
        const stats = tasks.stats
        maxCapacity = Math.max(maxCapacity, stats.capacity)
        maxWaiting = Math.max(maxWaiting, stats.waiting)
        if (done === TOTAL) finished()
        feed(succeeded.length + failed.length)
      },
    }
    const success = { success: true }
    tasks = dispatcher(() => new Promise((resolve) => setImmediate(resolve, success)), native)
    // The live heap (after a full GC) once the backlog is established, and at the end.
    setFlagsFromString('--expose-gc')
    const gc: () => void = runInNewContext('gc')
    let heapEarly = 0
    const heap = () => {
      gc()
      return process.memoryUsage().heapUsed
    }
    for (let i = 0; i < BACKLOG; i += 100) feed(100)
    while (done < TOTAL / 10) await new Promise((resolve) => setTimeout(resolve, 10))
    heapEarly = heap()
    await allDone
    const growth = (heap() - heapEarly) / 1e6
    assert.equal(done, TOTAL)
    assert.ok(maxWaiting > BACKLOG / 2, `a backlog was kept (${maxWaiting})`)
    assert.ok(maxCapacity <= 2 * BACKLOG + 64, `waiting list capacity ${maxCapacity} for a backlog of ${maxWaiting}`)
    assert.ok(growth < 8, `the live heap grew by ${growth.toFixed(1)} MB over ${TOTAL} tasks`)
  })
})

describe('a backoff function', () => {
  const attemptBatch = (attempts: Array<[number, number]>) =>
    JSON.stringify({
      limit: 10,
      tokens: attempts.map((_, i) => i),
      tasks: attempts.map(([attempt, maxAttempts], i) => ({ id: `t${i}`, data: i, metadata: {}, attempt, maxAttempts })),
    })

  test('sends its delay with failures that will be retried, and only with those', async () => {
    const native = new FakeNative()
    const asked: Array<[number, string]> = []
    const warnings: string[] = []
    const d = dispatcher(
      (task: { data: number }) => (task.data === 3 ? { success: true } : task.data === 2 ? { success: false, error: 'no', retry: false } : { success: false, error: `e${task.data}` }),
      native,
      {
        backoff: (attempt: number, error: string) => {
          asked.push([attempt, error])
          return attempt * 100.4
        },
        warn: (m: string) => warnings.push(m),
      },
    )
    d.dispatch(attemptBatch([[1, 4], [4, 4], [2, 4], [1, 4]]))
    await turn()
    const byToken = new Map(native.failed.map((f) => [f.token, f]))
    assert.equal(byToken.get(0)?.retryDelay, 100, 'rounded')
    assert.equal(byToken.get(1)?.retryDelay, undefined, 'the last attempt is not retried')
    assert.equal(byToken.get(2)?.retryDelay, undefined, 'retry: false is not retried')
    assert.deepEqual(asked, [[1, 'e0']])
    assert.deepEqual(warnings, [])
  })

  test('a throw or junk falls back (no retryDelay) with a warning, and huge delays are capped', async () => {
    const results: unknown[] = [() => { throw new Error('boom') }, 'soon', -1, NaN, Infinity, 1e20, { valueOf: () => 5 }, null]
    const native = new FakeNative()
    const warnings: string[] = []
    let call = 0
    const d = dispatcher(() => ({ success: false, error: 'x' }), native, {
      backoff: () => {
        const result = results[call++]
        return typeof result === 'function' ? (result as () => number)() : (result as number)
      },
      warn: (m: string) => warnings.push(m),
    })
    d.dispatch(attemptBatch(results.map(() => [1, 2])))
    await turn()
    const delays = native.failed.sort((a, b) => a.token - b.token).map((f) => f.retryDelay)
    assert.deepEqual(delays, [undefined, undefined, undefined, undefined, undefined, 2 ** 31 - 1, undefined, undefined])
    assert.equal(warnings.length, 7)
  })
})

describe('a decode function (the queue serializer)', () => {
  test('decodes each task before its handler; a throw reports invalidData with the message, without calling the handler', async () => {
    const native = new FakeNative()
    const seen: unknown[] = []
    const d = dispatcher(
      (task: { data: unknown }) => {
        seen.push(task.data)
        return { success: true }
      },
      native,
      {
        decode: (task: { data: number }) => {
          if (task.data === 2) throw new Error('cannot decode 2')
          if (task.data === 3) throw Object.create(null)
          task.data = task.data * 10
        },
      },
    )
    d.dispatch(batch([1, 2, 3, 4], 1))
    await turn()
    await turn()
    assert.deepEqual(seen, [10, 40], 'undecodable tasks never reach the handler, and do not take a slot')
    assert.deepEqual(native.succeeded, [1, 4])
    assert.deepEqual(
      native.failed.map((f) => [f.token, f.error, f.invalidData]),
      [
        [2, 'cannot decode 2', true],
        [3, 'the task could not be decoded', true],
      ],
    )
    assert.deepEqual([...native.started].sort(), [1, 2, 3, 4], 'every task is reported started')
  })
})
