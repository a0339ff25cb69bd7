/**
 * Protoqueue: a task queue for Node.js and Bun on NATS JetStream, with a Rust core.
 *
 * @example
 * ```ts
 * import { Protoqueue } from 'protoqueue'
 * const queue = new Protoqueue<{ to: string }>({ streamName: 'emails', subject: 'tasks.email' })
 * await queue.connect('nats://localhost:4222')
 * await queue.enqueue({ data: { to: 'user@example.com' } })
 * await queue.process(async (task) => ({ success: true }))
 * ```
 */

/** Options of a queue. Durations are milliseconds; every value is a non-negative integer. */
export interface QueueOptions {
  /** Retries after the first attempt before a task is dead-lettered (default 3: at most 4 deliveries). */
  maxRetries?: number
  /**
   * How long the server waits for a worker's answer before redelivering a task to another worker
   * (crash detection; default 30000, from 100 to 2147483647). Handlers may run longer: the worker keeps the
   * task alive with progress heartbeats every `ackWait / 3`.
   */
  ackWait?: number
  /** Tasks one worker pulls and handles at once (default 10, from 1 to 10000). */
  batchSize?: number
  /**
   * The most tasks one worker keeps ready beyond the `batchSize` it runs (default 1000, 0–10000), so
   * the next task is already there when a handler finishes. The worker prefetches only about 50 ms
   * of work at its handlers' pace (none for handlers slower than `batchSize` per 50 ms) and at most
   * 8 MB of payload. A prefetched task is kept alive with progress heartbeats while it waits, and
   * `disconnect()` runs it before it resolves. 0 pulls only for free slots.
   */
  prefetch?: number
  /**
   * Least delay before a failed task is delivered again (default 1000, at most 2147483647): a fixed
   * backoff. Give this or `backoff`, not both.
   */
  retryDelay?: number
  /**
   * How long a failed task waits before its next attempt: `{ type: 'fixed' | 'exponential', delay,
   * maxDelay?, jitter? }`, or a function `(attempt, error) => ms` run by this process's worker for
   * each failure (a throw or anything but a number ≥ 0 falls back to `retryDelay`'s default and is
   * logged with `console.warn`). Default: `retryDelay`. A task's own `backoff` wins over this.
   */
  backoff?: Backoff | BackoffFunction
  /**
   * The most tasks in flight (delivered and not yet settled) across all workers of the queue,
   * 1–1000000. It is the shared consumer's `max_ack_pending`: the last worker to start sets it
   * (a worker without it lifts it), so give every worker the same value. Workers with it prefetch
   * nothing (a prefetched task counts as in flight). Default: no limit.
   */
  globalConcurrency?: number
  /**
   * At most `max` tasks (1–100000) delivered to this worker within any window of `duration` ms.
   * Per worker: with N workers the queue runs up to N × max per duration. Default: no limit.
   */
  rateLimit?: RateLimit
  /**
   * How long `enqueue`/`enqueueBatch` wait for the server to store a task, re-sending through
   * outages and leader elections, before rejecting with `ERR_PQ_TIMEOUT` (default 30000, at most
   * 2147483647).
   */
  enqueueTimeout?: number
  /**
   * How long `connect()` tries, reading credential and certificate files included, before rejecting
   * (default 5000, at most 2147483647).
   */
  connectTimeout?: number
  /**
   * The longest one handler call may run before the attempt counts as failed (default 300000, at
   * most 2147483647), counted from the moment the handler starts (a prefetched task waiting for a
   * free slot is not timed). It bounds a handler that never settles; the handler itself is not
   * cancelled.
   */
  taskTimeout?: number
  /**
   * How long `disconnect()` waits for the tasks its worker holds (running and prefetched) to settle
   * (default 30000, at most 2147483647). Then the tasks that have not started are handed back to
   * the server at once (another worker gets them now) and never start here; tasks still running
   * are redelivered after `ackWait`.
   */
  shutdownTimeout?: number
  /**
   * Copies of the task and dead-letter streams kept by a JetStream cluster, 1–5 (default 1).
   * Use 3 on a three-node cluster so the queue survives the loss of a server. It applies when the
   * streams are created; an existing stream keeps its replica count.
   */
  replicas?: number
  /**
   * The longest a dead letter is kept, in ms (1 to 10 years); older ones are removed. Applied when
   * the dead-letter stream is created (an existing one with another retention is refused with
   * `ERR_PQ_STREAM_CONFLICT`). Default: kept until removed.
   */
  deadLetterMaxAge?: number
  /**
   * The most dead letters kept; beyond it the oldest are removed. Applied when the dead-letter
   * stream is created, like `deadLetterMaxAge`. Default: no limit.
   */
  deadLetterMaxCount?: number
  /**
   * Delayed and recurring tasks (`delay`, `runAt`, `cancel`, `schedule`), which need a task
   * stream that allows message schedules (nats-server 2.12 or newer; recurring: 2.14).
   *
   * - Unset (the default): a task stream this queue creates on a server that supports them
   *   allows them, so `delay` just works; an existing stream is taken as it is.
   * - `true`: also an existing stream is changed to allow them on `connect()` (which the server
   *   never undoes); an older server rejects `connect()` with `ERR_PQ_SERVER_TOO_OLD`.
   * - `false`: a stream this queue creates does not allow them.
   *
   * On a stream without them, delayed and recurring calls reject with `ERR_PQ_SCHEDULES_OFF`.
   */
  schedules?: boolean
  /**
   * Keep how each task ended — its handler's `result`, or why it failed for good — for `ttl` ms
   * (1 s to a year), so any process can `waitFor` a task or look it up with `getTask`. Workers
   * write one record per finished task before they acknowledge it (one more write per task),
   * in the stream `<streamName>_HISTORY`; needs nats-server 2.11 or newer (per-message TTLs),
   * else `connect()` rejects with `ERR_PQ_SERVER_TOO_OLD`. Give the workers' queue objects this
   * option: they are the ones that record. Default: off.
   */
  results?: { ttl: number }
  /**
   * Keep a record of each completed task — its result, attempts and times — for `getTask`,
   * `getTasks({ state: 'completed' })` and `getStats().completed` (BullMQ's `removeOnComplete`):
   * `age` ms each (1 s to a year; default `results.ttl`, else no limit), and/or only the newest
   * `count` (trimmed by the workers about once a second, so a second's records may exceed it
   * briefly). `true` keeps every one. Give it to the workers' queue objects, like `results`.
   * Needs nats-server 2.11+. Default: off (without `results`, no completed task is recorded).
   */
  keepCompleted?: true | { age?: number; count?: number }
  /**
   * The same as `keepCompleted` for tasks that end without completing: dead-lettered (listed as
   * `'failed'`) and cancelled (BullMQ's `removeOnFail`). The dead letter itself is kept by the
   * dead-letter stream's own limits (`deadLetterMaxAge`, `deadLetterMaxCount`).
   */
  keepFailed?: true | { age?: number; count?: number }
  /**
   * Task priorities (`enqueue({ data, priority })`, 1 most urgent to 10, default 5): each level
   * other than 5 is stored on `protoqueue.prio.<streamName>.<level>.<subject>` and taken by its
   * own consumer (`protoqueue-workers-p<level>`); level 5 stays on the queue's subject. An
   * existing stream gets those subjects added on `connect()`. Priority is strict: see
   * docs/guides/priorities.md. Not with `globalConcurrency`. Default: false.
   */
  priorities?: boolean
  /**
   * Whose tasks this object's listeners hear about (`'object'` by default):
   *
   * - `'object'`: what this object's own worker decided (`completed`, `failed`, `deadLettered`,
   *   `cancelled`) and what its handlers reported (`progress`).
   * - `'queue'`: those events from every worker of the queue, in any process, carried by the
   *   server: a process that only enqueues can follow its tasks.
   *
   * `error` is always this object's own connection trouble. Anything else rejects with
   * `ERR_PQ_INVALID_CONFIG` when the queue is made.
   */
  events?: 'object' | 'queue'
}

