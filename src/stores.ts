import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from './config/schema.ts';
import type { BlobStore } from './store/blob-store.ts';
import { LocalClusterEvents, type ClusterEvents } from './store/cluster-events.ts';
import { FsConfirmationStore, type ConfirmationStore } from './store/confirmation-store.ts';
import { LocalFillCoordinator, type FillCoordinator } from './fill/fill-coordinator.ts';
import { FsBlobStore } from './store/fs-blob-store.ts';
import { FsManifestStore, type ManifestStore } from './store/manifest-store.ts';
import { FsTagStore, type TagStore } from './store/tag-store.ts';
import { FsLocalStore, type LocalStore } from './store/local-store.ts';

/** How long a presigned blob URL (storage.s3.redirect) stays valid. */
const PRESIGNED_URL_SECONDS = 300;

export interface Stores {
  blobs: BlobStore;
  manifests: ManifestStore;
  tags: TagStore;
  confirmations: ConfirmationStore;
  /** Local repositories (config `local`): durable, outside the cache budget; in the bucket when there is one. */
  local: LocalStore;
  /** Who downloads a blob when several replicas want it. */
  coordinator: FillCoordinator;
  /** Events every replica hears at once (purges, …): Redis pub/sub, or this process only without Redis. */
  events: ClusterEvents;
  /** After the fills stopped: flush shared state, disconnect. */
  close(): Promise<void>;
}

/**
 * Where the cache lives, from the config: the filesystem under cache.dir (one
 * archway), or an S3 bucket for blobs and manifests and Redis for tags,
 * confirmations, the blob index and fill leases (replicas sharing one cache).
 * Redis without a bucket shares tags and confirmations only.
 */
export async function createStores(
  config: Readonly<Config>,
  logger: Logger,
  onEvict: () => void,
  onDamaged: () => void = () => {},
  onRedisReachable: (reachable: boolean) => void = () => {},
): Promise<Stores> {
  const s3Config = config.storage.type === 's3' ? config.storage.s3 : undefined;
  // Keys per cache: two deployments sharing a Redis database must not share an index or leases.
  const namespace = s3Config ? `${s3Config.bucket}/${s3Config.prefix}` : 'filesystem';
  // The S3 and Redis modules are imported only when the config uses them: a filesystem
  // cache (the shipped config) would carry the AWS SDK and ioredis (about 40 MiB) for
  // nothing. test/unit/lazy-imports.test.ts keeps them out of the static import graph.
  const rd = config.redis ? await import('./coordination/redis-modules.ts') : undefined;
  const redis = rd && config.redis ? await rd.connectRedis(rd.redisTarget(config.redis), logger, namespace, undefined, onRedisReachable) : undefined;
  const s3 = s3Config ? await import('./store/s3/s3-modules.ts') : undefined;
  const bucket = s3 && s3Config ? new s3.S3Bucket(s3Config) : undefined;
  const blobs: BlobStore =
    s3 && bucket
      ? new s3.S3BlobStore({
          bucket,
          tmpDir: join(config.cache.dir, 'tmp'),
          maxSize: config.cache.maxSize,
          logger,
          shared: rd && redis ? new rd.RedisBlobIndex(redis) : undefined,
          redirectSeconds: s3Config?.redirect ? PRESIGNED_URL_SECONDS : undefined,
          onEvict,
          onDamaged,
        })
      : new FsBlobStore({ dir: config.cache.dir, maxSize: config.cache.maxSize, logger, onEvict, onDamaged });
  // On one disk, manifests, tags and confirmations count toward cache.maxSize beside the blobs, in one LRU.
  const budget = blobs instanceof FsBlobStore ? blobs.budget : undefined;
  const stores: Stores = {
    blobs,
    manifests: s3 && bucket ? new s3.S3ManifestStore(bucket) : new FsManifestStore(config.cache.dir, budget),
    tags: rd && redis ? new rd.RedisTagStore(redis) : new FsTagStore(config.cache.dir, budget),
    confirmations: rd && redis ? new rd.RedisConfirmationStore(redis) : new FsConfirmationStore(config.cache.dir, budget),
    // Redis is not durable: with replicas, what was pushed lives in the bucket.
    local: s3 && bucket ? new s3.S3LocalStore(bucket) : new FsLocalStore(config.cache.dir),
    // Leases only help when the blobs are shared: with a disk per replica, waiting for another's download gains nothing.
    coordinator: rd && redis && config.redis && bucket ? new rd.RedisFillCoordinator(redis, logger, config.redis.fillWait) : new LocalFillCoordinator(),
    events:
      rd && redis
        ? new rd.RedisClusterEvents(redis, `${rd.keyPrefix(namespace)}events`, logger)
        : new LocalClusterEvents((err, kind) => logger.error({ err, kind }, 'cluster event handler failed')),
    close: async () => {
      await blobs.close?.();
      await stores.events.close();
      await redis?.quit().catch(() => redis.disconnect());
      bucket?.close();
    },
  };
  // The blob store first: it clears the shared temp directory of leftovers.
  await stores.blobs.init();
  await stores.manifests.init();
  await stores.tags.init();
  await stores.confirmations.init();
  await stores.local.init();
  return stores;
}
