// W8's sandboxed processor for BullMQ: `new Worker(name, <this file>, { useWorkerThreads: true })`
// (bench/bullmq.mjs) runs its default export in a worker thread of its pool per job at once. The
// work is bench/lib/cpu-work.mjs's; the job completes when the function returns.
import { cpuTask } from './cpu-work.mjs'

export default function processor(job) {
  cpuTask(job.data)
}