/**
 * A retry backoff. `fixed` waits `delay` ms every time; `exponential` waits `delay`, `2 × delay`,
 * `4 × delay`, … after attempts 1, 2, 3, …, at most `maxDelay`.
 */
export interface Backoff {
  type: 'fixed' | 'exponential'
  /** The first wait, in ms (0 to 2147483647). */
  delay: number
  /** The longest wait, in ms (exponential; at least `delay`). Default: 2147483647. */
  maxDelay?: number
  /**
   * A fraction from 0 to 1 (default 0): each wait `d` is drawn uniformly from `[d × (1 − jitter), d]`,
   * so retries of many tasks failing together spread out; it never lengthens a wait.
   */
  jitter?: number
}

/**
 * Decides the wait (ms) after failed attempt `attempt` (from 1); `error` is the failure's message
 * (the `error` of a `{ success: false }` result, or what the handler threw, as text).
 */
export type BackoffFunction = (attempt: number, error: string) => number

/** A per-worker rate limit: at most `max` tasks within any `duration` ms. */
export interface RateLimit {
  max: number
  duration: number
}

/**
 * How the client authenticates. Set exactly one way: `user` and `pass`, `token`, `nkeySeed` or
 * `credsFile`. Credentials can also be written into the URL (`nats://user:pass@host`,
 * `nats://token@host`; percent-encode `,`, `@`, `:`, `/`, `?` and `#`), but not both in the URL and here.
 * A server that refuses them rejects `connect()` at once with `ERR_PQ_AUTH`. Secrets never
 * appear in logs or error messages.
 */
export interface AuthOptions {
  /** User name, with `pass`. */
  user?: string
  /** Password of `user`. */
  pass?: string
  /** Token the server expects (`authorization { token: ... }`). */
  token?: string
  /**
   * NKey user seed (the secret starting with `SU`); the client signs the server's challenge with it
   * and never sends it. The server lists the matching public key (starting with `U`).
   */
  nkeySeed?: string
  /**
   * Path of a `.creds` file (user JWT and NKey seed, as `nsc` or Synadia Cloud issue them), read at
   * `connect()`. A missing or malformed file, or one that is not a regular file of at most 1 MiB
   * (a FIFO, a device), rejects with `ERR_PQ_INVALID_CONFIG`.
   */
  credsFile?: string
}

/**
 * TLS settings. With a `tls` object (or `tls: true`) the client only talks TLS, even to a
 * `nats://` URL; a `tls://` URL requires TLS too. A client without them still upgrades when the
 * server requires TLS. Files are PEM regular files of at most 1 MiB and are checked at `connect()`
 * (a missing, unreadable or larger one, a FIFO or a device rejects with `ERR_PQ_INVALID_CONFIG`);
 * handshake failures reject with `ERR_PQ_TLS`.
 */
export interface TlsOptions {
  /** CA certificate(s) to trust instead of the system's, e.g. a private CA that signed the server's certificate. */
  caFile?: string
  /** Client certificate, for servers that verify clients (mutual TLS, `verify: true`); needs `keyFile`. */
  certFile?: string
  /** Private key of `certFile`. */
  keyFile?: string
  /** Start TLS before the server's greeting; the server needs `handshake_first: true`. Default false. */
  handshakeFirst?: boolean
}

/** The configuration of a queue. */
export interface ProtoqueueConfig<T = unknown> {
  /**
   * NATS server URL, or a comma-separated list of the servers of one cluster. `connect(url)`
   * overrides it. `tls://` requires TLS; `nats://user:pass@host` or `nats://token@host` carry
   * credentials.
   */
  url?: string
  /** Credentials: user and password, token, NKey seed or `.creds` file. */
  auth?: AuthOptions
  /** TLS: `true` (the system's CAs) or CA, client certificate and handshake settings. */
  tls?: boolean | TlsOptions
  /**
   * The JetStream stream holding the tasks (created if missing). No whitespace, `.`, `*`, `>`, `/`;
   * at most 251 bytes.
   */
  streamName: string
  /**
   * The subject tasks are published to and processed from, e.g. `tasks.email`. No wildcards; at
   * most 1024 bytes. Or a subject tree, `'tasks.email.>'`: the queue owns every subject under
   * `tasks.email` (and `tasks.email` itself, where tasks without `subject` go); `enqueue({ subject })`
   * routes within it and `process(handler, { subjects })` takes part of it.
   */
  subject: string
  /** Retry, concurrency and timeout settings. */
  options?: QueueOptions
  /**
   * Log what the queue does to stderr, or to the `setLogger()` logger (debug level).
   * `PROTOQUEUE_LOG` sets a filter instead.
   */
  verbose?: boolean
  /**
   * `connect()` creates the queue's streams when missing (default `true`). `false` only opens the
   * existing ones (a missing one rejects with `ERR_PQ_INVALID_CONFIG`) and takes the dead-letter
   * stream's retention as it was created, whatever `deadLetterMaxAge`/`deadLetterMaxCount` say:
   * for tools that inspect or operate a queue (the command line uses it).
   */
  createStreams?: boolean
  /**
   * How task data is encoded (see docs/guides/task-data.md): `'json'`
   * (the default), `'raw'` (bytes: enqueue a `Buffer`/`Uint8Array`, the handler gets a `Buffer`),
   * `'msgpack'` (needs the package `msgpackr`) or your own `{ contentType, encode, decode }`.
   * Workers decode each task by the content type it carries: JSON and this serializer's; any
   * other is dead-lettered at once as `invalidData`. Not with `schema`.
   */
  serializer?: SerializerOption<DataOf<T>>
  /**
   * A protobuf-es v2 message schema (`FooSchema`, generated by protoc-gen-es): task data is that
   * message, sent as its binary encoding with the content type
   * `application/x-protobuf; messageType=<full name>`. `enqueue` takes the message or its init
   * object; the handler gets the decoded message. A value of the wrong type anywhere inside, or a
   * key that is no field, rejects `enqueue` with `ERR_PQ_SERIALIZE` naming it (never coerced).
   * Needs the package `@bufbuild/protobuf` (v2). Not with `serializer`.
   */
  schema?: MessageSchema<T>
}

/**
 * A serializer of your own: `encode` turns a task's data into bytes (a throw, or anything but a
 * `Uint8Array`, rejects `enqueue` with `ERR_PQ_SERIALIZE`); `decode` turns the bytes of a task of
 * its content type back (a throw dead-letters the task at once as `invalidData`). Both are
 * synchronous: an `async` function is `ERR_PQ_INVALID_CONFIG`, and a `decode` that returns a
 * Promise dead-letters the task as `invalidData` (the handler never gets a Promise as its data).
 */
export interface Serializer<T = unknown> {
  /**
   * The content type written on every task (`type/subtype[; parameters]`, printable ASCII, at
   * most 256 bytes, not `application/json`); workers take tasks whose media type (before `;`)
   * matches it.
   */
  contentType: string
  encode(data: T): Uint8Array
  /** `contentType` is the task's own (its parameters may differ from yours). */
  decode(bytes: Buffer, contentType: string): T
}

/** What `serializer` takes. */
export type SerializerOption<T = unknown> = 'json' | 'raw' | 'msgpack' | Serializer<T>

/**
 * A protobuf-es v2 message schema as protoc-gen-es generates it (`GenMessage<M>`), described by
 * the properties Protoqueue reads, so these types do not need `@bufbuild/protobuf` installed.
 * `M` is the message type (`Order` for `OrderSchema`).
 */
export interface MessageSchema<M = unknown> {
  readonly kind: 'message'
  /** The message's full name, e.g. `shop.v1.Order`. */
  readonly typeName: string
  /** protobuf-es's type brand (types only): where `M` is inferred from. */
  readonly $codegenv2: { a: M; b: unknown }
}

/**
 * The init object of a protobuf-es message `M` (what protobuf-es's `create(Schema, init)` takes):
 * every field optional, nested messages as messages or init objects.
 */
