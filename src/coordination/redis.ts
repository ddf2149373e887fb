import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';

/** Where Redis is: one server by URL, or a primary found (and followed through failovers) by asking Sentinel. */
export type RedisTarget =
  | string
  | {
      /** host:port of each sentinel. */
      sentinels: readonly string[];
      /** The master group name the sentinels monitor. */
      name: string;
      password?: string | undefined;
      sentinelPassword?: string | undefined;
    };

/** The target as the config's `redis` section gives it (the schema makes sure exactly one form is there). */
export function redisTarget(section: { url?: string | undefined; sentinels?: readonly string[] | undefined; name?: string | undefined; password?: string | undefined; sentinelPassword?: string | undefined }): RedisTarget {
  if (section.url !== undefined) return section.url;
  return { sentinels: section.sentinels ?? [], name: section.name ?? '', password: section.password, sentinelPassword: section.sentinelPassword };
}

/**
 * Every key archway writes starts with `archway:<namespace>:` (the bucket and
 * prefix of the cache), so a shared Redis can hold other things, and other
 * archway deployments, too.
 */
export function keyPrefix(namespace: string): string {
  return namespace ? `archway:${namespace}:` : 'archway:';
}

/**
 * The Redis connection replicas coordinate through (ioredis). Commands fail
 * fast while Redis is away (no offline queue, one retry, a short command
 * timeout) so callers fall back to per-replica behaviour at once instead of
 * waiting; the client keeps reconnecting in the background, and coordination
 * resumes when Redis is back. Through Sentinel, each reconnection asks the
 * sentinels for the current primary, so a promoted replica is followed
 * without a restart (ioredis's SentinelConnector; nothing hand-written).
 */
export async function connectRedis(
  target: RedisTarget,
  logger: Logger,
  namespace = '',
  readyWithinMs = 3000,
  /** Told each change between reachable and unreachable (the metric operators alert on). */
  onReachable: (reachable: boolean) => void = () => {},
): Promise<Redis> {
  const redis = createClient(target, { keyPrefix: keyPrefix(namespace) });
  let down = false;
  redis.on('error', (err: Error) => {
    if (down) return;
    down = true;
    onReachable(false);
    logger.warn({ err: err.message }, 'redis unreachable; coordinating within this replica only until it is back');
  });
  // A lost connection (a primary killed or demoted) is degraded from that moment, not from the first failed reconnection.
  redis.on('reconnecting', () => {
    if (down) return;
    down = true;
    onReachable(false);
    logger.warn('redis unreachable (connection lost); coordinating within this replica only until it is back');
  });
  redis.on('ready', () => {
    if (down) logger.info('redis is back; coordinating across replicas again');
    down = false;
    onReachable(true);
  });
  // Start coordinated if Redis is there; if not, start anyway (degraded) and join when it comes.
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, readyWithinMs);
    redis.once('ready', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return redis;
}

/**
 * Reconnection attempts at most half a second apart: a promoted replica (or a
 * restarted server) is joined within 0.5 s of being there, at the cost of two
 * refused connections a second while Redis is away (with 2 s steps, replicas
 * joined the new primary 0.7–0.8 s after its promotion; measured in
 * test/e2e/failover.test.ts).
 */
function reconnectDelay(times: number): number {
  return Math.min(100 * times, 500);
}

/** A client for a target with archway's options: fail fast, reconnect forever, and with Sentinel follow the primary. */
export function createClient(target: RedisTarget, extra: RedisOptions = {}): Redis {
  const options: RedisOptions = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    commandTimeout: 1000,
    retryStrategy: reconnectDelay,
    // A primary demoted in place (a manual failover, a partition healed) answers writes with READONLY: reconnect, to the new one.
    reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
    ...extra,
  };
  if (typeof target === 'string') return new Redis(target, options);
  return new Redis({
    ...options,
    sentinels: target.sentinels.map((s) => {
      const colon = s.lastIndexOf(':');
      return { host: s.slice(0, colon), port: Number(s.slice(colon + 1)) };
    }),
    name: target.name,
    ...(target.password !== undefined ? { password: target.password } : {}),
    ...(target.sentinelPassword !== undefined ? { sentinelPassword: target.sentinelPassword } : {}),
    // No failoverDetector: its connections to the sentinels report errors nowhere (ioredis prints them on stderr);
    // a primary demoted in place is left on its first READONLY answer instead (reconnectOnError above).
    // No sentinel answering: keep asking, at the pace of reconnections.
    sentinelRetryStrategy: reconnectDelay,
  });
}
