import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.ts';
import type { FillCoordinator, FillLease, WaitOutcome } from '../fill/fill-coordinator.ts';

/** A lease lives this long unless renewed: a replica killed mid-fill frees the blob within it. */
const LEASE_MS = 10_000;
const RENEW_MS = 3_000;
const POLL_MS = 100;

const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

/**
 * Cross-replica coalescing: `SET NX PX` takes the lease for (upstream,
 * digest), renewed while the fill runs; the others poll until it is gone,
 * then find the blob in the shared store (or, if the holder died, take the
 * lease and fetch it themselves). Waiting is bounded. If Redis is away,
 * every claim succeeds: replicas then coalesce only within themselves,
 * which costs upstream bytes, never correctness.
 */
export class RedisFillCoordinator implements FillCoordinator {
  readonly shared = true;

  constructor(
    private readonly redis: Redis,
    private readonly logger: Logger,
    private readonly maxWaitMs: number,
  ) {}

  async claim(upstream: string, digest: Digest): Promise<FillLease | undefined> {
    const key = leaseKey(upstream, digest);
    const token = randomUUID();
    try {
      if ((await this.redis.set(key, token, 'PX', LEASE_MS, 'NX')) !== 'OK') return undefined;
    } catch {
      return { release: () => {} }; // degraded: coalescing within this replica only
    }
    const renew = setInterval(() => {
      this.redis.eval(RENEW, 1, key, token, String(LEASE_MS)).catch(() => undefined);
    }, RENEW_MS);
    renew.unref();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        clearInterval(renew);
        this.redis.eval(RELEASE, 1, key, token).catch(() => undefined);
      },
    };
  }

  async waitForRelease(upstream: string, digest: Digest): Promise<WaitOutcome> {
    const key = leaseKey(upstream, digest);
    const deadline = Date.now() + this.maxWaitMs;
    while (Date.now() < deadline) {
      try {
        if ((await this.redis.exists(key)) === 0) return 'released';
      } catch {
        return 'unavailable'; // Redis away: stop waiting, fetch here
      }
      await sleep(POLL_MS);
    }
    this.logger.warn({ upstream, digest, waitedMs: this.maxWaitMs }, 'another replica is still filling this blob; fetching it here too');
    return 'timeout';
  }
}

function leaseKey(upstream: string, digest: Digest): string {
  return `fill:${upstream}\n${digest}`;
}