export type MessageInit<M> = {
  [K in keyof M as K extends '$typeName' | '$unknown' ? never : K]?: FieldInit<M[K]>
} & { $typeName?: M extends { $typeName: infer N } ? N : never }

/** A field's value in a `MessageInit`. */
export type FieldInit<F> = F extends Uint8Array | string | number | bigint | boolean | null | undefined
  ? F
  : F extends ReadonlyArray<infer U>
    ? ReadonlyArray<FieldInit<U>>
    : F extends { $typeName: string }
      ? F | MessageInit<F>
      : F extends object
        ? { [K in keyof F]: FieldInit<F[K]> }
        : F

declare const namedTasks: unique symbol

/**
 * A queue of several named task types: `new Protoqueue<Named<{ email: Email; resize: Resize }>>()`.
 * Every task then has a `name` (`enqueue({ name: 'email', data })`, checked against its data's
 * type), and a handler's `task.name` narrows `task.data`. Types only: any queue may carry names.
 */
export interface Named<M extends Record<string, unknown>> {
  readonly [namedTasks]: M
}

/** `true` for `any` and `never`, which the conditional types below pass through unchanged. */
type IsAny<T> = 0 extends 1 & T ? true : [T] extends [never] ? true : false

/** The data type of a queue's tasks: `T`, or any of the data types of a `Named` queue. */
export type DataOf<T> = IsAny<T> extends true ? T : [T] extends [Named<infer M>] ? M[keyof M] : T

/**
 * What `enqueue` takes as data of type `T`: protobuf-es messages also as their init object, a
 * `Buffer` (the `'raw'` serializer) as any `Uint8Array`.
 */
export type DataInput<T> = IsAny<T> extends true ? T : [T] extends [{ $typeName: string }] ? T | MessageInit<T> : [T] extends [Buffer] ? Uint8Array : T

/** The tasks `enqueue` takes on a queue of type `T`: for a `Named` queue, one per name. */
export type EnqueueTaskOf<T> = IsAny<T> extends true ? EnqueueTask<T> : [T] extends [Named<infer M>]
  ? { [K in keyof M & string]: EnqueueTask<DataInput<M[K]>> & { name: K } }[keyof M & string]
  : EnqueueTask<DataInput<T>>

/** `Omit` applied to each member of a union (a `Named` queue's tasks stay narrowed by name). */
export type OmitEach<U, K extends PropertyKey> = U extends unknown ? Omit<U, K> : never

/** The tasks a handler of a queue of type `T` gets: for a `Named` queue, narrowed by `name`. */
export type TaskDataOf<T> = IsAny<T> extends true ? TaskData<T> : [T] extends [Named<infer M>]
  ? { [K in keyof M & string]: TaskData<M[K]> & { name: K } }[keyof M & string]
  : TaskData<T>

/**
 * A task to enqueue. Other keys are refused (`ERR_PQ_INVALID_TASK` naming the key), so a typo
 * never goes unnoticed.
 */
export interface EnqueueTask<T = unknown> {
  /**
   * The task's data: any JSON-serializable value. BigInt, cycles, and functions or symbols
   * anywhere inside (which `JSON.stringify` would silently drop) reject with `ERR_PQ_SERIALIZE`.
   * With a `serializer` or `schema`: what it encodes (a message or its init object, bytes…), else
   * `ERR_PQ_SERIALIZE`.
   */
  data: T
  /**
   * Extra information stored with the task and handed to the handler: an object whose JSON form
   * is an object (a `Date`, a boxed string or a `toJSON` returning anything else rejects with
   * `ERR_PQ_INVALID_TASK`). A numeric `timestamp` of yours is kept as it is.
   */
  metadata?: Record<string, any>
  /**
   * Your own task id (1–256 bytes, no whitespace, control characters or lone UTF-16 surrogates);
   * `enqueue` resolves to it. While a task with this id is stored (waiting, running, waiting for a
   * retry), enqueueing the id again stores nothing and resolves with the id; see
   * docs/guides/enqueueing.md ("Your own task ids") for the exact guarantee. Default: a new UUIDv7.
   */
  id?: string
  /** This task's own `maxRetries`, overriding the workers' option (0 to 4294967295). */
  maxRetries?: number
  /** This task's own retry backoff, overriding the workers' `backoff`/`retryDelay` (an object, not a function). */
  backoff?: Backoff
  /**
   * The task's name (1–256 bytes, no control characters or lone UTF-16 surrogates), handed to the
   * handler as `task.name`: which kind of task this is in a queue of several (see `Named`).
   */
  name?: string
  /**
   * Milliseconds from now before workers get the task (a whole number, up to ten years): the
   * task is stored at once and handed to a worker at its time, never before
   * (a stream with schedules: `options.schedules`). Not with `runAt`.
   */
  delay?: number
  /**
   * When workers get the task: a `Date` or ms since the epoch (up to ten years ahead; a time in
   * the past runs at once). Needs a stream with schedules (`options.schedules`). Not with `delay`.
   */
  runAt?: Date | number
  /**
   * The task's priority: an integer from 1 (most urgent) to 10; default 5. Needs
   * `options.priorities`. Workers start the most urgent task they can get; see
   * docs/guides/priorities.md for the exact bound and the starvation rule.
   */
  priority?: number
  /**
   * The subject the task is routed to, on a queue over a subject tree (`subject: 'tasks.email.>'`):
   * a concrete subject in the tree, e.g. `'tasks.email.eu'`. Default: the tree's root
   * (`'tasks.email'`). A subject outside the tree, with wildcards, a lone UTF-16 surrogate, or on a
   * queue without a tree rejects with `ERR_PQ_INVALID_TASK`, nothing sent.
   */
  subject?: string
}

/** Options of `process()`. */
export interface ProcessOptions {
  /**
   * On a queue over a subject tree: the part of the tree this worker takes, as subject filters
   * within it (`['tasks.email.eu']`, `['tasks.email.*.urgent']`, `['tasks.email.eu.>']`). Workers
   * with the same filters, in any process, share one durable consumer
   * (`protoqueue-part-<hash>`). Parts must not overlap each other or a whole-tree worker
   * (`ERR_PQ_STREAM_CONFLICT`). Default: the whole queue.
   */
  subjects?: string[]
  /**
   * With a handler module (`process(new URL('./handler.js', import.meta.url), { threads })`): how
   * many worker threads run its handler, fed by the one worker (one consumer) of this object.
   * A whole number from 1 to 256, at most `batchSize` (the threads share it out); default: one
   * per core (`os.availableParallelism()`), at most `batchSize`. For CPU-bound handlers:
   * docs/guides/processing.md#handlers-on-worker-threads.
   */
  threads?: number
}

/**
 * When a recurring task runs: `{ cron }`, 6 fields with seconds first as nats-server takes them
 * (`'0 30 9 * * MON-FRI'`, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`), or
 * `{ every }` in ms (at least 1000); a cron's `timeZone` is an IANA name (`'Europe/Paris'`), UTC
 * by default (`every` takes none: it runs at a fixed interval). Mistakes, also those only the
 * server finds, reject with `ERR_PQ_INVALID_CONFIG`.
 */
export type ScheduleSpec = { cron: string; timeZone?: string } | { every: number }

/** A recurring task as `getSchedules()` lists it. */
export interface ScheduledTask<T = unknown> {
  /** Its name. */
  name: string
  /** When it runs. */
  spec: ScheduleSpec
  /**
   * The data each of its tasks carries (decoded by the queue's `serializer`/`schema`; the bytes
   * when it is of another content type).
   */
  data: DataOf<T>
  /** The name of its tasks (`task.name`), if they have one. */
  taskName?: string
  /** The metadata each of its tasks carries, if any. */
  metadata?: Record<string, any>
  /**
   * Its next run, ms since the epoch, when the stored schedule says (nats-server 2.15.1 does not
   * store it there: absent).
   */
  nextRun?: number
}

