// The admin API under /_archway/ against a real registry: prefetch jobs
// (chosen platforms cached so they pull with the upstream down, coalesced
// jobs, a missing platform), purging a tag, a repository or a digest with
// exactly the blobs only it used (shared and in-use blobs stay), the cache
// figures and status JSON, the bearer token (401 / 403 when the API is off,
// ARCHWAY_ADMIN_TOKEN), and the CLI (prefetch, purge, cache stats) against
// archway running as its own process.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { access, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { stringify } from 'yaml';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { fdSnapshot } from '../harness/proc-fds.ts';
import { archwayEntry, startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { digestHex, sha256Digest as sha256 } from '../harness/digest.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import { ALL_PLATFORMS, buildImage, type BuiltImage, type BuiltManifest, type Platform } from '../harness/images.ts';
import { canonicalPlatform, manifestFor } from '../harness/platforms.ts';
import { run } from '../harness/process.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';
import type { PurgeReport } from '../../src/admin/cache-inventory.ts';
import type { CacheSummary } from '../../src/admin/cache-summary.ts';
import type { PrefetchJob } from '../../src/admin/prefetch.ts';

const TOKEN = 'admin-token-0123456789abcdef';
const ENV_TOKEN = 'env-admin-token-fedcba9876543210';
const MiB = 1024 * 1024;
const amd64: Platform = { os: 'linux', architecture: 'amd64' };
const arm64: Platform = { os: 'linux', architecture: 'arm64', variant: 'v8' };

let work: string;
let registry: RegistryHandle;
/** Admin API on (admin.token). */
let archway: ArchwayHandle;
/** No admin token at all: the admin API is off. */
let off: ArchwayHandle;
let savedEnvToken: string | undefined;

/** Every platform; team/multi:1. */
let multi: BuiltImage;
/** linux/amd64 and linux/arm64/v8 (Docker media types); team/pair:1. */
let pair: BuiltImage;
/** One platform, pushed as a/x:1 and b/x:1: every blob shared. */
let shared: BuiltImage;
/** One platform, only a/y:1 (and team/stats:1, read by another archway). */
let solo: BuiltImage;
/** One small image under c/z:1, c/z:2 and c/w:1. */
let tri: BuiltImage;
/** A 16 MiB layer, pushed as big/one:1 and big/two:1. */
let big: BuiltImage;

/**
 * A finished job's blobs must be in the cache when it says so: whoever takes
 * the upstream away on `done` (an air-gapped site, a flaky link) relies on it.
 */
const JOB_DONE_BEFORE_CACHED = 'src bug: the job finished while blobs it counted as done were not in the cache yet';

const errorCode = (r: HttpAnswer) => r.json<{ errors: Array<{ code: string; message: string }> }>().errors[0]?.code;
const errorMessage = (r: HttpAnswer) => r.json<{ errors: Array<{ code: string; message: string }> }>().errors[0]?.message ?? '';
const blobsOf = (m: BuiltManifest) => [{ digest: m.configDigest, size: configSize(m) }, ...m.layers.map((l) => ({ digest: l.digest, size: l.size }))];
const sum = (xs: Array<{ size: number }>) => xs.reduce((a, x) => a + x.size, 0);
/** The config blob's size, from the manifest's own descriptor. */
function configSize(m: BuiltManifest): number {
  return (JSON.parse(m.bytes.toString('utf8')) as { config: { size: number } }).config.size;
}
const cachedBlobPath = (a: { cacheDir: string }, digest: string) => {
  const hex = digestHex(digest);
  return join(a.cacheDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
};
const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );
/** Those of the digests that are not (yet) files in archway's blob cache. */
async function notCached(a: { cacheDir: string }, digests: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of digests) if (!(await exists(cachedBlobPath(a, d)))) out.push(d);
  return out;
}
/**
 * Before looking at the cache's figures after a pull: the blobs are files and
 * no fill is running (a store may let a client have the last byte before its
 * commit, and the index the figures come from, are done).
 */
async function waitCached(a: { url: string; cacheDir: string }, digests: string[], timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const missing = await notCached(a, digests);
    const fills = await scrapeMetric(a.url, 'archway_blob_fills_inflight');
    if (missing.length === 0 && fills === 0) return;
    if (Date.now() > deadline) throw new Error(`not cached after ${timeoutMs} ms: ${missing.join(', ')} (${fills} fills running)`);
    await sleep(20);
  }
}

async function admin(a: { url: string }, method: 'GET' | 'POST' | 'DELETE', path: string, opts: { body?: unknown; token?: string | null } = {}): Promise<HttpAnswer> {
  const token = opts.token === undefined ? TOKEN : opts.token;
  return http(`${a.url}${path}`, {
    method,
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(opts.body === undefined ? {} : { body: typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body) }),
  });
}

async function adminJson<T>(a: { url: string }, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const res = await admin(a, method, path, body === undefined ? {} : { body });
  assert.ok(res.status >= 200 && res.status < 300, `${method} ${path}: ${res.status} ${res.body.toString()}`);
  return res.json<T>();
}

