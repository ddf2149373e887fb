import type { Digest } from '../oci/digest.ts';

/**
 * The blob index replicas sharing one bucket keep together (Redis implements
 * it, src/coordination/): size per digest, last access for LRU eviction
 * across replicas, the total, and the locks that make one replica at a time
 * evict or rebuild. The bucket stays the truth: a digest the index does not
 * know is looked up there.
 */
export interface SharedBlobIndex {
  size(digest: Digest): Promise<number | undefined>;
  /** `accessedAt`: for a rebuild, the object's modification time, so the LRU order survives. */
  add(digest: Digest, size: number, accessedAt?: number): Promise<void>;
  /** The index was lost (or never built) and must be rebuilt from a bucket listing. */
  needsRebuild(): Promise<boolean>;
  markBuilt(): Promise<void>;
  lockRebuild(ms: number): Promise<string | undefined>;
  unlockRebuild(token: string): Promise<void>;
  /** A use (batched: a hit costs no round trip). */
  touch(digest: Digest): void;
  remove(digest: Digest): Promise<void>;
  usage(): Promise<{ bytes: number; count: number }>;
  /** The least recently used digests, oldest first. */
  oldest(n: number): Promise<Digest[]>;
  /** One replica evicts at a time; the lock expires by itself if that replica dies. Returns the token, or undefined. */
  lockEviction(ms: number): Promise<string | undefined>;
  /** Extend the lock if this token still holds it; false when it was lost (expired and taken). */
  renewEviction(token: string, ms: number): Promise<boolean>;
  /** Only the holder's token unlocks. */
  unlockEviction(token: string): Promise<void>;
  /** Send batched accesses now (shutdown). */
  flushTouches(): Promise<void>;
  close(): void;
}