/** A task as the handler receives it. */
export interface TaskData<T = unknown> {
  /** The task's unique, time-ordered id (the one `enqueue` resolved to). */
  id: string
  /** The data exactly as enqueued (a JSON round trip). */
  data: T
  /**
   * The metadata as enqueued, plus `timestamp`: when the task was enqueued (ms since the epoch),
   * unless the metadata had a `timestamp` of its own that is a number, which is kept.
   */
  metadata?: {
    timestamp?: number
    [key: string]: unknown
  }
  /** Which delivery this is, from 1. */
  attempt?: number
  /** The most deliveries this task gets (`1 + maxRetries`). */
  maxAttempts?: number
  /** The task's name, when it was enqueued with one. */
  name?: string
  /**
   * The content type the data came in, when the queue's serializer decoded it (absent for JSON
   * data): lets a handler tell both kinds apart during a migration.
   */
  contentType?: string
  /** The subject the task was routed to, on a queue over a subject tree (the root without one). */
  subject?: string
  /** The task's priority (1 most urgent to 10), on a queue with `options.priorities`. */
  priority?: number
  /**
   * Aborted when the worker ends this attempt while the handler still runs; pass it on
   * (`fetch(url, { signal: task.signal })`) or check it to stop early. Its `reason` is a
   * `ProtoqueueError` whose `code` says why: `ERR_PQ_TIMEOUT` (the handler ran past `taskTimeout`;
   * the attempt counts as failed), `ERR_PQ_TASK_CANCELLED` (`cancel(id)` was called for the task;
   * it ends cancelled, not retried) or `ERR_PQ_SHUTDOWN` (`disconnect()`'s `shutdownTimeout` ran
   * out; the task runs again). A JavaScript function cannot be stopped from outside: the handler
   * keeps its slot of `batchSize` until it returns, and what it returns then is ignored.
   *
   * Created on first read (the same signal on every read) and not enumerable: the task's JSON,
   * `Object.keys` and spread do not show it. An `abort` listener that throws is reported as any
   * event listener's error is (an `uncaughtException` in Node), not as the handler's failure.
   */
  readonly signal: AbortSignal
  /**
   * Reports how far the handler got: a finite number (a percentage, a count) or an object or array
   * whose JSON text is at most 64 KiB. Listeners of the `progress` event get it (`options.events`
   * says whose). Anything else throws a `ProtoqueueError` with code `ERR_PQ_INVALID_PROGRESS`, as
   * does a value `JSON.stringify` cannot write (a cycle, a BigInt, a `toJSON` that throws).
   *
   * Call it as often as you like: the first value is reported at once, later ones at most every
   * 100 ms per task, only the newest of each interval; a value still waiting when the handler
   * returns is reported before the task's outcome. Once the handler has settled, or its `signal`
   * was aborted, values are ignored (no throw). The function needs no `this`
   * (`const { progress } = task` works) and, like `signal`, is not enumerable.
   */
  progress(value: number | object): void
}

/**
 * What a handler returns. `D` is the type of `details`: a handler typed
 * `TaskHandler<Data, { retryAfter: number }>` must return `details` of that type.
 */
export interface TaskResult<D extends Record<string, any> = Record<string, any>> {
  /** `true` removes the task; `false` retries it after `retryDelay`, or dead-letters it after the last attempt. */
  success: boolean
  /** Why it failed; stored with the dead letter. */
  error?: string
  /**
   * Extra failure information (any JSON object), stored with the dead letter. On a success with
   * no `result`, kept as the result (the original API's way to return one).
   */
  details?: D
  /** `false` dead-letters a failed task at once, without further attempts. */
  retry?: boolean
  /**
   * What a success returns (any JSON value): kept in the task's record on a queue with
   * `options.results`, where `waitFor`, `enqueueAndWait` and `getTask` give it back. A value with
   * no JSON form is left out (`resultError` says why); the task completes all the same.
   */
  result?: unknown
}

/**
 * Where a task is in its life, as `getTask` sees it:
 * - `delayed`: a delayed task not yet due (`delay`, `runAt`).
 * - `completed`: its handler succeeded (known with `options.results`, for its `ttl`).
 * - `deadLettered`: it failed for good; its letter is on the dead-letter stream.
 * - `cancelled`: `cancel(id)` ended it while it waited, waited for a retry or ran (known with
 *   `options.results`, for its `ttl`).
 */
/**
 * Where a task is in its life (`getTask`). `waiting`, `delayed`, `running` and `retrying` are found on
 * the server for every queue; `completed` and `cancelled` need `options.results` (or `keepCompleted`) on
 * the workers; `deadLettered` is found from the task's dead letter, or its record. `failed` is what
 * `getTasks` lists for dead-lettered tasks kept by `keepFailed` (BullMQ's name); `getTask` says
 * `deadLettered` for them.
 */
export type TaskState = 'waiting' | 'delayed' | 'running' | 'retrying' | 'completed' | 'failed' | 'deadLettered' | 'cancelled'

/** A task as `getTask` finds it. */
export interface TaskInfo<T = unknown> {
  id: string
  state: TaskState
  /**
   * Attempts made: 0 for a waiting or delayed task, those that failed for a retrying one, the
   * running one included for a running task, all of them for a task that ended.
   */
  attempts: number
  /** When it was enqueued, ms since the epoch (the producer's clock). */
  enqueuedAt?: number
  /** When its current (running) or last attempt started, ms since the epoch (the worker's clock). */
  startedAt?: number
  /** When it completed or failed for good, ms since the epoch. */
  finishedAt?: number
  /** When a delayed task is due, or when a retrying task's next attempt may start, ms since the epoch. */
  runAt?: number
  /** Its priority level (1 most urgent … 10), on a queue with `options.priorities`; waiting, retrying and running tasks. */
  priority?: number
  /** A running task's latest `task.progress(value)`. */
  progress?: unknown
  /** A completed task's result (`options.results`). */
  result?: unknown
  /** Why a completed task has no `result` although its handler returned one (not JSON, or over the server's `max_payload`). */
  resultError?: string
  /** A dead-lettered task's last error, or a retrying task's last attempt's error. */
  error?: string
  /**
   * Its failed attempts so far, oldest first (the last 20; errors shortened to 1 KiB), as its
   * stored task carries them: a retrying or running task's message, or the record `keepCompleted`
   * / `keepFailed` keep. Absent when none failed or the task is not kept.
   */
  failures?: FailedAttempt[]
  /** Why it was dead-lettered. */
  reason?: DeadLetterReason
  /**
   * The task as it was stored — its data (decoded like a dead letter's: JSON, the queue's
   * serializer, else bytes), metadata and name — where the server still has it: a waiting, delayed,
   * running or retrying task's message, a dead letter, or the record `keepCompleted` /
   * `keepFailed` keep with it (`results` alone keeps no task).
   */
  task?: TaskContent<T>
}

/** One failed attempt of a task (`TaskInfo.failures`). */
export interface FailedAttempt {
  /** Which attempt it was, the first being 1. */
  attempt: number
  /** When it started and failed, ms since the epoch (the worker's clock). */
  startedAt: number
  failedAt: number
  error: string
}

/** A task's data, metadata and name as stored (`TaskInfo.task`). */
export type TaskContent<T = unknown> = DeadLetterTask<T> extends infer D ? (D extends unknown ? Omit<D, 'attempt' | 'maxAttempts'> : never) : never

/** What `getTasks` lists. */
export interface TaskQuery {
  state: TaskState
  /** Tasks per page, 1 to 1,000 (default 100). */
  limit?: number
  /** Where the page starts: the `cursor` of the previous page. */
  cursor?: string
}

/** A page of `getTasks`. */
export interface TaskPage<T = unknown> {
  tasks: Array<TaskInfo<T>>
  /** The next page's start; absent on the last page. */
  cursor?: string
}

/** `waitFor` and `enqueueAndWait` options. */
export interface WaitOptions {
  /** How long to wait, in ms (default 30,000); then `ERR_PQ_TIMEOUT`. */
  timeout?: number
}

