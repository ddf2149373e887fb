// Scale-out: three archway replicas (separate processes) sharing one cache,
// blobs and manifests in an S3 bucket (Ceph RGW) and tags, confirmations, the
// blob index and per-blob fill leases in Redis (redis-server), with nginx as
// a round-robin load balancer in front. The upstream is a real registry,
// behind a fault front that slows blob bodies where requests must overlap.
// Shown here: content cached through one replica is served by the others
// without the upstream; docker pulls through the balancer; concurrent cold
// GETs across replicas make one upstream fetch; a replica SIGKILLed mid-fill
// is taken over once its lease expires, and no partial object ever appears;
// Redis going away degrades to per-replica behaviour without failing a
// request, and coordination resumes when it is back; a virtual image
// assembled on one replica is served by digest on another.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { Agent, request } from 'undici';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { digestHex, sha256Digest as sha256 } from '../harness/digest.ts';
import { startDockerd, type DockerdHandle } from '../harness/dockerd.ts';
import { startFaultFront, type FaultFront, type FaultMode } from '../harness/fault-front.ts';
import { ACCEPT } from '../harness/http.ts';
import { MARKER_PATH, buildImage, type BuiltImage, type Platform } from '../harness/images.ts';
import { startNginxLb, type NginxLbHandle } from '../harness/nginx-lb.ts';
import { waitFor } from '../harness/process.ts';
import { startRedis, type RedisHandle } from '../harness/redis.ts';
import { startRegistry, type RegistryHandle, type RegistryRequest } from '../harness/registry.ts';
import { startS3, type S3Handle } from '../harness/s3.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
/** Every replica's objects live under this prefix of the one bucket. */
const PREFIX = 'replicas/';
const NAMES = ['A', 'B', 'C'] as const;
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };
const ARM64: Platform = { os: 'linux', architecture: 'arm64', variant: 'v8' };
/** A slow upstream for blob bodies: 256 KiB every 40 ms, about 6 MiB/s (a 24 MiB blob takes ~4 s). */
const SLOW: FaultMode = { kind: 'trickle', chunkBytes: 256 * KiB, pauseMs: 40 };

let work: string;
let registry: RegistryHandle;
let front: FaultFront;
let s3: S3Handle;
let redis: RedisHandle;
let lb: NginxLbHandle;
let bucket: S3Client;
const replicas: ArchwayProcess[] = [];
/** Every replica process started, restarted ones included (their output, for ARCHWAY_TEST_KEEP_TMP=1). */
const started: Array<{ name: string; proc: ArchwayProcess }> = [];
const configs: Array<Record<string, unknown>> = [];
const client = new Agent({ keepAliveTimeout: 10_000 });

/** Pulled over HTTP through A, then B and C (test 1); cached content in the Redis outage loop (test 5). */
let app: BuiltImage;
/** docker pull through the load balancer (test 2). */
let lbapp: BuiltImage;
/** One big layer each: concurrency (test 3), SIGKILL mid-fill (test 4), coordination after Redis is back (test 5). */
let fanIn: BuiltImage;
let killed: BuiltImage;
let resumed: BuiltImage;
/** Uncached until Redis is away (test 5): in the request loop, and wanted on every replica at once. */
let churn: BuiltImage;
let degradedImage: BuiltImage;
/** Members of the virtual image virt/vapp (test 6). */
let vAmd64: BuiltImage;
let vArm64: BuiltImage;

// The replicas are not in the harness's process groups: never leave one behind.
const killReplicas = () => {
  for (const r of replicas) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
};
process.on('exit', killReplicas);

function replicaConfig(cacheDir: string): Record<string, unknown> {
  return {
    upstreams: { 'docker.io': { url: front.url } },
    defaultUpstream: 'docker.io',
    cache: { dir: cacheDir },
    storage: s3.storage(PREFIX),
    redis: { url: redis.url, fillWait: '30s' },
    timeouts: { connect: '2s', headers: '10s', bodyIdle: '10s' },
    virtual: { 'virt/*': { members: { 'linux/amd64': 'amd64/{name}', 'linux/arm64': 'arm64v8/{name}' } } },
    log: { level: 'info' },
  };
}

