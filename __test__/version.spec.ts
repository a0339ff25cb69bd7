// The package's version is stated in several files that a release must bump together: package.json,
// Cargo.toml (and its entry in Cargo.lock), every npm/<platform>/package.json, package-lock.json,
// the generated loader native.js (napi build writes the version it checks platform packages
// against), and the example image tag in deploy/. CHANGELOG.md (Keep a Changelog) must have a
// dated section for that version under an [Unreleased] one, with valid semver versions, newest first.
// No server needed.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

const ROOT = join(__dirname, '..')
const read = (...path: string[]) => readFileSync(join(ROOT, ...path), 'utf8')
const json = (...path: string[]) => JSON.parse(read(...path))

const manifest = json('package.json')
const version: string = manifest.version

/** semver.org's regular expression for a version (2.0.0), with capture groups. */
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/

/** Semver precedence: negative when a < b, 0 when equal (build metadata ignored), positive when a > b. */
function compareSemver(a: string, b: string): number {
  const [, ...pa] = SEMVER.exec(a)!
  const [, ...pb] = SEMVER.exec(b)!
  for (let i = 0; i < 3; i++) {
    const diff = Number(pa[i]) - Number(pb[i])
    if (diff !== 0) return diff
  }
  const [preA, preB] = [pa[3], pb[3]]
  if (preA === undefined || preB === undefined) return (preA === undefined ? 1 : 0) - (preB === undefined ? 1 : 0)
  const idsA = preA.split('.')
  const idsB = preB.split('.')
  for (let i = 0; i < Math.min(idsA.length, idsB.length); i++) {
    const [x, y] = [idsA[i], idsB[i]]
    if (x === y) continue
    const [numX, numY] = [/^\d+$/.test(x), /^\d+$/.test(y)]
    if (numX && numY) return Number(x) - Number(y)
    if (numX !== numY) return numX ? -1 : 1
    return x < y ? -1 : 1
  }
  return idsA.length - idsB.length
}

interface Release {
  version: string
  date: string | undefined
  line: number
}

/** The changelog's `## [...]` headings, in file order. */
function changelogHeadings(): Array<{ name: string; date: string | undefined; rest: string; line: number }> {
  const headings = []
  const lines = read('CHANGELOG.md').split('\n')
  for (const [i, text] of lines.entries()) {
    if (!text.startsWith('## ')) continue
    const match = /^## \[([^\]]+)\](.*)$/.exec(text)
    assert.ok(match, `CHANGELOG.md line ${i + 1}: a release heading is "## [version] - YYYY-MM-DD", got ${JSON.stringify(text)}`)
    const date = /^ - (\d{4}-\d{2}-\d{2})$/.exec(match[2])?.[1]
    headings.push({ name: match[1], date, rest: match[2], line: i + 1 })
  }
  return headings
}

function releases(): Release[] {
  return changelogHeadings()
    .filter((heading) => heading.name !== 'Unreleased')
    .map(({ name, date, line }) => ({ version: name, date, line }))
}

test('the semver comparison follows semver.org precedence', () => {
  const ordered = ['1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0', '1.0.1', '1.1.0', '1.10.0', '2.0.0']
  for (let i = 0; i + 1 < ordered.length; i++) {
    assert.ok(compareSemver(ordered[i], ordered[i + 1]) < 0, `${ordered[i]} < ${ordered[i + 1]}`)
    assert.ok(compareSemver(ordered[i + 1], ordered[i]) > 0, `${ordered[i + 1]} > ${ordered[i]}`)
  }
  assert.equal(compareSemver('1.1.0+build.5', '1.1.0'), 0)
  for (const bad of ['1.0', '01.0.0', '1.0.0-', '1.0.0-01', 'v1.0.0', '1.0.0 ']) assert.doesNotMatch(bad, SEMVER, bad)
})

test('package.json has a valid semver version', () => {
  assert.match(version, SEMVER)
})