/** A task handler. It may be async or return a result directly; a throw or rejection is a failure. */
export type TaskHandler<T = unknown, D extends Record<string, any> = Record<string, any>> = (task: TaskDataOf<T>) => Promise<TaskResult<D>> | TaskResult<D>

/** Queue statistics, read from the server. */
export interface QueueStats {
  /**
   * Tasks stored in the stream: waiting, being handled or waiting for a retry. Delayed tasks not
   * yet due and recurring schedules are not counted here (see `delayed`, `recurring`).
   */
  messages: number
  /** Bytes stored in the stream, delayed tasks and schedules included. */
  bytes: number
  /** Sequence number of the oldest stored task. */
  firstSequence: number
  /** Sequence number of the newest task ever stored. */
  lastSequence: number
  /** Consumers on the stream (all workers of a queue share one; one per priority level). */
  consumers: number
  /** @deprecated The same as `consumers` (the original API's snake_case name, kept working). */
  consumer_count: number
  /** Tasks not yet delivered to a worker. */
  pending: number
  /** Tasks delivered and not yet settled (being handled, or waiting for a retry). */
  inFlight: number
  /** Tasks delivered more than once and not yet settled. */
  redelivered: number
  /** Tasks on the dead-letter stream. */
  deadLettered: number
  /** Whether the queue's workers are paused (`pause()`), in every process. */
  paused: boolean
  /** Delayed tasks waiting for their time (they count in `pending` once due). */
  delayed: number
  /** Recurring tasks (`schedule()`). */
  recurring: number
  /**
   * With `options.priorities`: the tasks not yet delivered at each priority level, level 1
   * first (ten numbers adding up to `pending`). Absent without priorities.
   */
  pendingByPriority?: number[]
  /**
   * Workers running now, in any process (see `getWorkers()`). Unlike `consumers`, which counts
   * the durable consumers that outlive their workers, a stopped worker leaves at once and a
   * killed one within 20 s.
   */
  workers: number
  /** Completed tasks whose record the task history keeps (`keepCompleted`, `results`); 0 without. */
  completed: number
  /** Dead-lettered tasks whose record the task history keeps (`keepFailed`, `results`); 0 without. */
  failed: number
  /** Cancelled tasks whose record the task history keeps (`keepFailed`, `results`); 0 without. */
  cancelled: number
}

/**
 * A worker running now, as `getWorkers()` lists it. Each running worker writes this record on the
 * server every 5 s; one that stops removes it, and the record of one that was killed expires
 * 20 s after its last write.
 */
export interface WorkerInfo {
  /** The worker's id: random, one per `process()` (or `processDLQ()`) call. */
  id: string
  /** The host it runs on. */
  host: string
  /** Its process id on that host. */
  pid: number
  /** What it handles: tasks (`process()`), or dead letters (`processDLQ()`). */
  kind: 'tasks' | 'deadLetters'
  /** The subjects it takes tasks of, when it works on part of a subject tree. */
  subjects?: string[]
  /** When it started, ms since the epoch (its host's clock). */
  startedAt: number
  /** When it last wrote its record, ms since the epoch (its host's clock): at most 5 s ago, give or take. */
  seenAt: number
  /** How many handlers it runs at once (`batchSize`). */
  batchSize: number
  /** Tasks its handlers were running when it wrote its record. */
  inFlight: number
  /** Attempts its queue object completed since it connected. */
  completed: number
  /** Attempts its queue object saw fail since it connected (retried or dead-lettered). */
  failed: number
  /** The Protoqueue version it runs. */
  version: string
}

/**
 * Why a task was dead-lettered: its last attempt failed (`retriesExhausted`), the handler said
 * `retry: false` (`rejected`), the message was not a task envelope (`invalidEnvelope`), its data
 * is not JSON (nor of the content type of the worker's `serializer`/`schema`), does not decode with
 * them, or its metadata is not a JSON object, so no handler could take it (`invalidData`, on its
 * first delivery, without calling the handler), or it was delivered too often without a
 * result (`deliveriesExhausted`).
 */
export type DeadLetterReason = 'retriesExhausted' | 'rejected' | 'invalidEnvelope' | 'invalidData' | 'deliveriesExhausted' | 'unspecified'

/** What every dead letter's task holds, whatever became of its data. */
export interface DeadLetterTaskBase extends Omit<TaskData<unknown>, 'data' | 'metadata' | 'signal' | 'progress'> {
  /**
   * The metadata as enqueued plus `timestamp` (as the handler sees it); only `{ timestamp }` when
   * the stored metadata is not a JSON object (see `rawMetadata`) or was dropped.
   */
  metadata: { timestamp?: number; [key: string]: unknown }
  /** How the producer said `data` is encoded: `application/json` for tasks from Protoqueue. */
  contentType: string
  /** The stored metadata's bytes, when they are not a JSON object (another producer's task). */
  rawMetadata?: Buffer
}

/** A dead letter's task whose data is JSON, decoded: the task as enqueued. */
export interface DeadLetterJsonTask<T = unknown> extends DeadLetterTaskBase {
  dataFormat: 'json'
  /** The data as enqueued. */
  data: T
  dataDropped?: undefined
}

/**
 * A dead letter's task whose data is in the content type of the queue's `serializer`/`schema`,
 * decoded by it.
 */
export interface DeadLetterDecodedTask<T = unknown> extends DeadLetterTaskBase {
  dataFormat: 'decoded'
  /** The data, decoded. */
  data: T
  dataDropped?: undefined
}

/**
 * A dead letter's task whose data is not JSON and not of the queue's serializer (another
 * producer's, e.g. `text/plain`), or does not decode with it.
 */
export interface DeadLetterRawTask extends DeadLetterTaskBase {
  dataFormat: 'raw'
  /** The data's bytes, as stored; `contentType` says how to read them. */
  data: Buffer
  dataDropped?: undefined
}

/**
 * A dead letter's task whose data and metadata were dropped so the letter fits the server's
 * `max_payload` (the task was close to it); the id, attempts and times remain.
 */
export interface DeadLetterDroppedTask extends DeadLetterTaskBase {
  dataFormat: 'dropped'
  data?: undefined
  /** Always `true`: the data is gone. */
  dataDropped: true
}

/** A dead letter's task: check `dataFormat` before using `data`. */
export type DeadLetterTask<T = unknown> = DeadLetterJsonTask<T> | DeadLetterDecodedTask<T> | DeadLetterRawTask | DeadLetterDroppedTask

/**
 * A task that will not be tried again, as stored on the queue's dead-letter stream. Reading one
 * never fails because of its content: what is not JSON comes as bytes.
 */
export interface DeadLetter<T = unknown> {
  /** The task as enqueued; absent when the message was not a valid task envelope. */
  task?: DeadLetterTask<DataOf<T>>
  /** The original message bytes, when it was not a valid task envelope. */
  raw?: Buffer
  /** Why it was dead-lettered. */
  reason: DeadLetterReason
  /** The last error message. */
  error: string
  /** The handler's `details`, if any (when they are JSON). */
  details?: Record<string, any>
  /** The stored details' bytes, when they are not JSON (written by another client). */
  rawDetails?: Buffer
  /** How many times it was delivered. */
  attempts: number
  /** When it was dead-lettered (ms since the epoch). */
  failedAt: number
  /** Its sequence number in the dead-letter stream. */
  sequence: number
}

/**
 * Which dead letters `requeueDeadLetters` and `purgeDeadLetters` act on, and `getDeadLetters`
 * reads: all when empty.
 */
export interface DeadLetterFilter {
  /**
   * Only the letters stored at these sequences (`DeadLetter.sequence`): one letter each, read
   * directly. A task failed more than once has a letter per failure; this names one of them.
   */
  sequences?: number[]
  /** Only the letters of these task ids (every letter of each). */
  ids?: string[]
  /** Only the letters with this reason. */
  reason?: Exclude<DeadLetterReason, 'unspecified'>
  /** At most this many letters (an integer ≥ 1), oldest first. */
  limit?: number
}

