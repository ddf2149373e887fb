import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from './config/schema.ts';
import { connectRedis } from './coordination/redis.ts';
import { RedisBlobIndex } from './coordination/redis-blob-index.ts';
import { RedisConfirmationStore } from './coordination/redis-confirmation-store.ts';
import { RedisFillCoordinator } from './coordination/redis-fill-coordinator.ts';
import { RedisTagStore } from './coordination/redis-tag-store.ts';
import type { BlobStore } from './store/blob-store.ts';
import { FsConfirmationStore, type ConfirmationStore } from './store/confirmation-store.ts';
import { LocalFillCoordinator, type FillCoordinator } from './fill/fill-coordinator.ts';
import { FsBlobStore } from './store/fs-blob-store.ts';
import { FsManifestStore, type ManifestStore } from './store/manifest-store.ts';
import { S3BlobStore } from './store/s3/s3-blob-store.ts';
import { S3Bucket } from './store/s3/s3-bucket.ts';
import { S3ManifestStore } from './store/s3/s3-manifest-store.ts';
import { FsTagStore, type TagStore } from './store/tag-store.ts';

/** How long a presigned blob URL (storage.s3.redirect) stays valid. */
const PRESIGNED_URL_SECONDS = 300;

export interface Stores {
  blobs: BlobStore;
  manifests: ManifestStore;
  tags: TagStore;
  confirmations: ConfirmationStore;
  /** Who downloads a blob when several replicas want it. */
  coordinator: FillCoordinator;
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
  // Keys per cache: two deployments sharing a Redis database must not share an index or leases.
  const namespace = config.storage.type === 's3' && config.storage.s3 ? `${config.storage.s3.bucket}/${config.storage.s3.prefix}` : 'filesystem';
  const redis = config.redis ? await connectRedis(config.redis.url, logger, namespace, undefined, onRedisReachable) : undefined;
  const bucket = config.storage.type === 's3' && config.storage.s3 ? new S3Bucket(config.storage.s3) : undefined;
  const blobs: BlobStore = bucket
    ? new S3BlobStore({
        bucket,
        tmpDir: join(config.cache.dir, 'tmp'),
        maxSize: config.cache.maxSize,
        logger,
        shared: redis ? new RedisBlobIndex(redis) : undefined,
        redirectSeconds: config.storage.s3?.redirect ? PRESIGNED_URL_SECONDS : undefined,
        onEvict,
        onDamaged,
      })
    : new FsBlobStore({ dir: config.cache.dir, maxSize: config.cache.maxSize, logger, onEvict, onDamaged });
  // On one disk, manifests, tags and confirmations count toward cache.maxSize beside the blobs, in one LRU.
  const budget = blobs instanceof FsBlobStore ? blobs.budget : undefined;
  const stores: Stores = {
    blobs,
    manifests: bucket ? new S3ManifestStore(bucket) : new FsManifestStore(config.cache.dir, budget),
    tags: redis ? new RedisTagStore(redis) : new FsTagStore(config.cache.dir, budget),
    confirmations: redis ? new RedisConfirmationStore(redis) : new FsConfirmationStore(config.cache.dir, budget),
    // Leases only help when the blobs are shared: with a disk per replica, waiting for another's download gains nothing.
    coordinator: redis && config.redis && bucket ? new RedisFillCoordinator(redis, logger, config.redis.fillWait) : new LocalFillCoordinator(),
    close: async () => {
      await blobs.close?.();
      await redis?.quit().catch(() => redis.disconnect());
      bucket?.close();
    },
  };
  // The blob store first: it clears the shared temp directory of leftovers.
  await stores.blobs.init();
  await stores.manifests.init();
  await stores.tags.init();
  await stores.confirmations.init();
  return stores;
}
