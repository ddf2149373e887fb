// Real clients pulling through archway: a docker daemon with registry-mirrors,
// containerd's ctr with a hosts.toml mirror, and skopeo.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ctrImageDigest, ctrPull, ctrRemove } from '../harness/ctr.ts';
import { startDockerd, type DockerdHandle } from '../harness/dockerd.ts';
import { ALL_PLATFORMS, buildImage, type BuiltImage, type Platform } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { copyToDir, inspectRaw, pushLayout, readDirBlob } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const MiB = 1024 * 1024;
const platform = (os: string, architecture: string, variant?: string): Platform => (variant ? { os, architecture, variant } : { os, architecture });

let work: string;
let registry: RegistryHandle;
let archway: ArchwayHandle;
let dockerd: DockerdHandle;
let oci: BuiltImage;
let docker: BuiltImage;

before(async () => {
  work = await tempDir('archway-clients-');
  registry = await startRegistry();
  oci = await buildImage({ dir: join(work, 'oci'), tag: '1', platforms: ALL_PLATFORMS, format: 'oci', layerSizes: [3 * MiB, 256 * 1024], seed: 'clients-oci' });
  docker = await buildImage({
    dir: join(work, 'docker'),
    tag: '2',
    platforms: [platform('linux', 'amd64'), platform('linux', 'arm64', 'v8')],
    format: 'docker',
    layerSizes: [2 * MiB],
    seed: 'clients-docker',
  });
  await pushLayout(oci, { hostPort: registry.hostPort, name: 'library/multiarch' });
  await pushLayout(docker, { hostPort: registry.hostPort, name: 'library/dockerfmt' });
  archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } } });
  dockerd = await startDockerd({ mirror: archway.url });
});

after(async () => {
  await dockerd?.stop();
  await archway?.stop();
  await registry?.stop();
  await removeDir(work);
});

const blobGets = async () => (await registry.requests()).filter((q) => q.method === 'GET' && q.path.includes('/blobs/'));

describe('docker pull through registry-mirrors', () => {
  it('pulls a multi-platform OCI image: digest equal to the upstream’s, layers intact', async () => {
    await dockerd.pull('multiarch:1');
    assert.ok((await dockerd.repoDigests('multiarch:1')).includes(`multiarch@${oci.topDigest}`), 'the repo digest is the upstream index digest');
    assert.equal(await dockerd.fileFromImage('multiarch:1', '/etc/archway-test'), oci.fileContent(platform('linux', 'amd64')));
    assert.ok(archway.logs().some((l) => l.msg === 'request' && String(l.url).startsWith('/v2/library/multiarch/manifests/')), 'the daemon used the mirror');
  });

  it('a second pull of the same image makes no upstream blob request', async () => {
    await dockerd.rmi('multiarch:1');
    registry.clearRequests();
    await dockerd.pull('multiarch:1');
    assert.equal((await blobGets()).length, 0);
    assert.equal(await dockerd.fileFromImage('multiarch:1', '/etc/archway-test'), oci.fileContent(platform('linux', 'amd64')));
  });

  it('pulls another platform with --platform, and Docker media types', async () => {
    await dockerd.pull('multiarch:1', { platform: 'linux/arm64' });
    assert.equal(await dockerd.fileFromImage('multiarch:1', '/etc/archway-test'), oci.fileContent(platform('linux', 'arm64', 'v8')));
    await dockerd.pull('dockerfmt:2');
    assert.ok((await dockerd.repoDigests('dockerfmt:2')).includes(`dockerfmt@${docker.topDigest}`));
    assert.equal(await dockerd.fileFromImage('dockerfmt:2', '/etc/archway-test'), docker.fileContent(platform('linux', 'amd64')));
  });
});

describe('containerd (ctr) through a hosts.toml mirror', () => {
  it('pulls linux/arm/v7 of the index with the upstream’s digest, sending ?ns=docker.io', async () => {
    const opts = { containerdSocket: dockerd.containerdSocket };
    const ref = 'docker.io/library/multiarch:1';
    await ctrPull({ ...opts, mirror: archway.url, ref, platform: 'linux/arm/v7' });
    assert.equal(await ctrImageDigest(opts, ref), oci.topDigest);
    const armV7 = oci.manifests.find((m) => m.platform.architecture === 'arm' && m.platform.variant === 'v7')!;
    const served = archway.logs().filter((l) => l.msg === 'request' && String(l.url).includes('ns=docker.io')).map((l) => String(l.url));
    assert.ok(served.some((u) => u.includes(`/manifests/${armV7.digest}`)), 'containerd fetched the arm/v7 manifest from archway');
    assert.ok(served.some((u) => u.includes(`/blobs/${armV7.layers[0]!.digest}`)), 'and its layer');
    await ctrRemove(opts, ref);
  });
});

describe('skopeo', () => {
  it('inspect --raw answers the index bytes; copy --all fetches every platform intact', async () => {
    const raw = await inspectRaw(`${archway.hostPort}/library/multiarch:1`);
    assert.ok(raw.equals(oci.topBytes));
    const dir = join(work, 'skopeo-copy');
    await copyToDir(`${archway.hostPort}/library/multiarch:1`, dir, { all: true });
    for (const m of oci.manifests) {
      for (const layer of m.layers) {
        const bytes = await readDirBlob(dir, layer.digest);
        assert.equal(sha256(bytes), layer.digest, `${m.platform.architecture} layer`);
      }
    }
  });
});

describe('upstream gone', () => {
  it('a cached image still pulls with docker when the upstream is stopped', async () => {
    await dockerd.rmi('dockerfmt:2');
    await registry.stop();
    await dockerd.pull('dockerfmt:2');
    assert.equal(await dockerd.fileFromImage('dockerfmt:2', '/etc/archway-test'), docker.fileContent(platform('linux', 'amd64')));
  });
});
