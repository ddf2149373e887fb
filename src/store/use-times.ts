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

  /** `pathOf(key)`: the file of a key, asked only when its time is written. */
  constructor(private readonly pathOf: (key: string) => string) {}

  /** Files named by their path under a cache directory (manifests, tags, confirmations). */
  static under(cacheDir: string): UseTimes {
    return new UseTimes((record) => join(cacheDir, record));
  }

  used(key: string): void {
    const now = Date.now();
    if ((this.last.get(key) ?? 0) + INTERVAL_MS > now) return;
    this.last.set(key, now);
    const t = new Date(now);
    utimes(this.pathOf(key), t, t).catch(() => undefined);
  }
}
