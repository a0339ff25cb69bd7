// Benchmark runner for the alternative a Node user would write by hand: the official nats.js v3
// client (@nats-io/jetstream + @nats-io/transport-node), a WorkQueue stream, a durable pull consumer
// with explicit acks, JSON payloads. Written as the client's README recommends, with its fastest
// settings: `noAsyncTraces` on connect, publishes pipelined, `consume()` with a concurrency limiter
// (the README's "Iterators, Callbacks, and Concurrency" section).
import { AckPolicy, RetentionPolicy, StorageType, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { readSpec, runBenchmark } from './lib/runner.mjs'

const spec = readSpec()
/** The durable consumer's name; any fixed name does, the stream is new for every run. */
const CONSUMER = 'bench-workers'

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

function natsjsAdapter() {
  let nc, js, messages
  return {
    async connect() {
      nc = await connect({ servers: spec.url, noAsyncTraces: true })
      js = jetstream(nc)
      const jsm = await jetstreamManager(nc)
      await jsm.streams.add({
        name: spec.stream,
        subjects: [spec.subject],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
      })
      await jsm.consumers.add(spec.stream, { durable_name: CONSUMER, ack_policy: AckPolicy.Explicit })
    },
    async enqueue(data) {
      await js.publish(spec.subject, JSON.stringify(data))
    },
    async enqueueMany(tasks) {
      // Pipelined: up to `window` publishes awaiting their acks, settled by callback. When the
      // window is full the loop waits until half of it is free, then issues the next half at once,
      // so those publishes share socket writes (awaiting the oldest ack before each publish yields
      // once per publish and measured about half as fast).
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
      for (const data of tasks) {
        if (inFlight >= spec.window) await waitFor(spec.window >> 1)
        if (failure) throw failure
        inFlight++
        js.publish(spec.subject, JSON.stringify(data)).then(settled, (err) => {
          failure ??= err
          settled()
        })
      }
      await waitFor(0)
      if (failure) throw failure
    },
    async process(handle) {
      const consumer = await js.consumers.get(spec.stream, CONSUMER)
      messages = await consumer.consume({ max_messages: spec.batchSize })
      const slots = new Slots(spec.batchSize)
      const run = async (m) => {
        try {
          await handle(m.json())
          m.ack()
        } finally {
          slots.release()
        }
      }
      ;(async () => {
        for await (const m of messages) {
          if (!slots.tryAcquire()) await slots.acquire()
          run(m)
        }
      })()
    },
    async close() {
      messages?.stop()
      await nc.drain()
    },
  }
}

await runBenchmark(natsjsAdapter(), spec)