const cacheSummary = (a: { url: string } = archway) => adminJson<CacheSummary>(a, 'GET', '/_archway/cache');
const purge = (ref: string, a: { url: string } = archway) => adminJson<PurgeReport>(a, 'DELETE', `/_archway/cache/${ref}`);

async function startPrefetch(a: { url: string }, image: string, platforms?: string[] | 'all'): Promise<PrefetchJob> {
  const res = await admin(a, 'POST', '/_archway/prefetch', { body: { image, ...(platforms ? { platforms } : {}) } });
  assert.equal(res.status, 202, res.body.toString());
  const job = res.json<PrefetchJob>();
  assert.equal(res.headers.location, `/_archway/jobs/${job.id}`);
  return job;
}

/** Polls the job until it ends; often, so that what holds at its end is seen right then. */
async function waitJob(a: { url: string }, id: string, timeoutMs = 30_000): Promise<PrefetchJob> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await adminJson<PrefetchJob>(a, 'GET', `/_archway/jobs/${id}`);
    if (job.state !== 'running') return job;
    if (Date.now() > deadline) throw new Error(`job ${id} still running: ${JSON.stringify(job)}`);
    await sleep(2);
  }
}

/** A whole pull over HTTP: the tag, each platform's manifest by digest, every blob, each checked byte for byte. */
async function pull(a: { url: string; cacheDir: string }, repo: string, tag: string, image: BuiltImage, platforms: BuiltManifest[] = image.manifests): Promise<void> {
  const top = await http(`${a.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: ACCEPT.all } });
  assert.equal(top.status, 200, `${repo}:${tag}: ${top.body.toString()}`);
  assert.ok(top.body.equals(image.topBytes), `${repo}:${tag} index bytes`);
  for (const m of platforms) {
    const res = await http(`${a.url}/v2/${repo}/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });
    assert.equal(res.status, 200, `${repo}@${m.digest}: ${res.body.toString()}`);
    assert.ok(res.body.equals(m.bytes), `${repo}@${m.digest} bytes`);
    for (const b of blobsOf(m)) {
      const blob = await http(`${a.url}/v2/${repo}/blobs/${b.digest}`);
      assert.equal(blob.status, 200, `${repo} blob ${b.digest}: ${blob.body.toString().slice(0, 300)}`);
      assert.equal(sha256(blob.body), b.digest);
      assert.equal(blob.body.length, b.size);
    }
  }
  await waitCached(a, platforms.flatMap(blobsOf).map((b) => b.digest));
}

/** Upstream requests below /v2/<repo>/ (after the last clearRequests). */
async function upstreamRequests(repo: string, kind?: 'blobs' | 'manifests') {
  return (await registry.requests()).filter((r) => r.path.startsWith(`/v2/${repo}/${kind ?? ''}`));
}

/** A blob download through archway that reads one chunk, then waits to be finished. */
async function startBlobStream(url: string) {
  const res = await request(url);
  assert.equal(res.statusCode, 200);
  const hash = createHash('sha256');
  let size = 0;
  const it = res.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const first = await it.next();
  assert.ok(!first.done);
  hash.update(first.value);
  size += first.value.length;
  return {
    received: () => size,
    async finish(): Promise<{ digest: string; size: number }> {
      for (let r = await it.next(); !r.done; r = await it.next()) {
        hash.update(r.value);
        size += r.value.length;
      }
      return { digest: `sha256:${hash.digest('hex')}`, size };
    },
  };
}

/**
 * Whether archway (in this process) holds the file open: a download from the cache is still
 * being sent, whatever the test has read of it (loopback buffers may hold much of a blob).
 */
async function readingFile(path: string): Promise<boolean> {
  return (await fdSnapshot(process.pid)).targets.includes(path);
}

/** Polls until the request log has seen `n` /v2 lookups (it records a response when it closes). */
async function waitForLookups(a: { url: string }, n: number): Promise<CacheSummary> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const s = await cacheSummary(a);
    if (s.hits + s.misses >= n || Date.now() > deadline) return s;
    await sleep(25);
  }
}

before(async () => {
  savedEnvToken = process.env.ARCHWAY_ADMIN_TOKEN;
  delete process.env.ARCHWAY_ADMIN_TOKEN;
  work = await tempDir('archway-admin-');
  registry = await startRegistry();
  multi = await buildImage({ dir: join(work, 'multi'), tag: '1', platforms: ALL_PLATFORMS, format: 'oci', layerSizes: [48 * 1024, 24 * 1024], seed: 'admin-multi' });
  pair = await buildImage({ dir: join(work, 'pair'), tag: '1', platforms: [amd64, arm64], format: 'docker', layerSizes: [32 * 1024], seed: 'admin-pair' });
  shared = await buildImage({ dir: join(work, 'shared'), tag: '1', platforms: [amd64], format: 'oci', layerSizes: [40 * 1024, 20 * 1024], seed: 'admin-shared' });
  solo = await buildImage({ dir: join(work, 'solo'), tag: '1', platforms: [amd64], format: 'oci', layerSizes: [30 * 1024, 10 * 1024], seed: 'admin-solo' });
  tri = await buildImage({ dir: join(work, 'tri'), tag: '1', platforms: [amd64], format: 'oci', layerSizes: [8 * 1024], seed: 'admin-tri' });
  big = await buildImage({ dir: join(work, 'big'), tag: '1', platforms: [amd64], format: 'oci', layerSizes: [16 * MiB], seed: 'admin-big' });
  const push = (image: BuiltImage, name: string, tag?: string) => pushLayout(image, { hostPort: registry.hostPort, name, ...(tag ? { tag } : {}) });
  await push(multi, 'team/multi');
  await push(pair, 'team/pair');
  await push(shared, 'a/x');
  await push(shared, 'b/x');
  await push(solo, 'a/y');
  await push(solo, 'team/stats');
  await push(tri, 'c/z', '1');
  await push(tri, 'c/z', '2');
  await push(tri, 'c/w');
  await push(big, 'big/one');
  await push(big, 'big/two');
  const upstreams = { 'docker.io': { url: registry.url } };
  archway = await startArchway({ upstreams, admin: { token: TOKEN }, cache: { maxSize: '1GiB' } });
  off = await startArchway({ upstreams });
});

