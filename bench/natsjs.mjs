// Benchmark runner for the alternative a Node user would write by hand: the official nats.js v3
// client (@nats-io/jetstream + @nats-io/transport-node), a WorkQueue stream, a durable pull consumer
// with explicit acks, JSON payloads. By default: `noAsyncTraces`, W2 as atomic batches of the
// window, a callback `consume({ max_messages: 1000 })` with `batchSize` handlers at once and
// fire-and-forget `ack()`s: the fastest correct way of writing it that bench/baselines.mjs found among
// the ways the client's docs show (bench/lib/variants.mjs lists them, bench/README.md "How strong
// the baselines are" has their numbers); `spec.variant` picks another one.
//
// W6/W7 (enqueue a task and wait for its result) by hand: the caller publishes the task to the
// WorkQueue stream with `js.publish` (awaiting the stream's ack, as every enqueue here does) and
// a reply subject in a header — the message's own reply subject is taken by JetStream's PubAck —
// and waits for the answer on one subscription for all its calls, `<inbox>.*` with one token per
// call, as nats.js's own `request()` multiplexes its replies. The worker (the same consumer as
// W3/W4) publishes the handler's result to that subject, then acks: a core NATS message, not
// stored, heard only by a caller that is listening.
import { AckPolicy, RetentionPolicy, StorageType, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect, createInbox, headers } from '@nats-io/transport-node'
import { ROUND_TRIP_TIMEOUT_MS, ROUND_TRIP_WORKLOADS, readSpec, runBenchmark } from './lib/runner.mjs'
import { settingsOf } from './lib/variants.mjs'

const spec = readSpec()
const settings = settingsOf('natsjs', spec.variant)
/** The durable consumer's name; any fixed name does, the stream is new for every run. */
const CONSUMER = 'bench-workers'
/** The header that carries a task's reply subject (W6, W7). */
const REPLY_TO = 'Bench-Reply-To'

/**
 * The caller's side of W6/W7: one subscription to `<inbox>.*` for every call's answer; `call`
 * publishes a task with its reply subject `<inbox>.<token>` and resolves to the answer.
 */
function replyInbox(nc, js) {
  const prefix = createInbox()
  /** token → { resolve, timer } of the calls still waiting. */
  const waiting = new Map()
  let last = 0
  nc.subscribe(`${prefix}.*`, {
    callback: (err, m) => {
      if (err) return
      const token = m.subject.slice(prefix.length + 1)
      const call = waiting.get(token)
      // No one waits (a second answer to a call, or one after its timeout): the driver's counts
      // of the worker's runs catch a task run twice.
      if (!call) return
      waiting.delete(token)
      clearTimeout(call.timer)
      call.resolve(m.json())
    },
  })
  return async function call(payload) {
    const token = String(++last)
    // Waiting before the publish: the answer may come before the publish's ack is read.
    const answered = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.delete(token)
        reject(new Error(`no result within ${ROUND_TRIP_TIMEOUT_MS} ms`))
      }, ROUND_TRIP_TIMEOUT_MS)
      waiting.set(token, { resolve, timer })
    })
    const h = headers()
    h.set(REPLY_TO, `${prefix}.${token}`)
    try {
      await js.publish(spec.subject, payload, { headers: h })
    } catch (err) {
      clearTimeout(waiting.get(token)?.timer)
      waiting.delete(token)
      throw err
    }
    return answered
  }
}

/** Limits how many handlers run at once: `acquire()` waits for a free slot. */
class Slots {
  #free
  #waiting = []

  constructor(size) {
    this.#free = size
  }

