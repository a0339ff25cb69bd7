#!/usr/bin/env node
// Writes what `npm install protoqueue` gets as installable tarballs to dist/: the root package
// (JavaScript and types, no binary) and this machine's platform package with the release addon.
//
// The root package is packed as `napi pre-publish` publishes it: its package.json gains every
// npm/<platform> package as an optional dependency at its version. The repo's package.json leaves
// them out, as napi-rs's template does: npm ci cannot lock packages that are not on the registry
// yet, which is the case for every new version until the release has published them.
//
// The release build goes to a staging folder, target/package/, and its addon is copied only into
// npm/<platform>/: the repo root keeps the debug addon that scripts/setup.mjs keeps fresh, so the
// tests never pick up a binary this script left behind.
//
// Usage: node scripts/package.mjs [--prebuilt DIR]
//   --prebuilt DIR   package the protoqueue.<platform>.node found in DIR (a CI build artifact)
//                    instead of building one
import { execFileSync } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const distDir = join(root, 'dist')
const stagingDir = join(root, 'target', 'package')
const readManifest = (dir) => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
const manifest = readManifest(root)
const { binaryName } = manifest.napi
// The generated loader and its types, committed at the root and shipped in the root package.
const GENERATED = ['native.js', 'native.d.ts']

// npm and npx are .cmd scripts on Windows, which Node starts only through a shell.
const shell = process.platform === 'win32'

function buildRelease() {
  console.log('[package] release build (lto, stripped) into target/package/')
  rmSync(stagingDir, { recursive: true, force: true })
  execFileSync('npx', ['napi', 'build', '--platform', '--release', '--output-dir', stagingDir, '--js', GENERATED[0], '--dts', GENERATED[1]], {
    cwd: root,
    stdio: 'inherit',
    shell,
  })
  // The root package ships the committed loader and types: they must be what this build generates.
  for (const file of GENERATED) {
    if (readFileSync(join(stagingDir, file), 'utf8') !== readFileSync(join(root, file), 'utf8')) {
      throw new Error(`${file} is out of date with the Rust sources: run \`npm run build:debug\` and commit it`)
    }
  }
  return stagingDir
}

/** The one `protoqueue.<platform>.node` in `dir`, and its platform (e.g. linux-x64-gnu). */
function findAddon(dir) {
  const addons = readdirSync(dir).filter((name) => name.startsWith(`${binaryName}.`) && name.endsWith('.node'))
  if (addons.length !== 1) throw new Error(`expected one ${binaryName}.<platform>.node in ${dir}, found ${addons.length}`)
  const [file] = addons
  return { file: join(dir, file), name: file, platform: file.slice(binaryName.length + 1, -'.node'.length) }
}

/** The root package as published, in target/package/root/: see the top of this file. */
function stageRootPackage() {
  const dir = join(stagingDir, 'root')
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  for (const file of [...manifest.files, 'README.md', 'LICENSE']) cpSync(join(root, file), join(dir, file), { recursive: true })
  const platforms = readdirSync(join(root, 'npm')).map((name) => readManifest(join(root, 'npm', name)))
  // The repo's own optional dependencies (uplot, the dashboard's charts), then the platform packages.
  const optionalDependencies = { ...manifest.optionalDependencies, ...Object.fromEntries(platforms.map((platform) => [platform.name, platform.version])) }
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ ...manifest, optionalDependencies }, null, 2)}\n`)
  return dir
}

/** Packs the package in `dir` into dist/; returns the tarball's name and size. */
function pack(dir) {
  const output = execFileSync('npm', ['pack', '--json', '--pack-destination', distDir], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', shell })
  const [result] = JSON.parse(output)
  return { filename: result.filename, size: result.size, files: result.entryCount }
}

function main() {
  const prebuiltAt = process.argv.indexOf('--prebuilt')
  const addonDir = prebuiltAt === -1 ? buildRelease() : resolve(process.argv[prebuiltAt + 1] ?? '.')
  const addon = findAddon(addonDir)
  const platformDir = join(root, 'npm', addon.platform)
  if (!existsSync(join(platformDir, 'package.json'))) {
    throw new Error(`no platform package npm/${addon.platform}/: is ${addon.platform} in package.json napi.targets?`)
  }
  copyFileSync(addon.file, join(platformDir, addon.name))

  rmSync(distDir, { recursive: true, force: true })
  mkdirSync(distDir)
  const mb = (bytes) => `${(bytes / 1e6).toFixed(2)} MB`
  console.log(`[package] ${addon.name}: ${mb(statSync(addon.file).size)}`)
  for (const dir of [stageRootPackage(), platformDir]) {
    const tarball = pack(dir)
    console.log(`[package] dist/${tarball.filename}: ${tarball.files} files, ${mb(tarball.size)}`)
  }
}

main()
