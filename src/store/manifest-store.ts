import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { LRUCache } from 'lru-cache';
import { atomicWrite } from './atomic-write.ts';
import type { DiskBudget } from './disk-budget.ts';
import { scanRecords } from './scan-records.ts';
import { UseTimes } from './use-times.ts';
import { digestAlgorithm, digestHex, digestOf, parseDigest, type Digest } from '../oci/digest.ts';

export interface StoredManifest {
  digest: Digest;
  mediaType: string;
  bytes: Buffer;
}

/** Manifests by digest, per upstream: what ManifestService needs of storage. */
export interface ManifestStore {
  init(): Promise<void>;
  get(upstream: string, digest: Digest): Promise<StoredManifest | undefined>;
  /** Store bytes whose digest the caller verified. */
  put(upstream: string, manifest: StoredManifest): Promise<void>;
  delete(upstream: string, digest: Digest): Promise<boolean>;
  /** Every stored manifest's upstream and digest (not read or verified). */
  list(): AsyncIterable<{ upstream: string; digest: Digest }>;
  /**
   * Drop what this process holds in memory of manifests others may have
   * changed (a store shared by replicas, after missed purges); the next read
   * goes to the store. Absent where nothing is shared.
   */
  forgetCopies?(): void;
}

/**
 * Manifests by digest, per upstream (a manifest is content, but what an
 * upstream serves is its own: two registries never share answers). Each file
 * is one JSON header line with the media type, then the exact bytes; written
 * to a temp file and renamed, so a reader sees all of it or nothing.
 */
export class FsManifestStore implements ManifestStore {
  private readonly dir: string;
  private readonly tmpDir: string;
  private readonly useTimes: UseTimes;
  /**
   * Hot manifests, verified once when read from disk: a warm tag costs no file
   * read or hash. Each with its file's key in the disk budget, touched on use.
   */
  private readonly hot = new LRUCache<string, { manifest: StoredManifest; record: string }>({
    maxSize: 64 * 1024 * 1024,
    sizeCalculation: (m) => m.manifest.bytes.length + 200,
  });

  /** `budget`: the cache directory's, which manifest files count toward and are evicted by (absent: unbounded, as for `cache verify`). */
  constructor(
    private readonly cacheDir: string,
    private readonly budget?: DiskBudget,
  ) {
    this.dir = join(cacheDir, 'manifests');
    this.tmpDir = join(cacheDir, 'tmp');
    this.useTimes = UseTimes.under(cacheDir);
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
    if (this.budget) {
      this.budget.scanning(scanRecords(this.cacheDir, 'manifests', this.budget));
      // Evicted from disk: gone from memory too, so a reader can tell (and an index archway made is made again).
      this.budget.onRecordEvicted((record) => {
        const [folder, upstream, algorithm, hex] = record.split('/');
        if (folder === 'manifests' && upstream && algorithm && hex) this.hot.delete(`${decodeURIComponent(upstream)}\n${algorithm}:${hex}`);
      });
    }
  }

  async get(upstream: string, digest: Digest): Promise<StoredManifest | undefined> {
    const key = `${upstream}\n${digest}`;
    const hot = this.hot.get(key);
    if (hot) {
      this.used(hot.record);
      return hot.manifest;
    }
    const found = await this.readVerified(upstream, digest);
    if (found) {
      const record = this.record(upstream, digest);
      this.used(record);
      this.hot.set(key, { manifest: found, record });
    }
    return found;
  }

  private async readVerified(upstream: string, digest: Digest): Promise<StoredManifest | undefined> {
    let raw: Buffer;
    try {
      raw = await readFile(this.path(upstream, digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const newline = raw.indexOf(0x0a);
    if (newline < 0) return undefined;
    const { mediaType } = JSON.parse(raw.subarray(0, newline).toString('utf8')) as { mediaType: string };
    const bytes = raw.subarray(newline + 1);
    // Cheap at manifest sizes, and it keeps a damaged file from ever being served.
    if (digestOf(bytes, digestAlgorithm(digest)) !== digest) return undefined;
    return { digest, mediaType, bytes };
  }

  /** Store verified bytes; the caller checked that `digest` is theirs. */
  async put(upstream: string, manifest: StoredManifest): Promise<void> {
    const target = this.path(upstream, manifest.digest);
    await mkdir(join(target, '..'), { recursive: true });
    const record = this.record(upstream, manifest.digest);
    this.hot.set(`${upstream}\n${manifest.digest}`, { manifest, record });
    const bytes = Buffer.concat([Buffer.from(`${JSON.stringify({ mediaType: manifest.mediaType })}\n`), manifest.bytes]);
    await atomicWrite(target, bytes, this.tmpDir);
    await this.budget?.charge(record, bytes.length);
  }

  async delete(upstream: string, digest: Digest): Promise<boolean> {
    this.hot.delete(`${upstream}\n${digest}`);
    this.budget?.forget(this.record(upstream, digest));
    try {
      await rm(this.path(upstream, digest));
      return true;
    } catch {
      return false;
    }
  }

  async *list(): AsyncIterable<{ upstream: string; digest: Digest }> {
    for (const entry of await readdir(this.dir, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const [upstreamDir, algorithm] = relative(this.dir, join(entry.parentPath, entry.name)).split(sep);
      try {
        yield { upstream: decodeURIComponent(upstreamDir ?? ''), digest: parseDigest(`${algorithm}:${entry.name}`) };
      } catch {
        // not a manifest file
      }
    }
  }

  /** Every stored manifest file, with whether its bytes still match its name; bad ones are removed. */
  async verifyAll(onBad: (upstream: string, digest: string) => void): Promise<{ checked: number; bad: number }> {
    let checked = 0;
    let bad = 0;
    for (const entry of await readdir(this.dir, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const file = join(entry.parentPath, entry.name);
      const [upstreamDir, algorithm] = relative(this.dir, file).split(sep);
      const upstream = decodeURIComponent(upstreamDir ?? '');
      checked++;
      let digest: Digest | undefined;
      try {
        digest = parseDigest(`${algorithm}:${entry.name}`);
      } catch {
        digest = undefined;
      }
      if (digest && (await this.readVerified(upstream, digest))) continue;
      bad++;
      onBad(upstream, `${algorithm}:${entry.name}`);
      await rm(file, { force: true });
    }
    return { checked, bad };
  }

  private path(upstream: string, digest: Digest): string {
    return join(this.cacheDir, this.record(upstream, digest));
  }

  /** A use: most recent in the budget, and (now and then) on disk, for the order after a restart. */
  private used(record: string): void {
    if (!this.budget) return;
    this.budget.touch(record);
    this.useTimes.used(record);
  }

  /** The file's path under the cache directory: its key in the disk budget. */
  private record(upstream: string, digest: Digest): string {
    return `manifests/${encodeURIComponent(upstream)}/${digestAlgorithm(digest)}/${digestHex(digest)}`;
  }
}