  /** Takes a free slot at once if there is one (no promise, no await). */
  tryAcquire() {
    if (this.#free === 0) return false
    this.#free--
    return true
  }

  async acquire() {
    if (!this.tryAcquire()) await new Promise((resolve) => this.#waiting.push(resolve))
  }

  release() {
    const next = this.#waiting.shift()
    if (next) next()
    else this.#free++
  }
}

/** W2: publishes with at most `window` acks outstanding, settled by callback, half-window refills. */
async function publishHalfWindow(js, payloads, window) {
  // When the window is full the loop waits until half of it is free, then issues the next half at
  // once, so those publishes share socket writes.
  let inFlight = 0
  let failure
  let wake
  const settled = () => {
    inFlight--
    wake?.()
  }
  const waitFor = async (limit) => {
    while (inFlight > limit) await new Promise((resolve) => (wake = resolve))
    wake = undefined
  }
  for (const payload of payloads) {
    if (inFlight >= window) await waitFor(window >> 1)
    if (failure) throw failure
    inFlight++
    js.publish(spec.subject, payload).then(settled, (err) => {
      failure ??= err
      settled()
    })
  }
  await waitFor(0)
  if (failure) throw failure
}

/** W2: a sliding window: before each publish beyond `window`, await the oldest outstanding one. */
async function publishSliding(js, payloads, window) {
  const pending = []
  for (let i = 0; i < payloads.length; i++) {
    if (i >= window) await pending[i - window]
    pending.push(js.publish(spec.subject, payloads[i]))
  }
  await Promise.all(pending)
}

/** W2 as the jetstream README shows it: `window` publishes, await them all, the next `window`. */
async function publishChunks(js, payloads, window) {
  for (let i = 0; i < payloads.length; i += window) {
    await Promise.all(payloads.slice(i, i + window).map((payload) => js.publish(spec.subject, payload)))
  }
}

/**
 * W2 as atomic batches (`atomicBatch(window)` tasks each, at most 1,000, the server's limit),
 * `batchesInFlight` of them at once: one ack per batch, checked to count every task.
 */
async function publishAtomic(js, payloads, window) {
  const size = settings.atomicBatch(window)
  const chunks = []
  for (let i = 0; i < payloads.length; i += size) chunks.push(payloads.slice(i, i + size))
  const send = async (chunk) => {
    if (chunk.length === 1) return void (await js.publish(spec.subject, chunk[0]))
    const batch = await js.startBatch(spec.subject, chunk[0])
    for (let j = 1; j < chunk.length - 1; j++) batch.add(spec.subject, chunk[j])
    const ack = await batch.commit(spec.subject, chunk.at(-1))
    if (ack.count !== chunk.length) throw new Error(`atomic batch stored ${ack.count} of ${chunk.length}`)
  }
  let next = 0
  const lane = async () => {
    while (next < chunks.length) await send(chunks[next++])
  }
  await Promise.all(Array.from({ length: settings.batchesInFlight }, lane))
}

const PUBLISHERS = { half: publishHalfWindow, slide: publishSliding, chunks: publishChunks, atomic: publishAtomic }

function natsjsAdapter() {
  let nc, js, consumer, call
  /** Stops the worker's pulling (set by process()). */
  let stopWorker = () => {}
  /** ackAck()s awaiting the server's confirmation, and who waits for the last of them. */
  let confirming = 0
  let confirmed
  return {
    async connect() {
      nc = await connect({ servers: spec.url, noAsyncTraces: settings.noAsyncTraces })
      js = jetstream(nc)
      const jsm = await jetstreamManager(nc)
      await jsm.streams.add({
        name: spec.stream,
        subjects: [spec.subject],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        ...(settings.publish === 'atomic' ? { allow_atomic: true } : {}),
      })
      const limit = settings.limiter === 'server' ? { max_ack_pending: spec.batchSize } : {}
      await jsm.consumers.add(spec.stream, { durable_name: CONSUMER, ack_policy: AckPolicy.Explicit, ...limit })
      if (spec.role !== 'worker' && ROUND_TRIP_WORKLOADS.includes(spec.workload)) call = replyInbox(nc, js)
    },
    async request(data) {
      return call(JSON.stringify(data))
    },
    async enqueue(data) {
      await js.publish(spec.subject, JSON.stringify(data))
    },
    async enqueueMany(tasks) {
      await PUBLISHERS[settings.publish](js, tasks.map((data) => JSON.stringify(data)), spec.window)
    },
    async process(handle) {
      consumer = await js.consumers.get(spec.stream, CONSUMER)
      // ackAck resolves when the server confirms: close() waits for those still due (`confirming`).
      const acked =
        settings.ack === 'ackAck'
          ? async (m) => {
              confirming++
              try {
                await m.ackAck()
              } finally {
                if (--confirming === 0) confirmed?.()
              }
            }
          : (m) => m.ack()
      /**
       * Answers the caller (W6, W7: a task with a result and a reply subject), then acks. Not async:
       * W3/W4 await what `acked` returns, as before there were answers (no promise more per task).
       */
      const settle = (m, result) => {
        if (result !== undefined) {
          const replyTo = m.headers?.get(REPLY_TO)
          if (replyTo) nc.publish(replyTo, JSON.stringify(result))
        }
        return acked(m)
      }
      const slots = new Slots(spec.batchSize)
      /** Runs one message's handler, acks it and frees its slot. */
      const run = async (m) => {
        try {
          await settle(m, await handle(m.json()))
        } finally {
          slots.release()
        }
      }
      const consumeOptions = () => {
        const max_messages = settings.maxMessages(spec.batchSize)
        const threshold_messages = settings.thresholdMessages(max_messages)
        return threshold_messages === undefined ? { max_messages } : { max_messages, threshold_messages }
      }
      if (settings.consume === 'iterator') {
        const messages = await consumer.consume(consumeOptions())
        stopWorker = () => messages.stop()
        ;(async () => {
          for await (const m of messages) {
            if (!slots.tryAcquire()) await slots.acquire()
            run(m)
          }
        })()
      } else if (settings.consume === 'callback') {
        // The callback may not block: a message that finds no free slot waits in a FIFO, which the
        // finishing handlers drain. With the server as the limiter every delivered message runs.
        const waiting = []
        let head = 0
        const runNext = async (m) => {
          try {
            await settle(m, await handle(m.json()))
          } finally {
            if (head < waiting.length) {
              const next = waiting[head]
              waiting[head++] = undefined
              if (head === waiting.length) waiting.length = head = 0
              runNext(next)
            } else {
              slots.release()
            }
          }
        }
        const unlimited = settings.limiter === 'server'
        const messages = await consumer.consume({
          ...consumeOptions(),
          callback: (m) => {
            if (unlimited || slots.tryAcquire()) runNext(m)
            else waiting.push(m)
          },
        })
        stopWorker = () => messages.stop()
      } else if (settings.consume === 'fetch') {
        // One fetch of batchSize at a time; each message runs as it arrives (within the limiter),
        // the next fetch goes out once this one has delivered all it will.
        let stopped = false
        let current
        stopWorker = () => {
          stopped = true
          current?.stop()
        }
        ;(async () => {
          while (!stopped) {
            current = await consumer.fetch({ max_messages: spec.batchSize, expires: 5_000 })
            for await (const m of current) {
              if (!slots.tryAcquire()) await slots.acquire()
              run(m)
            }
          }
        })().catch((err) => {
          if (!stopped) throw err
        })
      } else if (settings.consume === 'next') {
        let stopped = false
        stopWorker = () => {
          stopped = true
        }
        for (let i = 0; i < spec.batchSize; i++) {
          ;(async () => {
            while (!stopped) {
              const m = await consumer.next({ expires: 5_000 })
              if (m) {
                await settle(m, await handle(m.json()))
              }
            }
          })().catch((err) => {
            if (!stopped) throw err
          })
        }
      } else {
        throw new Error(`unknown consume setting ${settings.consume}`)
      }
    },
    async close() {
      stopWorker()
      if (confirming > 0) await new Promise((resolve) => (confirmed = resolve))
      await nc.drain()
    },
  }
}

await runBenchmark(natsjsAdapter(), spec)
