// Tiers: an archway whose upstream is another archway (an edge per rack or
// region in front of a central one in front of the registries). The edge
// sends ?ns= (upstreams.<key>.sendNamespace) so the central tier routes each
// registry's names; indexes pass through the central tier untouched, and the
// edge makes platform answers where its own rules say so. An image pulled
// through one edge reaches a second edge from the central cache alone.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startDockerd, type DockerdHandle } from '../harness/dockerd.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { ALL_PLATFORMS, MARKER_PATH, buildImage, type BuiltImage } from '../harness/images.ts';
import { DOCKER, OCI } from '../harness/media-types.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

let work: string;
/** Two registries holding different images under the same name. */
let hub: RegistryHandle;
let other: RegistryHandle;
let central: ArchwayHandle;
let edgeA: ArchwayHandle;
let edgeB: ArchwayHandle;
let dockerd: DockerdHandle | undefined;
let hubImage: BuiltImage;
let otherImage: BuiltImage;

const blobRequests = async (r: RegistryHandle) => (await r.requests()).filter((q) => q.path.includes('/blobs/')).length;

before(async () => {
  work = await tempDir('archway-tiers-');
  [hub, other] = await Promise.all([startRegistry(), startRegistry()]);
  hubImage = await buildImage({ dir: join(work, 'hub'), tag: '1', platforms: ALL_PLATFORMS.slice(0, 3), format: 'oci', layerSizes: [4000, 2000], seed: 'tiers-hub' });
  otherImage = await buildImage({ dir: join(work, 'other'), tag: '1', platforms: ALL_PLATFORMS.slice(0, 1), format: 'docker', index: false, layerSizes: [3000], seed: 'tiers-other' });
  await pushLayout(hubImage, { hostPort: hub.hostPort, name: 'team/app' });
  await pushLayout(otherImage, { hostPort: other.hostPort, name: 'team/app' });
  central = await startArchway({
    upstreams: { 'docker.io': { url: hub.url }, 'registry.example:5000': { url: other.url } },
    defaultUpstream: 'docker.io',
  });
  const edge = () =>
    startArchway({
      upstreams: {
        'docker.io': { url: central.url, sendNamespace: true },
        'registry.example:5000': { url: central.url, sendNamespace: true },
      },
      defaultUpstream: 'docker.io',
    });
  edgeA = await edge();
  edgeB = await edge();
  await Promise.all([hub.clearRequests(), other.clearRequests()]);
});

after(async () => {
  await dockerd?.stop();
  for (const a of [edgeA, edgeB, central]) await a?.stop();
  await Promise.all([hub?.stop(), other?.stop()]);
  if (work) await removeDir(work);
});

describe('archway in front of archway', () => {
  it('routes each registry through the central tier by ns, the index passing through untouched', async () => {
    const top = await http(`${edgeA.url}/v2/team/app/manifests/1?ns=docker.io`, { headers: { accept: ACCEPT.all } });
    assert.equal(top.status, 200);
    assert.equal(top.headers['content-type'], OCI.index);
    assert.equal(sha256(top.body), hubImage.topDigest, 'the upstream index byte for byte, through both tiers');
    const prefixed = await http(`${edgeA.url}/v2/registry.example:5000/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(prefixed.status, 200);
    assert.equal(prefixed.headers['content-type'], DOCKER.manifest);
    assert.equal(sha256(prefixed.body), otherImage.topDigest, 'the other registry, same name: its own image');
    // The central tier saw each edge request with ns, not the edge's internal names.
    const centralLog = central.logs().filter((l) => l.msg === 'request').map((l) => String(l.url));
    assert.ok(centralLog.some((u) => u.startsWith('/v2/team/app/manifests/1?ns=docker.io')), centralLog.join('\n'));
    assert.ok(centralLog.some((u) => u.startsWith('/v2/team/app/manifests/1?ns=registry.example%3A5000') || u.startsWith('/v2/team/app/manifests/1?ns=registry.example:5000')), centralLog.join('\n'));
  });

  it('docker pull at the edge works, and a second edge is served by the central cache without touching the registry', async () => {
    dockerd = await startDockerd({ mirror: edgeA.url });
    await dockerd.pull('team/app:1');
    const amd64 = hubImage.manifests.find((m) => m.platform.architecture === 'amd64');
    assert.ok(amd64);
    assert.equal(await dockerd.fileFromImage('team/app:1', MARKER_PATH), hubImage.fileContent(amd64.platform));
    const pulledFromHub = await blobRequests(hub);
    assert.ok(pulledFromHub >= amd64.layers.length, 'the first pull went to the registry');

    await hub.clearRequests();
    await dockerd.stop();
    dockerd = await startDockerd({ mirror: edgeB.url });
    await dockerd.pull('team/app:1');
    assert.equal(await dockerd.fileFromImage('team/app:1', MARKER_PATH), hubImage.fileContent(amd64.platform));
    assert.equal(await blobRequests(hub), 0, 'edge B got every blob from the central tier');
    assert.ok((await edgeB.metric('archway_upstream_bytes_total', { upstream: 'docker.io' })) > 0, 'edge B fetched from its upstream, the central tier');
    assert.ok((await central.metric('archway_cache_lookups_total', { kind: 'blob', outcome: 'hit' })) >= amd64.layers.length, 'central answered from its cache');
  });

  it('the central tier keeps serving both edges when the registry is down', async () => {
    await hub.stop();
    try {
      const edgeC = await startArchway({ upstreams: { 'docker.io': { url: central.url, sendNamespace: true } } });
      try {
        const amd64 = hubImage.manifests.find((m) => m.platform.architecture === 'amd64')!;
        const m = await http(`${edgeC.url}/v2/team/app/manifests/${amd64.digest}`, { headers: { accept: ACCEPT.all } });
        assert.equal(m.status, 200);
        for (const layer of amd64.layers) {
          const b = await http(`${edgeC.url}/v2/team/app/blobs/${layer.digest}`);
          assert.equal(b.status, 200);
          assert.equal(sha256(b.body), layer.digest);
        }
      } finally {
        await edgeC.stop();
      }
    } finally {
      await hub.restart();
    }
  });
});