test('Cargo.toml and Cargo.lock state the same version as package.json', () => {
  const cargo = read('Cargo.toml')
  const packageSection = /^\[package\]\n([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(cargo)
  assert.ok(packageSection, 'Cargo.toml has a [package] section')
  assert.equal(/^name = "([^"]+)"$/m.exec(packageSection[1])?.[1], manifest.name)
  assert.equal(/^version = "([^"]+)"$/m.exec(packageSection[1])?.[1], version, 'Cargo.toml [package] version')
  const locked = [...read('Cargo.lock').matchAll(/^\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"/gm)].filter(([, name]) => name === manifest.name)
  assert.deepStrictEqual(
    locked.map(([, , lockedVersion]) => lockedVersion),
    [version],
    `Cargo.lock's ${manifest.name} entry`,
  )
})

test('every npm/<platform> package, and every platform package among the optionalDependencies, is at that version', () => {
  const platforms = readdirSync(join(ROOT, 'npm'))
  assert.ok(platforms.length > 0, 'npm/ has platform packages')
  for (const platform of platforms) {
    const platformManifest = json('npm', platform, 'package.json')
    assert.equal(platformManifest.name, `${manifest.name}-${platform}`)
    assert.equal(platformManifest.version, version, `npm/${platform}/package.json`)
  }
  // The platform packages are written into optionalDependencies when packing and publishing
  // (scripts/package.mjs, napi pre-publish); any kept in package.json must not lag behind.
  for (const [name, range] of Object.entries<string>(manifest.optionalDependencies ?? {})) {
    if (name.startsWith(`${manifest.name}-`)) assert.equal(range, version, `optionalDependencies.${name}`)
  }
})

test('package-lock.json records the same root version', () => {
  const lock = json('package-lock.json')
  assert.equal(lock.name, manifest.name)
  assert.equal(lock.version, version)
  assert.equal(lock.packages[''].version, version)
})

test('the generated loader (native.js) checks platform packages against that version', () => {
  const expected = [...read('native.js').matchAll(/bindingPackageVersion !== '([^']+)'/g)].map(([, stated]) => stated)
  assert.ok(expected.length > 0, 'native.js checks the platform package version')
  assert.deepStrictEqual([...new Set(expected)], [version], 'regenerate it with `npm run build:debug`')
})

test("the example image in deploy/ is tagged with the package's version", () => {
  const files = ['Dockerfile', 'README.md', 'docker-compose.yml', join('kubernetes', 'worker.yaml')]
  for (const file of files) {
    const tags = [...read('deploy', file).matchAll(/protoqueue-example:([\w.-]+)/g)].map(([, tag]) => tag)
    assert.ok(tags.length > 0, `deploy/${file} names the example image`)
    for (const tag of tags) assert.equal(tag, version, `deploy/${file}`)
  }
})

test('CHANGELOG.md has an [Unreleased] section first, then a dated section for this version', () => {
  const headings = changelogHeadings()
  assert.equal(headings[0]?.name, 'Unreleased', 'the first section is ## [Unreleased]')
  assert.equal(headings[0].rest, '', '## [Unreleased] has no date')
  assert.equal(headings.filter((heading) => heading.name === 'Unreleased').length, 1, 'one ## [Unreleased]')
  const current = releases().filter((release) => release.version === version)
  assert.equal(current.length, 1, `one "## [${version}] - YYYY-MM-DD" heading`)
  assert.ok(current[0].date, `## [${version}] has a date (YYYY-MM-DD)`)
  assert.equal(releases()[0].version, version, `the newest release in CHANGELOG.md is ${version}, the package's version`)
})

test('every CHANGELOG.md release is a valid semver version with a real date, newest first', () => {
  const all = releases()
  assert.ok(all.length > 0)
  for (const { version: stated, date, line } of all) {
    assert.match(stated, SEMVER, `CHANGELOG.md line ${line}: [${stated}] is not a semver version`)
    assert.ok(date, `CHANGELOG.md line ${line}: [${stated}] needs " - YYYY-MM-DD"`)
    const parsed = new Date(`${date}T00:00:00Z`)
    assert.ok(!Number.isNaN(parsed.getTime()) && parsed.toISOString().slice(0, 10) === date, `CHANGELOG.md line ${line}: ${date} is not a date`)
  }
  for (let i = 0; i + 1 < all.length; i++) {
    const [newer, older] = [all[i], all[i + 1]]
    assert.ok(compareSemver(newer.version, older.version) > 0, `[${newer.version}] (line ${newer.line}) must come before, and be above, [${older.version}]`)
    assert.ok(newer.date! >= older.date!, `[${newer.version}] is dated ${newer.date}, before [${older.version}] (${older.date})`)
  }
})
