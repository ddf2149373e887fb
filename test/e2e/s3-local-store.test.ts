// Local repositories in the bucket (storage.type s3): the LocalStore contract
// against a real S3 implementation, and two archway replicas sharing one
// bucket: a tag pushed (mounts, then the manifest) through one is pulled
// through the other, and stays after both restart.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { S3Bucket } from '../../src/store/s3/s3-bucket.ts';
import { S3LocalStore } from '../../src/store/s3/s3-local-store.ts';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRedis, type RedisHandle } from '../harness/redis.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { startS3, type S3Handle } from '../harness/s3.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';
import { localStoreContract } from '../store/local-store.contract.ts';

const TOKEN = 'pusher-token-0123456789';
let s3: S3Handle;
let registry: RegistryHandle;
let redis: RedisHandle | undefined;
let work: string;
const replicas: ArchwayHandle[] = [];

before(async () => {
  [s3, registry] = await Promise.all([startS3(), startRegistry()]);
  work = await tempDir('archway-s3-local-');
});

after(async () => {
  for (const r of replicas) await r.stop();
  await registry?.stop();
  await redis?.stop();
  await s3?.stop();
  await removeDir(work);
});

localStoreContract('S3', async () => {
  const config = { ...s3.storage(`${randomUUID()}/`).s3, redirect: false } as unknown as ConstructorParameters<typeof S3Bucket>[0];
  const open = async () => {
    const store = new S3LocalStore(new S3Bucket(config));
    await store.init();
    return store;
  };
  return { store: await open(), reopen: open, cleanup: async () => {} };
});

const auth = { authorization: `Bearer ${TOKEN}` };

/** Mount the image's blobs into team/app from amd64/app, then push its manifest as team/app:1, through `replica`. */
async function pushThrough(replica: ArchwayHandle, image: BuiltImage): Promise<BuiltImage['manifests'][number]> {
  const manifest = image.manifests[0] ?? assert.fail('no manifest');
  for (const digest of [manifest.configDigest, ...manifest.layers.map((l) => l.digest)]) {
    const r = await http(`${replica.url}/v2/team/app/blobs/uploads/?mount=${digest}&from=amd64/app`, { method: 'POST', headers: auth });
    assert.equal(r.status, 201, r.body.toString());
  }
  const put = await http(`${replica.url}/v2/team/app/manifests/1`, { method: 'PUT', headers: { ...auth, 'content-type': manifest.mediaType }, body: manifest.bytes.toString('utf8') });
  assert.equal(put.status, 201, put.body.toString());
  return manifest;
}

describe('local repositories shared by replicas through the bucket', () => {
  it('a tag pushed through one replica is pulled through the other, also after a restart', async () => {
    const image = await buildImage({ dir: join(work, 'img'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], index: false, format: 'oci', layerSizes: [1000], seed: 's3-local' });
    await pushLayout(image, { hostPort: registry.hostPort, name: 'amd64/app', tag: '1' });
    const storage = s3.storage(`${randomUUID()}/`) as never;
    for (let i = 0; i < 2; i++) {
      replicas.push(
        await startArchway({
          upstreams: { 'docker.io': { url: registry.url } },
          storage,
          auth: { tokens: [{ name: 'ci', token: TOKEN }] },
          local: { namespaces: [{ repositories: ['team/**'], push: ['ci'] }] },
        }),
      );
    }
    const [a, b] = replicas as [ArchwayHandle, ArchwayHandle];
    const manifest = await pushThrough(a, image);
    for (const replica of [b, a]) {
      await replica.restart();
      const r = await http(`${replica.url}/v2/team/app/manifests/1`, { headers: { ...auth, accept: ACCEPT.all } });
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(r.headers['docker-content-digest'], manifest.digest);
      const layer = manifest.layers[0] ?? assert.fail('no layer');
      const blob = await http(`${replica.url}/v2/team/app/blobs/${layer.digest}`, { headers: auth });
      assert.equal(blob.status, 200);
      assert.equal(blob.body.length, layer.size);
    }
  });

  it('with Redis, a manifest deleted through one replica is gone from all three at once (cluster events), not after their copies expire', async () => {
    const image = await buildImage({ dir: join(work, 'img3'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], index: false, format: 'oci', layerSizes: [1200], seed: 's3-local-three' });
    await pushLayout(image, { hostPort: registry.hostPort, name: 'amd64/app', tag: '1' });
    redis = await startRedis();
    const storage = s3.storage(`${randomUUID()}/`) as never;
    const three: ArchwayHandle[] = [];
    for (let i = 0; i < 3; i++) {
      three.push(
        await startArchway({
          upstreams: { 'docker.io': { url: registry.url } },
          storage,
          redis: { url: redis.url },
          auth: { tokens: [{ name: 'ci', token: TOKEN }] },
          local: { namespaces: [{ repositories: ['team/**'], push: ['ci'] }] },
        }),
      );
    }
    replicas.push(...three);
    const [a, b, c] = three as [ArchwayHandle, ArchwayHandle, ArchwayHandle];
    const manifest = await pushThrough(a, image);
    const byDigest = (r: ArchwayHandle) => http(`${r.url}/v2/team/app/manifests/${manifest.digest}`, { headers: { ...auth, accept: ACCEPT.all } });
    // Every replica now holds the manifest in memory.
    for (const r of three) assert.equal((await byDigest(r)).status, 200);
    const deleted = await http(`${b.url}/v2/team/app/manifests/${manifest.digest}`, { method: 'DELETE', headers: auth });
    assert.equal(deleted.status, 202, deleted.body.toString());
    for (const [name, r] of [['A', a], ['C', c]] as const) {
      // The event arrives over pub/sub a moment after B's answer: well within a second, not the copies' minute.
      const deadline = Date.now() + 1000;
      let status = 200;
      while ((status = (await byDigest(r)).status) === 200 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(status, 404, `${name} still serves the manifest deleted through B from its memory`);
      const tagged = await http(`${r.url}/v2/team/app/manifests/1`, { headers: { ...auth, accept: ACCEPT.all } });
      assert.equal(tagged.status, 404, `${name}: the tag went with its manifest`);
    }
  });
});
