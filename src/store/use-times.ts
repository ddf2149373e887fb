import { utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { growingLru } from '../util/growing-lru.ts';

/** A file's time reaches the disk at most this often: a hit stays cheap. */
const INTERVAL_MS = 60_000;

/**
 * Writes when a cached file was last used into its modification time, at
 * most once a minute per file, so the least-recently-used order the disk
 * budget rebuilds at start-up is the order of use, not of writing.
 */
export class UseTimes {
  private readonly last = growingLru<string, number>(100_000);

  constructor(private readonly cacheDir: string) {}

  /** `record`: the file's path under the cache directory. */
  used(record: string): void {
    const now = Date.now();
    if ((this.last.get(record) ?? 0) + INTERVAL_MS > now) return;
    this.last.set(record, now);
    const t = new Date(now);
    utimes(join(this.cacheDir, record), t, t).catch(() => undefined);
  }
}
