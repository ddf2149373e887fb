// Debian's Chromium for browser tests driven with playwright-core (which never
// downloads browsers of its own): installed like the other tools, launched
// headless with the flags a root user in a container needs.
import { chromium, type Browser } from 'playwright-core';
import { ensureCommands } from './packages.ts';
import { run } from './process.ts';

/** Makes sure Debian's `chromium` is installed; returns the path of its executable. */
export async function chromiumExecutable(): Promise<string> {
  await ensureCommands([{ command: 'chromium', debianPackage: 'chromium' }]);
  // /usr/bin/chromium: Debian's wrapper script, which playwright drives fine.
  return (await run('sh', ['-c', 'command -v chromium'])).stdout.trim();
}

/** Headless Chromium; close it in an `after` hook. */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: await chromiumExecutable(),
    headless: true,
    // Root in a container: no user namespaces for the sandbox, a small /dev/shm.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
    timeout: 30_000,
  });
}
