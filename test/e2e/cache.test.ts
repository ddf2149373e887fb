// The cache's promises: tags revalidate after their TTL, everything cached
// survives an upstream outage and a restart, corrupt bytes never get in, and
// the size budget holds.
import assert from 'node:assert/strict';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { fdSnapshot } from '../harness/proc-fds.ts';
import { buildImage, type BuiltImage, type Platform } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const amd64: Platform = { os: 'linux', architecture: 'amd64' };
const arm64: Platform = { os: 'linux', architecture: 'arm64', variant: 'v8' };
const KiB = 1024;

let work: string;
let registry: RegistryHandle;

before(async () => {
  work = await tempDir('archway-cache-test-');
  registry = await startRegistry();
});

after(async () => {
  await registry?.stop();
  await removeDir(work);
});

async function image(name: string, seed: string, layerSizes = [300 * KiB]): Promise<BuiltImage> {
  const built = await buildImage({ dir: join(work, seed), tag: 'latest', platforms: [amd64, arm64], format: 'oci', layerSizes, seed });
  await pushLayout(built, { hostPort: registry.hostPort, name });
  return built;
}

async function filesUnder(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

async function pullAll(archway: ArchwayHandle, name: string, built: BuiltImage): Promise<void> {
  const index = await http(`${archway.url}/v2/${name}/manifests/latest`, { headers: { accept: ACCEPT.all } });
  assert.equal(index.headers['docker-content-digest'], built.topDigest);
  for (const m of built.manifests) {
    const r = await http(`${archway.url}/v2/${name}/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });
    assert.ok(r.body.equals(m.bytes));
    for (const d of [m.configDigest, ...m.layers.map((l) => l.digest)]) {
      const b = await http(`${archway.url}/v2/${name}/blobs/${d}`);
      assert.equal(b.status, 200, `blob ${d}`);
      assert.equal(sha256(b.body), d);
    }
  }
}

/** Short, so the tests wait little for a tag to expire; long enough for two loopback requests within it. */
const TAG_TTL_MS = 400;
const pastTtl = () => sleep(TAG_TTL_MS + 100);

describe('tag freshness', () => {
  let archway: ArchwayHandle;
  before(async () => {
    archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, cache: { tagTtl: `${TAG_TTL_MS}ms` } });
  });
  after(() => archway.stop());

  it('trusts a tag within its TTL, revalidates it with a HEAD after, and follows a moved tag', async () => {
    const v1 = await image('team/moving', 'moving-1');
    const first = await http(`${archway.url}/v2/team/moving/manifests/latest`, { headers: { accept: ACCEPT.all } });
    assert.equal(first.headers['docker-content-digest'], v1.topDigest);

    registry.clearRequests();
    await http(`${archway.url}/v2/team/moving/manifests/latest`, { headers: { accept: ACCEPT.all } });
    assert.equal((await registry.requests()).filter((q) => q.path.includes('/manifests/')).length, 0, 'within the TTL nothing goes upstream');

    await pastTtl();
    registry.clearRequests();
    const revalidated = await http(`${archway.url}/v2/team/moving/manifests/latest`, { headers: { accept: ACCEPT.all } });
    assert.equal(revalidated.headers['docker-content-digest'], v1.topDigest);
    const reqs = (await registry.requests()).filter((q) => q.path.includes('/manifests/'));
    assert.deepEqual(reqs.map((q) => q.method), ['HEAD'], 'an unchanged tag costs one HEAD and no GET');

    const v2 = await image('team/moving', 'moving-2');
    assert.notEqual(v2.topDigest, v1.topDigest);
    await pastTtl();
    const moved = await http(`${archway.url}/v2/team/moving/manifests/latest`, { headers: { accept: ACCEPT.all } });
    assert.equal(moved.headers['docker-content-digest'], v2.topDigest);
    assert.ok(moved.body.equals(v2.topBytes));
  });

  it('a tag deleted upstream is served from the cache within its TTL and unknown after it, never stale', async () => {
    const built = await image('team/doomed', 'doomed');
    const url = `${archway.url}/v2/team/doomed/manifests/latest`;
    const staleBefore = await archway.metric('archway_stale_served_total');
    assert.equal((await http(url, { headers: { accept: ACCEPT.all } })).headers['docker-content-digest'], built.topDigest);
    // Deleting the manifest the tag points at deletes the tag (distribution's API has no tag delete).
    const deleted = await http(`${registry.url}/v2/team/doomed/manifests/${built.topDigest}`, { method: 'DELETE' });
    assert.equal(deleted.status, 202);
    const within = await http(url, { headers: { accept: ACCEPT.all } });
    assert.equal(within.headers['docker-content-digest'], built.topDigest, 'within the TTL the cached tag stands');
    assert.equal((await http(`${registry.url}/v2/team/doomed/manifests/latest`, { method: 'HEAD', headers: { accept: ACCEPT.all } })).status, 404, 'gone upstream');
    await pastTtl();
    for (let i = 0; i < 2; i++) {
      const gone = await http(url, { headers: { accept: ACCEPT.all } });
      assert.equal(gone.status, 404, `request ${i + 1} after the TTL`);
      assert.equal(gone.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'MANIFEST_UNKNOWN');
    }
    assert.equal(await archway.metric('archway_stale_served_total'), staleBefore, 'an upstream that says "unknown" is no outage');
  });
});

describe('upstream outage and restart', () => {
  let archway: ArchwayHandle;
  let built: BuiltImage;
  before(async () => {
    archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, cache: { tagTtl: `${TAG_TTL_MS}ms` } });
    built = await image('team/steady', 'steady');
    await pullAll(archway, 'team/steady', built);
  });
  after(async () => {
    await archway.stop();
    await registry.restart();
  });

  it('a fully cached image pulls with the upstream stopped, its tag served stale past the TTL', async () => {
    await registry.stop();
    await pastTtl();
    await pullAll(archway, 'team/steady', built);
    assert.ok((await archway.metric('archway_stale_served_total', { upstream: 'docker.io' })) >= 1);
    assert.ok(archway.logs().some((l) => l.msg === 'upstream failing; serving cached tag stale'));
  });

  it('uncached content answers 502 naming the failed upstream, promptly', async () => {
    const started = Date.now();
    const r = await http(`${archway.url}/v2/team/unknown/manifests/latest`, { headers: { accept: ACCEPT.all } });
    assert.equal(r.status, 502);
    const err = r.json<{ errors: Array<{ code: string; message: string }> }>().errors[0];
    assert.equal(err?.code, 'UNAVAILABLE');
    assert.match(err?.message ?? '', /upstream docker\.io/);
    assert.doesNotMatch(r.body.toString(), /127\.0\.0\.1|at \w+ \(/, 'no upstream URL, no stack trace');
    assert.ok(Date.now() - started < 5000);
    const blob = await http(`${archway.url}/v2/team/unknown/blobs/sha256:${'1'.repeat(64)}`);
    assert.equal(blob.status, 502);
  });

  it('a restarted archway serves its cache, with the upstream still stopped, and leaves no temp files', async () => {
    await writeFile(join(archway.cacheDir, 'tmp', 'interrupted-fill'), 'half a blob');
    await archway.restart();
    assert.deepEqual(await filesUnder(join(archway.cacheDir, 'tmp')), [], 'temp files of interrupted fills are removed at start');
    await pullAll(archway, 'team/steady', built);
  });
});

describe('integrity', () => {
  let archway: ArchwayHandle;
  before(async () => {
    archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } } });
  });
  after(() => archway.stop());

  it('a corrupt upstream blob is never cached, and the client never gets it as complete', async () => {
    const built = await image('team/corrupt', 'corrupt', [400 * KiB]);
    const layer = built.manifests[0]!.layers[0]!;
    const file = registry.blobPath(layer.digest);
    const good = await readFile(file);
    const bad = Buffer.from(good);
    bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 0xff; // same size, wrong bytes: only the digest can tell
    await writeFile(file, bad);
    try {
      const attempts = await Promise.allSettled(
        Array.from({ length: 3 }, async () => {
          const res = await request(`${archway.url}/v2/team/corrupt/blobs/${layer.digest}`);
          return Buffer.from(await res.body.arrayBuffer());
        }),
      );
      for (const a of attempts) {
        // Either the body fails, or (never) it completes: a complete body must then be right.
        if (a.status === 'fulfilled') assert.notEqual(sha256(a.value), sha256(bad), 'corrupt bytes delivered as complete');
        else assert.match(String(a.reason), /terminated|closed|socket|aborted/i);
      }
      assert.ok(attempts.every((a) => a.status === 'rejected'), 'every coalesced client sees the failure');
      assert.equal(await archway.metric('archway_cache_blobs'), 0, 'nothing entered the cache');
      assert.ok((await archway.metric('archway_digest_mismatches_total', { kind: 'blob' })) >= 1);
    } finally {
      await writeFile(file, good);
    }
    const healed = await http(`${archway.url}/v2/team/corrupt/blobs/${layer.digest}`);
    assert.equal(healed.status, 200);
    assert.equal(sha256(healed.body), layer.digest, 'the first request after the fault clears succeeds');
    assert.deepEqual(await filesUnder(join(archway.cacheDir, 'tmp')), []);
  });

  it('a client that hangs up does not cancel the fill for the others', async () => {
    const built = await image('team/hangup', 'hangup', [3 * 1024 * KiB]);
    const layer = built.manifests[0]!.layers[0]!;
    const ac = new AbortController();
    const quitter = request(`${archway.url}/v2/team/hangup/blobs/${layer.digest}`, { signal: ac.signal }).then(async (res) => {
      for await (const _chunk of res.body) {
        ac.abort();
      }
    });
    const stayer = http(`${archway.url}/v2/team/hangup/blobs/${layer.digest}`);
    await assert.rejects(quitter);
    const r = await stayer;
    assert.equal(sha256(r.body), layer.digest);
    registry.clearRequests();
    const cached = await http(`${archway.url}/v2/team/hangup/blobs/${layer.digest}`);
    assert.equal(sha256(cached.body), layer.digest);
    assert.equal((await registry.requests()).filter((q) => q.path.includes('/blobs/')).length, 0);
  });
});

describe('size budget', () => {
  it('evicts least recently used blobs to stay under cache.maxSize', async () => {
    const maxSize = 1200 * KiB;
    const archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, cache: { maxSize } });
    try {
      const blobs: Array<{ digest: string; size: number }> = [];
      for (const seed of ['evict-a', 'evict-b', 'evict-c', 'evict-d']) {
        const built = await image(`team/${seed}`, seed, [350 * KiB]);
        const layer = built.manifests[0]!.layers[0]!;
        blobs.push(layer);
        const r = await http(`${archway.url}/v2/team/${seed}/blobs/${layer.digest}`);
        assert.equal(sha256(r.body), layer.digest);
        const onDisk = await filesUnder(join(archway.cacheDir, 'blobs'));
        const total = (await Promise.all(onDisk.map((f) => stat(f)))).reduce((n, s) => n + s.size, 0);
        assert.ok(total <= maxSize, `blobs on disk ${total} ≤ ${maxSize}`);
        assert.ok((await archway.metric('archway_cache_bytes')) <= maxSize);
      }
      assert.ok((await archway.metric('archway_cache_evictions_total')) >= 1);
      // The most recent one is still cached; the first was evicted.
      registry.clearRequests();
      const last = blobs.at(-1)!;
      await http(`${archway.url}/v2/team/evict-d/blobs/${last.digest}`);
      assert.equal((await registry.requests()).filter((q) => q.path.includes('/blobs/')).length, 0);
      const first = blobs[0]!;
      await http(`${archway.url}/v2/team/evict-a/blobs/${first.digest}`);
      assert.equal((await registry.requests()).filter((q) => q.path.endsWith(first.digest)).length, 1);
    } finally {
      await archway.stop();
    }
  });

  it('never evicts a blob while it is being read: what does not fit beside it is relayed uncached, and cached once the read is over', async () => {
    // A must be larger than what loopback socket buffers hold, so archway is still reading it.
    const MiB = 1024 * KiB;
    const maxSize = 28 * MiB;
    const archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, cache: { maxSize } });
    const onDisk = async () => (await Promise.all((await filesUnder(archway.cacheDir)).map((f) => stat(f).then((s) => s.size, () => 0)))).reduce((n, x) => n + x, 0);
    try {
      const a = (await image('team/pin-a', 'pin-a', [24 * MiB])).manifests[0]!.layers[0]!;
      const b = (await image('team/pin-b', 'pin-b', [8 * MiB])).manifests[0]!.layers[0]!;
      const aUrl = `${archway.url}/v2/team/pin-a/blobs/${a.digest}`;
      const bUrl = `${archway.url}/v2/team/pin-b/blobs/${b.digest}`;
      await http(aUrl);
      const blobFile = (d: string) => join(archway.cacheDir, 'blobs', 'sha256', d.slice(7, 9), d.slice(7));
      const noRoom = () => archway.metric('archway_blob_uncached_relays_total', { reason: 'no-room' });
      const relayedBefore = await noRoom();
      // Start reading A and stop after the first chunk: A is pinned, and 24 + 8 MiB do not fit in 28.
      const res = await request(aUrl);
      const iterator = res.body[Symbol.asyncIterator]();
      const chunks: Buffer[] = [(await iterator.next()).value as Buffer];
      let most = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          most = Math.max(most, await onDisk());
          await sleep(5);
        }
      })();
      registry.clearRequests();
      const relayed = await http(bUrl);
      sampling = false;
      await sampler;
      assert.equal(relayed.status, 200);
      assert.equal(sha256(relayed.body), b.digest, 'B is served whole and right');
      assert.equal((await noRoom()) - relayedBefore, 1, 'relayed without caching: no room beside the pinned A');
      await stat(blobFile(a.digest)); // still there: pinned
      await assert.rejects(stat(blobFile(b.digest)), 'B was not cached');
      assert.ok(most <= maxSize, `the cache directory held ${most} bytes at most, within ${maxSize}`);
      assert.equal((await registry.requests()).filter((q) => q.path.endsWith(b.digest)).length, 1);
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) chunks.push(r.value as Buffer);
      assert.equal(sha256(Buffer.concat(chunks)), a.digest);
      // The read is over once archway closes A's file (a moment after the client's last byte).
      for (const deadline = Date.now() + 5000; (await fdSnapshot(process.pid)).targets.includes(blobFile(a.digest)); await sleep(10)) {
        assert.ok(Date.now() < deadline, 'archway still reads A after its client got every byte');
      }
      // A's read is over: B fetched again makes room by evicting A, and is cached.
      const evictionsBefore = await archway.metric('archway_cache_evictions_total');
      assert.equal(sha256((await http(bUrl)).body), b.digest);
      await stat(blobFile(b.digest));
      await assert.rejects(stat(blobFile(a.digest)), 'A evicted to make room for B');
      assert.ok((await archway.metric('archway_cache_evictions_total')) > evictionsBefore);
      assert.equal((await noRoom()) - relayedBefore, 1, 'no second uncached relay');
      registry.clearRequests();
      assert.equal(sha256((await http(bUrl)).body), b.digest);
      assert.equal((await registry.requests()).filter((q) => q.path.endsWith(b.digest)).length, 0, 'B now served from the cache');
      assert.ok((await onDisk()) <= maxSize);
    } finally {
      await archway.stop();
    }
  });
});
