// A real headless Chromium for page tests: Debian's `chromium` package (or PROTOQUEUE_CHROMIUM),
// driven by playwright-core with that executable (playwright's own browser downloads are not
// used). Without one, tests fail saying what to install: .ci/run installs it.
import { existsSync } from 'node:fs'

import { chromium, type Browser } from 'playwright-core'

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/snap/bin/chromium']

export function chromiumPath(): string {
  const wanted = process.env.PROTOQUEUE_CHROMIUM
  if (wanted) {
    if (!existsSync(wanted)) throw new Error(`PROTOQUEUE_CHROMIUM=${wanted} does not exist`)
    return wanted
  }
  const found = CANDIDATES.find((path) => existsSync(path))
  if (!found) {
    throw new Error(
      'No Chromium for the dashboard tests: install Debian\'s package (`sudo apt-get install -y chromium`, as .ci/run does) ' +
        'or set PROTOQUEUE_CHROMIUM to a Chromium/Chrome executable',
    )
  }
  return found
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
}