after(async () => {
  await off?.stop();
  await archway?.stop();
  await registry?.stop();
  if (savedEnvToken !== undefined) process.env.ARCHWAY_ADMIN_TOKEN = savedEnvToken;
  await removeDir(work);
});

describe('prefetch', () => {
  it('caches the index, two platforms and all their blobs; they pull with the upstream down, another platform does not', async () => {
    const wanted = [manifestFor(multi, 'linux/arm64/v8'), manifestFor(multi, 'linux/amd64')];
    const wantedBlobs = wanted.flatMap(blobsOf);
    registry.clearRequests();
    const started = await startPrefetch(archway, 'team/multi:1', ['linux/arm64/v8', 'linux/amd64']);
    assert.equal(started.state, 'running');
    assert.equal(started.image, 'team/multi:1');
    assert.ok(!Number.isNaN(Date.parse(started.startedAt)));
    const job = await waitJob(archway, started.id);
    // Checked at the end (JOB_DONE_BEFORE_CACHED), after the rest has been tested on a complete cache.
    const uncachedAtDone = await notCached(archway, wantedBlobs.map((b) => b.digest));
    await waitCached(archway, wantedBlobs.map((b) => b.digest));
    assert.equal(job.state, 'done', JSON.stringify(job));
    assert.equal(job.id, started.id);
    assert.equal(job.percent, 100);
    assert.deepEqual(job.fetched.map(canonicalPlatform).sort(), ['linux/amd64', 'linux/arm64']);
    assert.deepEqual(job.blobs, { done: wantedBlobs.length, total: wantedBlobs.length });
    assert.deepEqual(job.bytes, { done: sum(wantedBlobs), total: sum(wantedBlobs) });
    assert.equal(job.error, undefined);
    assert.ok(job.finishedAt && Date.parse(job.finishedAt) >= Date.parse(job.startedAt));
    // The upstream gave exactly those blobs, once each.
    const blobGets = (await upstreamRequests('team/multi', 'blobs')).filter((r) => r.method === 'GET' && r.status === 200);
    assert.deepEqual(blobGets.map((r) => r.path.split('/').at(-1)).sort(), wantedBlobs.map((b) => b.digest).sort());

    await registry.stop();
    try {
      await pull(archway, 'team/multi', '1', multi, wanted);
      const s390x = manifestFor(multi, 'linux/s390x');
      const m = await http(`${archway.url}/v2/team/multi/manifests/${s390x.digest}`, { headers: { accept: ACCEPT.all } });
      assert.ok(m.status >= 500, `s390x manifest: ${m.status}`);
      assert.equal(errorCode(m), 'UNAVAILABLE');
      const b = await http(`${archway.url}/v2/team/multi/blobs/${s390x.layers[0]!.digest}`);
      assert.ok(b.status >= 500, `s390x layer: ${b.status}`);
      assert.equal(errorCode(b), 'UNAVAILABLE');
      // The status JSON shows the outage.
      const status = await adminJson<{ upstreams: Array<{ name: string; failures: number; lastError: string | null }> }>(archway, 'GET', '/_archway/status');
      const hub = status.upstreams.find((u) => u.name === 'docker.io');
      assert.ok(hub && hub.failures >= 1 && hub.lastError, JSON.stringify(status.upstreams));
    } finally {
      await registry.restart();
    }
    assert.deepEqual(uncachedAtDone, [], JOB_DONE_BEFORE_CACHED);
  });

  it('without platforms every platform is fetched, and what is cached already is not fetched again', async () => {
    const all = multi.manifests.flatMap(blobsOf);
    const before = ['linux/arm64/v8', 'linux/amd64'].flatMap((p) => blobsOf(manifestFor(multi, p))).map((b) => b.digest);
    registry.clearRequests();
    const job = await waitJob(archway, (await startPrefetch(archway, 'team/multi:1')).id);
    assert.equal(job.state, 'done', JSON.stringify(job));
    assert.equal(job.platforms, 'all');
    assert.deepEqual(job.fetched.map(canonicalPlatform).sort(), multi.manifests.map((m) => canonicalPlatform(m.platform)).sort());
    assert.deepEqual(job.blobs, { done: all.length, total: all.length });
    assert.deepEqual(job.bytes, { done: sum(all), total: sum(all) });
    const blobGets = (await upstreamRequests('team/multi', 'blobs')).filter((r) => r.method === 'GET');
    assert.deepEqual(
      blobGets.map((r) => r.path.split('/').at(-1)).sort(),
      all.map((b) => b.digest).filter((d) => !before.includes(d)).sort(),
    );
  });

  it('a second request for a running job returns that job; a later one starts anew and finds every blob cached', async () => {
    const blobs = blobsOf(big.manifests[0]!);
    registry.clearRequests();
    const [first, second] = await Promise.all([startPrefetch(archway, 'big/one:1', ['linux/amd64']), startPrefetch(archway, 'big/one:1', ['linux/amd64'])]);
    assert.equal(first!.state, 'running');
    assert.equal(second!.id, first!.id, 'the same running job');
    const job = await waitJob(archway, first!.id);
    const uncachedAtDone = await notCached(archway, blobs.map((b) => b.digest));
    await waitCached(archway, blobs.map((b) => b.digest));
    assert.equal(job.state, 'done', JSON.stringify(job));
    assert.deepEqual(job.bytes, { done: sum(blobs), total: sum(blobs) });
    // One job: the 16 MiB layer came from the upstream once.
    const layerGets = (await upstreamRequests('big/one', 'blobs')).filter((r) => r.method === 'GET' && r.path.endsWith(big.manifests[0]!.layers[0]!.digest));
    assert.equal(layerGets.length, 1, JSON.stringify(layerGets));

    registry.clearRequests();
    const again = await startPrefetch(archway, 'big/one:1', ['linux/amd64']);
    assert.notEqual(again.id, first!.id, 'a finished job is not reused');
    const done = await waitJob(archway, again.id);
    assert.equal(done.state, 'done');
    assert.equal(done.percent, 100);
    assert.deepEqual(done.bytes, { done: sum(blobs), total: sum(blobs) });
    assert.deepEqual(await upstreamRequests('big/one', 'blobs'), [], 'everything was cached');
    // The first job is still there, done.
    assert.equal((await adminJson<PrefetchJob>(archway, 'GET', `/_archway/jobs/${first!.id}`)).state, 'done');
    assert.deepEqual(uncachedAtDone, [], JOB_DONE_BEFORE_CACHED);
  });

  it('a platform the index lacks: the others are cached, then the job fails naming it', async () => {
    const amd = manifestFor(pair, 'linux/amd64');
    const arm = manifestFor(pair, 'linux/arm64');
    const started = await startPrefetch(archway, 'docker.io/team/pair:1', ['linux/amd64', 'linux/riscv64']);
    const job = await waitJob(archway, started.id);
    const uncachedAtEnd = await notCached(archway, blobsOf(amd).map((b) => b.digest));
    await waitCached(archway, blobsOf(amd).map((b) => b.digest));
    assert.equal(job.state, 'failed', JSON.stringify(job));
    assert.match(job.error ?? '', /linux\/riscv64/);
    assert.deepEqual(job.fetched, ['linux/amd64']);
    assert.deepEqual(job.blobs, { done: 2, total: 2 });
    assert.deepEqual(job.bytes, { done: sum(blobsOf(amd)), total: sum(blobsOf(amd)) });
    assert.ok(job.finishedAt);
    for (const b of blobsOf(arm)) assert.ok(!(await exists(cachedBlobPath(archway, b.digest))), `arm64 blob ${b.digest} not fetched`);
    // And they serve from the cache.
    registry.clearRequests();
    await pull(archway, 'team/pair', '1', pair, [amd]);
    assert.deepEqual(await upstreamRequests('team/pair', 'blobs'), []);
    assert.deepEqual(uncachedAtEnd, [], JOB_DONE_BEFORE_CACHED);
  });

  it('a blob the cache cannot keep (its disk is full) does not make a job done', async () => {
    // As the disk-full tests: never skipped; the suite runs as root (CI does).
    assert.equal(process.getuid?.(), 0, 'this test mounts a tmpfs and must run as root (CI does)');
    const mountPoint = join(work, 'small-disk');
    await mkdir(mountPoint);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
    let small: ArchwayHandle | undefined;
    try {
      small = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, admin: { token: TOKEN }, cacheDir: join(mountPoint, 'cache') });
      const layer = big.manifests[0]!.layers[0]!;
      const job = await waitJob(small, (await startPrefetch(small, 'big/one:1', ['linux/amd64'])).id);
      // Let the fill end, whatever it does, before looking.
      for (const deadline = Date.now() + 10_000; (await small.metric('archway_blob_fills_inflight')) > 0; await sleep(20)) {
        assert.ok(Date.now() < deadline, 'the fill of the layer did not end');
      }
      const cached = await exists(cachedBlobPath(small, layer.digest));
      assert.equal(cached, false, 'a 16 MiB layer cannot be on a 4 MiB disk');
      assert.notEqual(
        job.state,
        'done',
        `src bug: the job says done (${job.percent}%, bytes ${job.bytes.done}/${job.bytes.total}) though its 16 MiB layer is not cached: ${JSON.stringify(job)}`,
      );
      assert.equal(job.state, 'failed');
    } finally {
      await small?.stop();
      await run('umount', [mountPoint], { allowFail: true });
    }
  });

  it('bad requests: 400 INVALID_REQUEST; an unknown job: 404 JOB_UNKNOWN', async () => {
    const bad: Array<[string, unknown]> = [
      ['no image', {}],
      ['empty image', { image: '' }],
      ['platforms neither a list nor "all"', { image: 'team/pair:1', platforms: 'some' }],
      ['empty platform list', { image: 'team/pair:1', platforms: [] }],
      ['unknown key', { image: 'team/pair:1', extra: true }],
      ['not a platform', { image: 'team/pair:1', platforms: ['amd64'] }],
      ['not JSON', '{"image": '],
    ];
    registry.clearRequests();
    for (const [label, body] of bad) {
      const res = await admin(archway, 'POST', '/_archway/prefetch', { body });
      assert.equal(res.status, 400, `${label}: ${res.status} ${res.body.toString()}`);
      assert.equal(errorCode(res), 'INVALID_REQUEST', label);
    }
    assert.deepEqual(await upstreamRequests('team/pair'), [], 'no job ran');
    const unknown = await admin(archway, 'GET', '/_archway/jobs/no-such-job');
    assert.equal(unknown.status, 404);
    assert.equal(errorCode(unknown), 'JOB_UNKNOWN');
  });
});

