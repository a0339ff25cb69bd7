// Queue objects for the tests: made from a queue's names and options, connected to a server.
import { Protoqueue, type ProtoqueueConfig } from 'protoqueue'

/** A queue's names, as `uniqueQueue()` makes them. */
export type Names = { streamName: string; subject: string }

/** A queue object of `names` with `options`, connected to `url`. */
export async function connectedQueue<T = unknown>(url: string, names: Names, options: ProtoqueueConfig['options'] = {}): Promise<Protoqueue<T>> {
  const queue = new Protoqueue<T>({ ...names, options })
  await queue.connect(url)
  return queue
}
