// Waiting on events with bounded timeouts (never a fixed sleep standing in for synchronisation).

/** Polls `check` until it returns a truthy value; rejects after `timeoutMs` naming `what`. */
export async function eventually<T>(
  what: string,
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** A promise with its resolve function, for events raised from handlers. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

/** Rejects if `promise` does not settle within `timeoutMs`. */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs = 15_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Expects `promise` to reject with a `code`; returns the error. */
export async function rejectsWithCode(promise: Promise<unknown> | (() => unknown), code: string): Promise<Error & { code?: string }> {
  try {
    await (typeof promise === 'function' ? promise() : promise)
  } catch (err) {
    const e = err as Error & { code?: string }
    if (e.code !== code) throw new Error(`expected code ${code}, got ${e.code}: ${e.message}`)
    if (!(e instanceof Error)) throw new Error('rejection is not an Error')
    return e
  }
  throw new Error(`expected a rejection with code ${code}, but it resolved`)
}
