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
import { buildImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { startS3, type S3Handle } from '../harness/s3.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';
import { localStoreContract } from '../store/local-store.contract.ts';

const TOKEN = 'pusher-token-0123456789';
let s3: S3Handle;
let registry: RegistryHandle;
let work: string;
const replicas: ArchwayHandle[] = [];

before(async () => {
  [s3, registry] = await Promise.all([startS3(), startRegistry()]);
  work = await tempDir('archway-s3-local-');
});

after(async () => {
  for (const r of replicas) await r.stop();
  await registry?.stop();
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
    const auth = { authorization: `Bearer ${TOKEN}` };
    const manifest = image.manifests[0] ?? assert.fail('no manifest');
    for (const digest of [manifest.configDigest, ...manifest.layers.map((l) => l.digest)]) {
      const r = await http(`${a.url}/v2/team/app/blobs/uploads/?mount=${digest}&from=amd64/app`, { method: 'POST', headers: auth });
      assert.equal(r.status, 201, r.body.toString());
    }
    const put = await http(`${a.url}/v2/team/app/manifests/1`, { method: 'PUT', headers: { ...auth, 'content-type': manifest.mediaType }, body: manifest.bytes.toString('utf8') });
    assert.equal(put.status, 201, put.body.toString());
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
});
