import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import type { Digest } from '../oci/digest.ts';
import { atomicWrite } from './atomic-write.ts';

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
  /** The disk holds every tag; memory the hot ones. */
  private readonly memory = new LRUCache<string, TagRecord>({ max: 50_000 });
  private readonly dir: string;
  private readonly tmpDir: string;

  constructor(cacheDir: string) {
    this.dir = join(cacheDir, 'tags');
    this.tmpDir = join(cacheDir, 'tmp');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
  }

  async get(upstream: string, repository: string, tag: string): Promise<TagRecord | undefined> {
    const key = tagKey(upstream, repository, tag);
    const inMemory = this.memory.get(key);
    if (inMemory) return inMemory;
    try {
      const saved = JSON.parse(await readFile(this.path(key), 'utf8')) as TagRecord & { key: string };
      if (saved.key !== key) return undefined;
      const record: TagRecord = { digest: saved.digest, mediaType: saved.mediaType, checkedAt: saved.checkedAt };
      this.memory.set(key, record);
      return record;
    } catch {
      return undefined;
    }
  }

  async set(upstream: string, repository: string, tag: string, record: TagRecord): Promise<void> {
    const key = tagKey(upstream, repository, tag);
    this.memory.set(key, record);
    await atomicWrite(this.path(key), JSON.stringify({ key, ...record }), this.tmpDir);
  }

  async delete(upstream: string, repository: string, tag: string): Promise<boolean> {
    const key = tagKey(upstream, repository, tag);
    this.memory.delete(key);
    try {
      await rm(this.path(key));
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

  private path(key: string): string {
    return join(this.dir, createHash('sha256').update(key).digest('hex'));
  }
}

function tagKey(upstream: string, repository: string, tag: string): string {
  return `${upstream}\n${repository}\n${tag}`;
}
