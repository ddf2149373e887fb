// The Redis coordination in one module, for `await import()`: callers load it only
// when `redis` is configured, so a single archway never loads ioredis (about 20 MiB
// of memory). Import it statically only as `import type`.
export { connectRedis, keyPrefix, redisTarget } from './redis.ts';
export { RedisBlobIndex } from './redis-blob-index.ts';
export { RedisConfirmationStore } from './redis-confirmation-store.ts';
export { RedisFillCoordinator } from './redis-fill-coordinator.ts';
export { RedisTagStore } from './redis-tag-store.ts';
export { RedisClusterEvents } from './redis-events.ts';
