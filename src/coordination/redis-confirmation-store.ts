import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import type { Digest } from '../oci/digest.ts';
import type { ConfirmationStore } from '../store/confirmation-store.ts';

const PREFIX = 'confirm:';

/**
 * Repository confirmations and virtual-image provenance shared by every
 * replica (a virtual image's member manifest is then found by digest on any
 * replica, whichever assembled the index). While Redis is away a lookup says
 * "not confirmed": the caller asks the upstream again, never serves wrongly.
 */
export class RedisConfirmationStore implements ConfirmationStore {
  private readonly known = new LRUCache<string, true>({ max: 100_000 });

  constructor(private readonly redis: Redis) {}

  async init(): Promise<void> {}

  async has(upstream: string, repository: string, digest: Digest): Promise<boolean> {
    const key = this.key(upstream, repository, digest);
    if (this.known.has(key)) return true;
    try {
      if ((await this.redis.exists(PREFIX + key)) === 0) return false;
    } catch {
      return false;
    }
    this.known.set(key, true);
    return true;
  }

  async add(upstream: string, repository: string, digest: Digest): Promise<void> {
    const key = this.key(upstream, repository, digest);
    this.known.set(key, true);
    // Written through every time (callers add rarely): Redis may have lost it (a restart) or missed it
    // (away when it was first added), and other replicas rely on it. Redis away: known here; another
    // replica will confirm with the upstream itself.
    await this.redis.set(PREFIX + key, '1').catch(() => undefined);
  }

  private key(upstream: string, repository: string, digest: Digest): string {
    return createHash('sha256').update(`${upstream}\n${repository}\n${digest}`).digest('hex');
  }
}
