// Optional profiling of runs (`--profile DIR`): each run's timed part is recorded with
// `perf record -g` (when perf is installed), Node runners also write a V8 `.cpuprofile`, and the
// Protoqueue runners load a build of the addon with symbols and frame pointers, so perf can name
// its Rust functions and walk their stacks (the release profile strips symbols and omits frame
// pointers). Profiling costs CPU: its numbers are not benchmark numbers.
import { execFileSync, spawn } from 'node:child_process'
import { copyFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'

const PERF_FREQUENCY = '999'
/** perf needs a moment to attach; a run started earlier would lose its first samples. */
const PERF_ATTACH_MS = 300

function hasPerf() {
  try {
    execFileSync('perf', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/**
 * Builds the addon with symbols and frame pointers (a separate target dir, so the normal release
 * build stays cached) and copies it into `dir`, where `NAPI_RS_NATIVE_LIBRARY_PATH` points the
 * loader.
 */
function buildSymbolizedAddon(root, dir, host, run) {
  const targetDir = join(root, 'target', 'profiling')
  run('cargo', ['build', '--release', '--lib', '--target', host], {
    CARGO_TARGET_DIR: targetDir,
    CARGO_PROFILE_RELEASE_STRIP: 'none',
    RUSTFLAGS: '-C force-frame-pointers=yes',
  })
  const addon = join(dir, 'protoqueue.symbols.node')
  copyFileSync(join(targetDir, host, 'release', 'libprotoqueue.so'), addon)
  return addon
}

/** A profiler for the runs of one benchmark, writing into `dir`. */
export function createProfiler({ root, dir, host, withAddon, run, log }) {
  mkdirSync(dir, { recursive: true })
  const perf = hasPerf()
  if (!perf) log('perf is not installed: profiles are V8 .cpuprofile files only')
  const addon = withAddon ? buildSymbolizedAddon(root, dir, host, run) : undefined
  log(`profiling into ${dir}`)
  return {
    /** Extra arguments for a Node runner (V8 profile; perf map so perf can name JIT frames). */
    nodeArgs: (name) => ['--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${name}.cpuprofile`, '--perf-basic-prof'],
    env: addon ? { NAPI_RS_NATIVE_LIBRARY_PATH: addon } : {},
    /** Starts recording `pid`; resolves to a function that stops it once perf wrote its file. */
    async record(pid, name) {
      if (!perf) return async () => {}
      const recorder = spawn('perf', ['record', '-F', PERF_FREQUENCY, '-g', '-p', String(pid), '-o', join(dir, `${name}.perf.data`)], {
        stdio: 'ignore',
      })
      const exited = new Promise((resolve) => recorder.once('exit', resolve))
      await new Promise((resolve) => setTimeout(resolve, PERF_ATTACH_MS))
      return async () => {
        recorder.kill('SIGINT')
        await exited
      }
    },
  }
}
