import { isIPv6 } from 'node:net';
import type { LRUCache } from 'lru-cache';
import { RegistryError } from '../errors.ts';
import { growingLru } from '../util/growing-lru.ts';

export interface FailedLoginLimits {
  /** Failed logins an address may make at once before it must wait. */
  burst: number;
  /** Failed logins an address regains per minute. */
  perMinute: number;
}

interface Bucket {
  tokens: number;
  refilledAt: number;
  inFlight: number;
}

/** A password check in progress: `finish(true)` (it succeeded, or never ran) gives its token back. */
export interface LoginAttempt {
  finish(tokenBack: boolean): void;
}

/**
 * Password checks one address may have waiting or running at once. Without
 * it one address's burst fills the whole bounded queue and every other
 * client's login is refused as busy; a client needs one check per credential
 * (parallel requests with the same credential share one).
 */
const MAX_IN_FLIGHT_PER_ADDRESS = 4;

/**
 * Failed password logins per client address, counted before any hashing: a
 * token bucket per address, where every password check takes a token up
 * front (so 32 guesses in flight are 32 tokens, not 0 until they fail) and
 * a success gives it back; at most a few checks per address wait at once. Only failures cost: users behind the same NAT as
 * a guesser who already logged in are never refused (ClientAuth does not ask
 * for credentials it remembers as good), and a new login there waits only
 * until the bucket refills, never forever.
 */
export class FailedLoginLimiter {
  // Addresses that stopped failing are forgotten once their bucket would be full again anyway.
  private readonly buckets: LRUCache<string, Bucket>;

  constructor(
    private readonly limits: FailedLoginLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.buckets = growingLru(100_000, { ttl: Math.ceil((limits.burst / limits.perMinute) * 60_000) + 1000, updateAgeOnGet: true });
  }

  /** Take a token for `address`, or throw 429 TOOMANYREQUESTS with the seconds until one is back. */
  attempt(address: string): LoginAttempt {
    const key = clientKey(address);
    const now = this.now();
    const perMs = this.limits.perMinute / 60_000;
    const bucket = this.buckets.get(key) ?? { tokens: this.limits.burst, refilledAt: now, inFlight: 0 };
    bucket.tokens = Math.min(this.limits.burst, bucket.tokens + (now - bucket.refilledAt) * perMs);
    bucket.refilledAt = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1) {
      const waitS = Math.max(1, Math.ceil((1 - bucket.tokens) / perMs / 1000));
      throw new RegistryError('TOOMANYREQUESTS', 'too many failed logins from this address', { headers: { 'retry-after': String(waitS) } });
    }
    if (bucket.inFlight >= MAX_IN_FLIGHT_PER_ADDRESS) {
      throw new RegistryError('TOOMANYREQUESTS', 'too many logins in progress from this address', { headers: { 'retry-after': '1' } });
    }
    bucket.tokens -= 1;
    bucket.inFlight++;
    let finished = false;
    return {
      finish: (tokenBack) => {
        if (finished) return;
        finished = true;
        bucket.inFlight--;
        if (tokenBack) bucket.tokens = Math.min(this.limits.burst, bucket.tokens + 1);
      },
    };
  }
}

/**
 * The unit one client controls: an IPv4 address (IPv4-mapped IPv6 is the
 * same client), or an IPv6 /64 — one host is usually given a whole /64, and
 * counting single IPv6 addresses would give a guesser 2^64 buckets.
 */
export function clientKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return mapped;
  if (!isIPv6(address)) return address;
  return `${expandIPv6(address).slice(0, 4).join(':')}::/64`;
}

function expandIPv6(address: string): string[] {
  const [head = '', tail] = address.split('%')[0]!.split('::');
  const left = head ? head.split(':') : [];
  const right = tail === undefined ? [] : tail ? tail.split(':') : [];
  const zeros = Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0');
  return [...left, ...(tail === undefined ? [] : zeros), ...right].map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''));
}
