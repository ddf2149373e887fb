import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../oci/digest.ts';
import { atomicWrite } from './atomic-write.ts';
import type { DiskBudget } from './disk-budget.ts';
import { scanRecords } from './scan-records.ts';
import { UseTimes } from './use-times.ts';
import { growingLru } from '../util/growing-lru.ts';

export interface TagRecord {
  digest: Digest;
  mediaType: string;
  /** When the upstream last confirmed this digest (ms since epoch). */
  checkedAt: number;
}

/** Tag → digest records, per upstream and repository. */
export interface TagStore {
  init(): Promise<void>;
  get(upstream: string, repository: string, tag: string): Promise<TagRecord | undefined>;
  set(upstream: string, repository: string, tag: string, record: TagRecord): Promise<void>;
  delete(upstream: string, repository: string, tag: string): Promise<boolean>;
  /** Every record on disk (for the admin API's inventory and purge). */
  list(): AsyncIterable<TagEntry>;
}

export interface TagEntry {
  upstream: string;
  repository: string;
  tag: string;
  record: TagRecord;
}

/**
 * Tag → digest, per upstream and repository, kept in memory and on disk so a
 * restarted archway still knows its tags (and can serve them stale). Files are
 * named by a hash of the key; the key is inside the file.
 */
export class FsTagStore implements TagStore {
  /** The disk holds every tag; memory the hot ones, each with its file's key in the disk budget. */
  private readonly memory = growingLru<string, { record: TagRecord; file: string }>(50_000);
  private readonly dir: string;
  private readonly tmpDir: string;
  private readonly useTimes: UseTimes;

  /** `budget`: the cache directory's, which tag files count toward and are evicted by. */
  constructor(
    private readonly cacheDir: string,
    private readonly budget?: DiskBudget,
  ) {
    this.dir = join(cacheDir, 'tags');
    this.tmpDir = join(cacheDir, 'tmp');
    this.useTimes = UseTimes.under(cacheDir);
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
    if (this.budget) this.budget.scanning(scanRecords(this.cacheDir, 'tags', this.budget));
  }

  async get(upstream: string, repository: string, tag: string): Promise<TagRecord | undefined> {
    const key = tagKey(upstream, repository, tag);
    const inMemory = this.memory.get(key);
    if (inMemory) {
      // A tag that is used stays on disk (for stale serving after a restart) however long it stays hot.
      this.used(inMemory.file);
      return inMemory.record;
    }
    const file = this.file(key);
    try {
      const saved = JSON.parse(await readFile(join(this.cacheDir, file), 'utf8')) as TagRecord & { key: string };
      if (saved.key !== key) return undefined;
      const record: TagRecord = { digest: saved.digest, mediaType: saved.mediaType, checkedAt: saved.checkedAt };
      this.memory.set(key, { record, file });
      this.used(file);
      return record;
    } catch {
      return undefined;
    }
  }

  async set(upstream: string, repository: string, tag: string, record: TagRecord): Promise<void> {
    const key = tagKey(upstream, repository, tag);
    const file = this.file(key);
    this.memory.set(key, { record, file });
    const text = JSON.stringify({ key, ...record });
    await atomicWrite(join(this.cacheDir, file), text, this.tmpDir);
    await this.budget?.charge(file, Buffer.byteLength(text));
  }

  async delete(upstream: string, repository: string, tag: string): Promise<boolean> {
    const key = tagKey(upstream, repository, tag);
    this.memory.delete(key);
    const file = this.file(key);
    this.budget?.forget(file);
    try {
      await rm(join(this.cacheDir, file));
      return true;
    } catch {
      return false;
    }
  }

  async *list(): AsyncIterable<TagEntry> {
    for (const name of await readdir(this.dir)) {
      let saved: TagRecord & { key: string };
      try {
        saved = JSON.parse(await readFile(join(this.dir, name), 'utf8')) as TagRecord & { key: string };
      } catch {
        continue; // removed meanwhile, or not ours
      }
      const [upstream, repository, tag] = saved.key.split('\n');
      if (upstream === undefined || repository === undefined || tag === undefined) continue;
      yield { upstream, repository, tag, record: { digest: saved.digest, mediaType: saved.mediaType, checkedAt: saved.checkedAt } };
    }
  }

  private used(file: string): void {
    if (!this.budget) return;
    this.budget.touch(file);
    this.useTimes.used(file);
  }

  /** The file's path under the cache directory: its key in the disk budget. */
  private file(key: string): string {
    return `tags/${createHash('sha256').update(key).digest('hex')}`;
  }
}

/** The key of a tag record, in every tag store. */
export function tagKey(upstream: string, repository: string, tag: string): string {
  return `${upstream}\n${repository}\n${tag}`;
}
