// The BlobStore contract, the same suite as the filesystem store's, against
// the S3 store on a real S3 implementation (Ceph RGW): alone (it indexes the
// bucket itself) and with the index shared through a real Redis.
import { randomBytes, randomUUID } from 'node:crypto';
import { access, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { verifyCache } from '../../src/cli/cache-verify.ts';
import { parseConfig } from '../../src/config/load.ts';
import { connectRedis } from '../../src/coordination/redis.ts';
import { digestOf, type Digest } from '../../src/oci/digest.ts';
import { RedisBlobIndex } from '../../src/coordination/redis-blob-index.ts';
import { S3BlobStore, blobObjectKey } from '../../src/store/s3/s3-blob-store.ts';
import { S3Bucket } from '../../src/store/s3/s3-bucket.ts';
import { blobStoreContract, flipped } from '../store/blob-store.contract.ts';
import { startArchway } from '../harness/archway.ts';
import { http } from '../harness/http.ts';
import { startRedis, type RedisHandle } from '../harness/redis.ts';
import { startRegistry } from '../harness/registry.ts';
import { startRgw } from '../harness/rgw.ts';
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
  blobStoreContract(shared ? 's3 with a Redis index' : 's3', async ({ maxSize, onDamaged }) => {
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
      const store = new S3BlobStore({ bucket, tmpDir: tmp, maxSize, logger, shared: redis ? new RedisBlobIndex(redis) : undefined, onDamaged });
      await store.init();
      return store;
    };
    return {
      store: await open(),
      reopen: open,
      damage: async (digest) => bucket.putBuffer(blobObjectKey(digest), flipped((await bucket.getBuffer(blobObjectKey(digest))) as Buffer)),
      stored: async (digest) => (await bucket.size(blobObjectKey(digest))) !== undefined,
      cleanup: () => removeDir(tmp),
    };
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

describe('blobs served from the bucket', () => {
  it('with storage.s3.redirect a cached blob is a 307 to a presigned URL that gives its bytes; a Range is served by archway', async () => {
    const registry = await startRegistry();
    const archway = await startArchway({
      upstreams: { 'docker.io': { url: registry.url } },
      storage: { ...s3.storage(`${randomUUID()}/`), s3: { ...s3.storage().s3, prefix: `${randomUUID()}/`, redirect: true } } as never,
    });
    try {
      const bytes = randomBytes(300_000);
      const digest = await pushBlob(registry, 'team/blob', bytes);
      const first = await http(`${archway.url}/v2/team/blob/blobs/${digest}`);
      assert.equal(first.status, 200, 'a miss streams through archway');
      assert.ok(first.body.equals(bytes));
      // The client has its last byte once the blob is verified; the upload to the bucket finishes just after.
      let second = await request(`${archway.url}/v2/team/blob/blobs/${digest}`);
      for (let i = 0; i < 100 && second.statusCode !== 307; i++) {
        await second.body.dump();
        await new Promise((r) => setTimeout(r, 50));
        second = await request(`${archway.url}/v2/team/blob/blobs/${digest}`);
      }
      await second.body.dump();
      assert.equal(second.statusCode, 307, 'a cached blob is a redirect');
      const location = String(second.headers.location);
      assert.ok(location.startsWith(s3.endpoint), `redirected to the bucket: ${location}`);
      assert.match(location, /X-Amz-Signature=/, 'a presigned URL');
      const fromBucket = await http(location);
      assert.equal(fromBucket.status, 200);
      assert.ok(fromBucket.body.equals(bytes), 'the bucket gives the verified bytes');
      const ranged = await http(`${archway.url}/v2/team/blob/blobs/${digest}`, { headers: { range: 'bytes=10-19' } });
      assert.equal(ranged.status, 206);
      assert.ok(ranged.body.equals(bytes.subarray(10, 20)));
    } finally {
      await archway.stop();
      await registry.stop();
    }
  });
});

describe('damaged objects in the bucket', () => {
  // Changed bytes and ranges are in the contract above; this is what only an object store shows.
  it('an object whose size is not the blob\'s is a miss (fetched again), deleted and counted', async () => {
    const bucket = new S3Bucket(s3Config(`${randomUUID()}/`));
    const tmp = await tempDir('archway-s3-damage-');
    const damaged: Digest[] = [];
    const store = new S3BlobStore({ bucket, tmpDir: tmp, maxSize: 1 << 30, logger, onDamaged: (d) => damaged.push(d) });
    await store.init();
    try {
      const bytes = randomBytes(200_000);
      const digest = digestOf(bytes);
      const path = store.tempPath();
      await writeFile(path, bytes);
      await store.commitFile(path, { digest, size: bytes.length });
      await bucket.putBuffer(blobObjectKey(digest), bytes.subarray(0, 1000));
      // Found at open, before any byte went out.
      assert.equal(await store.open(digest), undefined);
      assert.deepEqual(damaged, [digest]);
      for (let i = 0; i < 100 && (await bucket.size(blobObjectKey(digest))) !== undefined; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(await bucket.size(blobObjectKey(digest)), undefined, 'deleted from the bucket');
      assert.equal(await store.stat(digest), undefined);
    } finally {
      await store.close();
      await removeDir(tmp);
    }
  });
});

describe('what the store relies on from the bucket', () => {
  // S3 lets a GET under way finish after the object is deleted or replaced; S3BlobStore relies on it when another
  // replica evicts a blob being read here, or uploads the same blob again (Redis away). RGW keeps the old data
  // until its garbage collection (rgw_gc_obj_min_wait, 2 h). Big enough that most of it is still in the bucket,
  // not in socket buffers or the gateway's read-ahead (16 MiB), when the object changes.
  it('a read under way ends with the whole blob when the object is uploaded again or deleted meanwhile', async () => {
    const bucket = new S3Bucket(s3Config(`${randomUUID()}/`));
    const tmp = await tempDir('archway-s3-change-');
    const store = new S3BlobStore({ bucket, tmpDir: tmp, maxSize: 1 << 30, logger });
    await store.init();
    try {
      const bytes = randomBytes(40 * 1024 * 1024);
      const digest = digestOf(bytes);
      const commit = async () => {
        const path = store.tempPath();
        await writeFile(path, bytes);
        await store.commitFile(path, { digest, size: bytes.length });
      };
      await commit();
      for (const change of ['uploaded again', 'deleted'] as const) {
        const read = await store.open(digest);
        assert.ok(read, `stored before it is ${change}`);
        const chunks: Buffer[] = [];
        for await (const chunk of read.stream) {
          if (chunks.length === 0) {
            if (change === 'deleted') {
              await bucket.delete(blobObjectKey(digest));
              assert.equal(await bucket.size(blobObjectKey(digest)), undefined, 'the object is gone for new requests');
            } else {
              await commit();
            }
          }
          chunks.push(chunk as Buffer);
        }
        assert.ok(Buffer.concat(chunks).equals(bytes), `the read that was under way when the object was ${change} gave the whole blob`);
      }
    } finally {
      await store.close();
      await removeDir(tmp);
    }
  });
});

describe('eviction across replicas', () => {
  it('is least recently used by any replica: a blob read through one is kept when another evicts', async () => {
    const prefix = `${randomUUID()}/`;
    const redis = await connectRedis(redisServer.url, logger);
    clients.push(redis);
    await redis.flushdb();
    const tmp = await tempDir('archway-s3-evict-');
    const make = async (index: RedisBlobIndex) => {
      const store = new S3BlobStore({ bucket: new S3Bucket(s3Config(prefix)), tmpDir: join(tmp, randomUUID()), maxSize: 250, logger, shared: index });
      await store.init();
      return store;
    };
    const indexA = new RedisBlobIndex(redis);
    const indexB = new RedisBlobIndex(redis);
    try {
      const a = await make(indexA);
      const b = await make(indexB);
      const put = async (store: S3BlobStore, fill: number) => {
        const data = Buffer.alloc(100, fill);
        const path = store.tempPath();
        await writeFile(path, data);
        const digest = digestOf(data);
        await store.commitFile(path, { digest, size: data.length });
        return digest;
      };
      const x = await put(a, 1);
      await new Promise((r) => setTimeout(r, 5));
      const y = await put(a, 2);
      await new Promise((r) => setTimeout(r, 5));
      // Replica B reads x: x is now the most recently used, for everyone once B's touches are flushed.
      const read = await b.open(x);
      for await (const _ of read!.stream) void _;
      await indexB.flushTouches();
      // Replica B commits z: 300 bytes > 250, one blob must go, and it is y.
      const z = await put(b, 3);
      assert.equal(await a.stat(y), undefined, 'y, least recently used by any replica, was evicted');
      assert.ok(await a.stat(x), 'x, read through B, stays');
      assert.ok(await a.stat(z));
      assert.deepEqual(a.usage(), { bytes: 200, count: 2 }, 'both replicas see the shared totals');
    } finally {
      indexA.close();
      indexB.close();
      await removeDir(tmp);
    }
  });
});

/** A blob pushed with the registry API (POST an upload, PUT its bytes). */
async function pushBlob(registry: { url: string }, name: string, bytes: Buffer): Promise<string> {
  const digest = digestOf(bytes);
  const start = await request(`${registry.url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  await start.body.dump();
  const location = new URL(String(start.headers.location), registry.url);
  location.searchParams.set('digest', digest);
  const put = await request(location, { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
  await put.body.dump();
  assert.equal(put.statusCode, 201, 'blob pushed');
  return digest;
}

describe('the S3 harness (Ceph RGW)', () => {
  it('handles in one test file share its cluster, each with a bucket of its own', async () => {
    const other = await startS3();
    const mine = new S3Bucket(s3Config(''));
    const theirs = new S3Bucket({ ...other.storage('').s3, redirect: false } as unknown as ConstructorParameters<typeof S3Bucket>[0]);
    try {
      assert.equal(other.endpoint, s3.endpoint, 'the same cluster');
      assert.notEqual(other.bucket, s3.bucket);
      const key = `isolation/${randomUUID()}`;
      await theirs.putBuffer(key, Buffer.from('theirs'));
      assert.equal(await mine.size(key), undefined, 'an object in one bucket is not in the other');
      assert.equal(await theirs.size(key), 6);
    } finally {
      theirs.close();
      await other.stop();
    }
    assert.equal(await mine.size('isolation/none'), undefined, 'the cluster still answers once the other handle stopped');
    mine.close();
  });

  it('stop() leaves no daemon and no state behind', async () => {
    const cluster = await startRgw();
    assert.equal(cluster.pids.length, 3, 'a monitor, an OSD and the gateway');
    assert.ok((await cluster.rssBytes()) > 0);
    await cluster.stop();
    const alive = (pid: number) => access(`/proc/${pid}`).then(() => true, () => false);
    for (const pid of cluster.pids) assert.equal(await alive(pid), false, `process ${pid} is gone`);
    if (process.env.ARCHWAY_TEST_KEEP_TMP === '1') await access(cluster.dir); // kept on purpose, for a post-mortem
    else await assert.rejects(access(cluster.dir), 'the state directory is removed');
    await assert.rejects(fetch(cluster.endpoint), 'nothing answers on the endpoint');
  });
});