function layerOf(image: BuiltImage): { digest: string; size: number } {
  const layer = image.manifests[0]?.layers[0];
  assert.ok(layer);
  return layer;
}

before(async () => {
  work = await tempDir('archway-replicas-');
  registry = await startRegistry();
  front = await startFaultFront(registry);
  [s3, redis] = await Promise.all([startS3(), startRedis()]);
  bucket = new S3Client({ region: s3.region, endpoint: s3.endpoint, forcePathStyle: true, credentials: s3.credentials });

  // Single-platform images (a manifest at the tag) of fresh content.
  const one = (name: string, layerSizes: number[], platform = AMD64) =>
    buildImage({ dir: join(work, name), tag: '1', platforms: [platform], format: 'oci', layerSizes, seed: `replicas-${name}`, index: false });
  app = await buildImage({ dir: join(work, 'app'), tag: '1', platforms: [AMD64, ARM64], format: 'oci', layerSizes: [64 * KiB, 512 * KiB, 1 * MiB], seed: 'replicas-app' });
  lbapp = await buildImage({ dir: join(work, 'lbapp'), tag: '1', platforms: [AMD64, ARM64], format: 'docker', layerSizes: [128 * KiB, 768 * KiB, 2 * MiB], seed: 'replicas-lbapp' });
  fanIn = await one('fan-in', [24 * MiB]);
  killed = await one('killed', [24 * MiB]);
  resumed = await one('resumed', [16 * MiB]);
  churn = await one('churn', [192 * KiB, 256 * KiB, 320 * KiB, 384 * KiB, 448 * KiB, 512 * KiB]);
  degradedImage = await one('degraded', [8 * MiB]);
  vAmd64 = await one('vapp-amd64', [300 * KiB]);
  vArm64 = await one('vapp-arm64', [300 * KiB], ARM64);
  const pushes: Array<[BuiltImage, string]> = [
    [app, 'team/app'],
    [lbapp, 'team/lbapp'],
    [fanIn, 'team/fan-in'],
    [killed, 'team/killed'],
    [resumed, 'team/resumed'],
    [churn, 'team/churn'],
    [degradedImage, 'team/degraded'],
    [vAmd64, 'amd64/vapp'],
    [vArm64, 'arm64v8/vapp'],
  ];
  await Promise.all(pushes.map(([image, name]) => pushLayout(image, { hostPort: registry.hostPort, name })));

  for (const name of NAMES) configs.push(replicaConfig(await tempDir(`archway-replica-${name}-`)));
  replicas.push(...(await Promise.all(configs.map((c) => startArchwayProcess(c)))));
  for (const [i, proc] of replicas.entries()) started.push({ name: NAMES[i] ?? String(i), proc });
  lb = await startNginxLb(replicas.map((r) => r.hostPort));
  registry.clearRequests();
});

after(async () => {
  await Promise.all(replicas.map((r) => r.kill()));
  if (process.env.ARCHWAY_TEST_KEEP_TMP === '1') {
    // Kept with the other temp directories: the replicas' logs (JSON lines) for a post-mortem.
    const logs = await mkdtemp(join(tmpdir(), 'archway-replicas-logs-'));
    for (const [n, { name, proc }] of started.entries()) await writeFile(join(logs, `${n}-${name}-${proc.port}.log`), proc.output());
    process.stderr.write(`replica logs: ${logs}\n`);
  }
  await client.close();
  bucket?.destroy();
  await Promise.all([lb?.stop(), front?.stop(), s3?.stop(), redis?.stop(), registry?.stop()]);
  if (work) await removeDir(work);
});

interface Got {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  error: Error | undefined;
  startedAt: number;
  /** When the status line and headers arrived (undefined if they never did). */
  headersAt: number | undefined;
  doneAt: number;
}

