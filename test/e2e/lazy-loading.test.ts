// Idle memory of archway as the container image runs it (the compiled build)
// with the shipped configuration: a guard against loading what the config
// does not use (the AWS SDK, ioredis) or allocating caches up front. The
// static import graph (test/unit/lazy-imports.test.ts) proves the laziness;
// this bound catches what it cannot see. Measured here (a few seconds after
// start-up, before V8 shrinks the heap) on a 2-core AMD EPYC, Node 20: 120–126
// MiB before the S3/Redis modules were lazy and the LRU caches grew as used,
// 93 MiB after; the bound leaves room for other Node versions.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { parse } from 'yaml';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { freePort } from '../harness/ports.ts';
import { run } from '../harness/process.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const MiB = 1024 * 1024;
const IDLE_RSS_BOUND = 100 * MiB;

function rssBytes(pid: number): number {
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  assert.ok(kib, 'VmRSS in /proc/PID/status');
  return Number(kib) * 1024;
}

describe('idle memory with the shipped configuration (compiled build)', () => {
  let archway: ArchwayProcess;

  before(async () => {
    await run('npm', ['run', 'build'], { cwd: ROOT });
    const shipped = parse(readFileSync(resolve(ROOT, 'config/default.yaml'), 'utf8')) as {
      cache: Record<string, unknown>;
      upstreams: Record<string, { url: string }>;
    };
    // As the bench runs it: only the upstream URL (loopback, nothing listening: never
    // Docker Hub from a test) and the cache directory (the harness's) changed.
    const { dir: _shippedDir, ...cache } = shipped.cache;
    const nothing = `http://127.0.0.1:${await freePort()}`;
    const upstreams = Object.fromEntries(Object.entries(shipped.upstreams).map(([host, u]) => [host, { ...u, url: nothing }]));
    archway = await startArchwayProcess({ ...shipped, cache, upstreams }, { compiled: true });
  });

  after(async () => {
    await archway?.kill();
  });

  it(`stays under ${IDLE_RSS_BOUND / MiB} MiB resident after start-up and a few requests`, async (t) => {
    for (const path of ['/v2/', '/healthz', '/metrics']) {
      const res = await request(`${archway.url}${path}`);
      await res.body.dump();
      assert.equal(res.statusCode, 200, path);
    }
    const pid = archway.child.pid;
    assert.ok(pid);
    const rss = rssBytes(pid);
    t.diagnostic(`idle RSS ${(rss / MiB).toFixed(1)} MiB`);
    assert.ok(rss < IDLE_RSS_BOUND, `idle RSS ${(rss / MiB).toFixed(1)} MiB, bound ${IDLE_RSS_BOUND / MiB} MiB`);
  });
});
