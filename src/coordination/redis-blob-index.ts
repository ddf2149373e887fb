import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Digest } from '../oci/digest.ts';
import type { SharedBlobIndex } from '../store/shared-blob-index.ts';

const SIZES = 'blob:size';
const ACCESS = 'blob:atime';
const BYTES = 'blob:bytes';
const EVICT_LOCK = 'blob:evict-lock';
const REBUILD_LOCK = 'blob:rebuild-lock';
/** Present once the index holds every object of the bucket (see S3BlobStore.ensureSharedIndex). */
const BUILT = 'blob:index-built';
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;
/** Access times reach Redis at most this often per replica: a hit costs no round trip. */
const TOUCH_FLUSH_MS = 5_000;

// Added once: the size is recorded and the total grows only for a new digest.
// ARGV[4] 'NX': a rebuild must not move an access time the index already has.
const ADD = `
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('INCRBY', KEYS[3], ARGV[2]) end
if ARGV[4] == 'NX' then redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[1]) else redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1`;
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
const REMOVE = `
local size = redis.call('HGET', KEYS[1], ARGV[1])
if size then redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('DECRBY', KEYS[3], size) end
redis.call('ZREM', KEYS[2], ARGV[1])
return size`;

/**
 * The blob index every replica shares: size per digest, last access (a sorted
 * set, for LRU eviction across replicas; accesses are batched), and the total.
 * The bucket stays the truth: a digest Redis does not know is looked up there.
 */
export class RedisBlobIndex implements SharedBlobIndex {
  private readonly touched = new Set<Digest>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly redis: Redis) {
    this.timer = setInterval(() => void this.flushTouches(), TOUCH_FLUSH_MS);
    this.timer.unref();
  }

  async size(digest: Digest): Promise<number | undefined> {
    const size = await this.redis.hget(SIZES, digest);
    return size === null ? undefined : Number(size);
  }

  /** `accessedAt`: for a rebuild, the object's modification time, so the LRU order survives. */
  async add(digest: Digest, size: number, accessedAt?: number): Promise<void> {
    await this.redis.eval(ADD, 3, SIZES, ACCESS, BYTES, digest, String(size), String(accessedAt ?? Date.now()), accessedAt === undefined ? '' : 'NX');
  }

  async needsRebuild(): Promise<boolean> {
    return (await this.redis.exists(BUILT)) === 0;
  }

  async markBuilt(): Promise<void> {
    await this.redis.set(BUILT, '1');
  }

  async lockRebuild(ms: number): Promise<string | undefined> {
    return this.lock(REBUILD_LOCK, ms);
  }

  async unlockRebuild(token: string): Promise<void> {
    await this.redis.eval(UNLOCK, 1, REBUILD_LOCK, token);
  }

  touch(digest: Digest): void {
    this.touched.add(digest);
  }

  async remove(digest: Digest): Promise<void> {
    await this.redis.eval(REMOVE, 3, SIZES, ACCESS, BYTES, digest);
  }

  async usage(): Promise<{ bytes: number; count: number }> {
    const [bytes, count] = await Promise.all([this.redis.get(BYTES), this.redis.hlen(SIZES)]);
    return { bytes: Number(bytes ?? 0), count };
  }

  /** The least recently used digests, oldest first. */
  async oldest(n: number): Promise<Digest[]> {
    return (await this.redis.zrange(ACCESS, '0', String(n - 1))) as Digest[];
  }

  /** One replica evicts at a time; the lock expires by itself if that replica dies. Returns the token, or undefined. */
  async lockEviction(ms: number): Promise<string | undefined> {
    return this.lock(EVICT_LOCK, ms);
  }

  /** Extend the lock if this token still holds it; false when it was lost (expired and taken). */
  async renewEviction(token: string, ms: number): Promise<boolean> {
    return (await this.redis.eval(RENEW, 1, EVICT_LOCK, token, String(ms))) === 1;
  }

  /** Only the holder's token unlocks: a lock that expired and was taken by another replica stays theirs. */
  async unlockEviction(token: string): Promise<void> {
    await this.redis.eval(UNLOCK, 1, EVICT_LOCK, token);
  }

  private async lock(key: string, ms: number): Promise<string | undefined> {
    const token = randomUUID();
    return (await this.redis.set(key, token, 'PX', ms, 'NX')) === 'OK' ? token : undefined;
  }

  async flushTouches(): Promise<void> {
    if (this.touched.size === 0) return;
    const now = String(Date.now());
    const batch = [...this.touched];
    this.touched.clear();
    // XX: only digests still indexed (an evicted blob must not come back as an entry).
    await this.redis.zadd(ACCESS, 'XX', ...batch.flatMap((d) => [now, d])).catch(() => undefined);
  }

  close(): void {
    clearInterval(this.timer);
  }
}