/** How far a `requeueDeadLetters` or `purgeDeadLetters` call is. */
export interface DeadLetterProgress {
  /** Letters looked at so far. */
  seen: number
  /** Letters stored when the call began (it looks at these, and at no later ones). */
  total: number
  /** Letters acted on (requeued or removed) so far. */
  done: number
}

/** Options of `requeueDeadLetters` and `purgeDeadLetters`. */
export interface DeadLetterActionOptions {
  /**
   * Called with how far the call is, at most about ten times a second (the first and, once every
   * letter was looked at, the last report always). For progress bars: it never slows the call
   * down. A callback that throws is not called again (the call itself goes on).
   */
  onProgress?: (progress: DeadLetterProgress) => void
}

/** A dead-letter handler (`processDLQ`): `{ success: true }` removes the letter. */
export type DeadLetterHandler<T = unknown> = (letter: DeadLetter<T>) => Promise<TaskResult> | TaskResult

/** What a dead-letter worker may do differently from the queue's options. */
export interface DeadLetterWorkerOptions {
  /** Letters handled at once (default: the queue's `batchSize`). */
  batchSize?: number
  /** The least ms before a failed letter is offered again (default: the queue's `retryDelay`). */
  retryDelay?: number
  /** The longest one handler call may run, in ms (default: the queue's `taskTimeout`). */
  taskTimeout?: number
}

/** Every `code` a `ProtoqueueError` can have. */
export type ProtoqueueErrorCode =
  | 'ERR_PQ_INVALID_CONFIG'
  | 'ERR_PQ_INVALID_TASK'
  | 'ERR_PQ_INVALID_HANDLER'
  | 'ERR_PQ_SERIALIZE'
  | 'ERR_PQ_PAYLOAD_TOO_LARGE'
  | 'ERR_PQ_NOT_CONNECTED'
  | 'ERR_PQ_ALREADY_PROCESSING'
  | 'ERR_PQ_CONNECT'
  | 'ERR_PQ_AUTH'
  | 'ERR_PQ_TLS'
  | 'ERR_PQ_TIMEOUT'
  | 'ERR_PQ_STREAM_CONFLICT'
  | 'ERR_PQ_SCHEDULES_OFF'
  /** `waitFor` without `options.results`, or on a queue whose workers never kept results. */
  | 'ERR_PQ_RESULTS_OFF'
  /** `waitFor` of a task that failed for good; the error carries `reason`, `error`, `attempts`, `task`. */
  | 'ERR_PQ_TASK_FAILED'
  /** `waitFor` of a task that `cancel(id)` ended; the error carries `attempts` and `task`. Also a `task.signal`'s reason when `cancel(id)` stopped its handler. */
  | 'ERR_PQ_TASK_CANCELLED'
  /** A `task.signal`'s reason when the worker stopped (`disconnect()`'s `shutdownTimeout` ran out) while the handler ran. */
  | 'ERR_PQ_SHUTDOWN'
  | 'ERR_PQ_SERVER_TOO_OLD'
  /** `destroy()` of a queue whose workers still run (without `force`). */
  | 'ERR_PQ_QUEUE_IN_USE'
  /** `task.progress(value)` given anything but a finite number or an object or array whose JSON text is at most 64 KiB. */
  | 'ERR_PQ_INVALID_PROGRESS'
  | 'ERR_PQ_NATS'
  /** `dashboard()` (protoqueue/dashboard) could not listen on its address (the port is taken). */
  | 'ERR_PQ_LISTEN'
  // Only on `error` events (connection trouble; the client keeps reconnecting):
  | 'ERR_PQ_DISCONNECTED'
  | 'ERR_PQ_RECONNECT_REFUSED'
  | 'ERR_PQ_SERVER'
  | 'ERR_PQ_SLOW_CONSUMER'

/** Which attempt an event is about. */
export interface AttemptEvent {
  /** The task id. */
  id: string
  /** Which delivery this was, from 1. */
  attempt: number
  /** The most deliveries the task gets (`1 + maxRetries`). */
  maxAttempts: number
  /** The message's sequence number in the task stream. */
  sequence: number
}

/** How long an attempt took, in ms. */
export interface AttemptTiming {
  /** How long the handler ran. */
  durationMs: number
  /** From enqueue to the handler's start (retry delays and backlogs included). */
  waitMs: number
  /** From enqueue to the outcome. */
  sinceEnqueueMs: number
}

/** `completed`: a handler succeeded and the task was acked. */
export interface CompletedEvent extends AttemptEvent, AttemptTiming {
  type: 'completed'
}

/** `failed`: an attempt failed (the handler failed, threw or timed out). */
export interface FailedEvent extends AttemptEvent, AttemptTiming {
  type: 'failed'
  /** Why it failed. */
  error: string
  /** Whether another attempt follows; `false`: a `deadLettered` event follows. */
  willRetry: boolean
  /** The wait before the next attempt, when there is one. */
  retryDelayMs?: number
}

/** `deadLettered`: a task (or a message that is no task) was stored on the dead-letter stream. */
export interface DeadLetteredEvent extends Omit<AttemptEvent, 'id'> {
  type: 'deadLettered'
  /** The task id; absent for a message that is not a task (`invalidEnvelope`). */
  id?: string
  /** Why, as in `getDeadLetters()`. */
  reason: DeadLetterReason
  /** The last error. */
  error: string
}

/** `progress`: a running handler reported how far it got (`task.progress(value)`). */
export interface ProgressEvent {
  type: 'progress'
  /** The task id. */
  id: string
  /** The value as the handler gave it, after a JSON round trip: a number, an object or an array. */
  progress: unknown
}

/** `cancelled`: `cancel(id)` ended a task that a worker held; it is not retried nor dead-lettered. */
export interface CancelledEvent extends AttemptEvent {
  type: 'cancelled'
}

/** The events of a queue object and what their listeners get. */
export interface ProtoqueueEvents {
  completed: CompletedEvent
  failed: FailedEvent
  deadLettered: DeadLetteredEvent
  progress: ProgressEvent
  cancelled: CancelledEvent
  /** Connection trouble (never thrown; without a listener it is only logged). */
  error: ProtoqueueError
}

/** One sample of a metric family. */
export interface MetricSample {
  /** The family's name, plus `_bucket`, `_sum` or `_count` for histograms. */
  metricName: string
  /** `queue` (the stream name), and `reason` or `le` where they apply. */
  labels: Record<string, string>
  value: number
}

/** A metric family, in the shape of prom-client's `getMetricsAsJSON()`. */
export interface MetricFamily {
  name: string
  help: string
  type: 'counter' | 'gauge' | 'histogram'
  values: MetricSample[]
}

/** What `registerMetrics` needs of a prom-client `Registry` (any prom-client 15 registry). */
export interface MetricRegistry {
  registerMetric(metric: any): void
  removeSingleMetric?(name: string): void
}

/**
 * Registers the metrics of `queues` in a prom-client registry the application already has: each
 * collection (`registry.metrics()`) reads each queue once; objects of the same queue (a producer
 * and a worker) give one set of series, their counts added. Returns a function that unregisters
 * them. A collection rejects with `ERR_PQ_NOT_CONNECTED` for a queue that is not connected, and
 * with `ERR_PQ_TIMEOUT` (within 5 s) when the server does not answer. Called again with the same
 * registry, it adds its queues to the same metrics; each call's function unregisters its queues
 * (the metrics go once no queue is left).
 */
export declare function registerMetrics(
  registry: MetricRegistry,
  queues: Protoqueue<any> | Array<Protoqueue<any>>,
): () => void

/** A log method: `console`'s, winston's, or any taking a message and an object of fields. */
export type LogMethod = (message: string, fields?: Record<string, unknown>) => unknown

/**
 * Where `setLogger()` sends the core's log lines: any of these methods, called as
 * `method(message, fields)` (`fields`: the line's `id`, `seq`, `url`, …). `console` is one; a
 * pino logger takes its fields first: `{ warn: (message, fields) => pino.warn(fields, message), … }`.
 */
export interface Logger {
  error?: LogMethod
  warn?: LogMethod
  info?: LogMethod
  debug?: LogMethod
  /** Falls back to `debug` when missing. */
  trace?: LogMethod
}

