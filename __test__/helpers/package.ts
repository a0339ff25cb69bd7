// The tarballs `npm run package` writes to dist/, and the environment of a user who installs them.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { delimiter, join } from 'node:path'

export const repoRoot = join(__dirname, '..', '..')
export const rootManifest = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'))

export interface Tarballs {
  /** dist/protoqueue-<version>.tgz: the JavaScript and the types. */
  root: string
  /** dist/protoqueue-<platform>-<version>.tgz: this machine's binary. */
  platform: string
  /** The platform, as napi-rs names it: `linux-x64-gnu`. */
  platformName: string
}

/** The two tarballs in dist/; fails with what to run when they are missing. */
export function packedTarballs(): Tarballs {
  const { name, version } = rootManifest
  const dist = join(repoRoot, 'dist')
  const found = existsSync(dist) ? readdirSync(dist).filter((file) => file.endsWith('.tgz')) : []
  const rootFile = `${name}-${version}.tgz`
  const platformFiles = found.filter((file) => file !== rootFile)
  assert.ok(
    found.includes(rootFile) && platformFiles.length === 1,
    `dist/ must hold ${rootFile} and one platform tarball, found [${found.join(', ')}]: run \`npm run package\``,
  )
  const [platformFile] = platformFiles
  return {
    root: join(dist, rootFile),
    platform: join(dist, platformFile),
    platformName: platformFile.slice(`${name}-`.length, -`-${version}.tgz`.length),
  }
}

/**
 * The environment of a user's shell: no Rust toolchain on the PATH, and nothing of this repo's
 * `npm run` environment (npm exports `npm_config_local_prefix` and the like, which would point a
 * nested `npm install` back at this repo).
 */
export function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('npm_') && key !== 'NODE_PATH') env[key] = value
  }
  // Windows spells it `Path`; setting a second `PATH` beside it would leave the child guessing.
  const pathKey = Object.keys(env).find((key) => key.toUpperCase() === 'PATH') ?? 'PATH'
  const cargo = process.platform === 'win32' ? 'cargo.exe' : 'cargo'
  env[pathKey] = (env[pathKey] ?? '')
    .split(delimiter)
    .filter((dir) => dir && !existsSync(join(dir, cargo)))
    .join(delimiter)
  return env
}

/** Runs a command to completion and returns its stdout; fails with its output. */
export function runChecked(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number }): string {
  // npm is a .cmd script on Windows, which Node starts only through a shell.
  const result = spawnSync(command, args, { ...options, encoding: 'utf8', shell: process.platform === 'win32' })
  assert.equal(result.status, 0, `${command} ${args.join(' ')} failed (${result.error ?? result.status}):\n${result.stdout}\n${result.stderr}`)
  return result.stdout
}
