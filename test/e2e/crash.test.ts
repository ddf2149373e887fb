// Crash safety (issue 6): archway is SIGKILLed while ten blobs are filling
// from a slow upstream. The restarted process removes the temp files, never
// serves a partial blob, still serves what was committed before the crash,
// and `archway cache verify` finds the cache clean.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { digestHex, sha256Digest as sha256 } from '../harness/digest.ts';
import { startFaultFront, type FaultFront } from '../harness/fault-front.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const FILLS = 10;

let work: string;
let registry: RegistryHandle;
let front: FaultFront;
/** Ten layers of 3 MiB: the blobs being filled when archway dies. */
let big: BuiltImage;
/** Cached completely before the crash. */
let warm: BuiltImage;

before(async () => {
  work = await tempDir('archway-crash-');
  registry = await startRegistry();
  front = await startFaultFront(registry);
  const platforms = [{ os: 'linux', architecture: 'amd64' }];
  big = await buildImage({ dir: join(work, 'big'), tag: '1', platforms, format: 'oci', layerSizes: Array.from({ length: FILLS }, () => 3 * MiB), seed: 'crash-big', index: false });
  warm = await buildImage({ dir: join(work, 'warm'), tag: '1', platforms, format: 'oci', layerSizes: [256 * KiB, 512 * KiB], seed: 'crash-warm', index: false });
  await pushLayout(big, { hostPort: registry.hostPort, name: 'team/big' });
  await pushLayout(warm, { hostPort: registry.hostPort, name: 'team/warm' });
});

after(async () => {
  await front?.stop();
  await registry?.stop();
  await removeDir(work);
});