/**
 * Sends the log lines of Protoqueue's native core — of every queue in the process — to `logger`
 * instead of stderr; `setLogger()` sends them to stderr again. The same lines as stderr would get:
 * warnings about trouble by default (a lost connection, an ack not sent; never one per dead
 * letter: those are events), debug lines too with `options.verbose` or `PROTOQUEUE_LOG`. A logger
 * that throws is ignored. Throws `ERR_PQ_INVALID_CONFIG` for an object without any of the methods.
 */
export declare function setLogger(logger?: Logger | null): void

/** An error raised by Protoqueue: `code` is stable, `message` says what to do. */
export declare class ProtoqueueError extends Error {
  readonly code: ProtoqueueErrorCode
}

/**
 * A task queue on NATS JetStream. `T` is the type of the tasks' data (inferred from a `schema`),
 * or `Named<{ name: Data, ... }>` for a queue of several named task types.
 */
export declare class Protoqueue<T = unknown> {
  /**
   * Checks the configuration (throws `ERR_PQ_INVALID_CONFIG`, also for values no configuration
   * can hold: functions, symbols, BigInt, cycles, getters that throw, and for a `serializer` or
   * `schema` that is not one); sends nothing.
   */
  constructor(config: ProtoqueueConfig<T>)
  /**
   * Creates a queue and connects it (the original Protoqueue's way); resolves to the connected
   * queue. Rejects with the constructor's and `connect()`'s codes; a failed connect leaves
   * nothing open.
   */
  static create<T = unknown>(config: ProtoqueueConfig<T>): Promise<Protoqueue<T>>
  /**
   * Connects to NATS and creates the queue's streams if missing. The URL is this argument, else
   * `config.url`, else `NATS_URL`, else `nats://localhost:4222`. A second call does nothing.
   * Rejects with `ERR_PQ_CONNECT` when no server answers within `connectTimeout`, and at once with
   * `ERR_PQ_AUTH` when the server refuses the credentials, `ERR_PQ_TLS` when TLS fails, or
   * `ERR_PQ_INVALID_CONFIG` for a bad URL or an unreadable credentials/certificate file.
   * Queues of the process with the same servers, credentials and TLS settings share one
   * connection.
   */
  connect(url?: string): Promise<this>
  /**
   * Stops the worker (it pulls no more; the tasks it holds, running or prefetched, settle first, up
   * to `shutdownTimeout`), then closes the connection (when no other queue of the process shares it).
   */
  disconnect(): Promise<void>
  /**
   * Enqueues a task; resolves to its id once JetStream has stored it (in a PRODUCER span when
   * `@opentelemetry/api` is installed: docs/guides/tracing.md). Bad input rejects before
   * anything is sent: `ERR_PQ_INVALID_TASK` (not `{ data, metadata? }`, unknown keys, metadata
   * that is not a JSON object) or `ERR_PQ_SERIALIZE` (not JSON-serializable, or what the
   * queue's serializer or schema cannot encode).
   */
  enqueue(task: EnqueueTaskOf<T>): Promise<string>
  /**
   * Enqueues tasks, pipelined; resolves to their ids, in order, once all are stored. One bad
   * task (or a hole in a sparse array) rejects the whole batch before anything is sent.
   */
  enqueueBatch(tasks: Array<EnqueueTaskOf<T>>): Promise<string[]>
  /**
   * Starts processing with `handler`, up to `batchSize` tasks at once; resolves once the worker
   * runs. To check the `details` a handler returns, give it a type: `TaskHandler<T, Details>`.
   * With `options.subjects` (a queue over a subject tree), the worker takes that part of the
   * tree only, sharing a durable consumer with the other workers of the same part.
   */
  process(handler: TaskHandler<T, any>, options?: ProcessOptions): Promise<this>
  /**
   * Starts processing with the handler a module exports (its default export, or `handler`), run
   * on `options.threads` worker threads (default: one per core) that the one worker of this object
   * feeds: for CPU-bound handlers. `module` is a `URL` (`new URL('./handler.js', import.meta.url)`),
   * a `file:` URL or an absolute path. Heartbeats, `taskTimeout`, `cancel(id)`, shutdown, events,
   * metrics and results work as with a function; `task.signal` and `task.progress()` too. The
   * module exports `backoff` and `serializer` / `schema` when the queue has them as functions
   * (they cannot cross to a thread). Rejects with `ERR_PQ_INVALID_HANDLER` when a thread cannot
   * load the module or it exports no handler (no thread is left running).
   */
  process(module: URL | string, options?: ProcessOptions): Promise<this>
  /** Reads queue statistics from the server. */
  getStats(): Promise<QueueStats>
  /**
   * The queue's metrics in the Prometheus text format (0.0.4): this object's counters and
   * histograms (since it was created, across reconnects) and the server's gauges, read now.
   * Rejects with `ERR_PQ_NOT_CONNECTED` when not connected and `ERR_PQ_TIMEOUT` when the server
   * does not answer within 5 s.
   */
  metrics(): Promise<string>
  /** The same metrics as objects (prom-client's `getMetricsAsJSON()` shape). */
  getMetricFamilies(): Promise<MetricFamily[]>
  /**
   * Adds a listener. Events are recorded only while they have listeners; a listener that throws
   * (or rejects) is reported as a process warning and hurts nothing else.
   */
  on<E extends keyof ProtoqueueEvents>(event: E, listener: (event: ProtoqueueEvents[E]) => void): this
  addListener<E extends keyof ProtoqueueEvents>(event: E, listener: (event: ProtoqueueEvents[E]) => void): this
  prependListener<E extends keyof ProtoqueueEvents>(event: E, listener: (event: ProtoqueueEvents[E]) => void): this
  /** Adds a listener called for the next event only. */
  once<E extends keyof ProtoqueueEvents>(event: E, listener: (event: ProtoqueueEvents[E]) => void): this
  prependOnceListener<E extends keyof ProtoqueueEvents>(event: E, listener: (event: ProtoqueueEvents[E]) => void): this
  /** Removes a listener. */
  off<E extends keyof ProtoqueueEvents>(event: E, listener: (event: ProtoqueueEvents[E]) => void): this
  removeListener<E extends keyof ProtoqueueEvents>(event: E, listener: (event: ProtoqueueEvents[E]) => void): this
  /** Removes every listener (of `event`, when given). */
  removeAllListeners(event?: keyof ProtoqueueEvents): this
  listenerCount(event: keyof ProtoqueueEvents): number
  listeners<E extends keyof ProtoqueueEvents>(event: E): Array<(event: ProtoqueueEvents[E]) => void>
  rawListeners<E extends keyof ProtoqueueEvents>(event: E): Array<(event: ProtoqueueEvents[E]) => void>
  eventNames(): Array<keyof ProtoqueueEvents>
  /**
   * Reads (without removing) up to `limit` dead letters (default 100, an integer from 1 to
   * 10,000,000, else `ERR_PQ_INVALID_CONFIG`), oldest first.
   *
   * With `filter`, only the letters it picks: `{ ids: [taskId] }` finds the letters of a task
   * (one per time it was dead-lettered), `{ reason }` those of one reason, `{ sequences }` reads
   * the named letters directly. The filter's `limit` is not taken here (`ERR_PQ_INVALID_CONFIG`):
   * `limit` is. Letters are read in one pass over the dead-letter stream (a few requests per
   * thousand letters), keeping only those returned; finding a task id reads every stored letter
   * once.
   */
  getDeadLetters(limit?: number, filter?: Omit<DeadLetterFilter, 'limit'>): Promise<Array<DeadLetter<T>>>
  /**
   * Reads (without removing) the dead letter whose `sequence` is given (an integer >= 1, else
   * `ERR_PQ_INVALID_CONFIG`); resolves to `undefined` when there is none (removed or never stored).
   */
  getDeadLetter(sequence: number): Promise<DeadLetter<T> | undefined>
  /**
   * Starts a dead-letter worker: `handler` gets each dead letter (the object `getDeadLetters`
   * returns), one dead-letter worker of the queue at a time, with heartbeats and `taskTimeout`
   * as in `process()`. `{ success: true }` removes the letter (only then); a failure offers it
   * again after `retryDelay`; `{ success: false, retry: false }` keeps it stored but stops
   * offering it. Runs beside `process()` or alone; `disconnect()` stops it gracefully.
   */
  processDLQ(handler: DeadLetterHandler<T>, options?: DeadLetterWorkerOptions): Promise<this>
  /**
   * Puts the tasks of the dead letters `filter` picks back on the queue (same ids, a fresh
   * attempt budget), each letter removed once its task is stored; resolves to how many. Letters
   * of messages that were not tasks, and letters whose data was dropped, are left alone. Two
   * calls at once requeue each task once.
   */
  requeueDeadLetters(filter?: DeadLetterFilter, options?: DeadLetterActionOptions): Promise<number>
  /** Removes the dead letters `filter` picks; resolves to how many. `options` as in `requeueDeadLetters`. */
  purgeDeadLetters(filter?: DeadLetterFilter, options?: DeadLetterActionOptions): Promise<number>
  /**
   * Removes the tasks waiting in the queue (never delivered; not those being handled or waiting
   * for a retry); resolves to how many.
   */
  purge(): Promise<number>
  /**
   * Pauses the queue: every worker, in every process, receives no more tasks (those in flight
   * finish) until `resume()`. Kept by the server: workers started later are paused too.
   */
  pause(): Promise<void>
  /** Resumes a paused queue's workers. */
  resume(): Promise<void>
  /**
   * Deletes the queue — its waiting, delayed and recurring tasks, dead letters, own-id index, live
   * workers' records and task history (its streams: `streamName`, `<streamName>_DLQ`,
   * `<streamName>_IDS`, `<streamName>_WORKERS`, `<streamName>_HISTORY`) — then disconnects this
   * object; resolves to the names of the streams deleted (none when it was gone already).
   * `connect()` again makes the queue anew, empty. While this object processes tasks or a worker
   * of any process uses the queue, rejects with `ERR_PQ_QUEUE_IN_USE` and deletes nothing, unless
   * `force: true`: then this object's worker stops first, and workers of other processes lose what
   * they hold — those still running make the queue again, empty, when they next pull (stop them
   * to have it gone). BullMQ's `obliterate()`.
   */
  destroy(options?: { force?: boolean }): Promise<string[]>
  /**
   * Cancels task `id`, from any process, wherever it is: a delayed task not yet due is removed;
   * a running task's handler has its `task.signal` aborted (reason `ERR_PQ_TASK_CANCELLED`) and
   * the task ends `cancelled` at once, whatever the handler does next; a task waiting, or
   * waiting for a retry, ends `cancelled` when a worker takes it, without running. A cancelled
   * task is neither retried nor dead-lettered; with `options.results`, `waitFor` rejects with
   * `ERR_PQ_TASK_CANCELLED` and `getTask` says `cancelled`.
   *
   * Resolves to `true` when the task will not complete: removed, stopped while running, or
   * (own ids, which the queue indexes) marked while it waits. `false` when that cannot be said:
   * it ended first (a cancel racing its completion ends in exactly one of the two), or nothing
   * is known of it — a waiting task with a generated id is still cancelled when a worker takes
   * it. An id that cannot be one rejects with `ERR_PQ_INVALID_TASK`.
   */
  cancel(id: string): Promise<boolean>
  /**
   * Creates the recurring task `name` (letters, digits, `-`, `_`…: no whitespace, `.`, `*`, `>`
   * or `:`), or replaces it: one task per tick, however many processes schedule the same name.
   * Each tick's task gets its own id, `<name>:<sequence>`. Needs nats-server 2.14
   * (`ERR_PQ_SERVER_TOO_OLD`) and a stream with schedules (`options.schedules`).
   */
  schedule(name: string, spec: ScheduleSpec, task: OmitEach<EnqueueTaskOf<T>, 'delay' | 'runAt'>): Promise<void>
  /** Removes the recurring task `name`; resolves to whether it existed. */
  unschedule(name: string): Promise<boolean>
  /** The recurring tasks of the queue, by name. */
  getSchedules(): Promise<Array<ScheduledTask<T>>>
  /**
   * The workers running now, in any process, oldest first: where each runs, since when, and what
   * it holds. `getStats().workers` counts them.
   */
  getWorkers(): Promise<WorkerInfo[]>
  /**
   * Task `id` as the server knows it, from any process, with no option needed for the task
   * stream's states: `waiting`, `retrying` (with the last attempt's `error` and `runAt`) and
   * `running` (its `attempts`, `startedAt` and latest `progress`, asked of the live workers);
   * `delayed` from its schedule; `completed`, `deadLettered` and `cancelled` from its record
   * (`options.results`, `keepCompleted`, `keepFailed` on the workers), `deadLettered` also from
   * its letter. `undefined` when none has it (never enqueued, or ended with no record kept). An id
   * that cannot be one rejects with `ERR_PQ_INVALID_TASK`.
   */
  getTask(id: string): Promise<TaskInfo<T> | undefined>
  /**
   * The tasks of one state, newest first, a page at a time: `{ tasks, cursor }`; pass `cursor`
   * back for the next page (absent on the last). `completed`, `failed` (dead-lettered) and
   * `cancelled` list the records the workers keep (`keepCompleted`, `keepFailed`,
   * `results`); `waiting`, `retrying` and `delayed` read the task stream; `running` asks the live
   * workers (one page). A query out of range rejects with `ERR_PQ_INVALID_CONFIG`.
   */
  getTasks(query: TaskQuery): Promise<TaskPage<T>>
  /**
   * Waits for task `id` to end, from any process (`options.results`): resolves with its
   * handler's `result` (`undefined` when it returned none); rejects with `ERR_PQ_TASK_FAILED`
   * when it failed for good (the error carries `reason`, `error`, `attempts` and `task`),
   * `ERR_PQ_TASK_CANCELLED` when `cancel(id)` ended it, or `ERR_PQ_TIMEOUT`. A task that already ended answers at once, for its record's `ttl`. Without
   * `options.results` on this object, or on a queue whose workers never kept results (no history
   * stream), rejects with `ERR_PQ_RESULTS_OFF`. However many calls
   * wait, the object holds one subscription, and only while some do.
   */
  waitFor<R = unknown>(id: string, options?: WaitOptions): Promise<R>
  /** `enqueue(task)`, then `waitFor` its id; the timeout counts from the call. */
  enqueueAndWait<R = unknown>(task: EnqueueTaskOf<T>, options?: WaitOptions): Promise<R>
}