describe('purge', () => {
  it('a tag loses exactly the blobs only it used; a tag whose blobs another repository uses keeps them', async () => {
    const soloBlobs = blobsOf(solo.manifests[0]!);
    const sharedBlobs = blobsOf(shared.manifests[0]!);
    await pull(archway, 'a/x', '1', shared);
    await pull(archway, 'b/x', '1', shared);
    await pull(archway, 'a/y', '1', solo);
    const before = await cacheSummary();
    assert.ok(before.largestRepositories.some((r) => r.repository === 'docker.io/a/y'));
    // While cached, the tag does not go upstream.
    registry.clearRequests();
    assert.equal((await http(`${archway.url}/v2/a/y/manifests/1`, { headers: { accept: ACCEPT.all } })).status, 200);
    assert.deepEqual(await upstreamRequests('a/y'), []);

    const report = await purge('docker.io/a/y:1');
    assert.deepEqual(report, { tags: ['1'], manifests: 2, blobs: soloBlobs.length, bytes: sum(soloBlobs), keptShared: 0, keptInUse: 0 });
    const afterY = await cacheSummary();
    assert.equal(afterY.blobs, before.blobs - soloBlobs.length);
    assert.equal(afterY.bytes, before.bytes - sum(soloBlobs));
    assert.equal(afterY.manifests, before.manifests - 2);
    assert.equal(afterY.tags, before.tags - 1);
    assert.ok(!afterY.largestRepositories.some((r) => r.repository === 'docker.io/a/y'), JSON.stringify(afterY.largestRepositories));
    for (const b of soloBlobs) assert.ok(!(await exists(cachedBlobPath(archway, b.digest))), `a/y blob ${b.digest} removed`);
    for (const b of sharedBlobs) assert.ok(await exists(cachedBlobPath(archway, b.digest)), `x blob ${b.digest} kept`);
    // The tag record is gone: the next request for it goes upstream.
    registry.clearRequests();
    assert.equal((await http(`${archway.url}/v2/a/y/manifests/1`, { headers: { accept: ACCEPT.all } })).status, 200);
    assert.ok((await upstreamRequests('a/y', 'manifests')).some((r) => r.path === '/v2/a/y/manifests/1'), 'tag fetched again');

    const reportX = await purge('docker.io/a/x:1');
    assert.deepEqual(reportX, { tags: ['1'], manifests: 0, blobs: 0, bytes: 0, keptShared: sharedBlobs.length, keptInUse: 0 });
    for (const b of sharedBlobs) assert.ok(await exists(cachedBlobPath(archway, b.digest)), `shared blob ${b.digest} kept`);
    await registry.stop();
    try {
      await pull(archway, 'b/x', '1', shared);
      const gone = await http(`${archway.url}/v2/a/x/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.ok(gone.status >= 500, `a/x:1 is no longer cached: ${gone.status}`);
    } finally {
      await registry.restart();
    }
  });

  it('a repository (every tag) and a manifest by digest; nothing cached: an empty report', async () => {
    const triBlobs = blobsOf(tri.manifests[0]!);
    await pull(archway, 'c/z', '1', tri);
    await pull(archway, 'c/z', '2', tri);
    await pull(archway, 'c/w', '1', tri);
    const before = await cacheSummary();
    // c/w's index by digest: its tag goes, the manifests stay (c/z's tags reach them).
    const byDigest = await purge(`docker.io/c/w@${tri.topDigest}`);
    assert.deepEqual(byDigest, { tags: ['1'], manifests: 0, blobs: 0, bytes: 0, keptShared: triBlobs.length, keptInUse: 0 });
    assert.equal((await cacheSummary()).tags, before.tags - 1);
    const repo = await purge('docker.io/c/z');
    assert.deepEqual({ ...repo, tags: [...repo.tags].sort() }, { tags: ['1', '2'], manifests: 2, blobs: triBlobs.length, bytes: sum(triBlobs), keptShared: 0, keptInUse: 0 });
    const after = await cacheSummary();
    assert.equal(after.tags, before.tags - 3);
    assert.equal(after.manifests, before.manifests - 2);
    assert.equal(after.blobs, before.blobs - triBlobs.length);
    for (const b of triBlobs) assert.ok(!(await exists(cachedBlobPath(archway, b.digest))));
    assert.deepEqual(await purge('docker.io/c/never:1'), { tags: [], manifests: 0, blobs: 0, bytes: 0, keptShared: 0, keptInUse: 0 });
  });

  it('a blob streaming to a client while its tag is purged: the download completes, the blob counts as kept', async () => {
    // big/one:1 was prefetched above; big/two:1 is the same image under another name.
    const layer = big.manifests[0]!.layers[0]!;
    const bigBlobs = blobsOf(big.manifests[0]!);
    await pull(archway, 'big/two', '1', big);

    // Shared with big/two: kept as shared, whatever the stream does.
    const one = await startBlobStream(`${archway.url}/v2/big/one/blobs/${layer.digest}`);
    const reportOne = await purge('docker.io/big/one:1');
    assert.ok(await readingFile(cachedBlobPath(archway, layer.digest)), 'archway was still reading the blob after the purge');
    assert.deepEqual(reportOne, { tags: ['1'], manifests: 0, blobs: 0, bytes: 0, keptShared: bigBlobs.length, keptInUse: 0 });
    assert.deepEqual(await one.finish(), { digest: layer.digest, size: layer.size });

    // Now only big/two uses it: the config goes, the layer being read stays.
    const two = await startBlobStream(`${archway.url}/v2/big/two/blobs/${layer.digest}`);
    const reportTwo = await purge('docker.io/big/two:1');
    assert.ok(await readingFile(cachedBlobPath(archway, layer.digest)), 'archway was still reading the blob after the purge');
    assert.deepEqual(reportTwo, {
      tags: ['1'],
      manifests: 2,
      blobs: 1,
      bytes: bigBlobs.find((b) => b.digest === big.manifests[0]!.configDigest)!.size,
      keptShared: 0,
      keptInUse: 1,
    });
    assert.deepEqual(await two.finish(), { digest: layer.digest, size: layer.size });
    assert.ok(!(await exists(cachedBlobPath(archway, big.manifests[0]!.configDigest))), 'the config is gone');
  });
});

describe('cache figures and status', () => {
  it('GET /_archway/cache and /_archway/status after known pulls', async () => {
    // A fresh archway: its figures start at zero.
    const fresh = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, admin: { token: TOKEN }, cache: { maxSize: '1GiB' } });
    try {
      const m = solo.manifests[0]!;
      const blobs = blobsOf(m);
      const blobBytes = sum(blobs);
      const pullBytes = solo.topBytes.length + m.size + blobBytes;
      const sinceBefore = Date.now();
      await pull(fresh, 'team/stats', '1', solo); // 5 misses
      await pull(fresh, 'team/stats', '1', solo); // 5 hits
      assert.equal((await http(`${fresh.url}/v2/team/stats/manifests/1`, { headers: { accept: ACCEPT.all } })).status, 200); // 1 hit
      const s = await waitForLookups(fresh, 11);
      assert.equal(s.misses, 5, JSON.stringify(s));
      assert.equal(s.hits, 6);
      assert.equal(s.hitRatio, 6 / 11);
      assert.equal(s.bytesFromUpstream, pullBytes);
      assert.equal(s.bytesFromCache, pullBytes + solo.topBytes.length);
      assert.equal(s.bytesSavedUpstream, s.bytesFromCache);
      assert.equal(s.bytes, blobBytes);
      assert.equal(s.maxBytes, 1024 ** 3);
      assert.equal(s.blobs, blobs.length);
      assert.equal(s.manifests, 2);
      assert.equal(s.tags, 1);
      assert.ok(Date.parse(s.since) <= sinceBefore);
      assert.deepEqual(s.largestRepositories, [{ repository: 'docker.io/team/stats', tags: 1, blobs: blobs.length, bytes: blobBytes }]);
      assert.deepEqual(s.mostPulledRepositories, [{ repository: 'docker.io/team/stats', pulls: 3, bytesServed: 2 * pullBytes + solo.topBytes.length, bytes: blobBytes }]);

      const status = await adminJson<{
        now: number;
        cache: { bytes: number; maxBytes: number; blobs: number };
        traffic: { hits: number; misses: number; lastHour: Array<{ at: number; hits: number; misses: number; bytesFromCache: number; bytesFromUpstream: number }> };
        upstreams: Array<{ name: string; down: boolean; failures: number; lastError: string | null; lastErrorAt: number | null }>;
        images: Array<{ repository: string; tag: string; pulls: number; platforms: Array<{ platform: string; cached: string }> }>;
        platform: { default: string; rules: unknown[] };
      }>(fresh, 'GET', '/_archway/status');
      assert.ok(Math.abs(status.now - Date.now()) < 10_000);
      assert.deepEqual(status.cache, { bytes: blobBytes, maxBytes: 1024 ** 3, blobs: blobs.length });
      assert.equal(status.traffic.hits, 6);
      assert.equal(status.traffic.misses, 5);
      assert.equal(status.traffic.lastHour.length, 60);
      assert.equal(status.traffic.lastHour.reduce((a, b) => a + b.hits, 0), 6);
      assert.equal(status.traffic.lastHour.reduce((a, b) => a + b.bytesFromUpstream, 0), pullBytes);
      assert.deepEqual(status.upstreams, [{ name: 'docker.io', down: false, failures: 0, lastError: null, lastErrorAt: null }]);
      assert.deepEqual(status.images, [{ repository: 'docker.io/team/stats', tag: '1', pulls: 3, platforms: [{ platform: 'linux/amd64', cached: 'yes' }] }]);
      assert.deepEqual(status.platform, { default: 'linux/amd64', rules: [] });

      const page = await http(`${fresh.url}/_archway/`);
      assert.equal(page.status, 200);
      assert.match(page.headers['content-type'] ?? '', /^text\/html/);
      assert.match(page.body.toString(), /<title>archway status<\/title>/);
    } finally {
      await fresh.stop();
    }
  });
});

describe('admin token', () => {
  const endpoints = (): Array<{ method: 'GET' | 'POST' | 'DELETE'; path: string; body?: unknown }> => [
    { method: 'GET', path: '/_archway/cache' },
    { method: 'GET', path: '/_archway/status' },
    { method: 'POST', path: '/_archway/prefetch', body: { image: 'auth/never:1', platforms: ['linux/amd64'] } },
    { method: 'GET', path: '/_archway/jobs/x' },
    { method: 'DELETE', path: '/_archway/cache/docker.io/b/x:1' },
    { method: 'GET', path: '/_archway/' },
  ];

  it('without the token, or with a wrong one: 401 with a Bearer challenge, and nothing happens (the page itself is open)', async () => {
    const before = await cacheSummary();
    registry.clearRequests();
    const wrong: Array<[string, string | null]> = [
      ['no token', null],
      ['a wrong token', 'admin-token-0123456789abcdeX'],
      ['a short wrong token', 'nope'],
      ['the token with another scheme', `Basic ${TOKEN}`],
    ];
    for (const [label, token] of wrong) {
      for (const e of endpoints()) {
        const headers: Record<string, string> = {
          ...(token === null ? {} : { authorization: token.startsWith('Basic ') ? token : `Bearer ${token}` }),
          ...(e.body ? { 'content-type': 'application/json' } : {}),
        };
        const res = await http(`${archway.url}${e.path}`, { method: e.method, headers, ...(e.body ? { body: JSON.stringify(e.body) } : {}) });
        if (e.path === '/_archway/') {
          assert.equal(res.status, 200, `${label}: the page`);
          continue;
        }
        assert.equal(res.status, 401, `${label}: ${e.method} ${e.path}: ${res.status} ${res.body.toString()}`);
        assert.equal(errorCode(res), 'UNAUTHORIZED');
        assert.equal(res.headers['www-authenticate'], 'Bearer realm="archway-admin"', `${label}: ${e.method} ${e.path}`);
      }
    }
    const after = await cacheSummary();
    assert.deepEqual([after.tags, after.manifests, after.blobs], [before.tags, before.manifests, before.blobs], 'nothing purged');
    assert.deepEqual(await upstreamRequests('auth/never'), [], 'nothing prefetched');
  });

  it('an archway without an admin token refuses every admin request with 403 DENIED, the page too', async () => {
    for (const token of [null, TOKEN]) {
      for (const e of endpoints()) {
        const res = await admin(off, e.method, e.path, { token, ...(e.body ? { body: e.body } : {}) });
        assert.equal(res.status, 403, `${token ? 'with' : 'without'} a token: ${e.method} ${e.path}: ${res.status}`);
        assert.equal(errorCode(res), 'DENIED');
        assert.match(errorMessage(res), /admin API is off/);
      }
    }
    // /v2 still works there.
    assert.equal((await http(`${off.url}/v2/team/pair/manifests/1`, { headers: { accept: ACCEPT.all } })).status, 200);
  });

  it('ARCHWAY_ADMIN_TOKEN wins over admin.token', async () => {
    process.env.ARCHWAY_ADMIN_TOKEN = ENV_TOKEN;
    let envArchway: ArchwayHandle | undefined;
    try {
      envArchway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, admin: { token: TOKEN } });
    } finally {
      delete process.env.ARCHWAY_ADMIN_TOKEN;
    }
    try {
      assert.equal((await admin(envArchway, 'GET', '/_archway/cache', { token: ENV_TOKEN })).status, 200);
      assert.equal((await admin(envArchway, 'GET', '/_archway/cache', { token: TOKEN })).status, 401);
    } finally {
      await envArchway.stop();
    }
  });

  it('a token shorter than 16 characters stops `archway serve` with exit 2', async () => {
    const config = (extra: Record<string, unknown>) => ({
      server: { host: '127.0.0.1', port: 0 },
      cache: { dir: join(work, 'short-token-cache') },
      upstreams: { 'docker.io': { url: registry.url } },
      defaultUpstream: 'docker.io',
      ...extra,
    });
    const envCfg = join(work, 'short-env.yaml');
    const fileCfg = join(work, 'short-file.yaml');
    await writeFile(envCfg, stringify(config({})));
    await writeFile(fileCfg, stringify(config({ admin: { token: 'short' } })));
    const serve = (cfg: string, env: NodeJS.ProcessEnv) =>
      run(process.execPath, [...archwayEntry(), 'serve', '--config', cfg], { env, allowFail: true, timeoutMs: 30_000 });
    const { ARCHWAY_ADMIN_TOKEN: _, ...clean } = process.env;
    const [fromEnv, fromFile] = await Promise.all([serve(envCfg, { ...clean, ARCHWAY_ADMIN_TOKEN: 'too-short-token' }), serve(fileCfg, clean)]);
    assert.equal(fromEnv.code, 2, fromEnv.stderr);
    assert.match(fromEnv.stderr, /ARCHWAY_ADMIN_TOKEN must be at least 16 characters/);
    assert.equal(fromFile.code, 2, fromFile.stderr);
    assert.match(fromFile.stderr, /at least 16 characters/);
  });
});

describe('CLI', () => {
  let proc: ArchwayProcess;
  const cliEnv = (): NodeJS.ProcessEnv => {
    const { ARCHWAY_ADMIN_TOKEN: _t, ARCHWAY_URL: _u, ...clean } = process.env;
    return clean;
  };
  /** `archway <args> --config <proc's config>`: url and token come from that config. */
  const cli = (args: string[]) => run(process.execPath, [...archwayEntry(), ...args, '--config', proc.configPath], { env: cliEnv(), allowFail: true, timeoutMs: 60_000 });

  before(async () => {
    proc = await startArchwayProcess({
      upstreams: { 'docker.io': { url: registry.url } },
      defaultUpstream: 'docker.io',
      admin: { token: TOKEN },
      log: { level: 'warn' },
    });
  });

  after(async () => {
    await proc?.kill();
  });

  it('prefetch, prefetch of a missing platform, cache stats (text and JSON), purge, a wrong token', async () => {
    const amd = manifestFor(pair, 'linux/amd64');
    const total = sum(blobsOf(amd));

    const ok = await cli(['prefetch', 'team/pair:1', '--platform', 'linux/amd64']);
    assert.equal(ok.code, 0, `${ok.stdout}\n${ok.stderr}`);
    assert.match(ok.stdout, /^prefetch team\/pair:1 \(linux\/amd64\): job \S+$/m);
    const lines = [...ok.stdout.matchAll(/^(\d+)% (\d+)\/(\d+) bytes, (\d+)\/(\d+) blobs$/gm)];
    assert.ok(lines.length >= 1, ok.stdout);
    const last = lines.at(-1)!;
    assert.deepEqual(last.slice(1).map(Number), [100, total, total, 2, 2], ok.stdout);
    assert.match(ok.stdout, /^done: linux\/amd64; 2 blobs, .+ cached$/m);
    assert.doesNotMatch(ok.stdout, /\r/, 'no progress bar without a TTY');

    const missing = await cli(['prefetch', 'team/pair:1', '--platform', 'linux/amd64', '--platform', 'linux/riscv64']);
    assert.equal(missing.code, 1, `${missing.stdout}\n${missing.stderr}`);
    assert.match(missing.stdout, /^failed: .*linux\/riscv64/m);

    const [text, json] = await Promise.all([cli(['cache', 'stats']), cli(['cache', 'stats', '--json'])]);
    const summary = await cacheSummary(proc);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), summary);
    assert.equal(summary.tags, 1);
    assert.equal(summary.blobs, 2);
    assert.equal(summary.bytes, total);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^cache: .* ${summary.blobs} blobs, ${summary.manifests} manifests, ${summary.tags} tags$`, 'm'));
    assert.match(text.stdout, /^ {2}docker\.io\/team\/pair {2}/m);

    const purged = await cli(['purge', 'docker.io/team/pair:1']);
    assert.equal(purged.code, 0, `${purged.stdout}\n${purged.stderr}`);
    assert.match(purged.stdout, /^purged docker\.io\/team\/pair:1: 1 tag, 2 manifests, 2 blobs \(.+\); kept 0 shared and 0 in-use blobs$/m);
    const afterPurge = await cacheSummary(proc);
    assert.deepEqual([afterPurge.tags, afterPurge.manifests, afterPurge.blobs, afterPurge.bytes], [0, 0, 0, 0]);

    const wrong = await cli(['cache', 'stats', '--token', 'wrong-token-0123456789']);
    assert.equal(wrong.code, 1, `${wrong.stdout}\n${wrong.stderr}`);
    assert.match(wrong.stderr, /401.*UNAUTHORIZED/);
    assert.equal(wrong.stdout, '');
  });
});
