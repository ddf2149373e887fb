// cache.maxSize bounds everything archway keeps on disk, at every instant:
// blobs, the temp files of fills in progress (room is reserved, by evicting,
// before a byte is written), and the manifests and tags beside them, which
// are evicted by the same LRU. archway runs as its own process in front of
// the real registry; the cache directory is sampled all along.
import assert from 'node:assert/strict';
import { access, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { sha256Digest } from '../harness/digest.ts';
import { DirSampler } from '../harness/dir-size.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const MiB = 1024 * 1024;
let work: string;
let registry: RegistryHandle;

/** Runs `body` while sampling the directory's size; returns the largest seen. */
async function largestDuring(dir: string, body: () => Promise<void>): Promise<number> {
  const sampler = new DirSampler(dir);
  try {
    await body();
  } finally {
    await sampler.stop();
  }
  return sampler.max;
}

async function image(name: string, seed: string, layerSizes: number[]): Promise<BuiltImage> {
  const built = await buildImage({ dir: join(work, seed), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes, seed, index: false });
  await pushLayout(built, { hostPort: registry.hostPort, name });
  return built;
}

function blobFile(cacheDir: string, digest: string): string {
  return join(cacheDir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
}

const exists = (path: string) => access(path).then(() => true, () => false);

before(async () => {
  work = await tempDir('archway-disk-budget-');
  registry = await startRegistry();
});

after(async () => {
  await registry?.stop();
  await removeDir(work);
});

describe('one budget for the whole cache directory', () => {
  let archway: ArchwayProcess;
  after(() => archway?.kill());

  it('concurrent cold fills reserve room before they write: the directory never holds more than cache.maxSize', async () => {
    const maxSize = 12 * MiB;
    archway = await startArchwayProcess({ upstreams: { 'docker.io': { url: registry.url } }, defaultUpstream: 'docker.io', cache: { maxSize } });
    const built = await image('team/fanout', 'budget-fanout', [5 * MiB, 5 * MiB, 5 * MiB, 5 * MiB]);
    const layers = built.manifests[0]!.layers;
    const bodies: Buffer[] = [];
    let relaysBefore = 0;
    const max = await largestDuring(archway.cacheDir, async () => {
      // Four 5 MiB fills at once into a 12 MiB cache: two fit, the others make room or relay.
      bodies.push(...(await Promise.all(layers.map(async (l) => (await http(`${archway.url}/v2/team/fanout/blobs/${l.digest}`)).body))));
      // And again one by one: each evicts the least recently used to make room first.
      relaysBefore = await scrapeMetric(archway.url, 'archway_blob_uncached_relays_total');
      for (const l of layers) bodies.push((await http(`${archway.url}/v2/team/fanout/blobs/${l.digest}`)).body);
    });
    // One at a time, every fill found room by evicting: none gave up caching and relayed.
    assert.equal(await scrapeMetric(archway.url, 'archway_blob_uncached_relays_total'), relaysBefore, 'no fill one by one was relayed uncached');
    for (const [i, body] of bodies.entries()) assert.equal(sha256Digest(body), layers[i % layers.length]!.digest, 'every client got the right bytes');
    assert.ok(max <= maxSize, `the cache directory held ${max} bytes at its largest (cache.maxSize ${maxSize})`);
    // Room was made by eviction, not by giving up caching: the last ones pulled are cached.
    assert.ok(await exists(blobFile(archway.cacheDir, layers[3]!.digest)));
    process.stdout.write(`4 concurrent 5 MiB fills into a 12 MiB cache: at most ${(max / MiB).toFixed(2)} MiB on disk\n`);
    await archway.kill();
  });

  it('manifests and tags count toward cache.maxSize and are evicted by the same LRU as blobs', async () => {
    const built = await image('team/records', 'budget-records', [4 * MiB]);
    const m = built.manifests[0]!;
    const layer = m.layers[0]!;
    // Room for the blobs and a handful of small records (charged a 4 KiB block each), not for 40 tags.
    const maxSize = layer.size + 64 * 1024;
    archway = await startArchwayProcess({ upstreams: { 'docker.io': { url: registry.url } }, defaultUpstream: 'docker.io', cache: { maxSize } });
    // The same manifest under 40 more tags, straight into the registry.
    for (let i = 0; i < 40; i++) {
      const res = await request(`${registry.url}/v2/team/records/manifests/t${i}`, { method: 'PUT', headers: { 'content-type': m.mediaType }, body: m.bytes });
      await res.body.dump();
      assert.equal(res.statusCode, 201);
    }
    const max = await largestDuring(archway.cacheDir, async () => {
      assert.equal((await http(`${archway.url}/v2/team/records/blobs/${layer.digest}`)).status, 200);
      assert.ok(await exists(blobFile(archway.cacheDir, layer.digest)), 'the layer is cached');
      for (let i = 0; i < 40; i++) {
        const r = await http(`${archway.url}/v2/team/records/manifests/t${i}`, { headers: { accept: ACCEPT.all } });
        assert.equal(r.headers['docker-content-digest'], m.digest);
      }
    });
    assert.ok(max <= maxSize, `the cache directory held ${max} bytes at its largest (cache.maxSize ${maxSize})`);
    // 40 tag records do not fit beside the layer: the least recently used entry, the layer, made room.
    assert.equal(await exists(blobFile(archway.cacheDir, layer.digest)), false, 'the layer was evicted to make room for the records');
    const tags = await readdir(join(archway.cacheDir, 'tags'));
    assert.ok(tags.length >= 10, `recent tags are kept (${tags.length})`);
    // And the records go by the same LRU: a restart finds what is there and keeps the budget.
    await archway.kill();
    archway = await startArchwayProcess({ upstreams: { 'docker.io': { url: registry.url } }, defaultUpstream: 'docker.io', cache: { dir: archway.cacheDir, maxSize: 32 * 1024 } });
    // Charged at start from what is on disk, the records alone are over this budget: the oldest go.
    let left = tags.length;
    for (const deadline = Date.now() + 5000; Date.now() < deadline && left > 8; await sleep(50)) left = (await readdir(join(archway.cacheDir, 'tags'))).length;
    assert.ok(left <= 8, `a restart with a 32 KiB budget keeps at most 8 records of 4 KiB (left: ${left})`);
  });
});