async function get(url: string, headers: Record<string, string> = {}, timeoutMs = 60_000): Promise<Got> {
  const startedAt = Date.now();
  let headersAt: number | undefined;
  let status = 0;
  let resHeaders: Got['headers'] = {};
  const chunks: Buffer[] = [];
  let error: Error | undefined;
  try {
    const res = await request(url, { headers, dispatcher: client, signal: AbortSignal.timeout(timeoutMs) });
    headersAt = Date.now();
    status = res.statusCode;
    resHeaders = res.headers;
    for await (const c of res.body) chunks.push(c as Buffer);
  } catch (err) {
    error = err as Error;
  }
  return { status, headers: resHeaders, body: Buffer.concat(chunks), error, startedAt, headersAt, doneAt: Date.now() };
}

/** The start of a body as text, for messages (never the whole of a big blob). */
function text(body: Buffer, max = 300): string {
  return body.subarray(0, max).toString('utf8');
}

/** GET a blob and check it is exactly the blob. */
async function getBlobOk(base: string, repo: string, digest: string, what = ''): Promise<Got> {
  const g = await get(`${base}/v2/${repo}/blobs/${digest}`);
  assert.equal(g.error, undefined, `${what} GET ${base} ${digest}: ${g.error?.message}`);
  assert.equal(g.status, 200, `${what} GET ${base} ${digest}: ${g.status} ${text(g.body)}`);
  assert.equal(sha256(g.body), digest, `${what} body of ${digest} from ${base} (${g.body.length} bytes)`);
  return g;
}

/** GET a manifest (by tag or digest) and check its bytes against the digest. */
async function getManifestOk(base: string, repo: string, reference: string, expectedDigest: string): Promise<Got> {
  const g = await get(`${base}/v2/${repo}/manifests/${reference}`, { accept: ACCEPT.all });
  assert.equal(g.error, undefined, `manifest ${repo}:${reference} from ${base}: ${g.error?.message}`);
  assert.equal(g.status, 200, `manifest ${repo}:${reference} from ${base}: ${g.status} ${text(g.body, 300)}`);
  assert.equal(sha256(g.body), expectedDigest, `manifest ${repo}:${reference} from ${base}`);
  assert.equal(g.headers['docker-content-digest'], expectedDigest);
  return g;
}

/** Every manifest and blob of an image over HTTP, each verified by its digest. */
async function pullOverHttp(base: string, repo: string, image: BuiltImage): Promise<void> {
  await getManifestOk(base, repo, image.tag, image.topDigest);
  for (const m of image.manifests) {
    await getManifestOk(base, repo, m.digest, m.digest);
    await getBlobOk(base, repo, m.configDigest);
    for (const l of m.layers) await getBlobOk(base, repo, l.digest);
  }
}

