import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { join } from 'node:path';
import type { BlobStore } from '../store/blob-store.ts';
import { FsBlobStore } from '../store/fs-blob-store.ts';
import { FsManifestStore, type ManifestStore } from '../store/manifest-store.ts';

export interface VerifyReport {
  blobs: { checked: number; bad: number };
  manifests: { checked: number; bad: number };
  removed: string[];
}

/**
 * `archway cache verify`: re-hash every cached blob and manifest; report and
 * remove any whose bytes no longer match their digest (disk damage, a crash on
 * a filesystem that lost data, a hand edit). Opening the store also removes
 * leftover temp files. Best run while archway is stopped. With storage.type
 * s3 it checks the bucket (every object is read once).
 */
export async function verifyCache(config: Readonly<Config>, logger: Logger): Promise<VerifyReport> {
  // maxSize is not enforced here: verifying must not evict.
  // The AWS SDK only when the cache is a bucket (src/store/s3/s3-modules.ts).
  const s3 = config.storage.type === 's3' && config.storage.s3 ? await import('../store/s3/s3-modules.ts') : undefined;
  const bucket = s3 && config.storage.s3 ? new s3.S3Bucket(config.storage.s3) : undefined;
  const blobs: BlobStore = s3 && bucket
    ? new s3.S3BlobStore({ bucket, tmpDir: join(config.cache.dir, 'tmp'), maxSize: Number.MAX_SAFE_INTEGER, logger })
    : new FsBlobStore({ dir: config.cache.dir, maxSize: Number.MAX_SAFE_INTEGER, logger });
  await blobs.init();
  const removed: string[] = [];
  let checked = 0;
  let bad = 0;
  for await (const { digest } of blobs.list()) {
    checked++;
    // The store removes a damaged copy itself (as it does when serving one).
    if ((await blobs.verify(digest)) !== 'damaged') continue;
    bad++;
    removed.push(`blob ${digest}`);
  }
  const onBad = (upstream: string, digest: string) => removed.push(`manifest ${upstream} ${digest}`);
  let m: { checked: number; bad: number };
  if (s3 && bucket) {
    m = await verifyManifests(new s3.S3ManifestStore(bucket), onBad);
    bucket.close();
  } else {
    const manifests = new FsManifestStore(config.cache.dir);
    await manifests.init();
    m = await manifests.verifyAll(onBad);
  }
  return { blobs: { checked, bad }, manifests: m, removed };
}

/** Every stored manifest read back (reading verifies the digest); the unreadable ones removed. */
async function verifyManifests(store: ManifestStore, onBad: (upstream: string, digest: string) => void): Promise<{ checked: number; bad: number }> {
  let checked = 0;
  let bad = 0;
  for await (const { upstream, digest } of store.list()) {
    checked++;
    if (await store.get(upstream, digest)) continue;
    bad++;
    onBad(upstream, digest);
    await store.delete(upstream, digest);
  }
  return { checked, bad };
}
