// Open file descriptors of a process, from /proc/<pid>/fd (Linux), to prove
// that faults leak neither files nor sockets: count before, count after.
import { readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FdSnapshot {
  total: number;
  /** Descriptors whose link reads `socket:[inode]`. */
  sockets: number;
  /** Every descriptor's link target (`socket:[123]`, `/tmp/…/cache/tmp/… (deleted)`, `pipe:[…]`, `anon_inode:[eventpoll]`), for messages. */
  targets: string[];
}

export async function fdSnapshot(pid: number): Promise<FdSnapshot> {
  const dir = join('/proc', String(pid), 'fd');
  const targets: string[] = [];
  for (const fd of await readdir(dir)) {
    try {
      targets.push(await readlink(join(dir, fd)));
    } catch {
      // closed between readdir and readlink
    }
  }
  targets.sort();
  return { total: targets.length, sockets: targets.filter((t) => t.startsWith('socket:')).length, targets };
}

/**
 * Waits (up to `timeoutMs`) until the process holds at most `limit` descriptors
 * in total and at most `socketLimit` sockets, and returns the last snapshot
 * either way: the caller asserts. Connections and files close asynchronously,
 * so a single look right after the work would be flaky.
 */
export async function settledFds(pid: number, limit: { total: number; sockets: number }, timeoutMs = 3000): Promise<FdSnapshot> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const snap = await fdSnapshot(pid);
    if ((snap.total <= limit.total && snap.sockets <= limit.sockets) || Date.now() > deadline) return snap;
    await sleep(100);
  }
}

/** What `after` holds that `before` did not (as a multiset of link targets), for a failure message. */
export function fdDiff(before: FdSnapshot, after: FdSnapshot): string[] {
  const counts = new Map<string, number>();
  for (const t of before.targets.map(kind)) counts.set(t, (counts.get(t) ?? 0) + 1);
  const extra: string[] = [];
  for (const t of after.targets) {
    const k = kind(t);
    const n = counts.get(k) ?? 0;
    if (n > 0) counts.set(k, n - 1);
    else extra.push(t);
  }
  return extra;
}

/** Sockets and pipes differ only by inode: compare them by kind. */
function kind(target: string): string {
  return target.replace(/^(socket|pipe|anon_inode):\[\d+\]$/, '$1');
}
