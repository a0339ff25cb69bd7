// @ts-check
// Where the dashboard tests find a Chromium: PROTOQUEUE_CHROMIUM, else Debian's `chromium`
// package or another usual place. Shared by the tests (__test__/helpers/browser.ts) and the
// prerequisite check (scripts/prerequisites.mjs).
import { existsSync } from 'node:fs'

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/snap/bin/chromium']

/**
 * The Chromium executable to drive; throws saying what to install when there is none.
 * @returns {string}
 */
export function findChromium() {
  const wanted = process.env.PROTOQUEUE_CHROMIUM
  if (wanted) {
    if (!existsSync(wanted)) throw new Error(`PROTOQUEUE_CHROMIUM=${wanted} does not exist`)
    return wanted
  }
  const found = CANDIDATES.find((path) => existsSync(path))
  if (!found) {
    throw new Error(
      "No Chromium for the dashboard tests: install Debian's package (`sudo apt-get install -y chromium`, as .ci/run does) " +
        'or set PROTOQUEUE_CHROMIUM to a Chromium/Chrome executable',
    )
  }
  return found
}
