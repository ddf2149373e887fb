// Makes sure the real tools the e2e tests drive (registry, skopeo, dockerd,
// containerd, openssl) are installed. On a fresh Debian CI machine running as
// root we install them; anywhere else we fail loudly with the command to run.
// Tests must never skip silently because a tool is missing.
import { existsSync } from 'node:fs';
import { run } from './process.ts';

export interface CommandNeed {
  /** Executable looked up on PATH. */
  command: string;
  /** Debian package providing it. */
  debianPackage: string;
  /**
   * Install it with --no-install-recommends: for packages whose recommendations
   * are large and unused here (Ceph's daemons recommend ceph-mds, ceph-fuse and
   * more; radosgw, ceph-mon and ceph-osd alone are ~270 MB installed).
   */
  withoutRecommends?: boolean;
}

let aptUpdated: Promise<void> | undefined;
// apt/dpkg hold a lock: installs from concurrent callers must not overlap.
let installQueue: Promise<unknown> = Promise.resolve();

export async function commandExists(command: string): Promise<boolean> {
  const result = await run('sh', ['-c', 'command -v "$1"', 'sh', command], { allowFail: true });
  return result.code === 0;
}

/** ARCHWAY_TEST_NO_INSTALL=1 turns installing into the error (e.g. on a dev box run as root). */
function canInstall(): boolean {
  if (process.env.ARCHWAY_TEST_NO_INSTALL === '1') return false;
  return process.getuid?.() === 0 && existsSync('/etc/debian_version') && existsSync('/usr/bin/apt-get');
}

function missingError(missing: CommandNeed[]): Error {
  return new Error(
    missing.map((n) => `missing ${n.command}: run 'apt-get install -y ${n.debianPackage}'`).join('; '),
  );
}

const aptEnv = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };

async function aptInstall(missing: CommandNeed[]): Promise<void> {
  // `apt-get update` once per process: fresh CI images ship without lists.
  aptUpdated ??= run('apt-get', ['update'], { env: aptEnv, timeoutMs: 600_000 }).then(() => undefined);
  await aptUpdated;
  for (const withoutRecommends of [false, true]) {
    const packages = [...new Set(missing.filter((n) => (n.withoutRecommends ?? false) === withoutRecommends).map((n) => n.debianPackage))];
    if (packages.length === 0) continue;
    const flags = withoutRecommends ? ['--no-install-recommends'] : [];
    await run('apt-get', ['install', '-y', ...flags, ...packages], { env: aptEnv, timeoutMs: 900_000 });
  }
}

export async function ensureCommands(needs: CommandNeed[]): Promise<void> {
  const missing: CommandNeed[] = [];
  for (const need of needs) {
    if (!(await commandExists(need.command))) missing.push(need);
  }
  if (missing.length === 0) return;
  if (!canInstall()) throw missingError(missing);

  const packages = [...new Set(missing.map((n) => n.debianPackage))];
  const install = installQueue.then(() => aptInstall(missing));
  installQueue = install.catch(() => undefined);
  try {
    await install;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`${missingError(missing).message}\n(automatic install failed: ${reason})`);
  }

  const stillMissing: CommandNeed[] = [];
  for (const need of missing) {
    if (!(await commandExists(need.command))) stillMissing.push(need);
  }
  if (stillMissing.length > 0) {
    throw new Error(`installed ${packages.join(' ')} but still ${missingError(stillMissing).message}`);
  }
}
