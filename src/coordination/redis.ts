import { Redis } from 'ioredis';
import type { Logger } from 'pino';

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
 * resumes when Redis is back.
 */
export async function connectRedis(
  url: string,
  logger: Logger,
  namespace = '',
  readyWithinMs = 3000,
  /** Told each change between reachable and unreachable (the metric operators alert on). */
  onReachable: (reachable: boolean) => void = () => {},
): Promise<Redis> {
  const redis = new Redis(url, {
    keyPrefix: keyPrefix(namespace),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    commandTimeout: 1000,
    retryStrategy: (times) => Math.min(200 * times, 2000),
  });
  let down = false;
  redis.on('error', (err: Error) => {
    if (down) return;
    down = true;
    onReachable(false);
    logger.warn({ err: err.message }, 'redis unreachable; coordinating within this replica only until it is back');
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
