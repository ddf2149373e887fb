import type { Redis } from 'ioredis';
import { tagKey, type TagEntry, type TagRecord, type TagStore } from '../store/tag-store.ts';
import { growingLru } from '../util/growing-lru.ts';

/** Tag records are kept this long after their last confirmation (they serve stale answers meanwhile). */
const RECORD_TTL_SECONDS = 30 * 24 * 3600;
const PREFIX = 'tag:';

/**
 * Tag → digest records shared by every replica: a tag refreshed through one
 * replica is fresh for all, and the TTL logic (ManifestService) reads the
 * same `checkedAt` everywhere. While Redis is away, a replica falls back to
 * what it last saw itself (a small in-memory copy): tags get revalidated
 * more often, never answered wrongly.
 */
export class RedisTagStore implements TagStore {
  private readonly memory = growingLru<string, TagRecord>(50_000);

  constructor(private readonly redis: Redis) {}

  async init(): Promise<void> {}

  async get(upstream: string, repository: string, tag: string): Promise<TagRecord | undefined> {
    const key = tagKey(upstream, repository, tag);
    try {
      const raw = await this.redis.get(PREFIX + key);
      if (raw === null) return undefined;
      const record = JSON.parse(raw) as TagRecord;
      this.memory.set(key, record);
      return record;
    } catch {
      return this.memory.get(key);
    }
  }

  async set(upstream: string, repository: string, tag: string, record: TagRecord): Promise<void> {
    const key = tagKey(upstream, repository, tag);
    this.memory.set(key, record);
    // Redis away: this replica remembers it; the others ask the upstream (a HEAD) themselves.
    await this.redis.set(PREFIX + key, JSON.stringify(record), 'EX', RECORD_TTL_SECONDS).catch(() => undefined);
  }

  async delete(upstream: string, repository: string, tag: string): Promise<boolean> {
    const key = tagKey(upstream, repository, tag);
    this.memory.delete(key);
    return (await this.redis.del(PREFIX + key)) > 0;
  }

  async *list(): AsyncIterable<TagEntry> {
    let cursor = '0';
    do {
      // SCAN matches the full key; the client adds its key prefix to commands but not to patterns.
      const prefix = String(this.redis.options.keyPrefix ?? '');
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${prefix}${PREFIX}*`, 'COUNT', 500);
      cursor = next;
      for (const full of keys) {
        const key = full.slice(prefix.length + PREFIX.length);
        const [upstream, repository, tag] = key.split('\n');
        if (upstream === undefined || repository === undefined || tag === undefined) continue;
        const raw = await this.redis.get(PREFIX + key);
        if (raw !== null) yield { upstream, repository, tag, record: JSON.parse(raw) as TagRecord };
      }
    } while (cursor !== '0');
  }
}