async function tmpFiles(cacheDir: string): Promise<Array<{ name: string; size: number }>> {
  const dir = join(cacheDir, 'tmp');
  const names = await readdir(dir).catch(() => [] as string[]);
  const out: Array<{ name: string; size: number }> = [];
  for (const name of names) {
    const s = await stat(join(dir, name)).catch(() => undefined);
    if (s) out.push({ name, size: s.size });
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function blobFile(cacheDir: string, digest: string): string {
  const hex = digestHex(digest);
  return join(cacheDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

interface Got {
  status: number;
  body: Buffer;
  error: Error | undefined;
}

async function fetchBlob(url: string, dispatcher: Agent, method: 'GET' | 'HEAD' = 'GET'): Promise<Got> {
  let status = 0;
  const chunks: Buffer[] = [];
  let error: Error | undefined;
  try {
    const res = await request(url, { method, dispatcher, signal: AbortSignal.timeout(20_000) });
    status = res.statusCode;
    for await (const c of res.body) chunks.push(c as Buffer);
  } catch (err) {
    error = err as Error;
  }
  return { status, body: Buffer.concat(chunks), error };
}

/** `archway cache verify --config FILE`: exit code and output. */
async function cacheVerify(configPath: string): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'cache', 'verify', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return { code, out };
}

describe('SIGKILL during ten concurrent fills', () => {
  let first: ArchwayProcess | undefined;
  let second: ArchwayProcess | undefined;
  const client = new Agent();
  after(async () => {
    await first?.kill();
    await second?.kill();
    await client.close();
  });

  it('leaves no temp file and no partial blob; committed blobs survive; cache verify finds it clean', async (t) => {
    const config = {
      upstreams: { 'docker.io': { url: front.url } },
      defaultUpstream: 'docker.io',
      timeouts: { connect: '1s', headers: '5s', bodyIdle: '5s' },
      log: { level: 'warn' },
    };
    first = await startArchwayProcess(config);
    const cacheDir = first.cacheDir;
    const layers = big.manifests[0]!.layers;
    assert.equal(layers.length, FILLS);
    const warmBlobs = [warm.manifests[0]!.configDigest, ...warm.manifests[0]!.layers.map((l) => l.digest)];

    // Committed before the crash: a tag, its manifest and its blobs.
    const tag = await fetchBlob(`${first.url}/v2/team/warm/manifests/1`, client);
    assert.equal(tag.status, 200);
    for (const d of warmBlobs) assert.equal(sha256((await fetchBlob(`${first.url}/v2/team/warm/blobs/${d}`, client)).body), d);

    // Ten fills from a slow upstream (3 MiB at 64 KiB per 50 ms: about 2.5 s each).
    front.setMode({ kind: 'trickle', chunkBytes: 64 * KiB, pauseMs: 50 });
    const firstUrl = first.url;
    const pulls = layers.map((l) => fetchBlob(`${firstUrl}/v2/team/big/blobs/${l.digest}`, client));
    // Mid-way: every fill has a temp file with bytes in it, none is finished.
    const deadline = Date.now() + 10_000;
    let partial: Array<{ name: string; size: number }> = [];
    for (;;) {
      partial = await tmpFiles(cacheDir);
      if (partial.filter((f) => f.size > 0).length >= FILLS) break;
      assert.ok(Date.now() < deadline, `the ${FILLS} fills did not all start: ${JSON.stringify(partial)}`);
      await sleep(50);
    }
    assert.equal(await scrapeMetric(first.url, 'archway_blob_fills_inflight', {}, client), FILLS, 'ten fills under way');
    await sleep(400);
    const { code } = await first.signal('SIGKILL');
    assert.equal(code, null, 'killed by the signal');
    front.setMode({ kind: 'pass' });

    const results = await Promise.all(pulls);
    for (const [i, r] of results.entries()) {
      // A client of the dead process may not hold a complete body that is wrong.
      if (!r.error) assert.equal(sha256(r.body), layers[i]!.digest, 'a body that completed is the blob');
    }
    assert.ok(results.every((r) => r.error), 'every pull in flight was cut by the crash');
    const left = await tmpFiles(cacheDir);
    t.diagnostic(`after SIGKILL: ${left.length} temp files (${left.map((f) => f.size).join(', ')} bytes)`);
    assert.ok(left.some((f) => f.size > 0 && f.size < 3 * MiB), 'the crash really happened mid-fill (partial temp files remain)');
    for (const l of layers) assert.equal(await exists(blobFile(cacheDir, l.digest)), false, 'no partial blob under a digest name');

    // Restart on the same cache directory.
    second = await startArchwayProcess({ ...config, cache: { dir: cacheDir } });
    assert.equal(second.cacheDir, cacheDir);
    assert.deepEqual(await tmpFiles(cacheDir), [], 'temp files of interrupted fills are gone after the restart');

    // With the upstream unreachable, only what was committed can be served: the ten are not.
    await front.closePort();
    try {
      for (const l of layers) {
        const g = await fetchBlob(`${second.url}/v2/team/big/blobs/${l.digest}`, client);
        assert.equal(g.status, 502, `GET of an interrupted blob is not served from the cache (got ${g.status}, ${g.body.length} bytes)`);
        const h = await fetchBlob(`${second.url}/v2/team/big/blobs/${l.digest}`, client, 'HEAD');
        assert.equal(h.status, 502, 'nor is it known to HEAD');
      }
      for (const d of warmBlobs) {
        const g = await fetchBlob(`${second.url}/v2/team/warm/blobs/${d}`, client);
        assert.equal(g.status, 200);
        assert.equal(sha256(g.body), d, 'blobs committed before the crash are served intact');
      }
      const stale = await fetchBlob(`${second.url}/v2/team/warm/manifests/${warm.topDigest}`, client);
      assert.equal(stale.status, 200);
      assert.ok(stale.body.equals(warm.topBytes));
    } finally {
      await front.openPort();
    }

    // The upstream back: each interrupted blob is fetched again, whole and right.
    const secondUrl = second.url;
    const again = await Promise.all(layers.map((l) => fetchBlob(`${secondUrl}/v2/team/big/blobs/${l.digest}`, client)));
    for (const [i, r] of again.entries()) {
      assert.equal(r.status, 200);
      assert.equal(r.error, undefined);
      assert.equal(sha256(r.body), layers[i]!.digest);
    }
    const tagAgain = await fetchBlob(`${second.url}/v2/team/big/manifests/1`, client);
    assert.equal(tagAgain.status, 200);

    const stopped = await second.signal('SIGTERM');
    assert.equal(stopped.code, 0, second.output());
    const verify = await cacheVerify(second.configPath);
    t.diagnostic(verify.out.trim());
    assert.match(verify.out, new RegExp(`archway cache verify: ${FILLS + warmBlobs.length} blobs \\(0 bad\\), \\d+ manifests \\(0 bad\\)`));
    assert.equal(verify.code, 0, verify.out);
    assert.deepEqual(await tmpFiles(cacheDir), []);
  });
});