function blobGets(reqs: Array<Pick<RegistryRequest, 'method' | 'path'>>, digest: string): number {
  return reqs.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`)).length;
}

function frontBlobGets(digest: string): number {
  return front.requests().filter((r) => r.method === 'GET' && r.url.split('?')[0]?.endsWith(`/blobs/${digest}`)).length;
}

function blobKey(digest: string): string {
  return `${PREFIX}blobs/sha256/${digestHex(digest)}`;
}

/** Size of the bucket's object for the blob, or undefined when there is none. */
async function objectSize(digest: string): Promise<number | undefined> {
  try {
    return (await bucket.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: blobKey(digest) }))).ContentLength;
  } catch (err) {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404) return undefined;
    throw err;
  }
}

async function listKeys(prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await bucket.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
    for (const o of page.Contents ?? []) if (o.Key) out.set(o.Key, o.Size ?? 0);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

function replica(i: number): ArchwayProcess {
  const r = replicas[i];
  assert.ok(r, `replica ${NAMES[i]}`);
  return r;
}

describe('three replicas sharing S3 and Redis', () => {
  it('an image pulled through A is served by B and C without the upstream; its objects are in the bucket', async (t) => {
    const [a, b, c] = [replica(0), replica(1), replica(2)];
    await pullOverHttp(a.url, 'team/app', app);
    const first = await registry.requests();
    const blobs = app.manifests.flatMap((m) => [m.configDigest, ...m.layers.map((l) => l.digest)]);
    for (const d of blobs) assert.equal(blobGets(first, d), 1, `A fetched ${d} once`);

    registry.clearRequests();
    await pullOverHttp(b.url, 'team/app', app);
    await pullOverHttp(c.url, 'team/app', app);
    const later = await registry.requests();
    t.diagnostic(`upstream requests for B and C: ${later.length}`);
    assert.deepEqual(
      later.map((r) => `${r.method} ${r.uri}`),
      [],
      'B and C answered everything (tag, manifests, blobs) from the shared cache',
    );

    const objects = await listKeys(PREFIX);
    for (const d of blobs) assert.equal(objects.get(blobKey(d)), app.blobs.get(d)?.size, `blob object ${d}`);
    for (const d of [app.topDigest, ...app.manifests.map((m) => m.digest)]) {
      assert.ok(objects.has(`${PREFIX}manifests/docker.io/sha256/${digestHex(d)}`), `manifest object ${d}: ${[...objects.keys()].join(', ')}`);
    }
    for (const r of replicas) {
      assert.deepEqual(await readdir(join(r.cacheDir, 'tmp')), [], 'no local temp file left once the blobs were uploaded');
      assert.ok(!(await readdir(r.cacheDir)).includes('blobs'), 'no blob on the replica’s own disk');
    }
  });

  it('docker pull through the nginx load balancer gets the right image, served by all three replicas', async (t) => {
    registry.clearRequests();
    await lb.clearRequests();
    let dockerd: DockerdHandle | undefined;
    try {
      dockerd = await startDockerd({ mirror: lb.url });
      await dockerd.pull('team/lbapp:1');
      const amd64 = lbapp.manifests.find((m) => m.platform.architecture === 'amd64');
      assert.ok(amd64);
      assert.equal(await dockerd.fileFromImage('team/lbapp:1', MARKER_PATH), lbapp.fileContent(amd64.platform));
      assert.ok((await dockerd.repoDigests('team/lbapp:1')).includes(`team/lbapp@${lbapp.topDigest}`), 'repo digest is the upstream index’s');
      const seen = await lb.requests();
      const byReplica = new Map<string, number>();
      for (const r of seen) byReplica.set(r.upstreamAddr, (byReplica.get(r.upstreamAddr) ?? 0) + 1);
      t.diagnostic(`requests per replica: ${JSON.stringify(Object.fromEntries(byReplica))}`);
      assert.deepEqual(seen.filter((r) => r.status >= 500), [], 'no 5xx through the balancer');
      assert.deepEqual(new Set(byReplica.keys()), new Set(replicas.map((r) => r.hostPort)), 'the pull was spread over the three replicas');
      const upstream = await registry.requests();
      for (const d of [amd64.configDigest, ...amd64.layers.map((l) => l.digest)]) assert.equal(blobGets(upstream, d), 1, `${d} fetched once from the upstream`);
    } finally {
      await dockerd?.stop();
    }
  });

  it('16 concurrent cold GETs of one big blob on A, B and C in turn: one upstream GET, 16 right bodies', async (t) => {
    const { digest, size } = layerOf(fanIn);
    registry.clearRequests();
    front.setMode(SLOW);
    let results: Got[];
    try {
      results = await Promise.all(Array.from({ length: 16 }, (_, i) => get(`${replica(i % 3).url}/v2/team/fan-in/blobs/${digest}`)));
    } finally {
      front.setMode({ kind: 'pass' });
    }
    for (const [i, r] of results.entries()) {
      assert.equal(r.error, undefined, `client ${i} (${NAMES[i % 3]}): ${r.error?.message}`);
      assert.equal(r.status, 200, `client ${i} (${NAMES[i % 3]}): ${text(r.body, 300)}`);
      assert.equal(r.body.length, size);
      assert.equal(sha256(r.body), digest, `client ${i} (${NAMES[i % 3]})`);
    }
    const lastStart = Math.max(...results.map((r) => r.startedAt));
    const firstDone = Math.min(...results.map((r) => r.doneAt));
    assert.ok(lastStart < firstDone, 'the 16 requests overlapped');
    const gets = blobGets(await registry.requests(), digest);
    const spans = NAMES.map((n, i) => {
      const mine = results.filter((_, j) => j % 3 === i);
      return `${n}: first byte ${Math.min(...mine.map((r) => (r.headersAt ?? 0) - r.startedAt))}–${Math.max(...mine.map((r) => (r.headersAt ?? 0) - r.startedAt))} ms, done ${Math.max(...mine.map((r) => r.doneAt - r.startedAt))} ms`;
    });
    t.diagnostic(`${(size / MiB).toFixed(1)} MiB blob, upstream GETs: ${gets}; ${spans.join('; ')}`);
    assert.equal(gets, 1, 'exactly one upstream GET for the three replicas');
    assert.equal(await objectSize(digest), size);
  });

  it('a replica SIGKILLed mid-fill: the others take over once its lease expires, no partial object ever appears', async (t) => {
    const { digest, size } = layerOf(killed);
    const path = `/v2/team/killed/blobs/${digest}`;
    registry.clearRequests();
    front.clearRequests();
    front.setMode(SLOW);

    // The bucket watched from before the fill until after the clients are done.
    const seen: Array<{ at: number; size: number | undefined }> = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        seen.push({ at: Date.now(), size: await objectSize(digest) });
        await sleep(100);
      }
    })();

    try {
      const a = replica(0);
      const aClient = get(`${a.url}${path}`);
      // A's fill has started: it holds the lease.
      await waitFor(() => frontBlobGets(digest) === 1, { timeoutMs: 10_000, description: 'A fetching the blob' });
      const fillStartedAt = Date.now();
      const bClient = get(`${replica(1).url}${path}`);
      const cClient = get(`${replica(2).url}${path}`);
      await sleep(1200);
      assert.equal(frontBlobGets(digest), 1, 'B and C wait for A’s lease instead of fetching');

      const killAt = Date.now();
      const { code } = await a.signal('SIGKILL');
      assert.equal(code, null, 'killed by the signal');
      const aGot = await aClient;
      assert.ok(aGot.error !== undefined || aGot.body.length < size, 'A’s client was cut by the kill');
      assert.ok(killAt - fillStartedAt < 4000, 'killed mid-fill (the slow fill takes ~4 s)');

      // The lease (10 s, renewed every 3 s) expires; a waiting replica takes it and fetches.
      await waitFor(() => frontBlobGets(digest) >= 2, { timeoutMs: 15_000, description: 'a waiting replica taking over the fill' });
      const takeoverAt = Date.now();
      const beforeTakeover = seen.filter((s) => s.at <= takeoverAt);
      assert.ok(beforeTakeover.length >= 10, `the bucket was watched during the wait (${beforeTakeover.length} looks)`);
      assert.deepEqual(
        beforeTakeover.filter((s) => s.size !== undefined),
        [],
        'no object for the digest while A’s fill was interrupted',
      );

      const [b, c] = await Promise.all([bClient, cClient]);
      for (const [name, g] of [['B', b], ['C', c]] as const) {
        assert.equal(g.error, undefined, `${name}: ${g.error?.message}`);
        assert.equal(g.status, 200, `${name}: ${text(g.body, 300)}`);
        assert.equal(sha256(g.body), digest, `${name} got the blob`);
        assert.ok((g.headersAt ?? 0) > killAt, `${name}'s client waited (no answer before the kill)`);
        assert.ok(g.doneAt - killAt < 25_000, `${name} done within lease expiry + fetch time (${g.doneAt - killAt} ms after the kill)`);
      }
      // The clients are done; the object is stored (the holder's own client may finish a moment before its upload).
      const doneAt = Date.now();
      while (!seen.some((s) => s.size !== undefined) && Date.now() - doneAt < 10_000) await sleep(100);
      watching = false;
      await watcher;
      const final = await objectSize(digest);
      const gets = frontBlobGets(digest);
      // The end of the replacement fill's upstream body (A's cut one never ended): only then can anything be uploaded.
      const bodyEndedAt = front.lastBlobFinishedAt() ?? 0;
      const present = seen.filter((s) => s.size !== undefined);
      const visibleAt = present[0]?.at;
      const lastHeaders = Math.max(b.headersAt ?? 0, c.headersAt ?? 0);
      t.diagnostic(
        `after the kill: takeover ${takeoverAt - killAt} ms, replacement body ended ${bodyEndedAt - killAt} ms, ` +
          `object visible ${visibleAt === undefined ? 'never' : `${visibleAt - killAt} ms`}; ` +
          `B first byte ${(b.headersAt ?? 0) - killAt} ms, done ${b.doneAt - killAt} ms; C first byte ${(c.headersAt ?? 0) - killAt} ms, done ${c.doneAt - killAt} ms; ` +
          `upstream GETs ${gets}; ${seen.length} looks at the bucket`,
      );
      assert.ok(takeoverAt - killAt > 5000, `the takeover waited for the lease to expire (${takeoverAt - killAt} ms)`);
      assert.equal(gets, 2, 'A’s interrupted GET and one by the replica that took the lease over (the other waited for it)');
      assert.equal(final, size, 'the object exists with the right size');
      assert.deepEqual(
        present.filter((s) => s.size !== size),
        [],
        'no object of another size ever appeared',
      );
      assert.ok(bodyEndedAt > takeoverAt, 'the replacement fill got the whole body');
      assert.deepEqual(
        present.filter((s) => s.at < bodyEndedAt),
        [],
        'nothing in the bucket under that digest before the whole blob had come from the upstream',
      );
      // The replica that did not take over answers its client only once the object is stored.
      assert.ok(lastHeaders >= (visibleAt ?? Infinity) - 500, `the waiting replica answered after the object was stored (headers ${lastHeaders - (visibleAt ?? 0)} ms from it)`);

      // Cached now: B answers without the upstream.
      registry.clearRequests();
      front.setMode({ kind: 'pass' });
      await getBlobOk(replica(1).url, 'team/killed', digest);
      assert.deepEqual((await registry.requests()).filter((r) => r.path.includes(digestHex(digest))), [], 'no upstream request for a cached blob');
    } finally {
      watching = false;
      await watcher;
      front.setMode({ kind: 'pass' });
      // Back to three replicas, on A's port (nginx knows it) and cache directory.
      const a = replica(0);
      if (a.child.exitCode === null && a.child.signalCode === null) await a.kill();
      replicas[0] = await startArchwayProcess(configs[0] as Record<string, unknown>, { port: a.port });
      started.push({ name: 'A', proc: replicas[0] });
    }
    assert.deepEqual(await readdir(join(replica(0).cacheDir, 'tmp')), [], 'the restarted A dropped the temp file of its interrupted fill');
  });

  it('Redis restarted during a run: every request still succeeds; coordination resumes when it is back', async (t) => {
    const cached = [
      ...app.manifests.flatMap((m) => [m.configDigest, ...m.layers.map((l) => l.digest)]).map((d) => ({ kind: 'blob' as const, repo: 'team/app', ref: d, digest: d })),
      { kind: 'manifest' as const, repo: 'team/app', ref: '1', digest: app.topDigest },
    ];
    const churnManifest = churn.manifests[0];
    assert.ok(churnManifest);
    const uncached = [
      ...[churnManifest.configDigest, ...churnManifest.layers.map((l) => l.digest)].map((d) => ({ kind: 'blob' as const, repo: 'team/churn', ref: d, digest: d })),
      { kind: 'manifest' as const, repo: 'team/churn', ref: '1', digest: churn.topDigest },
    ];
    let phase: 'before' | 'outage' | 'back' = 'before';
    const counts = { before: 0, outage: 0, back: 0 };
    const failures: string[] = [];
    let running = true;
    let next = 0;
    const worker = async () => {
      while (running) {
        const list = phase === 'before' ? cached : [...cached, ...uncached];
        const item = list[next++ % list.length];
        if (!item) continue;
        const p = phase;
        const url = `${lb.url}/v2/${item.repo}/${item.kind === 'blob' ? 'blobs' : 'manifests'}/${item.ref}`;
        const g = await get(url, item.kind === 'manifest' ? { accept: ACCEPT.all } : {}, 20_000);
        counts[p]++;
        if (g.error || g.status !== 200 || sha256(g.body) !== item.digest) {
          failures.push(`${p}: GET ${url} → ${g.error?.message ?? g.status} ${g.status === 200 ? `(${g.body.length} bytes, wrong digest)` : text(g.body, 200)} via ${String(g.headers['x-archway-replica'])}`);
        }
      }
    };
    await lb.clearRequests();
    const workers = Array.from({ length: 4 }, () => worker());
    let outageUpstream: RegistryRequest[] = [];
    const degraded = layerOf(degradedImage);
    let burst: Got[] = [];
    try {
      await sleep(1000);
      const offsets = replicas.map((r) => r.output().length);
      registry.clearRequests();
      await redis.stop();
      const outageAt = Date.now();
      phase = 'outage';
      await sleep(500);
      // Without Redis each replica fills alone: a cold blob wanted on all three at once (two clients each) is
      // fetched once per replica, and nobody waits for a lease it cannot see.
      front.setMode(SLOW);
      try {
        burst = await Promise.all(Array.from({ length: 6 }, (_, i) => get(`${replica(i % 3).url}/v2/team/degraded/blobs/${degraded.digest}`, {}, 30_000)));
      } finally {
        front.setMode({ kind: 'pass' });
      }
      await sleep(Math.max(0, 4000 - (Date.now() - outageAt)));
      outageUpstream = await registry.requests();
      await redis.start();
      await Promise.all(replicas.map((r, i) => r.waitForOutput(/redis is back/, { fromOffset: offsets[i] ?? 0, timeoutMs: 15_000 })));
      for (const [i, r] of replicas.entries()) {
        assert.match(r.output().slice(offsets[i]), /redis unreachable/, `replica ${NAMES[i]} noticed the outage`);
      }
      phase = 'back';
      await sleep(1000);
    } finally {
      running = false;
      await Promise.all(workers);
    }
    const perReplica = new Map<string, number>();
    for (const r of await lb.requests()) perReplica.set(r.upstreamAddr, (perReplica.get(r.upstreamAddr) ?? 0) + 1);
    const fetches = uncached.filter((u) => u.kind === 'blob').map((u) => blobGets(outageUpstream, u.digest));
    t.diagnostic(
      `requests before/outage/back: ${counts.before}/${counts.outage}/${counts.back}; per replica ${JSON.stringify(Object.fromEntries(perReplica))}; ` +
        `upstream GETs per blob first requested during the outage: ${fetches.join(', ')}`,
    );
    assert.deepEqual(failures, [], 'every request succeeded with the right bytes');
    assert.ok(counts.before >= 10 && counts.outage >= 30 && counts.back >= 5, `requests in every phase: ${JSON.stringify(counts)}`);
    assert.ok(fetches.every((n) => n >= 1 && n <= 3), `each uncached blob fetched at least once, at most once per replica: ${fetches.join(', ')}`);
    assert.equal(perReplica.size, 3, 'the loop went through all three replicas');
    for (const [i, r] of burst.entries()) {
      assert.equal(r.status, 200, `outage burst on ${NAMES[i % 3]}: ${r.error?.message ?? text(r.body, 300)}`);
      assert.equal(sha256(r.body), degraded.digest, `outage burst on ${NAMES[i % 3]}`);
    }
    const burstMs = Math.max(...burst.map((r) => r.doneAt - r.startedAt));
    const degradedGets = blobGets(outageUpstream, degraded.digest);
    t.diagnostic(`Redis away: ${(degraded.size / MiB).toFixed(0)} MiB blob on A, B and C at once: ${degradedGets} upstream GETs, clients done within ${burstMs} ms`);
    assert.equal(degradedGets, 3, 'one fetch per replica (each coalesces its own clients) while Redis is away');
    assert.ok(burstMs < 10_000, 'no replica waited for another while Redis was away');
    // The three uploads of the same blob left one right object: each replica serves it from the bucket.
    registry.clearRequests();
    for (const i of [0, 1, 2]) await getBlobOk(replica(i).url, 'team/degraded', degraded.digest, NAMES[i]);
    assert.equal(blobGets(await registry.requests(), degraded.digest), 0, 'the blob fetched during the outage is cached for all');

    // Coordination is back: a new cold blob requested concurrently on A, B and C is fetched once.
    const { digest, size } = layerOf(resumed);
    registry.clearRequests();
    front.setMode(SLOW);
    let results: Got[];
    try {
      results = await Promise.all(Array.from({ length: 6 }, (_, i) => get(`${replica(i % 3).url}/v2/team/resumed/blobs/${digest}`)));
    } finally {
      front.setMode({ kind: 'pass' });
    }
    for (const [i, r] of results.entries()) {
      assert.equal(r.status, 200, `${NAMES[i % 3]}: ${r.error?.message ?? text(r.body, 300)}`);
      assert.equal(sha256(r.body), digest);
    }
    const gets = blobGets(await registry.requests(), digest);
    t.diagnostic(`after Redis came back: ${(size / MiB).toFixed(0)} MiB blob, upstream GETs: ${gets}`);
    assert.equal(gets, 1, 'fetched from the upstream exactly once across the three replicas');
  });

  it('a virtual image assembled on A is served by digest (member manifests and blobs) on B and C', async () => {
    const [a, b, c] = [replica(0), replica(1), replica(2)];
    const amd64 = vAmd64.manifests[0];
    const arm64 = vArm64.manifests[0];
    assert.ok(amd64 && arm64);
    const top = await get(`${a.url}/v2/virt/vapp/manifests/1`, { accept: ACCEPT.all });
    assert.equal(top.status, 200, top.body.toString('utf8'));
    const indexDigest = String(top.headers['docker-content-digest']);
    assert.equal(sha256(top.body), indexDigest);
    const entries = (JSON.parse(top.body.toString('utf8')) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest);
    assert.deepEqual(new Set(entries), new Set([amd64.digest, arm64.digest]), 'the index lists both members');
    // The amd64 member's manifest passes through A: its config and layers are known to belong to it.
    await getManifestOk(a.url, 'virt/vapp', amd64.digest, amd64.digest);

    registry.clearRequests();
    // B never saw the index nor the amd64 member manifest: provenance comes from Redis.
    await getManifestOk(b.url, 'virt/vapp', arm64.digest, arm64.digest);
    await getBlobOk(b.url, 'virt/vapp', amd64.layers[0]?.digest ?? '', 'B');
    await getBlobOk(b.url, 'virt/vapp', amd64.configDigest, 'B');
    await getManifestOk(c.url, 'virt/vapp', indexDigest, indexDigest);
    await getManifestOk(c.url, 'virt/vapp', amd64.digest, amd64.digest);
    // The arm64 member's blobs are known once its manifest passed through B.
    await getBlobOk(c.url, 'virt/vapp', arm64.layers[0]?.digest ?? '', 'C');
    const upstream = await registry.requests();
    assert.deepEqual(
      upstream.filter((r) => r.method === 'GET' && r.path.includes('/manifests/')).map((r) => r.uri),
      [],
      'member manifests stored when A assembled the index are read from the bucket',
    );
    assert.equal(blobGets(upstream, amd64.layers[0]?.digest ?? ''), 1, 'each blob fetched once, from its member repository');

    // A blob that never passed through the virtual name is not served under it.
    const stranger = await get(`${b.url}/v2/virt/vapp/blobs/${layerOf(fanIn).digest}`);
    assert.equal(stranger.status, 404, stranger.body.toString('utf8'));
  });
});
