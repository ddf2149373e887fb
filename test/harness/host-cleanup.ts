// Cleaning host state that daemons leave behind when they are killed:
// stray processes (containerd shims, a dockerd whose parent test crashed) and
// mounts (dockerd bind-mounts its data root onto itself) that make
// `rm -rf` fail with EBUSY.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from './process.ts';

/** Whether the process runs. Zombies count as dead: in containers whose init
 * does not reap orphans, killed daemons stay zombies forever. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: exists but belongs to someone else.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // Field 3 of /proc/PID/stat is the state; the command before it may contain spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Processes with an argument equal to `dir` or a path inside it. */
export async function processesMentioning(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const args = cmdline.split('\0');
    if (args.some((a) => a === dir || a.includes(`${dir}/`))) pids.push(pid);
  }
  return pids;
}

/** SIGKILLs every process mentioning `dir` and waits until they are gone. */
export async function killProcessesMentioning(dir: string): Promise<void> {
  const pids = await processesMentioning(dir);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  const deadline = Date.now() + 5000;
  while (pids.some(isAlive) && Date.now() < deadline) await sleep(50);
}

/** mountinfo escapes spaces and friends as octal (\040). */
function unescapeMount(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function mountsUnder(dir: string, mountinfo: string): string[] {
  return mountinfo
    .split('\n')
    .map((line) => unescapeMount(line.split(' ')[4] ?? ''))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Lazily unmounts everything mounted at or below `dir`, deepest first. */
export async function unmountUnder(dir: string): Promise<void> {
  for (const mount of mountsUnder(dir, await readFile('/proc/self/mountinfo', 'utf8'))) {
    await run('umount', ['-l', mount], { allowFail: true });
  }
}

/** Synchronous variant for process 'exit' hooks, where nothing async runs. */
export function unmountUnderSync(dir: string): void {
  for (const mount of mountsUnder(dir, readFileSync('/proc/self/mountinfo', 'utf8'))) {
    try {
      execFileSync('umount', ['-l', mount], { stdio: 'ignore' });
    } catch {
      /* best effort */
    }
  }
}

/** Exit-hook cleanup of a daemon directory (the daemons are already killed). */
export function destroyDirSync(dir: string): void {
  unmountUnderSync(dir);
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    /* leftover cleanup at the next start handles it */
  }
}

const OWNER_FILE = 'archway-owner.json';

/** Marks a harness-private directory as belonging to this test process. */
export async function markOwned(dir: string): Promise<void> {
  await writeFile(join(dir, OWNER_FILE), JSON.stringify({ pid: process.pid }));
}

/** Kills what still runs from `dir`, unmounts and removes it. */
export async function destroyDir(dir: string): Promise<void> {
  await killProcessesMentioning(dir);
  await unmountUnder(dir);
  await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}

const swept = new Set<string>();

/**
 * Removes directories (and their daemons) left by harness runs whose test
 * process was SIGKILLed, so exit hooks never ran. Only directories marked
 * with markOwned() whose owner process is gone are touched. Once per process
 * and base directory.
 */
export async function sweepOrphans(base: string, prefixes: string[]): Promise<void> {
  const key = `${base}|${prefixes.join(',')}`;
  if (swept.has(key)) return;
  swept.add(key);
  for (const name of await readdir(base)) {
    if (!prefixes.some((p) => name.startsWith(p))) continue;
    const dir = join(base, name);
    let owner: number;
    try {
      owner = (JSON.parse(await readFile(join(dir, OWNER_FILE), 'utf8')) as { pid: number }).pid;
    } catch {
      continue; // not marked: not ours to judge
    }
    if (owner !== process.pid && !isAlive(owner)) await destroyDir(dir);
  }
}
