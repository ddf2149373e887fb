// podman pulling through archway, as a registry it is pointed at directly
// (127.0.0.1:PORT/name:tag): the image it stores is the upstream's, by ID,
// digest and layers, for the platform it asked for, and a second pull is served from the cache.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { buildImage, type BuiltImage, type BuiltManifest } from '../harness/images.ts';
import { startPodman, type Podman } from '../harness/podman.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

let work: string;
let registry: RegistryHandle;
let archway: ArchwayHandle;
let podman: Podman;
let image: BuiltImage;

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64', variant: 'v8' };

before(async () => {
  work = await tempDir('archway-podman-test-');
  podman = await startPodman();
  registry = await startRegistry();
  image = await buildImage({ dir: join(work, 'img'), tag: '1', platforms: [amd64, arm64], format: 'oci', layerSizes: [512 * 1024, 64 * 1024], seed: 'podman' });
  await pushLayout(image, { hostPort: registry.hostPort, name: 'library/app' });
  archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } } });
});

after(async () => {
  await podman?.close();
  await archway?.stop();
  await registry?.stop();
  await removeDir(work);
});

const built = (architecture: string): BuiltManifest => image.manifests.find((m) => m.platform.architecture === architecture)!;
const blobGets = async () => (await registry.requests()).filter((q) => q.method === 'GET' && q.path.includes('/blobs/'));

async function assertStored(ref: string, m: BuiltManifest): Promise<void> {
  const stored = await podman.inspect(ref);
  assert.equal(`sha256:${stored.id}`, m.configDigest, 'the image ID is the platform’s config digest');
  assert.deepEqual(stored.layers, m.layers.map((l) => l.diffId), 'every layer, as built');
  assert.equal(stored.architecture, m.platform.architecture);
  assert.ok(stored.repoDigests.some((d) => d.endsWith(`@${image.topDigest}`)), `the index digest is recorded: ${stored.repoDigests.join(', ')}`);
}

describe('podman pull through archway', () => {
  it('pulls linux/amd64 of a multi-platform tag: the upstream’s image, by ID, layers and index digest', async () => {
    const ref = `${archway.hostPort}/library/app:1`;
    await podman.pull(ref, { platform: 'linux/amd64' });
    await assertStored(ref, built('amd64'));
    assert.ok(archway.logs().some((l) => l.msg === 'request' && String(l.url).startsWith('/v2/library/app/manifests/')), 'podman asked archway');
  });

  it('pulls linux/arm64 too; pulled again after removal, nothing comes from the upstream', async () => {
    const ref = `${archway.hostPort}/library/app:1`;
    await podman.pull(ref, { platform: 'linux/arm64' });
    await assertStored(ref, built('arm64'));
    await podman.remove(ref);
    registry.clearRequests();
    await podman.pull(ref, { platform: 'linux/arm64' });
    await assertStored(ref, built('arm64'));
    assert.deepEqual(await blobGets(), [], 'every blob from archway’s cache');
  });
});
