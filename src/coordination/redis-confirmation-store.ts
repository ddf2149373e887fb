import type { Redis } from 'ioredis';
import type { Digest } from '../oci/digest.ts';
import { confirmationKey, type ConfirmationStore } from '../store/confirmation-store.ts';
import { growingLru } from '../util/growing-lru.ts';

const PREFIX = 'confirm:';
const RECORD_TTL_SECONDS = 30 * 24 * 3600;

/**
 * Repository confirmations and virtual-image provenance shared by every
 * replica (a virtual image's member manifest is then found by digest on any
 * replica, whichever assembled the index). While Redis is away a lookup
 * rejects: the caller asks the upstream, never serves wrongly. Records expire
 * after 30 days unless written again.
 */
export class RedisConfirmationStore implements ConfirmationStore {
  private readonly known = growingLru<string, true>(100_000);

  constructor(private readonly redis: Redis) {}

  async init(): Promise<void> {}

  async has(upstream: string, repository: string, digest: Digest): Promise<boolean> {
    const key = this.key(upstream, repository, digest);
    if (this.known.has(key)) return true;
    // Redis away: this rejects, and the caller must not read that as "not confirmed, so public".
    if ((await this.redis.exists(PREFIX + key)) === 0) return false;
    this.known.set(key, true);
    return true;
  }

  async add(upstream: string, repository: string, digest: Digest): Promise<void> {
    const key = this.key(upstream, repository, digest);
    this.known.set(key, true);
    // Written through every time (callers add rarely): Redis may have lost it (a restart) or missed it
    // (away when it was first added), and other replicas rely on it. Redis away: known here; another
    // replica will confirm with the upstream itself.
    await this.redis.set(PREFIX + key, '1', 'EX', RECORD_TTL_SECONDS).catch(() => undefined);
  }

  private key(upstream: string, repository: string, digest: Digest): string {
    return confirmationKey(upstream, repository, digest);
  }
}