/** A queue on the server, as `listQueues()` finds it. */
export interface QueueInfo {
  /** The task stream: a `Protoqueue`'s `streamName` for this queue. */
  streamName: string
  /** The queue's subject: a `Protoqueue`'s `subject` for this queue (`<root>.>` for a subject tree). */
  subject: string
  /** The dead-letter stream, when it exists. */
  deadLetterStream?: string
  /** Whether the task stream allows delayed and recurring tasks (message schedules). */
  schedules: boolean
  /** Whether the task stream has priority levels (`options.priorities`). */
  priorities: boolean
  /** Whether the queue owns a subject tree (its `subject` ends in `.>`). */
  tree: boolean
  /**
   * `'marker'`: the stream metadata Protoqueue puts on the streams it creates;
   * `'deadLetterStream'`: a stream of an older version, recognised by its `<name>_DLQ` stream.
   */
  foundBy: 'marker' | 'deadLetterStream'
}

/**
 * Every Protoqueue queue on the server `config` connects to (`url`, `auth`, `tls`,
 * `options.connectTimeout`; no `streamName`/`subject` needed), by stream name; `server` is the
 * URL with credentials masked.
 */
export declare function listQueues(config?: Partial<ProtoqueueConfig>): Promise<{ server: string; queues: QueueInfo[] }>
