// W8's handler module for Protoqueue's `process(url, { threads })` (bench/protoqueue.mjs): each
// worker thread loads it and runs its default export per task. The work is bench/lib/cpu-work.mjs's.
import { cpuTask } from './cpu-work.mjs'

export default function handler(task) {
  cpuTask(task.data)
  return { success: true }
}
