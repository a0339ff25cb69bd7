import type { ProtoqueueConfig } from 'protoqueue'

/** Options of `dashboard()`. */
export interface DashboardOptions {
  /**
   * Where and how to connect: a `ProtoqueueConfig` without `streamName`/`subject` (`url`, `auth`,
   * `tls`, `options.connectTimeout`). Default: `NATS_URL`, else `nats://localhost:4222`.
   */
  connection?: Partial<ProtoqueueConfig>
  /** The address to listen on. Default `127.0.0.1`; any non-loopback address needs `token`. */
  host?: string
  /** The port; 0 picks a free one. Default 3000. */
  port?: number
  /**
   * The token every state change (requeue, purge, pause, resume, cancel) must carry in the
   * `X-Protoqueue-Token` header; at least 16 characters. Required when `host` is not a loopback
   * address. Without it on a loopback address, the dashboard makes one per run and gives it to
   * the page it serves.
   */
  token?: string
  /** Milliseconds between two samples of every queue's statistics. Default 1000 (100 to 60000). */
  interval?: number
  /** Samples kept per queue for the charts. Default 300. */
  history?: number
}

/** A running dashboard. */
export interface Dashboard {
  /** The page's address, e.g. `http://127.0.0.1:3000/`. */
  url: string
  host: string
  port: number
  /** Stops serving and closes the dashboard's connections to NATS. */
  close(): Promise<void>
}

/**
 * Serves the web dashboard: every Protoqueue queue on the server with its counts, live
 * throughput, live workers, tasks by state with a page per task (cancel), dead letters
 * (requeue, purge) and pause/resume. Resolves once it
 * listens and has read the queues once; rejects with `ERR_PQ_INVALID_CONFIG` for bad options,
 * `ERR_PQ_LISTEN` when the address cannot be listened on (port taken), and with the connection's
 * error (`ERR_PQ_CONNECT`, `ERR_PQ_AUTH`, ...) when the server cannot be reached.
 */
export declare function dashboard(options?: DashboardOptions): Promise<Dashboard>

/** Whether `host` is a loopback address or `localhost`. */
export declare function isLoopback(host: string): boolean

/** The header carrying the token: `x-protoqueue-token`. */
export declare const TOKEN_HEADER: string
