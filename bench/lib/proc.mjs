// CPU and memory counters from Linux /proc. The benchmark shares the machine's cores with
// nats-server and with whatever else runs, so every run records who used the CPU meanwhile.
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'

/** Clock ticks per second of the counters in /proc/<pid>/stat and /proc/stat. */
export const TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** CPU ticks (user + system, all threads) a process has used so far. */
export function processTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name, which may itself hold spaces: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11]) + Number(fields[12])
}

/** Busy CPU ticks of the whole machine so far (all cores; idle and iowait excluded). */
export function machineBusyTicks() {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8')
    .split('\n', 1)[0]
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number)
  return user + nice + system + irq + softirq + steal
}

/**
 * A snapshot of the counters a run compares: the client (one pid, or several counted as one: a
 * runner and the worker process it started), the server, the machine, the clock.
 */
export function sample(clientPid, serverPid) {
  return {
    at: performance.now(),
    client: [clientPid].flat().reduce((ticks, pid) => ticks + processTicks(pid), 0),
    server: processTicks(serverPid),
    machine: machineBusyTicks(),
  }
}

/**
 * CPU use between two samples, in percent of one core (a 2-core machine has 200%): the client's,
 * the server's, and everything else's ("outside": other processes, including this driver).
 */
export function cpuBetween(before, after) {
  const seconds = (after.at - before.at) / 1000
  const percent = (ticks) => (100 * ticks) / TICKS_PER_SECOND / seconds
  const ms = (ticks) => (1000 * ticks) / TICKS_PER_SECOND
  const client = after.client - before.client
  const server = after.server - before.server
  const outside = Math.max(0, after.machine - before.machine - client - server)
  return {
    wallMs: after.at - before.at,
    clientMs: ms(client),
    serverMs: ms(server),
    clientPct: percent(client),
    serverPct: percent(server),
    outsidePct: percent(outside),
  }
}

/** Resets a process's peak resident set size (VmHWM) to its current size. */
export function resetPeakRss(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
    return true
  } catch {
    return false // older kernels or restricted containers: the peak then covers the whole process life
  }
}

/** Peak resident set size of a process, in kB. */
export function peakRssKb(pid) {
  const match = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match ? Number(match[1]) : undefined
}
