// Highly available coordination: three archway replicas (separate processes)
// sharing a bucket, with Redis reached through Sentinel — a real primary, a
// replica and three sentinels (Debian redis-server and redis-sentinel) — and
// a real registry upstream behind a fault front (to slow blob bodies where
// requests must overlap). Shown here: a purge through one replica drops the
// in-memory copies of every replica at once (cluster events over pub/sub);
// the primary SIGKILLed during pulls through two replicas costs no request
// and no wrong byte, private content stays private during and after the
// failover, coalescing across replicas resumes once the replica is promoted,
// and purge events flow again on the promoted primary.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startFaultFront, type FaultFront, type FaultMode } from '../harness/fault-front.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import { startSentinelTopology, type SentinelTopology } from '../harness/redis.ts';
import { startRegistry, type RegistryHandle, type RegistryRequest } from '../harness/registry.ts';
import { startS3, type S3Handle } from '../harness/s3.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';
import { stringify } from 'yaml';

const KiB = 1024;
const MiB = 1024 * KiB;
const NAMES = ['A', 'B', 'C'] as const;
const TOKEN = 'failover-admin-token-0123456789';
/** The Redis servers require it (as production ones should): archway's redis.password, and never in its output. */
const REDIS_PASSWORD = 'failover-redis-secret-4f1c';
/** About 6 MiB/s: an 8 MiB blob takes ~1.3 s, long enough for six clients on two replicas to overlap. */
const SLOW: FaultMode = { kind: 'trickle', chunkBytes: 256 * KiB, pauseMs: 40 };

let work: string;
let registry: RegistryHandle;
let front: FaultFront;
let s3: S3Handle;
let topology: SentinelTopology;
const replicas: ArchwayProcess[] = [];
const client = new Agent({ keepAliveTimeout: 10_000 });

/** Cached before the failover, pulled in the loop during it; also pushed to team/copy (confirmable there). */
let app: BuiltImage;
/** Uncached until the primary is killed: first requested during the failover window. */
let churn: BuiltImage;
/** One cold layer wanted on A and B at once after the failover. */
let resumed: BuiltImage;
/** Purged before (v1 → v2) and after the failover (w1 → w2). */
const purgeImages: Record<string, BuiltImage> = {};

process.on('exit', () => {
  for (const r of replicas) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
});

function replica(i: number): ArchwayProcess {
  const r = replicas[i];
  assert.ok(r, `replica ${NAMES[i]}`);
  return r;
}

interface Timed {
  status: number;
  body: Buffer;
  error: string | undefined;
  startedAt: number;
  doneAt: number;
}

async function timedGet(url: string, headers: Record<string, string> = {}): Promise<Timed> {
  const startedAt = Date.now();
  try {
    const res = await request(url, { headers, dispatcher: client, signal: AbortSignal.timeout(30_000) });
    const body = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, body, error: undefined, startedAt, doneAt: Date.now() };
  } catch (err) {
    return { status: 0, body: Buffer.alloc(0), error: (err as Error).message, startedAt, doneAt: Date.now() };
  }
}

async function manifestDigest(base: string, repo: string, reference: string): Promise<string> {
  const r = await http(`${base}/v2/${repo}/manifests/${reference}`, { headers: { accept: ACCEPT.all }, dispatcher: client });
  assert.equal(r.status, 200, `${base} ${repo}:${reference}: ${r.body.toString('utf8').slice(0, 300)}`);
  return sha256(r.body);
}

