// The BlobStore contract, the same suite as the filesystem store's, against
// the S3 store on a real S3-compatible server (s3rver): alone (it indexes the
// bucket itself) and with the index shared through a real Redis.
import { randomUUID } from 'node:crypto';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { verifyCache } from '../../src/cli/cache-verify.ts';
import { parseConfig } from '../../src/config/load.ts';
import { connectRedis } from '../../src/coordination/redis.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { RedisBlobIndex } from '../../src/coordination/redis-blob-index.ts';
import { S3BlobStore } from '../../src/store/s3/s3-blob-store.ts';
import { S3Bucket } from '../../src/store/s3/s3-bucket.ts';
import { blobStoreContract } from '../store/blob-store.contract.ts';
import { startRedis, type RedisHandle } from '../harness/redis.ts';
import { startS3, type S3Handle } from '../harness/s3.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

let s3: S3Handle;
const s3Config = (prefix: string) =>
  ({ ...s3.storage(prefix).s3, redirect: false }) as unknown as ConstructorParameters<typeof S3Bucket>[0];
let redisServer: RedisHandle;
const logger = pino({ level: 'silent' });
const clients: Redis[] = [];

before(async () => {
  [s3, redisServer] = await Promise.all([startS3(), startRedis()]);
});
after(async () => {
  for (const c of clients) c.disconnect();
  await Promise.all([s3?.stop(), redisServer?.stop()]);
});

for (const shared of [false, true]) {
  blobStoreContract(shared ? 's3 with a Redis index' : 's3', async ({ maxSize }) => {
    // Each test its own prefix in the bucket (and its own Redis database keys, flushed first).
    const prefix = `${randomUUID()}/`;
    const tmp = await tempDir('archway-s3-store-');
    const bucket = new S3Bucket(s3Config(prefix));
    let redis: Redis | undefined;
    if (shared) {
      redis = await connectRedis(redisServer.url, logger);
      clients.push(redis);
      await redis.flushdb();
    }
    const open = async () => {
      const store = new S3BlobStore({ bucket, tmpDir: tmp, maxSize, logger, shared: redis ? new RedisBlobIndex(redis) : undefined });
      await store.init();
      return store;
    };
    return { store: await open(), reopen: open, cleanup: () => removeDir(tmp) };
  });
}

describe('archway cache verify on a bucket', () => {
  it('re-hashes every object and removes the ones whose bytes do not match their digest', async () => {
    const prefix = `${randomUUID()}/`;
    const scratch = await tempDir('archway-s3-verify-');
    const bucket = new S3Bucket(s3Config(prefix));
    try {
      const good = Buffer.from('a good blob');
      const goodDigest = digestOf(good);
      const badDigest = digestOf(Buffer.from('what the name promises'));
      await bucket.putBuffer(`blobs/sha256/${goodDigest.slice(7)}`, good);
      await bucket.putBuffer(`blobs/sha256/${badDigest.slice(7)}`, Buffer.from('something else'));
      const manifest = Buffer.from('{"schemaVersion":2}');
      const manifestDigest = digestOf(manifest);
      await bucket.putBuffer(`manifests/docker.io/sha256/${manifestDigest.slice(7)}`, Buffer.concat([Buffer.from('{"mediaType":"x"}\n'), Buffer.from('{"schemaVersion":3}')]));
      const config = parseConfig({
        upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
        defaultUpstream: 'docker.io',
        cache: { dir: scratch },
        storage: s3.storage(prefix),
      });
      const report = await verifyCache(config, logger);
      assert.deepEqual(report.blobs, { checked: 2, bad: 1 });
      assert.deepEqual(report.manifests, { checked: 1, bad: 1 });
      assert.deepEqual(report.removed.sort(), [`blob ${badDigest}`, `manifest docker.io ${manifestDigest}`].sort());
      assert.equal(await bucket.size(`blobs/sha256/${badDigest.slice(7)}`), undefined, 'the damaged object is gone');
      assert.equal(await bucket.size(`blobs/sha256/${goodDigest.slice(7)}`), good.length, 'the good one stays');
    } finally {
      bucket.close();
      await removeDir(scratch);
    }
  });
});
