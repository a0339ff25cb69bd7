// Child processes whose output lines tests wait on.
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

export const fixture = (name: string) => join(__dirname, '..', 'fixtures', name)

/** The environment the fixtures read: which server and queue, plus fixture-specific settings. */
export function fixtureEnv(names: { streamName: string; subject: string }, url: string, extra: Record<string, string> = {}) {
  return { NATS_URL: url, STREAM: names.streamName, SUBJECT: names.subject, ...extra }
}

export class Child {
  readonly lines: string[] = []
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  private listeners: Array<() => void> = []
  private lineListeners: Array<(line: string) => void> = []
  stderr = ''

  constructor(readonly process: ChildProcess) {
    createInterface({ input: process.stdout! }).on('line', (line) => {
      this.lines.push(line)
      this.lineListeners.forEach((l) => l(line))
      this.listeners.forEach((l) => l())
    })
    process.stderr?.on('data', (chunk) => (this.stderr += chunk))
    this.exited = new Promise((resolve) => process.once('exit', (code, signal) => resolve({ code, signal })))
  }

  static run(command: string, args: string[], env: Record<string, string>): Child {
    return new Child(spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }))
  }

  /** Calls `listener` with every line from now on (for tallies kept while the child runs). */
  onLine(listener: (line: string) => void): void {
    this.lineListeners.push(listener)
  }

  /** Resolves once `count` lines match `pattern`; rejects after `timeoutMs` or if the child exits. */
  waitForLines(pattern: RegExp, count = 1, timeoutMs = 20_000): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const matching = this.lines.filter((l) => pattern.test(l))
        if (matching.length >= count) {
          cleanup()
          resolve(matching)
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`timed out waiting for ${count} × ${pattern}; output:\n${this.lines.join('\n')}\n${this.stderr}`))
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        this.listeners = this.listeners.filter((l) => l !== check)
      }
      this.listeners.push(check)
      this.exited.then(() => {
        check()
        if (this.listeners.includes(check)) {
          cleanup()
          reject(new Error(`child exited before ${count} × ${pattern}; output:\n${this.lines.join('\n')}\n${this.stderr}`))
        }
      })
      check()
    })
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL') {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill(signal)
    return this.exited
  }
}