function gets(reqs: RegistryRequest[], method: string, suffix: string): number {
  return reqs.filter((r) => r.method === method && r.path.endsWith(suffix)).length;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

/** Each replica's configuration as started (the reload test writes a changed one). */
let configs: Array<Record<string, unknown>> = [];

before(async () => {
  work = await tempDir('archway-failover-');
  registry = await startRegistry();
  front = await startFaultFront(registry);
  [s3, topology] = await Promise.all([startS3({ atomicWrites: true }), startSentinelTopology({ password: REDIS_PASSWORD })]);

  const one = (name: string, layerSizes: number[]) =>
    buildImage({ dir: join(work, name), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes, seed: `failover-${name}`, index: false });
  app = await one('app', [64 * KiB, 256 * KiB]);
  churn = await one('churn', [96 * KiB, 128 * KiB, 160 * KiB, 192 * KiB]);
  resumed = await one('resumed', [8 * MiB]);
  for (const v of ['v1', 'v2', 'w1', 'w2']) purgeImages[v] = await one(`purged-${v}`, [32 * KiB]);
  await Promise.all([
    pushLayout(app, { hostPort: registry.hostPort, name: 'team/app' }),
    pushLayout(app, { hostPort: registry.hostPort, name: 'team/copy' }),
    pushLayout(churn, { hostPort: registry.hostPort, name: 'team/churn' }),
    pushLayout(resumed, { hostPort: registry.hostPort, name: 'team/resumed' }),
    pushLayout(purgeImages.v1 as BuiltImage, { hostPort: registry.hostPort, name: 'team/purged' }),
    pushLayout(purgeImages.w1 as BuiltImage, { hostPort: registry.hostPort, name: 'team/purged-later' }),
  ]);

  const config = async (name: string): Promise<Record<string, unknown>> => ({
    // Isolated: content cached through one repository needs the upstream's word before another may see it.
    upstreams: { 'docker.io': { url: front.url, repositoryIsolation: true } },
    defaultUpstream: 'docker.io',
    cache: { dir: await tempDir(`archway-failover-${name}-`) },
    storage: s3.storage('failover/'),
    redis: { sentinels: topology.sentinels, name: topology.name, password: REDIS_PASSWORD, fillWait: '30s' },
    admin: { token: TOKEN },
    timeouts: { connect: '2s', headers: '10s', bodyIdle: '10s' },
    log: { level: 'info' },
  });
  configs = await Promise.all(NAMES.map(config));
  replicas.push(...(await Promise.all(configs.map((c) => startArchwayProcess(c)))));
});

after(async () => {
  await Promise.all(replicas.map((r) => r.kill()));
  await client.close();
  await Promise.all([front?.stop(), s3?.stop(), topology?.stop(), registry?.stop()]);
  if (work) await removeDir(work);
});

/** The config and layer digests of a single-platform image (its blobs). */
function blobsOf(image: BuiltImage): string[] {
  const m = image.manifests[0];
  assert.ok(m);
  return [m.configDigest, ...m.layers.map((l) => l.digest)];
}

/**
 * The tag `repo:1` moves from `old` to `next` upstream and `old` is deleted
 * there (an image withdrawn), then the tag is purged through replica `via`:
 * the others must answer the new tag and 404 for the withdrawn manifest at
 * once, not the copies in their memory (kept up to a minute otherwise).
 */
async function purgeReachesEveryReplica(via: number, repo: string, old: BuiltImage, next: BuiltImage): Promise<string> {
  for (let i = 0; i < replicas.length; i++) {
    // By tag and by digest on each: every replica holds the manifest in memory now.
    assert.equal(await manifestDigest(replica(i).url, repo, '1'), old.topDigest, `${NAMES[i]} before the purge`);
    assert.equal(await manifestDigest(replica(i).url, repo, old.topDigest), old.topDigest);
  }
  await pushLayout(next, { hostPort: registry.hostPort, name: repo });
  const withdrawn = await http(`http://${registry.hostPort}/v2/${repo}/manifests/${old.topDigest}`, { method: 'DELETE' });
  assert.equal(withdrawn.status, 202, withdrawn.body.toString('utf8'));
  registry.clearRequests();
  const purged = await http(`${replica(via).url}/_archway/cache/${repo}:1`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` }, dispatcher: client });
  assert.equal(purged.status, 200, purged.body.toString('utf8'));
  assert.deepEqual(purged.json<{ tags: string[] }>().tags, ['1']);
  const purgedAt = Date.now();
  const others = [0, 1, 2].filter((i) => i !== via);
  for (const i of others) {
    assert.equal(await manifestDigest(replica(i).url, repo, '1'), next.topDigest, `${NAMES[i]} answers the tag's new content at once`);
    const gone = await http(`${replica(i).url}/v2/${repo}/manifests/${old.topDigest}`, { headers: { accept: ACCEPT.all }, dispatcher: client });
    assert.equal(gone.status, 404, `${NAMES[i]} answers the purged, withdrawn manifest from its memory: ${gone.body.toString('utf8').slice(0, 200)}`);
  }
  const answeredMs = Date.now() - purgedAt;
  const upstream = await registry.requests();
  assert.equal(
    gets(upstream, 'GET', `/manifests/${old.topDigest}`),
    others.length,
    `each other replica asked the upstream for the purged manifest: ${upstream.map((r) => `${r.method} ${r.path}`).join(', ')}`,
  );
  return `purge through ${NAMES[via]}: ${others.map((i) => NAMES[i]).join(' and ')} answered the new tag and 404 for the withdrawn manifest within ${answeredMs} ms`;
}

/** The file as the harness wrote it for replica `i` (its port, cache directory), with the upstream given `aliases`. */
async function writeConfigWithAlias(i: number, alias: string): Promise<void> {
  const r = replica(i);
  const c = configs[i] as { upstreams: Record<string, Record<string, unknown>>; cache: object };
  const upstreams = { 'docker.io': { ...c.upstreams['docker.io'], aliases: [alias] } };
  const server = { shutdownTimeout: '5s', host: '127.0.0.1', port: r.port };
  await writeFile(r.configPath, stringify({ ...c, upstreams, server, cache: { ...c.cache, dir: r.cacheDir } }));
}

describe('replicas coordinating through Redis Sentinel', () => {
  it('a reload through one replica’s admin API reloads every replica’s own file at once', async () => {
    const aliased = (i: number) => http(`${replica(i).url}/v2/mirror.example/team/app/manifests/1`, { headers: { accept: ACCEPT.all }, dispatcher: client });
    for (let i = 0; i < replicas.length; i++) assert.equal((await aliased(i)).status, 404, `${NAMES[i]}: no such alias yet`);
    for (let i = 0; i < replicas.length; i++) await writeConfigWithAlias(i, 'mirror.example');
    const answer = await http(`${replica(0).url}/_archway/reload`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, dispatcher: client });
    assert.equal(answer.status, 200, answer.body.toString('utf8'));
    const body = answer.json<{ changes: string[]; toldReplicas: boolean }>();
    assert.equal(body.toldReplicas, true);
    assert.ok(body.changes.some((c) => c.includes('docker.io')), `A's changes name the upstream: ${body.changes.join(', ')}`);
    for (const i of [1, 2]) {
      // Told over pub/sub: the reload runs as the message arrives, a moment after A's answer.
      const deadline = Date.now() + 5000;
      let status = 0;
      while ((status = (await aliased(i)).status) !== 200 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(status, 200, `${NAMES[i]} reloaded its own file when A was asked`);
      assert.match(replica(i).output(), /reload asked by [^:]+:\d+: /, `${NAMES[i]} logged who asked`);
    }
    assert.equal((await aliased(0)).status, 200, 'A uses the new file too');
  });


  it('a purge through one replica drops every replica’s in-memory copies at once', async (t) => {
    t.diagnostic(await purgeReachesEveryReplica(0, 'team/purged', purgeImages.v1 as BuiltImage, purgeImages.v2 as BuiltImage));
  });

  it('the primary killed during pulls through A and B: every answer right, private stays private, coalescing resumes', async (t) => {
    const [a, b] = [replica(0), replica(1)];
    const layer = app.manifests[0]?.layers[0];
    assert.ok(layer);
    // Cached through team/app; team/copy has it upstream too.
    for (const base of [a.url, b.url]) assert.equal(await manifestDigest(base, 'team/app', '1'), app.topDigest);
    for (const d of blobsOf(app)) assert.equal((await timedGet(`${a.url}/v2/team/app/blobs/${d}`)).status, 200);

    const cached = blobsOf(app).map((d) => ({ path: `team/app/blobs/${d}`, digest: d }));
    cached.push({ path: `team/app/manifests/1`, digest: app.topDigest });
    const uncached = blobsOf(churn).map((d) => ({ path: `team/churn/blobs/${d}`, digest: d }));
    type Phase = 'before' | 'window' | 'after';
    let phase = 'before' as Phase;
    const samples: Array<{ phase: Phase; ms: number }> = [];
    const failures: string[] = [];
    let running = true;
    let next = 0;
    const worker = async () => {
      while (running) {
        const list = phase === 'before' ? cached : [...cached, ...uncached];
        const item = list[next++ % list.length];
        if (!item) continue;
        const p = phase;
        const base = next % 2 ? a.url : b.url;
        const g = await timedGet(`${base}/v2/${item.path}`, { accept: ACCEPT.all });
        samples.push({ phase: p, ms: g.doneAt - g.startedAt });
        if (g.error || g.status !== 200 || sha256(g.body) !== item.digest) failures.push(`${p}: ${base} ${item.path} → ${g.error ?? g.status} ${g.body.subarray(0, 200).toString('utf8')}`);
      }
    };
    const degraded: Array<{ at: number; value: number }> = [];
    const watchMetric = async () => {
      while (running) {
        degraded.push({ at: Date.now(), value: await scrapeMetric(a.url, 'archway_coordination_degraded', {}, client) });
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const offsets = [a, b].map((r) => r.output().length);
    const workers = [...Array.from({ length: 4 }, () => worker()), watchMetric()];
    let failover: Awaited<ReturnType<SentinelTopology['killPrimary']>> | undefined;
    let privateInWindow: Timed | undefined;
    let backAt: number[] = [];
    let windowUpstream: RegistryRequest[] = [];
    try {
      await new Promise((r) => setTimeout(r, 700));
      registry.clearRequests();
      phase = 'window';
      const killing = topology.killPrimary();
      // Right after the kill, with no Redis to ask: a blob cached through team/app, asked through team/other.
      await new Promise((r) => setTimeout(r, 50));
      privateInWindow = await timedGet(`${a.url}/v2/team/other/blobs/${layer.digest}`);
      failover = await killing;
      await Promise.all(
        [a, b].map(async (r, i) => {
          await r.waitForOutput(/redis is back/, { fromOffset: offsets[i] ?? 0, timeoutMs: 15_000 });
          backAt[i] = Date.now();
        }),
      );
      windowUpstream = await registry.requests();
      phase = 'after';
      await new Promise((r) => setTimeout(r, 700));
    } finally {
      running = false;
      await Promise.all(workers);
    }
    assert.ok(failover);
    const f = failover;
    backAt = backAt.map((x) => x - f.killedAt);
    const ms = (p: Phase) => samples.filter((s) => s.phase === p).map((s) => s.ms);
    const [before, during, afterwards] = [ms('before'), ms('window'), ms('after')];
    const churnFetches = uncached.map((u) => gets(windowUpstream, 'GET', `/blobs/${u.digest}`));
    t.diagnostic(
      `promoted ${f.promotedAt - f.killedAt} ms after the kill; A and B coordinating again after ${backAt.join(' / ')} ms; ` +
        `requests before/window/after ${before.length}/${during.length}/${afterwards.length}; ` +
        `latency p50/max before ${percentile(before, 50)}/${Math.max(...before)} ms, window ${percentile(during, 50)}/${Math.max(...during)} ms, ` +
        `after ${percentile(afterwards, 50)}/${Math.max(...afterwards)} ms; over 500 ms in the window: ${during.filter((x) => x > 500).length}; ` +
        `upstream GETs per blob first wanted in the window: ${churnFetches.join(', ')}`,
    );
    assert.deepEqual(failures, [], 'every request answered with the right bytes');
    assert.ok(before.length >= 10 && during.length >= 20 && afterwards.length >= 5, `requests in every phase: ${before.length}/${during.length}/${afterwards.length}`);
    assert.ok(churnFetches.every((n) => n >= 1 && n <= 2), `each blob first wanted in the window fetched at most once per replica: ${churnFetches.join(', ')}`);

    // The metric operators alert on: degraded during the window, not after it.
    assert.ok(degraded.some((s) => s.value === 1 && s.at > f.killedAt), 'archway_coordination_degraded was 1 during the failover');
    assert.equal(degraded.at(-1)?.value, 0, 'archway_coordination_degraded back to 0');
    assert.equal(await scrapeMetric(b.url, 'archway_coordination_degraded', {}, client), 0);

    // Private content: refused through a repository the upstream does not have it in, during the window and after.
    assert.ok(privateInWindow);
    assert.ok(privateInWindow.doneAt < f.promotedAt, 'the private request was answered while there was no primary');
    assert.equal(privateInWindow.status, 404, `during the window: ${privateInWindow.body.toString('utf8')}`);
    registry.clearRequests();
    const refused = await timedGet(`${b.url}/v2/team/other/blobs/${layer.digest}`);
    assert.equal(refused.status, 404, refused.body.toString('utf8'));
    assert.match(refused.body.toString('utf8'), /BLOB_UNKNOWN/);
    const confirmed = await timedGet(`${b.url}/v2/team/copy/blobs/${layer.digest}`);
    assert.equal(sha256(confirmed.body), layer.digest, 'served through a repository the upstream confirms');
    const asked = await registry.requests();
    assert.equal(gets(asked, 'HEAD', `/team/other/blobs/${layer.digest}`), 1, 'the upstream was asked about team/other');
    assert.equal(gets(asked, 'GET', `/blobs/${layer.digest}`), 0, 'confirmed with a HEAD, not downloaded again');

    // Coalescing across replicas again: a cold blob wanted by three clients on A and three on B is one upstream GET.
    const cold = resumed.manifests[0]?.layers[0];
    assert.ok(cold);
    registry.clearRequests();
    front.setMode(SLOW);
    let results: Timed[];
    try {
      results = await Promise.all(Array.from({ length: 6 }, (_, i) => timedGet(`${(i % 2 ? b : a).url}/v2/team/resumed/blobs/${cold.digest}`)));
    } finally {
      front.setMode({ kind: 'pass' });
    }
    for (const [i, r] of results.entries()) {
      assert.equal(r.status, 200, `client ${i}: ${r.error ?? r.body.subarray(0, 200).toString('utf8')}`);
      assert.equal(sha256(r.body), cold.digest, `client ${i}`);
    }
    assert.ok(Math.max(...results.map((r) => r.startedAt)) < Math.min(...results.map((r) => r.doneAt)), 'the six requests overlapped');
    assert.equal(gets(await registry.requests(), 'GET', `/blobs/${cold.digest}`), 1, 'one upstream GET for A and B after the failover');
  });

  it('after the failover, a purge through B still reaches A and C at once (the subscribers followed the new primary)', async (t) => {
    for (const [i, r] of replicas.entries()) {
      assert.match(r.output(), /cluster events resumed/, `${NAMES[i]} was told it may have missed events`);
      assert.ok(!r.output().includes(REDIS_PASSWORD), `${NAMES[i]}'s output holds no Redis password`);
    }
    t.diagnostic(await purgeReachesEveryReplica(1, 'team/purged-later', purgeImages.w1 as BuiltImage, purgeImages.w2 as BuiltImage));
  });
});
