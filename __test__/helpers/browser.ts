// A real headless Chromium for page tests: Debian's `chromium` package (or PROTOQUEUE_CHROMIUM),
// driven by playwright-core with that executable (playwright's own browser downloads are not
// used). Without one, tests fail saying what to install: .ci/run installs it.
import { chromium, type Browser } from 'playwright-core'

import { findChromium } from '../../scripts/chromium.mjs'

export function chromiumPath(): string {
  return findChromium()
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
}
